//! The example isolator plugin (containerizer/examples/greeter_isolator.rs)
//! runs a real container whose command sees what the plugin contributed.

use berth_tests::TestEnv;
use std::process::Command;

#[test]
fn greeter_plugin_sets_env_and_writes_into_the_sandbox() {
    let env = TestEnv::new("example-greeter");
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|d| d.join("examples").join("greeter_isolator"))
        .unwrap();
    assert!(
        example.exists(),
        "{} is missing: `cargo test --workspace` builds it",
        example.display()
    );
    let out = Command::new(&example)
        .arg(&env.state_dir)
        .arg(&env.runtime_dir)
        .arg(&env.cgroup_root)
        .env(
            "BERTH_SUPERVISOR",
            env!("CARGO_BIN_EXE_berth-test-supervisor"),
        )
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the greeter plugin\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}
