//! The same containers under each runtime: berth's own launcher
//! (`native`), runc and gVisor's runsc, through the real Debian binaries
//! (`/usr/sbin/runc`, `/usr/bin/runsc`, registered by name from PATH).
//! Each case is a function of the runtime's name; `cases!` makes one test
//! per runtime. Every test ends with no cgroup, mount, process, or
//! runtime state left.

use berth_tests::{import_busybox, require_tool, Agent, TestEnv};
use std::process::Output;
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The runtime's binary must be there: a missing one fails the test.
fn require_runtime(rt: &str) {
    if rt != "native" {
        require_tool(rt);
    }
}

/// `berth run --runtime RT ARGS`, its output once it ends.
fn run(env: &TestEnv, rt: &str, args: &[&str]) -> Output {
    env.berth()
        .args(["run", "--runtime", rt])
        .args(args)
        .output()
        .expect("run berth")
}

fn expect_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Nothing of the test left: cgroups, mounts, processes, and no container
/// in the runtime's own state under berth's runtime dir.
fn assert_clean(env: &TestEnv, rt: &str) {
    let leaks = env.leaks();
    assert!(leaks.is_empty(), "leaks: {leaks:#?}");
    if rt != "native" {
        let root = env.runtime_dir.join("oci").join(rt);
        if root.is_dir() {
            assert_eq!(listed(rt, &root), "", "{rt} still lists containers");
        }
    }
}

/// The ids an OCI runtime binary lists under its state dir `root`.
fn listed(runtime: &str, root: &std::path::Path) -> String {
    let out = std::process::Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(["list", "--quiet"])
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}

fn exit_codes_and_output(rt: &str) {
    require_runtime(rt);
    let env = TestEnv::new(&format!("oci-exit-{rt}"));
    let out = run(
        &env,
        rt,
        &["--", "/bin/sh", "-c", "echo out; echo err >&2; exit 7"],
    );
    expect_code(&out, 7);
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"), "{}", text(&out.stderr));
    expect_code(&run(&env, rt, &["--", "/bin/true"]), 0);
    // A child killed by a signal: the shell exits 128+N.
    expect_code(
        &run(&env, rt, &["--", "/bin/sh", "-c", "sh -c 'kill -9 $$'"]),
        137,
    );
    assert_clean(&env, rt);
}

fn missing_command_is_a_start_error(rt: &str) {
    require_runtime(rt);
    let env = TestEnv::new(&format!("oci-miss-{rt}"));
    let out = run(&env, rt, &["--json", "--", "/no/such/command"]);
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(json["reason"], "START_ERROR", "{json}");
    expect_code(&out, 128);
    assert_clean(&env, rt);
}

fn image_env_user_workdir_and_volumes(rt: &str) {
    require_runtime(rt);
    let env = TestEnv::new(&format!("oci-img-{rt}"));
    import_busybox(&env);
    let rw = env.mkdir("rw");
    // Written by the container's user 1000.
    std::os::unix::fs::chown(&rw, Some(1000), Some(1000)).unwrap();
    let ro = env.mkdir("ro");
    std::fs::write(ro.join("in"), "from the host\n").unwrap();
    let (rw_s, ro_s) = (rw.display().to_string(), ro.display().to_string());
    let out = env
        .berth()
        .args(["run", "--runtime", rt])
        .args(["--volume-allow-rw", &rw_s, "--volume-allow-ro", &ro_s])
        .args(["--image", "busybox", "-e", "GREETING=hello"])
        .args(["--user", "1000:1000", "--workdir", "/tmp"])
        .args([
            "-v",
            &format!("{rw_s}:/rw"),
            "-v",
            &format!("{ro_s}:/ro:ro"),
        ])
        .args([
            "--",
            "/bin/sh",
            "-c",
            "echo $GREETING $(busybox id -u) $(pwd); busybox cat /ro/in; \
             echo written > /rw/out; busybox touch /ro/x 2>/dev/null && echo ro-writable; \
             test -x /bin/busybox && echo image",
        ])
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert_eq!(
        text(&out.stdout),
        "hello 1000 /tmp\nfrom the host\nimage\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("out")).unwrap(),
        "written\n"
    );
    assert!(!ro.join("x").exists());
    assert_clean(&env, rt);
}

fn memory_limit_is_oom_killed(rt: &str) {
    require_runtime(rt);
    let env = TestEnv::new(&format!("oci-oom-{rt}"));
    import_busybox(&env);
    // dd's 256 MiB buffer in a 64 MiB container.
    let out = run(
        &env,
        rt,
        &[
            "--json",
            "--memory",
            "64M",
            "--image",
            "busybox",
            "--",
            "/bin/busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=256M",
            "count=4",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(json["reason"], "OOM_KILLED", "{json}");
    assert_clean(&env, rt);
}

fn pids_limit_holds(rt: &str) {
    require_runtime(rt);
    require_tool("python3");
    let env = TestEnv::new(&format!("oci-pids-{rt}"));
    let out = run(
        &env,
        rt,
        &[
            "--pids",
            "8",
            "--",
            "python3",
            "-c",
            // Forks until refused; the children sleep so they all count.
            "import os, time\nn = 0\nfor i in range(12):\n    try:\n        \
             pid = os.fork()\n    except OSError:\n        continue\n    if pid == 0:\n        \
             time.sleep(3)\n        os._exit(0)\n    n += 1\nprint('started', n)",
        ],
    );
    expect_code(&out, 0);
    let started: u32 = text(&out.stdout)
        .trim()
        .strip_prefix("started ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", text(&out.stdout)));
    assert!(
        started < 12,
        "all 12 forked under pids=8: {}",
        text(&out.stdout)
    );
    assert_clean(&env, rt);
}

fn client(env: &TestEnv, agent: &Agent, args: &[&str], code: i32) -> Output {
    env.client_expect(agent, args, code)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

fn agent_kill_stats_update_and_recovery(rt: &str) {
    require_runtime(rt);
    let env = TestEnv::new(&format!("oci-agent-{rt}"));
    let agent = env.start_agent("");
    let launch = |id: &str, script: &str| {
        client(
            &env,
            &agent,
            &[
                "launch",
                "--runtime",
                rt,
                "--name",
                id,
                "--memory",
                "64M",
                "--",
                "/bin/sh",
                "-c",
                script,
            ],
            0,
        )
    };
    launch("sleeper", "sleep 1000");
    launch("exiter", "sleep 2; exit 5");
    let stats = json(&client(&env, &agent, &["stats", "sleeper", "--json"], 0));
    assert!(
        stats["mem_usage_bytes"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    assert!(stats["processes"].as_u64().unwrap_or(0) >= 1, "{stats}");
    client(&env, &agent, &["update", "sleeper", "--memory", "128M"], 0);
    let limit = env
        .cgroup_dir("memory")
        .join("sleeper/memory.limit_in_bytes");
    assert_eq!(
        std::fs::read_to_string(limit).unwrap().trim(),
        (128u64 << 20).to_string()
    );
    // The agent dies; "exiter" ends while it is down.
    agent.kill9();
    std::thread::sleep(Duration::from_secs(3));
    let agent = env.start_agent("");
    let out = client(&env, &agent, &["wait", "exiter", "--json"], 5);
    assert_eq!(json(&out)["exit_code"], 5);
    let ps = env.ps_json(&agent);
    let sleeper = ps.iter().find(|c| c["id"] == "sleeper").expect("sleeper");
    assert_eq!(sleeper["state"], "RUNNING", "{sleeper}");
    // The record kept the runtime across the restart.
    assert_eq!(sleeper["runtime"], rt, "{sleeper}");

    // Signals reach the command through the runtime.
    client(&env, &agent, &["kill", "sleeper", "-s", "KILL"], 0);
    let t = json(&client(&env, &agent, &["wait", "sleeper", "--json"], 137));
    // gVisor's sandbox process exits 128+N for a command killed by signal
    // N: berth sees an exit code, not the signal.
    if rt != "runsc" {
        assert_eq!(t["signal"], 9, "{t}");
    }
    client(&env, &agent, &["rm", "sleeper"], 0);
    client(&env, &agent, &["rm", "exiter"], 0);
    agent.terminate();
    assert_clean(&env, rt);
}

/// The agent is killed right after the runtime created a container's
/// init, before its start (`launch:after-fork`: the supervisor kills the
/// waiting init), right after the runtime killed a container
/// (`oci:after-kill`) and before the runtime deletes it
/// (`oci:before-delete`): the restarted agent finishes each destroy and
/// the runtime is left with nothing.
fn failpoints_in_the_runtime_steps(rt: &str) {
    require_runtime(rt);
    let env = TestEnv::new(&format!("oci-fp-{rt}"));
    let points = ["launch:after-fork", "oci:after-kill", "oci:before-delete"];
    for (n, point) in points.iter().enumerate() {
        let id = format!("c{n}");
        let mut agent = env.start_agent(point);
        let launch = env
            .berth_client()
            .args([
                "launch",
                "--runtime",
                rt,
                "--name",
                &id,
                "--",
                "sleep",
                "1000",
            ])
            .output()
            .unwrap();
        if *point != "launch:after-fork" {
            expect_code(&launch, 0);
            // The destroy's client sees the agent die.
            let _ = env.berth_client().args(["destroy", &id]).output().unwrap();
        }
        assert!(
            agent.wait_dead(Duration::from_secs(30)),
            "{point} not reached; the agent's log:\n{}",
            agent.log()
        );
        assert!(agent.log().contains(&format!("failpoint {point} reached")));
        let agent = env.start_agent("");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ps = env.ps_json(&agent);
            let c = ps.iter().find(|c| c["id"] == id.as_str());
            match c {
                None => break,
                Some(c) if c["state"] == "TERMINATED" || c["state"] == "DESTROYED" => {
                    client(&env, &agent, &["rm", &id], 0);
                    break;
                }
                Some(c) => {
                    assert!(Instant::now() < deadline, "not destroyed: {c}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        agent.terminate();
    }
    assert_clean(&env, rt);
}

/// `berth run` writing into a file already written to: the command's
/// output lands after what the file held. (runsc writes a donated regular file from offset 0 over it; berth
/// relays such stdio through the supervisor instead.)
fn output_appends_to_a_file(rt: &str) {
    require_runtime(rt);
    let env = TestEnv::new(&format!("oci-file-{rt}"));
    let file = env.path("out.txt");
    std::fs::write(&file, "before-with-a-long-line\n").unwrap();
    // Not O_APPEND (a shell's `>` after an earlier write): the file's
    // offset is where the output must go.
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    let out = env
        .berth()
        .args([
            "run",
            "--runtime",
            rt,
            "--",
            "/bin/sh",
            "-c",
            "echo out; echo err >&2",
        ])
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .output()
        .unwrap();
    expect_code(&out, 0);
    let got = std::fs::read_to_string(&file).unwrap();
    assert!(got.starts_with("before-with-a-long-line\n"), "{got:?}");
    assert!(got.contains("out\n") && got.contains("err\n"), "{got:?}");
    assert_eq!(
        got.len(),
        "before-with-a-long-line\nout\nerr\n".len(),
        "{got:?}"
    );
    assert_clean(&env, rt);
}

/// `--network none`: the network isolator's netns, joined by the runtime
/// through the spec's namespace path: only `lo`, none of the host's
/// interfaces. (It was refused as a nested container.)
fn network_none_is_the_isolators_netns(rt: &str) {
    require_runtime(rt);
    let env = TestEnv::new(&format!("oci-netnone-{rt}"));
    import_busybox(&env);
    let out = run(
        &env,
        rt,
        &[
            "--network",
            "none",
            "--image",
            "busybox",
            "--",
            "/bin/sh",
            "-c",
            "busybox tail -n +3 /proc/net/dev | busybox cut -d: -f1 | busybox tr -d ' '",
        ],
    );
    expect_code(&out, 0);
    assert_eq!(text(&out.stdout), "lo\n", "{}", text(&out.stderr));
    assert_clean(&env, rt);
}

// A module per case holds one test per runtime: `exit_codes::runc`.
macro_rules! per_runtime {
    ($case:ident: $($rt:ident),+) => {
        mod $case {
            $(
                #[test]
                fn $rt() {
                    super::$case(stringify!($rt));
                }
            )+
        }
    };
}

per_runtime!(exit_codes_and_output: native, runc, runsc);
per_runtime!(output_appends_to_a_file: native, runc, runsc);
per_runtime!(missing_command_is_a_start_error: native, runc, runsc);
per_runtime!(image_env_user_workdir_and_volumes: native, runc, runsc);
per_runtime!(memory_limit_is_oom_killed: native, runc, runsc);
// gVisor's sentry is one host process whose threads the pids cgroup
// counts, not the container's processes: not a pids limit there.
per_runtime!(pids_limit_holds: native, runc);
per_runtime!(agent_kill_stats_update_and_recovery: native, runc, runsc);
per_runtime!(failpoints_in_the_runtime_steps: runc, runsc);
per_runtime!(network_none_is_the_isolators_netns: native, runc, runsc);

/// A launch returns once the supervisor is told to release the init; the
/// runtime's `start` may still be under way. runsc refuses to signal a
/// container in state `created`, so a signal or a destroy right after the
/// launch must wait for the start or kill the sandbox itself (CI once
/// left a destroy stuck in DESTROYING). A wrapper holds every `start`
/// half a second to make the race certain.
#[test]
fn runsc_signal_and_destroy_right_after_launch() {
    require_runtime("runsc");
    let env = TestEnv::new("oci-slowstart");
    // Named runsc: berth knows gVisor by its binary's name.
    let dir = env.path("slow");
    std::fs::create_dir(&dir).unwrap();
    let wrapper = dir.join("runsc");
    let runsc = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v runsc"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a; do [ \"$a\" = start ] && sleep 0.5; done\nexec {} \"$@\"\n",
            runsc.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("slowsc={}", wrapper.display());
    let agent = env.start_agent_with("", &["--runtime-path", &path]);
    let launch = |id: &str| {
        client(
            &env,
            &agent,
            &[
                "launch",
                "--runtime",
                "slowsc",
                "--name",
                id,
                "--",
                "sleep",
                "1000",
            ],
            0,
        )
    };
    // A signal while `start` runs reaches the command once it started.
    launch("signalled");
    client(&env, &agent, &["kill", "signalled", "-s", "KILL"], 0);
    let t = json(&client(&env, &agent, &["wait", "signalled", "--json"], 137));
    assert_eq!(t["exit_code"], 137, "{t}");
    // A destroy while `start` runs ends the container.
    launch("destroyed");
    client(&env, &agent, &["destroy", "destroyed"], 0);
    let ps = env.ps_json(&agent);
    for c in &ps {
        assert!(
            c["state"] == "TERMINATED" || c["state"] == "DESTROYED",
            "{c}"
        );
    }
    client(&env, &agent, &["rm", "signalled"], 0);
    client(&env, &agent, &["rm", "destroyed"], 0);
    agent.terminate();
    let leaks = env.leaks();
    assert!(leaks.is_empty(), "leaks: {leaks:#?}");
    let root = env.runtime_dir.join("oci").join("slowsc");
    assert_eq!(
        listed(runsc.trim(), &root),
        "",
        "runsc still lists containers"
    );
}

#[test]
fn runsc_reports_gvisors_kernel_and_refuses_what_gvisor_lacks() {
    require_runtime("runsc");
    require_tool("python3");
    let env = TestEnv::new("oci-gvisor");
    let out = run(&env, "runsc", &["--", "uname", "-r"]);
    expect_code(&out, 0);
    let host = text(
        &std::process::Command::new("uname")
            .arg("-r")
            .output()
            .unwrap()
            .stdout,
    );
    let inside = text(&out.stdout);
    assert_eq!(
        inside.trim(),
        "4.4.0",
        "gVisor's kernel release (host: {host})"
    );
    assert_ne!(inside.trim(), host.trim());
    // fanotify_init(0, 0): gVisor does not implement it (ENOSYS, 38);
    // under berth's own launcher the host's kernel gets it (refused: the
    // container lacks CAP_SYS_ADMIN, or seccomp's EPERM).
    let probe = "import ctypes; l=ctypes.CDLL(None, use_errno=True); \
                 r=l.syscall(300, 0, 0); print(r, ctypes.get_errno())";
    let out = run(&env, "runsc", &["--", "python3", "-c", probe]);
    expect_code(&out, 0);
    assert_eq!(text(&out.stdout).trim(), "-1 38", "{}", text(&out.stderr));
    let out = run(&env, "native", &["--", "python3", "-c", probe]);
    expect_code(&out, 0);
    assert_ne!(
        text(&out.stdout).trim(),
        "-1 38",
        "the host's kernel has fanotify"
    );
    assert_clean(&env, "runsc");
}

/// Docker's default seccomp profile refuses keyctl (EPERM); runc loads
/// the same profile berth's own init does, so the command gets the same.
#[test]
fn runc_applies_the_seccomp_profile() {
    require_runtime("runc");
    require_tool("python3");
    let env = TestEnv::new("oci-seccomp");
    let probe = "import ctypes; l=ctypes.CDLL(None, use_errno=True); \
                 r=l.syscall(250, 0, 0, 0, 0, 0); print(r, ctypes.get_errno())";
    let native = run(&env, "native", &["--", "python3", "-c", probe]);
    expect_code(&native, 0);
    assert_eq!(text(&native.stdout).trim(), "-1 1", "EPERM from the filter");
    let runc = run(&env, "runc", &["--", "python3", "-c", probe]);
    expect_code(&runc, 0);
    assert_eq!(text(&runc.stdout), text(&native.stdout));
    let unconfined = run(
        &env,
        "runc",
        &[
            "--seccomp-profile",
            "unconfined",
            "--",
            "python3",
            "-c",
            probe,
        ],
    );
    expect_code(&unconfined, 0);
    assert_ne!(
        text(&unconfined.stdout).trim(),
        "-1 1",
        "no filter: the kernel's answer"
    );
    assert_clean(&env, "runc");
}

/// A container that runc holds under berth's root for it and that no
/// record names (made here behind berth's back) is an orphan: the agent's
/// recovery kills and deletes it.
#[test]
fn a_runc_container_no_record_names_is_deleted_at_recovery() {
    require_runtime("runc");
    let env = TestEnv::new("oci-orphan");
    let root = env.runtime_dir.join("oci").join("runc");
    std::fs::create_dir_all(&root).unwrap();
    let bundle = env.mkdir("orphan");
    let bin = env.mkdir("orphan/rootfs/bin");
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let out = std::process::Command::new("runc")
        .arg("spec")
        .current_dir(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/busybox", "sleep", "1000"]);
    spec["linux"]["cgroupsPath"] = format!("/{}/orphan", env.cgroup_root).into();
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["run", "--detach", "--bundle"])
        .arg(&bundle)
        .arg("orphan")
        // The container keeps runc's stdio: no pipe this test would wait on.
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(env.path("runc.err")).unwrap())
        .status()
        .unwrap();
    assert!(
        out.success(),
        "runc run: {}",
        std::fs::read_to_string(env.path("runc.err")).unwrap_or_default()
    );
    assert_eq!(listed("runc", &root), "orphan");

    let agent = env.start_agent("");
    assert_eq!(listed("runc", &root), "", "agent log:\n{}", agent.log());
    assert!(env.ps_json(&agent).is_empty());
    agent.terminate();
    assert_clean(&env, "runc");
}

#[test]
fn an_unknown_runtime_is_refused_at_admission() {
    let env = TestEnv::new("oci-unknown");
    let out = run(&env, "kata", &["--", "/bin/true"]);
    expect_code(&out, 125);
    assert!(
        text(&out.stderr).contains("unknown runtime \"kata\""),
        "{}",
        text(&out.stderr)
    );
    let out = env
        .berth()
        .args(["run", "--default-runtime", "nope", "--", "/bin/true"])
        .output()
        .unwrap();
    expect_code(&out, 125);
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
    assert_clean(&env, "native");
}
