//! A part that never answers must not hold a container or the agent: an
//! isolator whose prepare hangs (a CNI config that is a FIFO nobody
//! writes) fails the launch at its deadline as START_ERROR naming the
//! call and the isolator; `berth debug` lists the call while it hangs;
//! SIGTERM stops the agent within its grace whatever is pending, and the
//! next agent leaves nothing behind. `berth run` says why berth ended a
//! container.

use berth_tests::TestEnv;
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A CNI config dir whose only config is a FIFO: reading it blocks.
fn hanging_cni(env: &TestEnv) -> String {
    let dir = env.mkdir("cni");
    let fifo = dir.join("10-hang.conflist");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    dir.display().to_string()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(text(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

fn debug_calls(env: &TestEnv) -> Vec<Value> {
    let out = env
        .berth_client()
        .args(["debug", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    json(&out).as_array().unwrap().clone()
}

#[test]
fn a_hanging_prepare_fails_the_launch_at_its_deadline_and_is_listed_meanwhile() {
    let env = TestEnv::new("stuck-prepare");
    let cni = hanging_cni(&env);
    let agent = env.start_agent_with(
        "",
        &[
            "--cni-config-dir",
            &cni,
            "--step-timeout",
            "prepare=3s",
            "--step-timeout",
            "cleanup=2s",
        ],
    );
    let name = format!("{}-a", env.name);
    let started = Instant::now();
    let launch = env
        .berth_client()
        .args(["launch", "--name", &name, "--network", "hang", "--", "true"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While it hangs, the call is listed with its container and isolator
    // (the quick prepares before it may be caught in flight too).
    let deadline = Instant::now() + Duration::from_secs(3);
    let listed = loop {
        let calls = debug_calls(&env);
        if let Some(c) = calls
            .iter()
            .find(|c| c["container"] == name.as_str() && c["component"] == "network/cni")
        {
            break c.clone();
        }
        assert!(Instant::now() < deadline, "never listed: {calls:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(listed["call"], "prepare", "{listed}");
    assert_eq!(listed["component"], "network/cni", "{listed}");
    assert_eq!(listed["timeout_ms"], 3000, "{listed}");

    let out = launch.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(!out.status.success());
    assert!(
        took < Duration::from_secs(15),
        "the launch took {took:?} with a 3 s deadline"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("prepare of network/cni") && err.contains("did not finish within 3s"),
        "{err}"
    );
    let wait = env
        .berth_client()
        .args(["wait", &name, "--json"])
        .output()
        .unwrap();
    let t = json(&wait);
    assert_eq!(t["reason"], "START_ERROR", "{t}");
    assert_eq!(t["exit_code"], 128, "{t}");
    assert!(
        t["message"].as_str().unwrap().contains("network/cni"),
        "{t}"
    );
    assert!(debug_calls(&env).is_empty());
    let rm = env.berth_client().args(["rm", &name]).output().unwrap();
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    drop(agent);
}

#[test]
fn sigterm_stops_the_agent_within_its_grace_while_a_prepare_hangs() {
    let env = TestEnv::new("stuck-term");
    let cni = hanging_cni(&env);
    let opts = [
        "--cni-config-dir",
        cni.as_str(),
        "--step-timeout",
        "prepare=60s",
    ];
    let agent = env.start_agent_with("", &opts);
    let name = format!("{}-a", env.name);
    let mut launch = env
        .berth_client()
        .args(["launch", "--name", &name, "--network", "hang", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !debug_calls(&env)
        .iter()
        .any(|c| c["container"] == name.as_str() && c["component"] == "network/cni")
    {
        assert!(
            Instant::now() < deadline,
            "the hanging prepare never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    let status = agent.terminate();
    let took = t0.elapsed();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let _ = launch.kill();
    let _ = launch.wait();

    // The next agent ends the launch it finds unfinished; nothing stays
    // once it is removed (TestEnv checks cgroups, mounts and processes).
    let agent = env.start_agent_with(
        "",
        &["--cni-config-dir", &cni, "--step-timeout", "cleanup=2s"],
    );
    let wait = env
        .berth_client()
        .args(["wait", &name, "--json"])
        .output()
        .unwrap();
    let t = json(&wait);
    assert_ne!(t["reason"], "COMPLETED", "{t}");
    let rm = env.berth_client().args(["rm", &name]).output().unwrap();
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    let sandboxes = env.state_dir.join("sandboxes");
    let left: Vec<_> = std::fs::read_dir(&sandboxes)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "sandboxes left: {left:?}");
    drop(agent);
}

#[test]
fn berth_run_says_why_berth_ended_its_container_and_bad_deadlines_are_refused() {
    let env = TestEnv::new("stuck-run");
    let cni = hanging_cni(&env);
    let out = env
        .berth()
        .args([
            "run",
            "--cni-config-dir",
            &cni,
            "--step-timeout",
            "prepare=1s",
        ])
        .args(["--network", "hang", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(128));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line, said once: {err}");
    assert!(
        lines[0].contains("START_ERROR: prepare of network/cni failed: did not finish within 1s"),
        "{err}"
    );
    // A command that cannot start: the reason on stderr too.
    let out = env
        .berth()
        .args(["run", "--", "/nonexistent-command"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(128));
    assert!(
        text(&out.stderr).contains("START_ERROR") && !text(&out.stderr).contains("\u{1b}["),
        "no colours in a pipe: {}",
        text(&out.stderr)
    );
    for (bad, says) in [
        ("bogus=1s", "not a call kind"),
        ("prepare=5x", "duration"),
        ("prepare=0s", "zero"),
        ("prepare", "NAME=DURATION"),
    ] {
        let out = Command::new(berth_tests::berth_bin())
            .args(["agent", "--step-timeout", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad} accepted");
        assert!(
            text(&out.stderr).contains(says),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
}
