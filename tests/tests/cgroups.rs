//! The cgroup isolators against the real kernel (this host's hierarchies,
//! detected), and their cgroup v2 code paths against a fake cgroupfs laid
//! out as the kernel lays out a v2 cgroup.

use berth::isolators::cgroups::{Cpu, Devices, Hierarchies, Memory, Pids};
use berth::isolators::{Isolator, PrepareRequest};
use berth::{
    ContainerConfig, ContainerId, ContainerState, Containerizer, Resources, TerminationReason,
};
use berth_tests::{require_tool, TestEnv};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn containerizer(env: &TestEnv) -> Containerizer {
    Containerizer::builder(&env.state_dir, &env.runtime_dir)
        .cgroup_root(&env.cgroup_root)
        .supervisor(env!("CARGO_BIN_EXE_berth-test-supervisor"))
        .default_isolators()
        .build()
        .expect("build containerizer")
}

fn sh(script: &str, resources: Resources) -> ContainerConfig {
    ContainerConfig {
        command: vec![script.into()],
        shell: true,
        resources: Some(resources),
        ..Default::default()
    }
}

fn read(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn memory_limit_ends_in_oom_killed_137_with_the_limit_in_the_message() {
    require_tool("python3");
    let env = TestEnv::new("cg-oom");
    let started = Instant::now();
    let out = env
        .berth()
        .args(["run", "--json", "--memory", "32M", "--"])
        .args(["python3", "-c", "b=bytearray(200*1024*1024)"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(137),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(json["reason"], "OOM_KILLED", "{json}");
    assert_eq!(json["exit_code"], 137);
    let msg = json["message"].as_str().unwrap();
    assert!(msg.contains("memory limit of 32.0 MiB"), "{msg}");
    assert!(msg.contains("OOM killer killed"), "{msg}");
}

#[test]
fn pids_limit_refuses_forks_and_the_container_still_ends() {
    let env = TestEnv::new("cg-pids");
    let out = env
        .berth()
        .args(["run", "--json", "--pids", "20", "--"])
        .args(["sh", "-c", "for i in $(seq 100); do sleep 5 & done; wait"])
        .output()
        .unwrap();
    let err = text(&out.stderr).to_lowercase();
    // The shell gives up at its first refused fork; its exit takes the
    // sleeps it started with it (they are in its pid namespace).
    assert!(err.contains("fork"), "{err}");
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(json["reason"], "FAILED", "{json}");
    assert!(json["signal"].is_null(), "{json}");
    assert!(env.cgroup_dir("pids").join(&env.name).read_dir().is_err());
}

#[test]
fn pids_limit_caps_the_tasks_of_a_forking_container() {
    require_tool("python3");
    let env = TestEnv::new("cg-pids-cap");
    let dir = env.cgroup_dir("pids").join(&env.name);
    // Tries 100 children, counting the ones the kernel refuses, and keeps
    // the rest for 2 s so the test can watch the cgroup.
    let script = r#"
import subprocess
ok, refused = [], 0
for _ in range(100):
    try:
        ok.append(subprocess.Popen(["sleep", "2"]))
    except OSError:
        refused += 1
print(len(ok), refused, flush=True)
for p in ok:
    p.wait()
"#;
    let mut child = env
        .berth()
        .args(["run", "--name", &env.name, "--pids", "20", "--"])
        .args(["python3", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut most, mut limit, mut events) = (0u64, String::new(), 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the container did not end");
        if let (Ok(cur), Ok(ev), Ok(max)) = (
            fs::read_to_string(dir.join("pids.current")),
            fs::read_to_string(dir.join("pids.events")),
            fs::read_to_string(dir.join("pids.max")),
        ) {
            most = most.max(cur.trim().parse().unwrap());
            events = events.max(keyed(&ev, "max").unwrap());
            limit = max.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let counts: Vec<u64> = stdout
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    // python itself is one task: 19 children fit under 20.
    assert_eq!(counts, [19, 81], "started and refused");
    assert_eq!(limit, "20", "pids.max as written");
    assert_eq!(most, 20, "the most tasks seen at once");
    assert!(
        events >= 81,
        "pids.events max counts the refusals: {events}"
    );
    assert!(dir.read_dir().is_err(), "cgroup removed at the end");
}

#[actix_rt::test]
async fn cpu_hard_limit_holds_a_busy_loop_to_half_a_core() {
    let env = TestEnv::new("cg-cpu");
    let c = containerizer(&env);
    c.recover().await.unwrap();
    let id = ContainerId::new(&env.name);
    let res = Resources {
        cpus: 0.5,
        cpu_limit: 0.5,
        ..Default::default()
    };
    c.launch(id.clone(), sh("while :; do :; done", res))
        .await
        .unwrap();
    let cpu = env.cgroup_dir("cpu").join(&env.name);
    assert_eq!(read(cpu.join("cpu.shares")), "512");
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");

    // Let the loop reach its steady state, then measure over 3 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = c.usage(id.clone()).await.unwrap();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = c.usage(id.clone()).await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let used = (after.cpus_user_time_secs + after.cpus_system_time_secs)
        - (before.cpus_user_time_secs + before.cpus_system_time_secs);
    let rate = used / secs;
    assert!(
        (0.4..=0.6).contains(&rate),
        "{rate:.3} cpu-seconds per second (used {used:.3} s in {secs:.3} s)"
    );
    assert_eq!(after.cpus_limit, 0.5);
    assert!(after.cpus_nr_throttled > before.cpus_nr_throttled);
    assert!(after.cpus_throttled_time_secs > 0.0);
    assert!(after.processes >= 1);

    let t = c.destroy(id.clone()).await.unwrap();
    assert_eq!(t.reason(), TerminationReason::Destroyed);
    c.remove(id).await.unwrap();
}

#[actix_rt::test]
async fn usage_shows_the_memory_held_and_update_changes_running_limits() {
    require_tool("python3");
    let env = TestEnv::new("cg-update");
    let c = containerizer(&env);
    c.recover().await.unwrap();
    let id = ContainerId::new(&env.name);
    let res = Resources {
        cpus: 1.0,
        memory_bytes: 256 * MIB,
        pids: 50,
        ..Default::default()
    };
    let config = ContainerConfig {
        command: vec![
            "python3".into(),
            "-c".into(),
            "import time; b = b'x' * (50 << 20); time.sleep(1000)".into(),
        ],
        resources: Some(res),
        ..Default::default()
    };
    c.launch(id.clone(), config).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let usage = loop {
        let u = c.usage(id.clone()).await.unwrap();
        if u.mem_rss_bytes >= 50 * MIB {
            break u;
        }
        assert!(Instant::now() < deadline, "rss never reached 50 MiB: {u:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(usage.mem_limit_bytes, 256 * MIB);
    assert!(usage.mem_usage_bytes >= usage.mem_rss_bytes);
    assert!(usage.mem_max_usage_bytes >= 50 * MIB);
    assert!(usage.processes >= 1);

    let mem = env.cgroup_dir("memory").join(&env.name);
    let cpu = env.cgroup_dir("cpu").join(&env.name);
    let pids = env.cgroup_dir("pids").join(&env.name);
    let limits = || {
        (
            read(mem.join("memory.limit_in_bytes")),
            read(cpu.join("cpu.shares")),
            read(cpu.join("cpu.cfs_quota_us")),
            read(pids.join("pids.max")),
        )
    };

    // Raise.
    let raised = Resources {
        cpus: 2.0,
        cpu_limit: 1.5,
        memory_bytes: 512 * MIB,
        pids: 100,
        ..Default::default()
    };
    c.update(id.clone(), raised).await.unwrap();
    let want = |m: u64, s: &str, q: &str, p: &str| {
        (
            (m * MIB).to_string(),
            s.to_string(),
            q.to_string(),
            p.to_string(),
        )
    };
    assert_eq!(limits(), want(512, "2048", "150000", "100"));
    assert_eq!(
        c.usage(id.clone()).await.unwrap().mem_limit_bytes,
        512 * MIB
    );

    // Lower (still above what the container holds).
    let lowered = Resources {
        cpus: 0.25,
        memory_bytes: 128 * MIB,
        pids: 30,
        ..Default::default()
    };
    c.update(id.clone(), lowered).await.unwrap();
    assert_eq!(limits(), want(128, "256", "-1", "30"));

    // Below the usage: a clear error, nothing changed, the container lives.
    let too_low = Resources {
        memory_bytes: 16 * MIB,
        ..lowered
    };
    let e = c.update(id.clone(), too_low).await.unwrap_err().to_string();
    assert!(
        e.contains("16.0 MiB") && e.contains("below the container's current usage"),
        "{e}"
    );
    assert_eq!(limits(), want(128, "256", "-1", "30"));
    assert_eq!(
        c.status(id.clone()).await.unwrap().state,
        ContainerState::Running
    );

    c.destroy(id.clone()).await.unwrap();
    c.remove(id).await.unwrap();
}

#[test]
fn devices_outside_the_allow_list_are_denied() {
    let env = TestEnv::new("cg-dev");
    // A device node outside the allow-list that already exists where the
    // container can reach it (its /dev is berth's minimal one, its /tmp
    // private): loop0, which the test makes in the container's sandbox
    // once it exists. The container's own node goes to the sandbox too,
    // never to the host's /dev.
    let script = "while [ ! -e ./go ]; do sleep 0.05; done; \
         if mknod ./sda1 b 8 1; then echo MKNOD-OK; fi; \
         if head -c 1 ./loop0 >/dev/null; then echo OPEN-OK; fi; \
         echo x > /dev/null && head -c 4 /dev/urandom | wc -c && head -c 2 /dev/zero | wc -c";
    let child = env
        .berth()
        .args(["run", "--name", &env.name, "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sandbox = env.state_dir.join("sandboxes").join(&env.name);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sandbox.exists() {
        assert!(
            Instant::now() < deadline,
            "no sandbox {}",
            sandbox.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::stat::mknod(
        &sandbox.join("loop0"),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(7, 0),
    )
    .unwrap();
    fs::write(sandbox.join("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains("MKNOD-OK"), "mknod allowed: {stdout}");
    assert!(!stdout.contains("OPEN-OK"), "loop0 opened: {stdout}");
    assert_eq!(
        stderr.matches("Operation not permitted").count(),
        2,
        "mknod and open refused by the kernel: {stderr}"
    );
    assert_eq!(
        stdout.split_whitespace().collect::<Vec<_>>(),
        ["4", "2"],
        "the allowed devices work"
    );
}

/// Plants a cgroup (and its parents) under the test's root in every
/// hierarchy berth manages.
fn plant(env: &TestEnv, rel: &str) -> Vec<PathBuf> {
    ["cpu", "cpuacct", "memory", "pids", "devices"]
        .iter()
        .map(|h| {
            let d = env.cgroup_dir(h).join(rel);
            fs::create_dir_all(&d).unwrap();
            d
        })
        .collect()
}

#[actix_rt::test]
async fn recover_removes_orphan_cgroups_and_their_processes() {
    let env = TestEnv::new("cg-orphan");
    let mut planted = plant(&env, "orphan-a");
    planted.extend(plant(&env, "orphan-b/nested"));
    // One orphan still has a process in it.
    let busy = plant(&env, "orphan-c");
    let mut sleeper = Command::new("sleep").arg("1000").spawn().unwrap();
    let memory_c = env.cgroup_dir("memory").join("orphan-c");
    fs::write(memory_c.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    planted.extend(busy);

    let c = containerizer(&env);
    c.recover().await.unwrap();
    for d in &planted {
        assert!(!d.exists(), "{} survived recover", d.display());
    }
    assert!(!env.cgroup_dir("memory").join("orphan-b").exists());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = sleeper.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the orphan's process lives on");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

// ---- cgroup v2, on a fake cgroupfs ----------------------------------------
//
// This host is cgroup v1 (hybrid). The v2 paths are checked here against a
// directory tree laid out as the kernel lays out cgroup2: the root offers
// controllers in `cgroup.controllers`, and each cgroup dir holds the
// interface files. The kernel creates those files with the dir; the test
// creates them before `prepare` (which tolerates an existing dir).

struct FakeV2 {
    mount: PathBuf,
    root: String,
    id: ContainerId,
}

impl FakeV2 {
    fn new(env: &TestEnv) -> FakeV2 {
        let mount = env.mkdir("cgroup2");
        fs::write(mount.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        fs::write(mount.join("cgroup.subtree_control"), "").unwrap();
        let root = "berth".to_string();
        let id = ContainerId::new("web-1");
        let dir = mount.join(&root).join("web-1");
        fs::create_dir_all(&dir).unwrap();
        fs::write(mount.join(&root).join("cgroup.subtree_control"), "").unwrap();
        for (file, content) in [
            ("cgroup.procs", ""),
            ("cpu.weight", "100"),
            ("cpu.max", "max 100000"),
            (
                "cpu.stat",
                "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n\
                 nr_periods 40\nnr_throttled 7\nthrottled_usec 250000\n",
            ),
            ("memory.max", "max"),
            ("memory.low", "0"),
            ("memory.swap.max", "max"),
            ("memory.current", &(100 * MIB).to_string()),
            ("memory.peak", &(120 * MIB).to_string()),
            ("memory.swap.current", "0"),
            (
                "memory.stat",
                &format!("anon {}\nfile {}\n", 90 * MIB, 10 * MIB),
            ),
            ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
            ("pids.max", "max"),
            ("pids.current", "3"),
        ] {
            fs::write(dir.join(file), content).unwrap();
        }
        FakeV2 { mount, root, id }
    }

    fn dir(&self) -> PathBuf {
        self.mount.join(&self.root).join("web-1")
    }

    fn request(&self, res: Resources) -> PrepareRequest {
        PrepareRequest {
            id: self.id.clone(),
            config: ContainerConfig {
                command: vec!["true".into()],
                resources: Some(res),
                ..Default::default()
            },
            sandbox_dir: self.mount.clone(),
            rootfs: None,
            cgroup_root: self.root.clone(),
        }
    }

    /// The kernel removes a cgroup's interface files with its dir; a
    /// plain directory must be emptied first for `cleanup`'s rmdir.
    fn drop_interface_files(&self) {
        for e in fs::read_dir(self.dir()).unwrap().flatten() {
            fs::remove_file(e.path()).unwrap();
        }
    }

    fn hierarchies(&self) -> Hierarchies {
        Hierarchies::v2_at(&self.mount)
    }
}

#[actix_rt::test]
async fn v2_cpu_writes_weight_and_max_and_reads_cpu_stat() {
    let env = TestEnv::new("cg-v2-cpu");
    let f = FakeV2::new(&env);
    let mut iso = Cpu::isolator(f.hierarchies(), &f.root);
    let res = Resources {
        cpus: 0.5,
        cpu_limit: 0.5,
        ..Default::default()
    };
    let info = iso.prepare(&f.request(res)).await.unwrap().unwrap();
    assert_eq!(info.cgroup_paths, [f.dir().display().to_string()]);
    assert_eq!(read(f.mount.join("cgroup.subtree_control")), "+cpu");
    assert_eq!(
        read(f.mount.join(&f.root).join("cgroup.subtree_control")),
        "+cpu"
    );
    // 512 shares → weight 20, as runc and systemd convert.
    assert_eq!(read(f.dir().join("cpu.weight")), "20");
    assert_eq!(read(f.dir().join("cpu.max")), "50000 100000");

    let u = iso.usage(&f.id).await.unwrap();
    assert_eq!(u.cpus_user_time_secs, 2.0);
    assert_eq!(u.cpus_system_time_secs, 1.0);
    assert_eq!(u.cpus_nr_periods, 40);
    assert_eq!(u.cpus_nr_throttled, 7);
    assert_eq!(u.cpus_throttled_time_secs, 0.25);
    assert_eq!(u.cpus_limit, 0.5);

    let no_limit = Resources {
        cpus: 2.0,
        ..Default::default()
    };
    iso.update(&f.id, &no_limit).await.unwrap();
    assert_eq!(read(f.dir().join("cpu.weight")), "79");
    assert!(read(f.dir().join("cpu.max")).starts_with("max"));
    f.drop_interface_files();
    iso.cleanup(&f.id).await.unwrap();
    assert!(!f.dir().exists());
}

#[actix_rt::test]
async fn v2_memory_limits_usage_update_and_oom_watch() {
    let env = TestEnv::new("cg-v2-mem");
    let f = FakeV2::new(&env);
    let mut iso = Memory::isolator(f.hierarchies(), &f.root);
    let res = Resources {
        memory_bytes: 256 * MIB,
        memory_soft_bytes: 64 * MIB,
        ..Default::default()
    };
    iso.prepare(&f.request(res)).await.unwrap().unwrap();
    assert_eq!(read(f.mount.join("cgroup.subtree_control")), "+memory");
    assert_eq!(read(f.dir().join("memory.max")), (256 * MIB).to_string());
    assert_eq!(read(f.dir().join("memory.low")), (64 * MIB).to_string());
    assert_eq!(read(f.dir().join("memory.swap.max")), "0", "no swap");

    let u = iso.usage(&f.id).await.unwrap();
    assert_eq!(u.mem_rss_bytes, 90 * MIB);
    assert_eq!(u.mem_cache_bytes, 10 * MIB);
    assert_eq!(u.mem_usage_bytes, 100 * MIB);
    assert_eq!(u.mem_max_usage_bytes, 120 * MIB);
    assert_eq!(u.mem_limit_bytes, 256 * MIB);

    // Below the 100 MiB in use: reclaim is asked for, and since the
    // usage stays, an error; memory.max is untouched.
    let low = Resources {
        memory_bytes: 16 * MIB,
        ..Default::default()
    };
    let e = iso.update(&f.id, &low).await.unwrap_err().to_string();
    assert!(e.contains("below the container's current usage"), "{e}");
    assert_eq!(read(f.dir().join("memory.reclaim")), (84 * MIB).to_string());
    assert_eq!(read(f.dir().join("memory.max")), (256 * MIB).to_string());
    let ok = Resources {
        memory_bytes: 128 * MIB,
        ..Default::default()
    };
    iso.update(&f.id, &ok).await.unwrap();
    assert_eq!(read(f.dir().join("memory.max")), (128 * MIB).to_string());

    // The OOM watch wakes on memory.events' oom_kill counter.
    let watch = iso.watch(&f.id);
    let events = f.dir().join("memory.events");
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fs::write(&events, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
    });
    let l = tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .expect("the watch saw the OOM kill");
    writer.await.unwrap();
    assert_eq!(l.reason, TerminationReason::OomKilled);
    assert_eq!(l.resource, "memory");
    assert!(
        l.message.contains("memory limit of 128.0 MiB reached")
            && l.message.contains("killed 1 process"),
        "{}",
        l.message
    );
    f.drop_interface_files();
    iso.cleanup(&f.id).await.unwrap();
    assert!(!f.dir().exists());
}

#[actix_rt::test]
async fn v2_pids_and_devices() {
    let env = TestEnv::new("cg-v2-pids");
    let f = FakeV2::new(&env);
    let mut pids = Pids::isolator(f.hierarchies(), &f.root);
    let res = Resources {
        pids: 20,
        ..Default::default()
    };
    pids.prepare(&f.request(res)).await.unwrap().unwrap();
    assert_eq!(read(f.mount.join("cgroup.subtree_control")), "+pids");
    assert_eq!(read(f.dir().join("pids.max")), "20");
    // Threads from pids.current; processes: the distinct ids in the
    // tree's cgroup.procs (a nested cgroup's included).
    fs::write(f.dir().join("cgroup.procs"), "10\n11\n").unwrap();
    let nested = f.dir().join("inner");
    fs::create_dir_all(&nested).unwrap();
    fs::write(nested.join("cgroup.procs"), "12\n").unwrap();
    let usage = pids.usage(&f.id).await.unwrap();
    assert_eq!((usage.threads, usage.processes), (3, 3));
    fs::remove_dir_all(&nested).unwrap();

    // v2 has no devices files (an eBPF program would do it): berth drops
    // CAP_MKNOD instead, and joins no devices cgroup.
    let mut dev = Devices::isolator(f.hierarchies(), &f.root);
    let info = dev
        .prepare(&f.request(Resources::default()))
        .await
        .unwrap()
        .unwrap();
    assert!(info.cgroup_paths.is_empty(), "{:?}", info.cgroup_paths);
    assert!(!info.capabilities.is_empty());
    assert!(!info.capabilities.iter().any(|c| c.contains("MKNOD")));
    f.drop_interface_files();
    dev.cleanup(&f.id).await.unwrap();
    pids.cleanup(&f.id).await.unwrap();
    assert!(!f.dir().exists());
}

/// A container that asks for no limits keeps the values the kernel gives
/// a new cgroup (berth writes none of them at prepare); one whose cgroup
/// was already there, with other values, has its values written.
#[actix_rt::test]
async fn no_limits_keep_a_new_cgroup_s_values_and_a_found_cgroup_is_set() {
    let env = TestEnv::new("cg-defaults");
    let c = containerizer(&env);
    c.recover().await.unwrap();
    let dir = |h: &str, name: &str| env.cgroup_dir(h).join(name);
    let unlimited = |name: &str| {
        let mem = read(dir("memory", name).join("memory.limit_in_bytes"));
        assert!(mem.parse::<u64>().unwrap() > 1 << 60, "memory limit {mem}");
        assert_eq!(read(dir("pids", name).join("pids.max")), "max");
        assert_eq!(read(dir("cpu", name).join("cpu.shares")), "1024");
    };
    for (name, planted) in [
        (format!("{}-new", env.name), false),
        (format!("{}-found", env.name), true),
    ] {
        if planted {
            // Left with limits (as after a crash between a prepare and
            // its record): found, not made, so every value is written.
            plant(&env, &name);
            fs::write(dir("pids", &name).join("pids.max"), "5").unwrap();
            fs::write(dir("cpu", &name).join("cpu.shares"), "2").unwrap();
            let mem = dir("memory", &name).join("memory.limit_in_bytes");
            fs::write(mem, (64 * MIB).to_string()).unwrap();
        }
        let id = ContainerId::new(&name);
        c.launch(id.clone(), sh("sleep 1000", Resources::default()))
            .await
            .unwrap();
        unlimited(&name);
        c.destroy(id.clone()).await.unwrap();
        c.remove(id).await.unwrap();
    }
}
