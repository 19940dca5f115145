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
    src.client_expect(
        &a,
        &[
            "launch",
            "--name",
            &name,
            "--image",
            "busybox",
            "--network",
            "none",
            "--memory",
            "48M",
            "--",
            "sh",
            "-c",
            COUNTER,
        ],
        0,
    );
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
    let listed = dst.ps_json(&b);
    assert_eq!(
        listed[0]["restored_from"],
        images.display().to_string(),
        "{listed:?}"
    );
    // Its processes are in the new container's cgroups, with its limits.
    let pid = listed[0]["pid"].as_i64().unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mem = dst.cgroup_dir("memory").join(&moved);
    assert!(
        cgroups
            .lines()
            .any(|l| l.ends_with(&format!(":memory:/{}/{moved}", dst.cgroup_root))),
        "{cgroups}"
    );
    assert_eq!(
        std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        (48u64 << 20).to_string()
    );
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

    // berth's --init as pid 1: refused with the reason.
    let init = format!("{}-i", env.name);
    env.client_expect(
        &a,
        &[
            "launch", "--name", &init, "--init", "--image", "busybox", "--", "sleep", "60",
        ],
        0,
    );
    let out = env.client_expect(
        &a,
        &[
            "checkpoint",
            &init,
            "--image-dir",
            env.path("i").to_str().unwrap(),
        ],
        125,
    );
    assert!(
        text(&out.stderr).contains("berth's init"),
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

    for n in [&name, &host, &init, &tcp] {
        destroy_and_remove(&env, &a, n);
    }
}

/// The agent SIGKILLed with CHECKPOINTING durable (`checkpoint:before-dump`)
/// and with the container frozen, its rootfs saved (`checkpoint:frozen`):
/// the next agent finds it RUNNING (thawed) and a new checkpoint works.
#[test]
fn an_agent_killed_during_a_checkpoint_leaves_the_source_running() {
    let env = TestEnv::new("ck-fp-dump");
    import_busybox(&env);
    let name = format!("{}-c", env.name);
    let a = agent(&env, "");
    launch_counter(&env, &a, &name);
    wait_until("the counter to print", Duration::from_secs(20), || {
        printed(&env, &name).len() >= 3
    });
    drop(a);
    for point in ["checkpoint:before-dump", "checkpoint:frozen"] {
        let mut a = agent(&env, point);
        let images = env.path(point.replace(':', "-"));
        let out = env
            .berth_client()
            .args(["checkpoint", &name, "--image-dir", images.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{point}: the agent died mid-checkpoint"
        );
        assert!(
            a.wait_dead(Duration::from_secs(10)),
            "{point}: the failpoint killed the agent"
        );
        drop(a);
        let a = agent(&env, "");
        assert_eq!(state(&env, &a, &name), "RUNNING", "{point}");
        let n = printed(&env, &name).len();
        wait_until(
            &format!("the source to go on (thawed) after {point}"),
            Duration::from_secs(20),
            || printed(&env, &name).len() > n + 2,
        );
        drop(a);
    }
    let a = agent(&env, "");
    let images = env.path("after");
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

/// A network namespace of the test's own (`ip netns add`), deleted on
/// drop: the CNI bridges and veths live there, never on the host.
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn new(env: &TestEnv) -> TestNetns {
        berth_tests::require_tool("ip");
        let name = env.name.clone();
        let st = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(st.success(), "ip netns add {name} failed");
        // As on a node: CRIU probes TCP repair on 127.0.0.1 of its netns.
        let st = std::process::Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .expect("run ip link set lo up");
        assert!(st.success(), "ip -n {name} link set lo up failed");
        TestNetns { name }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A CNI bridge network named `cknet` (on bridge `bridge`, `subnet`) in
/// `env`'s own config dir; the agent options that use it and allow `vol`.
fn cni_agent_options(env: &TestEnv, bridge: &str, subnet: &str, vol: &Path) -> Vec<String> {
    let conf_dir = env.mkdir("cni");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "cknet",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "dataDir": env.path("ipam"),
                      "ranges": [[{"subnet": subnet}]]}}
        ]
    });
    std::fs::write(conf_dir.join("10-cknet.conflist"), conflist.to_string()).unwrap();
    vec![
        "--criu-path".into(),
        criu().display().to_string(),
        "--cni-config-dir".into(),
        conf_dir.display().to_string(),
        "--volume-allow-rw".into(),
        vol.display().to_string(),
    ]
}

fn network_ip(env: &TestEnv, agent: &Agent, name: &str) -> String {
    env.ps_json(agent)
        .into_iter()
        .find(|c| c["id"] == name)
        .and_then(|c| {
            c["isolator_fields"]["network.ip"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no network.ip for {name}"))
}

#[test]
fn a_container_with_a_volume_and_a_cni_network_restores_with_both() {
    berth_tests::require_tool("busybox");
    let src = TestEnv::new("ck-cni-src");
    let dst = TestEnv::new("ck-cni-dst");
    import_busybox(&src);
    import_busybox(&dst);
    let ns = TestNetns::new(&src);
    // Shared storage of both "nodes".
    let vol = src.mkdir("vol");
    std::thread::scope(|s| {
        s.spawn(|| {
            // This thread's children (the agents, their supervisors and
            // CNI plugins) are in the test's netns.
            let f = std::fs::File::open(Path::new("/run/netns").join(&ns.name)).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let opts = cni_agent_options(&src, "ckbr0", "10.232.0.0/24", &vol);
            let a = src.start_agent_with("", &opts.iter().map(String::as_str).collect::<Vec<_>>());
            let opts = cni_agent_options(&dst, "ckbr1", "10.233.0.0/24", &vol);
            let b = dst.start_agent_with("", &opts.iter().map(String::as_str).collect::<Vec<_>>());

            let name = format!("{}-c", src.name);
            let volume = format!("{}:/data", vol.display());
            // Writes its eth0 address and a tick into the volume, 10 a second.
            src.client_expect(
                &a,
                &[
                    "launch",
                    "--name",
                    &name,
                    "--image",
                    "busybox",
                    "--network",
                    "cknet",
                    "--volume",
                    &volume,
                    "--",
                    "sh",
                    "-c",
                    "i=0; while true; do i=$((i+1)); \
                     busybox ip -4 -o addr show eth0 > /data/ip.new && mv /data/ip.new /data/ip; \
                     echo $i > /data/tick; echo $i; sleep 0.1; done",
                ],
                0,
            );
            let ip_a = network_ip(&src, &a, &name);
            assert!(ip_a.starts_with("10.232.0."), "{ip_a}");
            wait_until(
                "the source to write its address",
                Duration::from_secs(20),
                || std::fs::read_to_string(vol.join("ip")).is_ok_and(|s| s.contains(&ip_a)),
            );
            let images = src.path("images");
            src.client_expect(
                &a,
                &["checkpoint", &name, "--image-dir", images.to_str().unwrap()],
                0,
            );
            wait_until("the source to terminate", Duration::from_secs(20), || {
                state(&src, &a, &name) == "TERMINATED"
            });
            let tick: u64 = std::fs::read_to_string(vol.join("tick"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();

            let moved = format!("{}-r", dst.name);
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
            let ip_b = network_ip(&dst, &b, &moved);
            assert!(ip_b.starts_with("10.233.0."), "{ip_b}");
            // The restored processes write through the new container's
            // volume mount, from its new network namespace.
            wait_until(
                "the restored container to write its address",
                Duration::from_secs(20),
                || std::fs::read_to_string(vol.join("ip")).is_ok_and(|s| s.contains(&ip_b)),
            );
            // The loop writes the address first and the tick right after:
            // read between the two, the tick is still the source's.
            let read_tick = || -> u64 {
                std::fs::read_to_string(vol.join("tick"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0)
            };
            wait_until(
                &format!("the tick to go on from {tick}"),
                Duration::from_secs(20),
                || read_tick() > tick,
            );
            // Its stdout goes on from the source's last line.
            let last = printed(&src, &name).last().copied();
            let first = printed(&dst, &moved);
            assert_eq!(
                first.first().copied(),
                last.map(|l| l + 1),
                "{first:?} after {last:?}"
            );

            destroy_and_remove(&dst, &b, &moved);
            src.client_expect(&a, &["rm", &name], 0);
            // Both agents' IPAM leases are given back.
            for env in [&src, &dst] {
                let leases: Vec<String> = std::fs::read_dir(env.path("ipam").join("cknet"))
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .filter_map(|e| e.file_name().into_string().ok())
                            .filter(|n| n.starts_with("10."))
                            .collect()
                    })
                    .unwrap_or_default();
                assert!(leases.is_empty(), "IPAM leases left: {leases:?}");
            }
            drop((a, b));
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
}

/// Attack: the container plants symlinks to a host canary (absolute and
/// climbing out), a FIFO and a link swapped in for a directory in its
/// rootfs before the checkpoint. Saving the rootfs changes (tar of the
/// upper dir) and unpacking them into the new container's follow none
/// of them and never block on the FIFO: the canary is neither read into
/// the checkpoint nor written, and the restored rootfs has the links as
/// links and the FIFO as a FIFO.
#[test]
fn planted_links_and_fifos_in_the_rootfs_travel_as_they_are() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let src = TestEnv::new("ck-attack-src");
    let dst = TestEnv::new("ck-attack-dst");
    import_busybox(&src);
    import_busybox(&dst);
    let canary_dir = src.mkdir("canary");
    let canary = canary_dir.join("secret");
    std::fs::write(&canary, "host secret\n").unwrap();
    let before = std::fs::metadata(&canary).unwrap();
    let a = agent(&src, "");
    let b = agent(&dst, "");
    let name = format!("{}-c", src.name);
    let c = canary.display().to_string();
    let d = canary_dir.display().to_string();
    let script = format!(
        "ln -s {c} /abs && ln -s ../../../../../../../../../..{c} /rel && \
         busybox mkfifo /fifo && mkdir -p /etc2 && rmdir /etc2 && ln -s {d} /etc2 && \
         echo planted; while true; do sleep 0.1; done"
    );
    src.client_expect(
        &a,
        &[
            "launch",
            "--name",
            &name,
            "--image",
            "busybox",
            "--network",
            "none",
            "--",
            "sh",
            "-c",
            &script,
        ],
        0,
    );
    wait_until("the links to be planted", Duration::from_secs(20), || {
        std::fs::read_to_string(src.state_dir.join("sandboxes").join(&name).join("stdout"))
            .is_ok_and(|s| s.contains("planted"))
    });
    let images = src.path("images");
    src.client_expect(
        &a,
        &["checkpoint", &name, "--image-dir", images.to_str().unwrap()],
        0,
    );
    let moved = format!("{}-r", dst.name);
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
    let r = rootfs(&dst, &moved);
    assert_eq!(std::fs::read_link(r.join("abs")).unwrap(), canary);
    assert_eq!(
        std::fs::read_link(r.join("rel"))
            .unwrap()
            .display()
            .to_string(),
        format!("../../../../../../../../../..{c}")
    );
    assert_eq!(std::fs::read_link(r.join("etc2")).unwrap(), canary_dir);
    assert!(std::fs::symlink_metadata(r.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    // The canary is as it was, and its text is nowhere in the checkpoint.
    let after = std::fs::metadata(&canary).unwrap();
    assert_eq!(
        (after.mtime(), after.uid(), after.mode(), after.len()),
        (before.mtime(), before.uid(), before.mode(), before.len())
    );
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "host secret\n");
    assert_eq!(std::fs::read_dir(&canary_dir).unwrap().count(), 1);
    let tar = std::fs::read(images.join("rootfs-upper.tar")).unwrap();
    assert!(
        !tar.windows(11).any(|w| w == b"host secret"),
        "the canary was read into the checkpoint"
    );
    assert_eq!(state(&dst, &b, &moved), "RUNNING");
    destroy_and_remove(&dst, &b, &moved);
    src.client_expect(&a, &["rm", &name], 0);
}

/// Under runc (`--runtime runc`): runc drives CRIU (`runc --criu PATH
/// checkpoint`/`restore`), berth pauses around the dump and saves the
/// rootfs changes as for its own containers; the restored container's
/// init is its supervisor's child.
#[test]
fn a_runc_counter_moves_to_another_agent_and_continues() {
    berth_tests::require_tool("runc");
    let src = TestEnv::new("ck-runc-src");
    let dst = TestEnv::new("ck-runc-dst");
    import_busybox(&src);
    import_busybox(&dst);
    let a = agent(&src, "");
    let b = agent(&dst, "");
    let name = format!("{}-c", src.name);
    src.client_expect(
        &a,
        &[
            "launch",
            "--name",
            &name,
            "--runtime",
            "runc",
            "--image",
            "busybox",
            "--",
            "sh",
            "-c",
            COUNTER,
        ],
        0,
    );
    wait_until("the counter to pass 5", Duration::from_secs(20), || {
        printed(&src, &name).len() >= 5
    });
    let images = src.path("images");
    src.client_expect(
        &a,
        &["checkpoint", &name, "--image-dir", images.to_str().unwrap()],
        0,
    );
    assert!(images.join("dump.log").is_file(), "CRIU's log stays");
    wait_until("the source to terminate", Duration::from_secs(20), || {
        state(&src, &a, &name) == "TERMINATED"
    });
    let last = *printed(&src, &name).last().unwrap();

    let moved = format!("{}-r", dst.name);
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
    wait_until(
        "the restored counter to print",
        Duration::from_secs(20),
        || printed(&dst, &moved).len() >= 3,
    );
    let after = printed(&dst, &moved);
    assert_eq!(after[0], last + 1, "{after:?} after {last}");
    assert_eq!(
        std::fs::read_to_string(rootfs(&dst, &moved).join("before"))
            .unwrap()
            .trim(),
        "kept"
    );
    let c = dst
        .ps_json(&b)
        .into_iter()
        .find(|c| c["id"] == moved.as_str())
        .unwrap();
    assert_eq!(c["runtime"], "runc");
    let (pid, sup) = (
        c["pid"].as_i64().unwrap(),
        c["supervisor_pid"].as_i64().unwrap(),
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l == format!("PPid:\t{sup}")),
        "the restored init is the supervisor's child: {status}"
    );
    destroy_and_remove(&dst, &b, &moved);
    src.client_expect(&a, &["rm", &name], 0);
}

/// A --criu-path that is no binary is named, before the container is
/// touched.
#[test]
fn a_missing_criu_is_named() {
    let env = TestEnv::new("ck-nocriu");
    import_busybox(&env);
    let missing = env.path("no/criu");
    let a = env.start_agent_with("", &["--criu-path", missing.to_str().unwrap()]);
    let name = format!("{}-c", env.name);
    launch_counter(&env, &a, &name);
    let out = env.client_expect(
        &a,
        &[
            "checkpoint",
            &name,
            "--image-dir",
            env.path("images").to_str().unwrap(),
        ],
        125,
    );
    let err = text(&out.stderr);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert_eq!(state(&env, &a, &name), "RUNNING");
    assert!(!env.path("images").exists(), "nothing made");
    destroy_and_remove(&env, &a, &name);
}
