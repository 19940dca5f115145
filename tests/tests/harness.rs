//! The harness's leak check must catch what a sloppy test leaves behind,
//! or every other test's "clean" verdict means nothing.

use berth_tests::TestEnv;
use std::fs;
use std::process::Command;

fn mount_tmpfs(at: &std::path::Path) {
    nix::mount::mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
}

#[test]
fn leaked_cgroup_dir_is_reported_then_clean() {
    let env = TestEnv::new("leaked_cgroup_dir");
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
    // The root dir itself is the harness's, not a leak.
    let root = env.cgroup_dir("pids");
    fs::create_dir(&root).unwrap();
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
    let leaked = root.join("c1");
    fs::create_dir(&leaked).unwrap();
    let leaks = env.leaks();
    assert!(
        leaks.contains(&format!("cgroup {}", leaked.display())),
        "{leaks:?}"
    );
    fs::remove_dir(&leaked).unwrap();
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
    drop(env);
    assert!(!root.exists(), "the harness removes its cgroup roots");
}

#[test]
fn leaked_cgroup_dir_in_cgroup2_is_reported() {
    let env = TestEnv::new("leaked_cgroup2_dir");
    let leaked = env.cgroup_dir("unified").join("c1");
    fs::create_dir_all(&leaked).unwrap();
    let leaks = env.leaks();
    assert!(
        leaks.contains(&format!("cgroup {}", leaked.display())),
        "{leaks:?}"
    );
    fs::remove_dir(&leaked).unwrap();
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
}

#[test]
fn leaked_mount_is_reported_then_clean() {
    let env = TestEnv::new("leaked_mount");
    let m = env.mkdir("m");
    mount_tmpfs(&m);
    let leaks = env.leaks();
    assert!(
        leaks.contains(&format!("mount {}", m.display())),
        "{leaks:?}"
    );
    nix::mount::umount(&m).unwrap();
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
}

#[test]
fn process_naming_the_runtime_dir_is_a_leak() {
    let env = TestEnv::new("leaked_process");
    // Like a supervisor: the runtime dir is in its argv.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("sleep 30")
        .arg(&env.runtime_dir)
        .spawn()
        .unwrap();
    // Until the child has exec'd, its cmdline is still the test's: poll.
    let named = |leaks: &[String]| {
        leaks
            .iter()
            .any(|l| l.starts_with(&format!("process {}:", child.id())) && l.contains("cmdline"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut leaks = env.leaks();
    while !named(&leaks) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        leaks = env.leaks();
    }
    assert!(named(&leaks), "{leaks:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
}

#[test]
fn process_with_cwd_in_temp_dir_is_a_leak() {
    let env = TestEnv::new("cwd_leak");
    let mut child = Command::new("sleep")
        .arg("30")
        .current_dir(&env.temp_dir)
        .spawn()
        .unwrap();
    let leaks = env.leaks();
    assert!(
        leaks
            .iter()
            .any(|l| l.starts_with(&format!("process {}:", child.id())) && l.contains("cwd")),
        "{leaks:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
}

/// A leaking test fails (Drop panics), and the harness still cleans up
/// everything so the next test starts from a clean machine.
#[test]
fn drop_fails_a_leaking_test_and_cleans_anyway() {
    let env = TestEnv::new("drop_cleans");
    let temp = env.temp_dir.clone();
    let cg_root = env.cgroup_dir("memory");
    let cg = cg_root.join("nested").join("deeper");
    fs::create_dir_all(&cg).unwrap();
    let m = env.mkdir("mnt");
    mount_tmpfs(&m);
    // A process inside the leaked cgroup, with its cwd in the leaked mount.
    let mut child = Command::new("sleep")
        .arg("30")
        .current_dir(&m)
        .spawn()
        .unwrap();
    fs::write(cg.join("cgroup.procs"), child.id().to_string()).unwrap();
    let pid = child.id();
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(env)))
        .expect_err("a leaking test must fail");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    for want in [
        format!("leaked process {pid}:"),
        format!("leaked mount {}", m.display()),
        format!("leaked cgroup {}", cg.display()),
    ] {
        assert!(msg.contains(&want), "missing {want:?} in:\n{msg}");
    }
    // The cleanup killed the child; reap it.
    assert!(!child.wait().unwrap().success());
    assert!(!temp.exists(), "temp dir removed");
    assert!(!cg_root.exists(), "cgroup root removed");
}

#[test]
fn require_tool_finds_sh_and_names_what_is_missing() {
    berth_tests::require_tool("sh");
    let err = std::panic::catch_unwind(|| berth_tests::require_tool("no-such-tool-xyz"))
        .expect_err("missing tool must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert_eq!(
        msg,
        "test needs `no-such-tool-xyz`; run scripts/test, which installs it"
    );
}
