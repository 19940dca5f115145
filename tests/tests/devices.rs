//! `--device HOST[:CONTAINER][:rwm]` seen from inside real containers: the
//! node is the container's own (mknod in its /dev), the device cgroup
//! allows what was asked and nothing more, bad specs are refused at
//! STARTING naming the problem. Needs the host's `/dev/loop-control`
//! (char 10:237, the loop driver).

use berth_tests::{require_tool, TestEnv};
use std::os::unix::fs::FileTypeExt;
use std::process::Output;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn both(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Fails clearly when the host has no loop-control node to give.
fn require_loop_control() {
    let md = std::fs::metadata("/dev/loop-control").unwrap_or_else(|e| {
        panic!("these tests need the host's /dev/loop-control (modprobe loop): {e}")
    });
    assert!(
        md.file_type().is_char_device(),
        "/dev/loop-control is not a character device"
    );
}

fn run(env: &TestEnv, args: &[&str], script: &str) -> Output {
    env.berth()
        .arg("run")
        .args(args)
        .args(["--", "sh", "-c", script])
        .output()
        .expect("run berth")
}

/// `busybox stat` prints the numbers in hex: 10:237 is `a:ed`.
const LOOP_CONTROL: &str = "a:ed";

#[test]
fn devices_in_an_image_container_are_allowed_as_asked_and_nothing_else() {
    require_tool("umoci");
    require_loop_control();
    let env = TestEnv::new("dev-image");
    berth_tests::import_busybox(&env);
    let img = ["--image", "busybox"];

    // The default permissions: rwm.
    let out = run(
        &env,
        &[&img[..], &["--device", "/dev/loop-control"]].concat(),
        "busybox stat -c '%F %t:%T' /dev/loop-control; \
         sh -c ': <> /dev/loop-control' && echo rw-ok",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert!(
        stdout.contains(&format!("character special file {LOOP_CONTROL}\n")),
        "{}",
        both(&out)
    );
    assert!(stdout.contains("rw-ok"), "{}", both(&out));

    // Without --device: no node, and the device cgroup refuses making one.
    let out = run(
        &env,
        &img,
        "busybox ls /dev/loop-control >/dev/null 2>&1; echo ls=$?; \
         busybox mknod /dev/lc c 10 237 2>&1; echo mknod=$?; \
         sh -c ': < /dev/lc' 2>/dev/null; echo open=$?",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert!(stdout.contains("ls=1"), "{}", both(&out));
    assert!(
        stdout.contains("Operation not permitted") && stdout.contains("mknod=1"),
        "{}",
        both(&out)
    );
    assert!(!stdout.contains("open=0"), "{}", both(&out));

    // Read-only, at another path: reading works, writing and mknod do not
    // (the m berth needed to make the node was taken back).
    let out = run(
        &env,
        &[&img[..], &["--device", "/dev/loop-control:/dev/mylc:r"]].concat(),
        "busybox stat -c '%t:%T' /dev/mylc; busybox ls /dev/loop-control 2>/dev/null; \
         sh -c ': < /dev/mylc' && echo ro-ok; \
         sh -c ': <> /dev/mylc' 2>&1; echo rw=$?; \
         busybox mknod /dev/again c 10 237 2>&1; echo mknod=$?",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert!(
        stdout.starts_with(&format!("{LOOP_CONTROL}\n")),
        "{}",
        both(&out)
    );
    assert!(stdout.contains("ro-ok"), "{}", both(&out));
    assert!(
        stdout.contains("Operation not permitted") && !stdout.contains("rw=0"),
        "writing must fail with EPERM: {}",
        both(&out)
    );
    assert!(stdout.contains("mknod=1"), "{}", both(&out));
}

#[test]
fn bad_devices_are_refused_naming_the_problem() {
    let env = TestEnv::new("dev-bad");
    for (spec, why) in [
        (
            "/etc/passwd",
            "device /etc/passwd: not a character or block device",
        ),
        ("/nonexistent", "device /nonexistent: No such file"),
        (
            "/dev/null:relative",
            "container path \"relative\" is not absolute",
        ),
        (
            "/dev/null:/dev/x:rwx",
            "permissions \"rwx\" must be a non-empty subset of \"rwm\"",
        ),
        ("/dev/null:/etc/null", "\"/etc/null\" is not below /dev"),
        ("/dev/null:/dev/shm/x", "one of berth's own /dev entries"),
    ] {
        let out = run(&env, &["--device", spec], "true");
        assert_eq!(out.status.code(), Some(125), "{spec}: {}", both(&out));
        assert!(text(&out.stderr).contains(why), "{spec}: {}", both(&out));
    }
    let out = run(&env, &["--device", "/a:/b:r:w"], "true");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("expected HOST[:CONTAINER][:rwm]"),
        "{}",
        both(&out)
    );
}

#[test]
fn a_device_on_the_host_filesystem_and_through_the_agent() {
    require_loop_control();
    let env = TestEnv::new("dev-host");
    // The host's /dev is not the container's: only the asked node, at
    // its container path, in a directory made for it.
    let script = "busybox stat -c '%F %t:%T %a' /dev/x/lc; \
                  test -e /dev/loop-control || echo no-host-node; \
                  sh -c ': <> /dev/x/lc' && echo rw-ok; \
                  busybox mknod /dev/again c 10 237 2>/dev/null; echo mknod=$?";
    let out = run(
        &env,
        &["--device", "/dev/loop-control:/dev/x/lc:rw"],
        script,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata("/dev/loop-control").unwrap();
        format!("{:o}", m.permissions().mode() & 0o777)
    };
    assert!(
        stdout.contains(&format!("character special file {LOOP_CONTROL} {mode}\n")),
        "the node keeps the host's mode {mode}: {}",
        both(&out)
    );
    for want in ["no-host-node", "rw-ok", "mknod=1"] {
        assert!(stdout.contains(want), "{want}: {}", both(&out));
    }

    // `berth launch` carries it through the API.
    let agent = env.start_agent("");
    let launch = env
        .berth_client()
        .args(["launch", "--name", "devs"])
        .args(["--device", "/dev/loop-control:/dev/lc"])
        .args(["--", "sh", "-c", "busybox stat -c '%t:%T' /dev/lc"])
        .output()
        .unwrap();
    assert!(
        launch.status.success(),
        "{}\n{}",
        both(&launch),
        agent.log()
    );
    let wait = env.berth_client().args(["wait", "devs"]).output().unwrap();
    assert_eq!(wait.status.code(), Some(0), "{}", both(&wait));
    let stdout = env.state_dir.join("sandboxes/devs/stdout");
    let shown =
        std::fs::read_to_string(&stdout).unwrap_or_else(|e| panic!("{}: {e}", stdout.display()));
    assert_eq!(shown, format!("{LOOP_CONTROL}\n"));
    let bad = env
        .berth_client()
        .args(["launch", "--name", "bad", "--device", "/etc/passwd"])
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        text(&bad.stderr).contains("not a character or block device"),
        "{}",
        both(&bad)
    );
    let rm = env.berth_client().args(["rm", "devs"]).output().unwrap();
    assert!(rm.status.success(), "{}", both(&rm));
    agent.terminate();
}
