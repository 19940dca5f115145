//! `berth checkpoint` / `berth restore` with CRIU: a counter container
//! moved to a second berth root and agent (standing in for another node)
//! continues from where it was, with its rootfs changes; `--leave-running`;
//! what CRIU cannot dump is a clear error with its log kept; an agent
//! killed during a checkpoint or a restore leaves the source running and
//! nothing leaked.
//!
//! CRIU 4.2 is built by scripts/test (`../shared/peers/build-criu`) into
//! `target/criu/criu`, or named by `BERTH_CRIU`.

use berth_tests::{import_busybox, Agent, TestEnv};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Counts from the number in /n (1 when absent), writing each to /n and
/// stdout every 100 ms; /before is written once, first.
const COUNTER: &str = "echo kept > /before; i=$(cat /n 2>/dev/null || echo 0); \
                       while true; do i=$((i+1)); echo $i > /n; echo $i; sleep 0.1; done";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The CRIU binary the tests use; panics (never skips) without one.
fn criu() -> PathBuf {
    let p = std::env::var_os("BERTH_CRIU")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criu/criu"));
    assert!(
        p.is_file(),
        "the checkpoint tests need CRIU 4.2 at {} (scripts/test builds it with \
         ../shared/peers/build-criu; or set BERTH_CRIU)",
        p.display()
    );
    p
}

fn agent(env: &TestEnv, failpoints: &str) -> Agent {
    let criu = criu();
    env.start_agent_with(failpoints, &["--criu-path", criu.to_str().unwrap()])
}

fn launch_counter(env: &TestEnv, agent: &Agent, name: &str) {
    env.client_expect(
        agent,
        &[
            "launch",
            "--name",
            name,
            "--image",
            "busybox",
            "--network",
            "none",
            "--",
            "sh",
            "-c",
            COUNTER,
        ],
        0,
    );
}

/// The numbers the container printed so far (its sandbox's stdout log).
fn printed(env: &TestEnv, name: &str) -> Vec<u64> {
    std::fs::read_to_string(env.state_dir.join("sandboxes").join(name).join("stdout"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(env: &TestEnv, agent: &Agent, name: &str) -> String {
    env.ps_json(agent)
        .into_iter()
        .find(|c| c["id"] == name)
        .map(|c| c["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| "absent".into())
}

/// The new container's rootfs (the provisioner's overlay) on the host.
fn rootfs(env: &TestEnv, name: &str) -> PathBuf {
    env.state_dir
        .join("images/containers")
        .join(name)
        .join("rootfs")
}

fn destroy_and_remove(env: &TestEnv, agent: &Agent, name: &str) {
    env.client_expect(agent, &["destroy", name], 0);
    env.client_expect(agent, &["rm", name], 0);
}

#[test]
fn a_counter_moves_to_another_agent_and_continues_with_its_rootfs() {
    let src = TestEnv::new("ck-move-src");
    let dst = TestEnv::new("ck-move-dst");
    import_busybox(&src);
    import_busybox(&dst);
    let a = agent(&src, "");
    let b = agent(&dst, "");
    let name = format!("{}-c", src.name);
    launch_counter(&src, &a, &name);
    wait_until("the counter to pass 5", Duration::from_secs(20), || {
        printed(&src, &name).len() >= 5
    });

    // A watcher of the source's events sees CHECKPOINTING.
    let mut events = src
        .berth_client()
        .args(["events", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let images = src.path("images");
    let started = Instant::now();
    let out = src.client_expect(
        &a,
        &[
            "checkpoint",
            &name,
            "--image-dir",
            images.to_str().unwrap(),
            "--json",
        ],
        0,
    );
    let took = started.elapsed();
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("checkpoint: {said} in {took:?}");
    assert!(images.join("dump.log").is_file(), "CRIU's log stays");
    assert!(images.join("berth.checkpoint").is_file());
    // Destroyed (no --leave-running), without running on past the dump.
    wait_until("the source to terminate", Duration::from_secs(20), || {
        state(&src, &a, &name) == "TERMINATED"
    });
    let before = printed(&src, &name);
    let last = *before.last().unwrap();
    let _ = events.kill();
    let seen = events.wait_with_output().unwrap();
    assert!(
        text(&seen.stdout).contains("CHECKPOINTING"),
        "events: {}",
        text(&seen.stdout)
    );

    // Restored under the other root and agent, under another name.
    let moved = format!("{}-r", dst.name);
    let started = Instant::now();
    dst.client_expect(
        &b,
        &[
            "restore",
            "--name",
            &moved,
            "--from",
            images.to_str().unwrap(),
        ],
        0,
    );
    eprintln!("restore: {:?}", started.elapsed());
    assert_eq!(state(&dst, &b, &moved), "RUNNING");
    wait_until(
        "the restored counter to print",
        Duration::from_secs(20),
        || printed(&dst, &moved).len() >= 3,
    );
    let after = printed(&dst, &moved);
    assert_eq!(
        after[0],
        last + 1,
        "the restored counter goes on from {last} (printed before: {before:?}, after: {after:?})"
    );
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    // Its rootfs changes came along: the file written before, and /n.
    let r = rootfs(&dst, &moved);
    assert_eq!(
        std::fs::read_to_string(r.join("before")).unwrap().trim(),
        "kept"
    );

    // A berth container like any other: recovered after an agent restart.
    b.kill9();
    let b = agent(&dst, "");
    assert_eq!(state(&dst, &b, &moved), "RUNNING");
    let n = printed(&dst, &moved).len();
    wait_until(
        "the counter to go on after the restart",
        Duration::from_secs(20),
        || printed(&dst, &moved).len() > n + 2,
    );
    let out = dst.client_expect(&b, &["destroy", &moved, "--json"], 0);
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["reason"], "DESTROYED", "{t}");
    dst.client_expect(&b, &["rm", &moved], 0);
    src.client_expect(&a, &["rm", &name], 0);
}

#[test]
fn leave_running_keeps_the_source_and_refusals_are_clear() {
    let env = TestEnv::new("ck-leave");
    import_busybox(&env);
    let a = agent(&env, "");
    let name = format!("{}-c", env.name);
    launch_counter(&env, &a, &name);
    wait_until("the counter to print", Duration::from_secs(20), || {
        printed(&env, &name).len() >= 3
    });
    let images = env.path("images");
    env.client_expect(
        &a,
        &[
            "checkpoint",
            &name,
            "--image-dir",
            images.to_str().unwrap(),
            "--leave-running",
        ],
        0,
    );
    assert_eq!(state(&env, &a, &name), "RUNNING");
    let n = printed(&env, &name).len();
    wait_until("the source to go on", Duration::from_secs(20), || {
        printed(&env, &name).len() > n + 2
    });

    // The same dir again: refused, nothing mixed into it.
    let out = env.client_expect(
        &a,
        &["checkpoint", &name, "--image-dir", images.to_str().unwrap()],
        125,
    );
    assert!(
        text(&out.stderr).contains("is not empty"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(state(&env, &a, &name), "RUNNING");

    // A restore under a name in use is refused before anything is made.
    let out = env.client_expect(
        &a,
        &[
            "restore",
            "--name",
            &name,
            "--from",
            images.to_str().unwrap(),
        ],
        125,
    );
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    // A dir that is no checkpoint is named.
    let bogus = env.mkdir("bogus");
    let out = env.client_expect(
        &a,
        &["restore", "--name", "x", "--from", bogus.to_str().unwrap()],
        125,
    );
    assert!(
        text(&out.stderr).contains("berth.checkpoint"),
        "{}",
        text(&out.stderr)
    );

    // A host-filesystem container is refused with the reason.
    let host = format!("{}-h", env.name);
    env.client_expect(&a, &["launch", "--name", &host, "--", "sleep", "60"], 0);
    let out = env.client_expect(
        &a,
        &[
            "checkpoint",
            &host,
            "--image-dir",
            env.path("h").to_str().unwrap(),
        ],
        125,
    );
    assert!(
        text(&out.stderr).contains("host filesystem"),
        "{}",
        text(&out.stderr)
    );

    // An established TCP connection: CRIU refuses; its log is kept and
    // quoted; the container runs on (thawed).
    let tcp = format!("{}-t", env.name);
    env.client_expect(
        &a,
        &[
            "launch",
            "--name",
            &tcp,
            "--image",
            "busybox",
            "--network",
            "none",
            "--",
            "sh",
            "-c",
            "sleep 1000 | busybox nc -l -p 7000 & sleep 0.3; \
             sleep 1000 | busybox nc 127.0.0.1 7000 & while true; do sleep 1; done",
        ],
        0,
    );
    std::thread::sleep(Duration::from_secs(1));
    let tcp_images = env.path("tcp-images");
    let out = env.client_expect(
        &a,
        &[
            "checkpoint",
            &tcp,
            "--image-dir",
            tcp_images.to_str().unwrap(),
        ],
        125,
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("criu dump failed") && err.contains("--tcp-established"),
        "{err}"
    );
    assert!(
        err.contains(&tcp_images.join("dump.log").display().to_string()),
        "{err}"
    );
    assert!(tcp_images.join("dump.log").is_file());
    assert_eq!(state(&env, &a, &tcp), "RUNNING");
    let frozen =
        std::fs::read_to_string(env.cgroup_dir("freezer").join(&tcp).join("freezer.state"))
            .unwrap();
    assert_eq!(frozen.trim(), "THAWED");

    for n in [&name, &host, &tcp] {
        destroy_and_remove(&env, &a, n);
    }
}

#[test]
fn an_agent_killed_while_the_container_is_frozen_for_a_checkpoint_thaws_it_on_recovery() {
    let env = TestEnv::new("ck-fp-dump");
    import_busybox(&env);
    let mut a = agent(&env, "checkpoint:frozen");
    let name = format!("{}-c", env.name);
    launch_counter(&env, &a, &name);
    wait_until("the counter to print", Duration::from_secs(20), || {
        printed(&env, &name).len() >= 3
    });
    let images = env.path("images");
    let out = env
        .berth_client()
        .args(["checkpoint", &name, "--image-dir", images.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the agent died mid-checkpoint");
    assert!(
        a.wait_dead(Duration::from_secs(10)),
        "the failpoint killed the agent"
    );
    drop(a);
    let a = agent(&env, "");
    assert_eq!(state(&env, &a, &name), "RUNNING");
    let n = printed(&env, &name).len();
    wait_until(
        "the source to go on (thawed)",
        Duration::from_secs(20),
        || printed(&env, &name).len() > n + 2,
    );
    destroy_and_remove(&env, &a, &name);
}

#[test]
fn an_agent_killed_during_a_restore_destroys_the_half_restored_container() {
    let src = TestEnv::new("ck-fp-rs-src");
    let dst = TestEnv::new("ck-fp-rs-dst");
    import_busybox(&src);
    import_busybox(&dst);
    let a = agent(&src, "");
    let name = format!("{}-c", src.name);
    launch_counter(&src, &a, &name);
    wait_until("the counter to print", Duration::from_secs(20), || {
        printed(&src, &name).len() >= 3
    });
    let images = src.path("images");
    src.client_expect(
        &a,
        &[
            "checkpoint",
            &name,
            "--image-dir",
            images.to_str().unwrap(),
            "--leave-running",
        ],
        0,
    );

    let mut b = agent(&dst, "restore:after-rootfs");
    let moved = format!("{}-r", dst.name);
    let out = dst
        .berth_client()
        .args([
            "restore",
            "--name",
            &moved,
            "--from",
            images.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the agent died mid-restore");
    assert!(b.wait_dead(Duration::from_secs(10)));
    drop(b);
    let b = agent(&dst, "");
    wait_until(
        "the half-restored container to be destroyed",
        Duration::from_secs(20),
        || state(&dst, &b, &moved) == "TERMINATED",
    );
    dst.client_expect(&b, &["rm", &moved], 0);
    // The source is untouched; the image dir restores afterwards.
    assert_eq!(state(&src, &a, &name), "RUNNING");
    let again = format!("{}-r2", dst.name);
    dst.client_expect(
        &b,
        &[
            "restore",
            "--name",
            &again,
            "--from",
            images.to_str().unwrap(),
        ],
        0,
    );
    wait_until(
        "the second restore to print",
        Duration::from_secs(20),
        || !printed(&dst, &again).is_empty(),
    );
    destroy_and_remove(&dst, &b, &again);
    destroy_and_remove(&src, &a, &name);
}
