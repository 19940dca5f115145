//! The rootfs pool (`ImageProvisioner::with_rootfs_pool`, `berth agent
//! --rootfs-pool N`): overlay rootfs mounted ahead of their launch, on
//! real overlay mounts of a real busybox image.

use berth_provisioner::prune::Keep;
use berth_provisioner::ImageProvisioner;
use berth_state::ContainerId;
use berth_tests::{import_busybox, TestEnv};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The mount points at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

/// The pool's entries ready to be taken (by their final name, not
/// `*.making`; their rootfs mounted), once there are `n`.
fn wait_for_entries(pool: &Path, n: usize) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready: Vec<PathBuf> = fs::read_dir(pool)
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|e: &PathBuf| e.extension().is_none())
            .filter(|e| !mounts_under(&e.join("rootfs")).is_empty())
            .collect();
        if ready.len() >= n {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "the pool made {} of {n} entries in 20 s",
            ready.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_next_launch_of_an_image_takes_its_pooled_rootfs() {
    let env = TestEnv::new("pool-take");
    import_busybox(&env);
    let store = env.state_dir.join("images");
    let pool_dir = store.join("pool");
    let prov = ImageProvisioner::open(&store)
        .unwrap()
        .with_rootfs_pool(1)
        .unwrap();
    let id = |n: &str| ContainerId::parse(&format!("{}-{n}", env.name)).unwrap();
    let (a, b, c) = (id("a"), id("b"), id("c"));
    // The first launch of the image finds nothing ready, and asks for one.
    let ra = prov.provision_blocking(&a, "busybox").unwrap().rootfs;
    let entry = wait_for_entries(&pool_dir, 1).remove(0);
    let ino = fs::metadata(&entry).unwrap().ino();
    // The next one takes it: the same directory, renamed, still mounted.
    let rb = prov.provision_blocking(&b, "busybox").unwrap().rootfs;
    let cdir = rb.parent().unwrap();
    assert_eq!(fs::metadata(cdir).unwrap().ino(), ino, "not the pooled dir");
    assert!(!entry.exists());
    assert_eq!(mounts_under(&rb), vec![rb.display().to_string()]);
    assert!(rb.join("bin/busybox").is_file());
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(cdir.join("container.json")).unwrap()).unwrap();
    assert_eq!(meta["backend"], "overlay", "{meta}");
    assert!(!meta["diff_ids"].as_array().unwrap().is_empty(), "{meta}");
    // A container's writes stay its own: not in another container's
    // rootfs, nor in the entry made next.
    fs::write(rb.join("written-by-b"), "b").unwrap();
    assert!(!ra.join("written-by-b").exists());
    let next = wait_for_entries(&pool_dir, 1).remove(0);
    assert!(next.join("rootfs/bin/busybox").is_file());
    assert!(!next.join("rootfs/written-by-b").exists());
    let rc = prov.provision_blocking(&c, "busybox").unwrap().rootfs;
    assert!(!rc.join("written-by-b").exists());

    // A second pool on the store, in the same process: its entries are
    // its own, and dropping its last provisioner unmounts them.
    wait_for_entries(&pool_dir, 1);
    let second = ImageProvisioner::open(&store)
        .unwrap()
        .with_rootfs_pool(1)
        .unwrap();
    let d = id("d");
    second.provision_blocking(&d, "busybox").unwrap();
    let both = wait_for_entries(&pool_dir, 2);
    second.destroy_blocking(&d).unwrap();
    drop(second);
    let left = wait_for_entries(&pool_dir, 1);
    assert_eq!(left.len(), 1, "{both:?} → {left:?}");

    // A prune in another process (no pool of its own) keeps what the
    // pool's entries use.
    wait_for_entries(&pool_dir, 1);
    for x in [&a, &b, &c] {
        prov.destroy_blocking(x).unwrap();
    }
    let other = ImageProvisioner::open(&store).unwrap();
    other.prune_blocking(Keep::Only(vec![])).unwrap();
    let entry = wait_for_entries(&pool_dir, 1).remove(0);
    assert!(entry.join("rootfs/bin/busybox").is_file());
    assert!(
        prov.store().resolve("busybox").is_ok(),
        "the pooled image was pruned"
    );
    // A prune through the pool's own provisioner empties the pool first,
    // and removes the image no container uses.
    prov.prune_blocking(Keep::Only(vec![])).unwrap();
    assert!(prov.store().resolve("busybox").is_err());
    assert!(mounts_under(&pool_dir).is_empty());

    prov.close_pool();
    berth_state::trash::flush();
    assert!(
        mounts_under(&store).is_empty(),
        "{:?}",
        mounts_under(&store)
    );
    assert_eq!(
        fs::read_dir(&pool_dir).map(|d| d.count()).unwrap_or(0),
        0,
        "the pool's dir is not empty"
    );
    let leaks = env.leaks();
    assert!(leaks.is_empty(), "{leaks:#?}");
}

#[test]
fn an_agents_pool_is_unmounted_at_its_stop_and_after_a_kill_by_recovery_or_retire() {
    let env = TestEnv::new("pool-agent");
    import_busybox(&env);
    let pool_dir = env.state_dir.join("images").join("pool");
    let run_one = |agent: &berth_tests::Agent, name: &str| {
        env.client_expect(
            agent,
            &[
                "launch", "--name", name, "--image", "busybox", "--", "sh", "-c", "exit 0",
            ],
            0,
        );
        env.client_expect(agent, &["wait", name], 0);
        env.client_expect(agent, &["rm", name], 0);
    };

    // Launches through it work; its stop leaves no mount.
    let agent = env.start_agent_with("", &["--rootfs-pool", "1"]);
    run_one(&agent, "one");
    run_one(&agent, "two");
    wait_for_entries(&pool_dir, 1);
    agent.terminate();
    assert!(mounts_under(&env.state_dir).is_empty());

    // Killed: its entries stay mounted, and the next agent's recovery
    // removes them.
    let agent = env.start_agent_with("", &["--rootfs-pool", "1"]);
    run_one(&agent, "three");
    let dead = wait_for_entries(&pool_dir, 1);
    agent.kill9();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!mounts_under(&dead[0]).is_empty());
    let agent = env.start_agent("");
    assert!(mounts_under(&env.state_dir).is_empty());
    assert!(!dead[0].exists());
    agent.terminate();

    // Killed, and no agent after it: `berth retire` removes them.
    let agent = env.start_agent_with("", &["--rootfs-pool", "1"]);
    run_one(&agent, "four");
    wait_for_entries(&pool_dir, 1);
    agent.kill9();
    std::thread::sleep(Duration::from_millis(200));
    let out = env.berth().arg("retire").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mounts_under(&env.state_dir).is_empty());
    let leaks = env.leaks();
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// The pool's entries by their names (ready or in the making).
fn entries(pool: &Path) -> Vec<PathBuf> {
    fs::read_dir(pool)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// `berth run --in-process --name NAME --image IMAGE ARGS…`, run to its end.
fn cold_run(env: &TestEnv, name: &str, image: &str, args: &[&str]) -> std::process::Output {
    env.berth()
        .args(["run", "--in-process", "--name", name, "--image", image])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_cold_berth_run_takes_the_rootfs_it_made_ahead_and_leaves_none() {
    let env = TestEnv::new("pool-cold");
    import_busybox(&env);
    let store = env.state_dir.join("images");
    let nothing_left = || {
        assert!(entries(&store.join("pool")).is_empty());
        assert!(mounts_under(&env.state_dir).is_empty());
    };
    // A first run unpacks the image's layer into the cache (a launch that
    // finds it still unpacking makes its own rootfs, as without).
    let out = cold_run(&env, "first", "busybox", &["--", "sh", "-c", "exit 0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // The rootfs is made while the process opens its state and recovers;
    // the launch takes it: its container.json is the pool's (no id).
    let name = format!("{}-c", env.name);
    let run = env
        .berth()
        .args(["run", "--in-process", "--name", &name, "--image", "busybox"])
        .args(["--", "sleep", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let meta_path = store.join("containers").join(&name).join("container.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    let meta = loop {
        if let Ok(b) = fs::read(&meta_path) {
            break b;
        }
        assert!(Instant::now() < deadline, "no {}", meta_path.display());
        std::thread::sleep(Duration::from_millis(5));
    };
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(meta["id"], "", "not the rootfs made ahead: {meta}");
    assert_eq!(meta["image"], "busybox", "{meta}");
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    nothing_left();

    // Refused at admission after the rootfs was made: it is unmounted and
    // removed before the process ends. An image the store lacks: nothing
    // is made ahead. Either way the run says what was wrong.
    for (name, image, args, named) in [
        (
            "refused",
            "busybox",
            &["--hostname", "bad_host", "--", "true"][..],
            "bad_host",
        ),
        ("missing", "nosuch:1", &["--", "true"][..], "nosuch"),
    ] {
        let out = cold_run(&env, name, image, args);
        assert_ne!(out.status.code(), Some(0), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{name}: {err}");
        nothing_left();
    }
    let leaks = env.leaks();
    assert!(leaks.is_empty(), "{leaks:#?}");
}
