//! `linux/seccomp` from inside real containers: the default filter denies
//! what Docker's default denies (EPERM) and allows what programs need; a
//! profile file is honoured (the OCI form and Docker's); `unconfined`
//! turns it off; a bad profile fails the launch naming the rule.

use berth_tests::{require_tool, TestEnv};
use std::process::Output;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Each probe prints `NAME errno` (0 = the call went through); the numbers
/// are x86_64's. Arguments are passed as unsigned longs, as libc does.
const PROBES: &str = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
U = ctypes.c_ulong
def call(name, nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(U(nr), *[U(a) for a in args])
    print(name, 0 if r >= 0 else ctypes.get_errno())
call("keyctl", 250, 0, 0, 0, 0)
call("add_key", 248, 0, 0, 0, 0, 0)
call("request_key", 249, 0, 0, 0, 0)
call("userfaultfd", 323, 0)
call("perf_event_open", 298, 0, 0, 0, 0, 0)
call("personality_addr_no_randomize", 135, 0x0040000)
call("personality_query", 135, 0xffffffff)
call("unshare_newuser", 272, 0x10000000)
call("clone3", 435, 0, 0)
call("getpid", 39)
call("uname", 63, 0)
"#;

fn run(env: &TestEnv, global: &[&str], args: &[&str]) -> Output {
    require_tool("python3");
    env.berth()
        .arg("run")
        .args(global)
        .args(args)
        .args(["--", "python3", "-c", PROBES])
        .output()
        .expect("run berth")
}

/// errno of each probe, by name.
fn results(out: &Output) -> std::collections::BTreeMap<String, i32> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, e)| (n.to_string(), e.trim().parse().unwrap()))
        .collect()
}

#[test]
fn the_default_filter_denies_what_dockers_denies() {
    let env = TestEnv::new("seccomp-default");
    let r = results(&run(&env, &[], &[]));
    for denied in [
        "keyctl",
        "add_key",
        "request_key",
        "userfaultfd",
        "perf_event_open",
        "personality_addr_no_randomize",
        "unshare_newuser",
    ] {
        assert_eq!(r[denied], libc::EPERM, "{denied}: {r:?}");
    }
    // clone3 says ENOSYS, so libcs fall back to the filtered clone.
    assert_eq!(r["clone3"], libc::ENOSYS, "{r:?}");
    for allowed in ["personality_query", "getpid"] {
        assert_eq!(r[allowed], 0, "{allowed}: {r:?}");
    }
    // uname(NULL) reaches the kernel, which says EFAULT.
    assert_eq!(r["uname"], libc::EFAULT, "{r:?}");
    let status = env
        .berth()
        .args(["run", "--", "grep", "Seccomp:", "/proc/self/status"])
        .output()
        .unwrap();
    assert_eq!(text(&status.stdout).split_whitespace().last(), Some("2"));
}

#[test]
fn unconfined_turns_the_filter_off() {
    let env = TestEnv::new("seccomp-unconfined");
    let r = results(&run(&env, &[], &["--seccomp-profile", "unconfined"]));
    // Without a filter these reach the kernel, which answers otherwise.
    assert_ne!(r["keyctl"], libc::EPERM, "{r:?}");
    assert_eq!(r["unshare_newuser"], 0, "{r:?}");
    assert_eq!(r["personality_addr_no_randomize"], 0, "{r:?}");
    // And so does an agent-wide default of unconfined.
    let r = results(&run(&env, &["--seccomp-default", "unconfined"], &[]));
    assert_eq!(r["unshare_newuser"], 0, "{r:?}");
}

#[test]
fn a_profile_file_is_honoured_in_both_forms() {
    let env = TestEnv::new("seccomp-file");
    // OCI form: allow all but uname, which fails with EACCES.
    let oci = env.path("oci.json");
    std::fs::write(
        &oci,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["uname"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let r = results(&run(
        &env,
        &[],
        &["--seccomp-profile", oci.to_str().unwrap()],
    ));
    assert_eq!(r["uname"], libc::EACCES, "{r:?}");
    assert_eq!(r["unshare_newuser"], 0, "{r:?}");
    // Docker's form: a rule that needs CAP_SYS_ADMIN (not in the default
    // set) does not apply; one excluded by it does.
    let docker = env.path("docker.json");
    std::fs::write(
        &docker,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":[]}],
            "syscalls":[
              {"names":["getpid"],"action":"SCMP_ACT_ERRNO","includes":{"caps":["CAP_SYS_ADMIN"]}},
              {"name":"uname","action":"SCMP_ACT_ERRNO","excludes":{"caps":["CAP_SYS_ADMIN"]}}]}"#,
    )
    .unwrap();
    let r = results(&run(
        &env,
        &[],
        &["--seccomp-profile", docker.to_str().unwrap()],
    ));
    assert_eq!(r["getpid"], 0, "{r:?}");
    assert_eq!(r["uname"], libc::EPERM, "{r:?}");
}

#[test]
fn a_bad_profile_fails_the_launch_naming_the_rule() {
    let env = TestEnv::new("seccomp-bad");
    let bad = env.path("bad.json");
    std::fs::write(
        &bad,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getpid"],"action":"SCMP_ACT_ALLOW"},
            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
    )
    .unwrap();
    let out = env
        .berth()
        .args([
            "run",
            "--seccomp-profile",
            bad.to_str().unwrap(),
            "--",
            "true",
        ])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128), "{err}");
    assert!(
        err.contains("seccomp profile")
            && err.contains("syscalls[1] (mkdir)")
            && err.contains("index 7"),
        "{err}"
    );
    let out = env
        .berth()
        .args([
            "run",
            "--seccomp-profile",
            "/nonexistent/profile.json",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("/nonexistent/profile.json"),
        "{}",
        text(&out.stderr)
    );
}
