//! Two berth states (two `--root`s) never share a cgroup root or a runtime
//! dir: recovery would take the other's containers for orphans and kill
//! them. The second state is refused by name; once the owner's root is
//! gone, the next state takes over.

use berth_tests::TestEnv;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn berth(root: &std::path::Path, runtime: &std::path::Path, cgroup_root: &str) -> Command {
    let mut c = Command::new(berth_tests::berth_bin());
    c.arg("--root")
        .arg(root)
        .arg("--runtime-dir")
        .arg(runtime)
        .arg("--cgroup-root")
        .arg(cgroup_root);
    c
}

fn run_true(mut c: Command) -> Output {
    c.args(["run", "--", "true"]).output().unwrap()
}

#[test]
fn a_second_state_on_a_claimed_cgroup_root_or_runtime_dir_is_refused_and_kills_nothing() {
    let a = TestEnv::new("claim-a");
    let b = TestEnv::new("claim-b");
    // The container has a private /tmp; its working dir is the sandbox.
    let started = a.state_dir.join("sandboxes/keep/started");
    let script = "touch started; trap 'exit 0' TERM; sleep 60 & wait";
    let mut keep = a
        .berth()
        .args(["run", "--name", "keep", "--", "sh", "-c", script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the container did not start");
        assert!(keep.try_wait().unwrap().is_none(), "berth run ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let a_state = std::fs::canonicalize(&a.state_dir).unwrap();

    // b's root on a's cgroup root.
    let out = run_true(berth(&b.state_dir, &b.runtime_dir, &a.cgroup_root));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!(
            "cgroup root \"{}\" belongs to the berth state at {}",
            a.cgroup_root,
            a_state.display()
        )) && err.contains("--cgroup-root"),
        "{err}"
    );
    // b's root on a's runtime dir.
    let out = run_true(berth(&b.state_dir, &a.runtime_dir, &b.cgroup_root));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!(
            "runtime dir {} belongs to the berth state at {}",
            a.runtime_dir.display(),
            a_state.display()
        )) && err.contains("--runtime-dir"),
        "{err}"
    );

    // a's container was left alone: its `berth run` still waits on it.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        keep.try_wait().unwrap().is_none(),
        "a's container was killed"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keep.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = keep.wait_with_output().unwrap();
    assert!(
        !text(&out.stderr).contains("signal 9"),
        "{}",
        text(&out.stderr)
    );
    let leaks = a.leaks();
    assert!(leaks.is_empty(), "{leaks:?}");
}

#[test]
fn a_claim_whose_owner_state_is_gone_is_taken_over() {
    let env = TestEnv::new("claim-over");
    let (first, second) = (env.path("first"), env.path("second"));
    let out = run_true(berth(&first, &env.runtime_dir, &env.cgroup_root));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let claim = berth::cgroup_claim_path(&env.cgroup_root);
    let owner = std::fs::read_to_string(&claim).unwrap();
    assert_eq!(
        owner.trim(),
        std::fs::canonicalize(&first).unwrap().to_str().unwrap()
    );

    // While `first` exists, `second` is refused; once it is removed, not.
    let out = run_true(berth(&second, &env.runtime_dir, &env.cgroup_root));
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&first).unwrap();
    let out = run_true(berth(&second, &env.runtime_dir, &env.cgroup_root));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let owner = std::fs::read_to_string(&claim).unwrap();
    assert_eq!(
        owner.trim(),
        std::fs::canonicalize(&second).unwrap().to_str().unwrap()
    );
}
