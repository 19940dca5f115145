//! `volume/host_path` through `berth run`: allow-lists, malformed specs,
//! `..` escapes, and ro/rw volumes on the real kernel.

use berth_tests::TestEnv;
use std::process::Output;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `berth [global…] run [args…] -- sh -c script`.
fn run(env: &TestEnv, global: &[&str], args: &[&str], script: &str) -> Output {
    env.berth()
        .arg("run")
        .args(global)
        .args(args)
        .args(["--", "sh", "-c", script])
        .output()
        .expect("run berth")
}

#[test]
fn rw_volume_can_be_written_and_ro_cannot() {
    let env = TestEnv::new("vol-rw-ro");
    let rw = env.mkdir("rw");
    let ro = env.mkdir("ro");
    std::fs::write(ro.join("given"), "from the host\n").unwrap();
    let (rw_s, ro_s) = (rw.display().to_string(), ro.display().to_string());
    let global = ["--volume-allow-rw", &rw_s, "--volume-allow-ro", &ro_s];

    let spec = format!("{rw_s}:/tmp/data:rw");
    let out = run(
        &env,
        &global,
        &["-v", &spec],
        "echo written > /tmp/data/out",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(rw.join("out")).unwrap(),
        "written\n"
    );

    let spec = format!("{ro_s}:/tmp/data:ro");
    let out = run(
        &env,
        &global,
        &["-v", &spec],
        "cat /tmp/data/given; echo no > /tmp/data/out 2>&1 || echo refused >&2; \
         test ! -e /tmp/data/out",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from the host\n");
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );
    assert!(!ro.join("out").exists(), "the ro volume was written");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("/tmp/data"),
        "a volume mount leaked to the host"
    );
}

#[test]
fn volumes_outside_the_allow_list_are_refused() {
    let env = TestEnv::new("vol-deny");
    let ro = env.mkdir("ro");
    let ro_s = ro.display().to_string();
    // Default: nothing but the sandbox is allowed.
    let out = run(&env, &[], &["-v", "/etc:/tmp/etc:ro"], "true");
    assert_eq!(out.status.code(), Some(128));
    let err = text(&out.stderr);
    assert!(
        err.contains("/etc") && err.contains("not under an allowed"),
        "{err}"
    );
    // A read-only allowance does not allow read-write.
    let spec = format!("{ro_s}:/tmp/data");
    let out = run(&env, &["--volume-allow-ro", &ro_s], &["-v", &spec], "true");
    assert_eq!(out.status.code(), Some(128));
    let err = text(&out.stderr);
    assert!(err.contains("read-write") && err.contains(&ro_s), "{err}");
    // A symlink inside the allowed dir that leads out of it is resolved first.
    std::os::unix::fs::symlink("/etc", ro.join("etc")).unwrap();
    let spec = format!("{ro_s}/etc:/tmp/etc:ro");
    let out = run(&env, &["--volume-allow-ro", &ro_s], &["-v", &spec], "true");
    assert_eq!(out.status.code(), Some(128), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not under an allowed"));
    // A missing or relative source.
    let spec = format!("{ro_s}/missing:/tmp/x:ro");
    let out = run(&env, &["--volume-allow-ro", &ro_s], &["-v", &spec], "true");
    assert_eq!(out.status.code(), Some(128));
    assert!(text(&out.stderr).contains("cannot be resolved"));
    let out = run(&env, &[], &["-v", "rel/dir:/tmp/x:ro"], "true");
    assert_eq!(out.status.code(), Some(128));
    assert!(text(&out.stderr).contains("not an absolute path"));
}

#[test]
fn malformed_specs_and_dot_dot_destinations_are_refused() {
    let env = TestEnv::new("vol-bad");
    let rw = env.mkdir("rw");
    let rw_s = rw.display().to_string();
    let global = ["--volume-allow-rw", rw_s.as_str()];
    for (spec, says) in [
        (rw_s.clone(), "SRC:DST"),
        (format!("{rw_s}:/tmp/x:rx"), "rx"),
        (format!("{rw_s}:/tmp/x:ro:extra"), "SRC:DST"),
        (":/tmp/x".to_string(), "must not be empty"),
    ] {
        let out = run(&env, &global, &["-v", &spec], "true");
        assert_eq!(out.status.code(), Some(2), "{spec}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(&spec) && err.contains(says), "{spec}: {err}");
    }
    for (dst, says) in [
        ("/tmp/../etc", "may not contain \"..\""),
        // Relative: a path in the sandbox, which `..` would leave.
        ("data/../../etc", "may not contain \"..\""),
    ] {
        let spec = format!("{rw_s}:{dst}");
        let out = run(&env, &global, &["-v", &spec], "true");
        assert_eq!(out.status.code(), Some(128), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(says) && err.contains(dst), "{dst}: {err}");
    }
}
