//! no_new_privs and its opt-out (`--allow-privilege-escalation`): a
//! static setuid-root program (tests/data/euid.c) run as uid 1000 stays
//! uid 1000 by default and becomes root only with the opt-out, natively
//! and under runc; the seccomp filter is loaded either way.

use berth_tests::{import_busybox, require_tool, TestEnv};
use std::path::PathBuf;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `<temp>/bin/euid`: tests/data/euid.c built static, setuid root.
fn setuid_euid(env: &TestEnv) -> PathBuf {
    require_tool("gcc");
    let dir = env.mkdir("bin");
    let bin = dir.join("euid");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/data/euid.c");
    let out = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(src)
        .output()
        .unwrap();
    assert!(out.status.success(), "gcc: {}", text(&out.stderr));
    std::os::unix::fs::chown(&bin, Some(0), Some(0)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755)).unwrap();
    dir
}

#[test]
fn a_setuid_program_escalates_only_with_the_opt_out() {
    let env = TestEnv::new("nnp");
    import_busybox(&env);
    let dir = setuid_euid(&env);
    let d = dir.display().to_string();
    let volume = format!("{d}:/tmp/bin:ro");
    let script = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; /tmp/bin/euid";
    for (what, extra) in [
        ("host filesystem", vec![]),
        ("image", vec!["--image", "busybox"]),
        ("runc", vec!["--image", "busybox", "--runtime", "runc"]),
    ] {
        for allow in [false, true] {
            let mut c = env.berth();
            c.args([
                "run",
                "--volume-allow-ro",
                &d,
                "-v",
                &volume,
                "--user",
                "1000",
            ]);
            c.args(&extra);
            if allow {
                c.arg("--allow-privilege-escalation");
            }
            let out = c.args(["--", "sh", "-c", script]).output().unwrap();
            let (o, e) = (text(&out.stdout), text(&out.stderr));
            assert_eq!(out.status.code(), Some(0), "{what} {allow}: {o}{e}");
            let want_nnp = if allow { "0" } else { "1" };
            let want_euid = if allow { "0" } else { "1000" };
            let field = |k: &str| {
                o.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_else(|| panic!("{what} {allow}: no {k} in {o}"))
            };
            assert_eq!(field("NoNewPrivs:"), want_nnp, "{what} {allow}: {o}");
            // The default profile is loaded with or without no_new_privs.
            assert_eq!(field("Seccomp:"), "2", "{what} {allow}: {o}");
            assert_eq!(field("Effective uid:"), want_euid, "{what} {allow}: {o}");
        }
    }
}
