//! The checkpoint store against the real filesystem: round trips of the
//! whole data model, durability across reopen and SIGKILL, damaged records
//! and databases, the single-owner lock and the schema check.

use berth_state::model::{network, volume};
use berth_state::*;
use berth_tests::store_workload;
use berth_tests::TestEnv;
use prost::Message;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A record with every field of every message set to a non-default value.
/// Struct literals without `..Default::default()`, so a field added to the
/// model fails to compile here until the test covers it.
fn full_record(name: &str) -> ContainerRecord {
    let rlimit = Rlimit {
        name: "nofile".into(),
        soft: 1024,
        hard: u64::MAX,
    };
    ContainerRecord {
        id: Some(ContainerId::new("pod").child(name)),
        config: Some(ContainerConfig {
            command: vec!["echo".into(), "hello world".into()],
            shell: true,
            env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "two".into())]),
            user: "nobody:nogroup".into(),
            working_dir: "/work".into(),
            image: "busybox@sha256:0123".into(),
            resources: Some(Resources {
                cpus: 0.5,
                cpu_limit: 1.5,
                memory_bytes: 64 << 20,
                memory_soft_bytes: 32 << 20,
                pids: 100,
                disk_bytes: 1 << 30,
            }),
            volumes: vec![Volume {
                host_path: "/srv/data".into(),
                container_path: "/data".into(),
                mode: volume::Mode::Ro as i32,
                propagation: volume::Propagation::Rslave as i32,
            }],
            network: Some(Network {
                mode: network::Mode::Cni as i32,
                cni_network: "bridge0".into(),
            }),
            hostname: "web-1".into(),
            runtime: "runsc".into(),
            uris: vec![FetchUri {
                value: "https://example.com/app.tar.gz".into(),
                executable: true,
                extract: true,
                cache: true,
                output_file: "app".into(),
                sha256: "ab".repeat(32),
            }],
            rlimits: vec![rlimit.clone()],
            container_class: ContainerClass::Debug as i32,
            kill_grace_period_ms: 2500,
            labels: BTreeMap::from([("team".into(), "infra".into())]),
            entrypoint: vec!["/bin/entry".into(), "--flag".into()],
            host_rootfs_rw: true,
            read_only_rootfs: true,
            seccomp_profile: "unconfined".into(),
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["ALL".into()],
            shm_size_bytes: 1 << 20,
            sysctls: BTreeMap::from([("net.ipv4.ip_forward".into(), "1".into())]),
            userns: "200000:65536".into(),
            share_pid_namespace: true,
            pod: true,
            devices: vec![Device {
                host_path: "/dev/loop-control".into(),
                container_path: "/dev/lc".into(),
                permissions: "rw".into(),
            }],
            rootfs_backend: "copy".into(),
            init: true,
            tty: true,
            stdin_open: true,
            log_format: "cri".into(),
            log_max_bytes: 1 << 20,
            log_max_files: 3,
            supplemental_groups: vec![1234, 5678],
            port_mappings: vec![berth_state::PortMapping {
                protocol: "udp".into(),
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            }],
            host_ipc: true,
            masked_paths: vec!["/secret".into()],
            readonly_paths: vec!["/data".into()],
            host_pid: true,
            allow_privilege_escalation: true,
        }),
        state: ContainerState::Destroying as i32,
        supervisor: Some(ProcessRef {
            pid: 4242,
            start_time: 987_654,
        }),
        init: Some(ProcessRef {
            pid: 4243,
            start_time: 987_655,
        }),
        sandbox_dir: "/var/lib/berth/sandboxes/pod/x".into(),
        rootfs: "/var/lib/berth/rootfs/abc".into(),
        transitions: vec![
            Transition {
                state: ContainerState::Starting as i32,
                at_unix_nanos: 1,
            },
            Transition {
                state: ContainerState::Running as i32,
                at_unix_nanos: 2,
            },
            Transition {
                state: ContainerState::Destroying as i32,
                at_unix_nanos: -3,
            },
        ],
        launch_info: Some(LaunchInfo {
            env: BTreeMap::from([("PATH".into(), "/bin".into())]),
            mounts: vec![Mount {
                source: "tmpfs".into(),
                target: "/tmp".into(),
                fs_type: "tmpfs".into(),
                options: vec!["nosuid".into(), "size=1m".into()],
            }],
            clone_namespaces: vec![Namespace::Mount as i32, Namespace::Pid as i32],
            join_namespaces: vec![NamespaceJoin {
                namespace: Namespace::Net as i32,
                path: "/proc/1/ns/net".into(),
                ..Default::default()
            }],
            rlimits: vec![rlimit],
            rootfs: "/var/lib/berth/rootfs/abc".into(),
            working_dir: "/".into(),
            pre_exec_commands: vec![CommandInfo {
                argv: vec!["mount".into(), "-a".into()],
                env: BTreeMap::from([("X".into(), "y".into())]),
            }],
            capabilities: vec!["CAP_CHOWN".into()],
            hostname: "web-1".into(),
            cgroup_paths: vec!["/sys/fs/cgroup/memory/berth/pod".into()],
            readonly_root: true,
            hidden_paths: vec!["/var/lib/berth".into()],
            runtime: "runsc".into(),
            seccomp_oci: "{}".into(),
            masked_paths: vec!["/secret".into()],
            readonly_paths: vec!["/data".into()],
            allow_privilege_escalation: true,
            seccomp_bpf: vec![6, 0, 0, 0, 0, 0, 0xff, 0x7f],
            shm_size_bytes: 1 << 20,
            sysctls: BTreeMap::from([("kernel.shmmax".into(), "1024".into())]),
            uid_mappings: vec![IdMapping {
                container_id: 0,
                host_id: 200000,
                size: 65536,
            }],
            gid_mappings: vec![IdMapping {
                container_id: 0,
                host_id: 300000,
                size: 1000,
            }],
            devices: vec![DeviceNode {
                path: "/dev/lc".into(),
                r#type: "c".into(),
                major: 10,
                minor: 237,
                file_mode: 0o600,
                uid: 0,
                gid: 6,
            }],
        }),
        termination: Some(ContainerTermination {
            exit_code: 137,
            signal: Some(9),
            reason: TerminationReason::OomKilled as i32,
            limited_resource: "memory".into(),
            message: "memory limit 64 MiB reached".into(),
            finished_at_unix_nanos: 1_700_000_000_000_000_000,
            no_exit_status: true,
        }),
        prepared_isolators: vec!["cgroups/mem".into(), "filesystem/linux".into()],
        destroy_cause: Some(berth_state::DestroyCause {
            kind: berth_state::destroy_cause::Kind::Limited as i32,
            message: "memory limit of 64.0 MiB reached".into(),
            resource: "memory".into(),
            limitation_reason: TerminationReason::OomKilled as i32,
        }),
        paused: true,
        restored_from: "/var/lib/checkpoints/c1".into(),
    }
}

fn statistics() -> ResourceStatistics {
    ResourceStatistics {
        timestamp: 1_700_000_000.25,
        cpus_user_time_secs: 1.5,
        cpus_system_time_secs: 0.25,
        cpus_limit: 2.0,
        cpus_nr_periods: 10,
        cpus_nr_throttled: 3,
        cpus_throttled_time_secs: 0.125,
        mem_rss_bytes: 1,
        mem_cache_bytes: 2,
        mem_swap_bytes: 3,
        mem_max_usage_bytes: 4,
        mem_limit_bytes: 5,
        processes: 6,
        disk_used_bytes: 7,
        disk_limit_bytes: 8,
        mem_usage_bytes: 9,
        threads: 10,
    }
}

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let bytes = m.encode_to_vec();
    assert_eq!(&M::decode(bytes.as_slice()).unwrap(), m);
}

fn record(name: &str, state: ContainerState) -> ContainerRecord {
    ContainerRecord {
        id: Some(ContainerId::new(name)),
        state: state as i32,
        ..Default::default()
    }
}

fn ids(list: &[LoadedRecord]) -> Vec<String> {
    list.iter()
        .map(|r| match r {
            Ok(r) => r.id.as_ref().unwrap().to_string(),
            Err(e) => format!("ERR {e}"),
        })
        .collect()
}

#[test]
fn every_message_round_trips() {
    let rec = full_record("full");
    round_trip(&rec);
    round_trip(rec.termination.as_ref().unwrap());
    round_trip(rec.launch_info.as_ref().unwrap());
    round_trip(rec.config.as_ref().unwrap());
    round_trip(&statistics());
    // The signal is `optional`: Some(0) must stay distinguishable from None.
    let mut t = rec.termination.clone().unwrap();
    t.signal = Some(0);
    round_trip(&t);
    t.signal = None;
    round_trip(&t);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put(&rec).unwrap();
    let id = rec.id.clone().unwrap();
    assert_eq!(store.get(&id).unwrap().as_ref(), Some(&rec));
    let listed: Vec<ContainerRecord> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(listed, vec![rec]);
}

#[test]
fn reopen_keeps_records_and_delete_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put(&record("a", ContainerState::Starting)).unwrap();
        store.put(&record("b", ContainerState::Running)).unwrap();
        store.put(&full_record("c")).unwrap();
        // A later put replaces the earlier one.
        store.put(&record("a", ContainerState::Running)).unwrap();
    }
    {
        let store = Store::open(dir.path()).unwrap();
        let a = store.get(&ContainerId::new("a")).unwrap().unwrap();
        assert_eq!(a.state, ContainerState::Running as i32);
        assert_eq!(
            store.get(&ContainerId::new("pod").child("c")).unwrap(),
            Some(full_record("c"))
        );
        assert_eq!(ids(&store.list().unwrap()), vec!["a", "b", "pod/c"]);
        store.delete(&ContainerId::new("b")).unwrap();
        // Deleting what is not there is fine.
        store.delete(&ContainerId::new("never")).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get(&ContainerId::new("b")).unwrap(), None);
    assert_eq!(ids(&store.list().unwrap()), vec!["a", "pod/c"]);
}

#[test]
fn a_record_without_a_valid_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let e = store
        .put(&ContainerRecord::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no container id"), "{e}");
    let e = store
        .put(&record("bad id", ContainerState::Starting))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad id"), "{e}");
}

#[test]
fn corrupt_records_are_named_and_the_others_still_load() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for n in ["a", "b", "c", "d"] {
            store.put(&full_record(n)).unwrap();
        }
        // Garbage bytes under b.
        store
            .put_raw("pod/b", b"\x01garbage that is no record")
            .unwrap();
        // c with one payload byte flipped: the checksum must catch it.
        let mut bytes = store.get_raw("pod/c").unwrap().unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        store.put_raw("pod/c", &bytes).unwrap();
        // An empty value.
        store.put_raw("pod/e", b"").unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let list = store.list().unwrap();
    let shown = ids(&list);
    assert_eq!(list.len(), 5, "{shown:?}");
    assert_eq!(shown[0], "pod/a");
    assert_eq!(shown[3], "pod/d");
    for (i, id) in [(1, "pod/b"), (2, "pod/c"), (4, "pod/e")] {
        let e = list[i].as_ref().unwrap_err().to_string();
        assert!(
            e.contains(&format!("record of container {id} is corrupt")),
            "{e}"
        );
    }
    assert!(list[2]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("checksum"));
    // get() of a corrupt record is an error too, not a silent None.
    assert!(store.get(&ContainerId::new("pod").child("b")).is_err());
}

#[test]
fn a_second_opener_in_this_process_is_told_who_holds_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "another berth agent holds the store at {}",
            dir.path().display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    drop(first);
    // Released on drop.
    Store::open(dir.path()).unwrap();
}

#[test]
fn a_second_opener_in_another_process_is_refused() {
    let env = TestEnv::new("second_opener_process");
    let _held = Store::open(&env.state_dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_store-writer"))
        .arg(&env.state_dir)
        .arg(&env.runtime_dir)
        .arg("0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "another berth agent holds the store at {}",
            env.state_dir.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
}

#[test]
fn a_store_from_a_newer_berth_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put(&record("a", ContainerState::Running)).unwrap();
        store
            .write_schema_version(store::SCHEMA_VERSION + 1)
            .unwrap();
    }
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Schema { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&dir.path().display().to_string())
            && msg.contains(&format!("schema version {}", store::SCHEMA_VERSION + 1))
            && msg.contains(&format!("understands up to {}", store::SCHEMA_VERSION)),
        "{msg}"
    );
    // Not "repaired" by a rebuild from the runtime dir either: a newer
    // store must be left alone.
    let rt = RuntimeDir::open(dir.path().join("run")).unwrap();
    let e = Store::open_with_mirror(dir.path(), rt).unwrap_err();
    assert!(matches!(e, StoreError::Schema { .. }), "{e:?}");
}

/// Damages of sled's files, and whether sled 0.34.7 then fails to open
/// (`true`) or opens and silently drops data (`false`). Found by trying.
type Damage = (&'static str, bool, fn(&Path));

fn damages() -> Vec<Damage> {
    fn overwrite(p: &Path, at: u64, len: usize, byte: u8) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(p).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&vec![byte; len]).unwrap();
    }
    fn truncate(p: &Path, to: impl Fn(u64) -> u64) {
        let f = fs::OpenOptions::new().write(true).open(p).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(to(len)).unwrap();
    }
    vec![
        ("garbage config (db/conf)", true, |d| {
            fs::write(d.join("db/conf"), [0xAB; 64]).unwrap()
        }),
        ("log replaced by a directory", true, |d| {
            fs::remove_file(d.join("db/db")).unwrap();
            fs::create_dir(d.join("db/db")).unwrap();
        }),
        ("log truncated to 0", false, |d| {
            truncate(&d.join("db/db"), |_| 0)
        }),
        ("log truncated to half", false, |d| {
            truncate(&d.join("db/db"), |l| l / 2)
        }),
        ("log's first 4 KiB overwritten", false, |d| {
            overwrite(&d.join("db/db"), 0, 4096, 0xAB)
        }),
        ("log removed", false, |d| {
            fs::remove_file(d.join("db/db")).unwrap()
        }),
    ]
}

fn fill(store: &Store, n: usize) -> Vec<ContainerRecord> {
    let recs: Vec<ContainerRecord> = (0..n)
        .map(|i| {
            let mut r = full_record(&format!("c{i:02}"));
            r.sandbox_dir = format!("/sandbox/{}", "x".repeat(i * 100));
            r
        })
        .collect();
    for r in &recs {
        store.put(r).unwrap();
    }
    recs
}

#[test]
fn a_damaged_database_is_rebuilt_from_the_runtime_dir() {
    for (what, fails_to_open, damage) in damages() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let rt = RuntimeDir::open(dir.path().join("run")).unwrap();
        let recs = {
            let store = Store::open_with_mirror(&state, rt.clone()).unwrap();
            let recs = fill(&store, 20);
            store.delete(&ContainerId::new("pod").child("c03")).unwrap();
            recs
        };
        let want: Vec<ContainerRecord> = recs
            .into_iter()
            .filter(|r| r.id.as_ref().unwrap().value != "c03")
            .collect();
        damage(&state);

        // What sled alone makes of it: documents the finding, and fails
        // loudly if a sled upgrade changes it (then revisit the store).
        {
            let plain = Store::open(&state);
            match (&plain, fails_to_open) {
                (Err(StoreError::Sled { .. }), true) => {}
                (Ok(s), false) => {
                    let n = s.list().unwrap().len();
                    assert!(n < want.len(), "{what}: sled kept all {n} records");
                }
                _ => panic!("{what}: sled behaved differently than documented: {plain:?}"),
            }
        }
        let store = Store::open_with_mirror(&state, rt.clone()).unwrap();
        let mut got: BTreeMap<String, ContainerRecord> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|r| {
                let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
                (r.id.as_ref().unwrap().to_string(), r)
            })
            .collect();
        for w in &want {
            let id = w.id.as_ref().unwrap().to_string();
            // Not assert_eq on records: their Debug is pages long.
            assert!(
                got.remove(&id).as_ref() == Some(w),
                "{what}: {id} lost or changed"
            );
        }
        // A delete that sled's damage undid may come back (a record of a
        // dead container; recovery destroys it again). Nothing else may.
        let extra: Vec<&String> = got.keys().collect();
        assert!(
            extra.is_empty() || extra == ["pod/c03"],
            "{what}: unexpected records {extra:?}"
        );
        if !extra.is_empty() {
            eprintln!("{what}: sled's damage undid a delete: {extra:?} came back");
        }
        let total = want.len() + extra.len();
        let aside = fs::read_dir(&state)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("db.broken-")
            })
            .count();
        assert_eq!(aside, usize::from(fails_to_open), "{what}");
        // And the rebuilt store is a working one. sled's own threads may
        // hold the file lock a moment after the drop: wait for them.
        drop(store);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match Store::open(&state) {
                Ok(s) => break s,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(e) => panic!("{what}: reopen: {e}"),
            }
        };
        assert_eq!(store.list().unwrap().len(), total, "{what}");
    }
}

#[test]
fn the_mirror_repairs_a_corrupt_record_but_a_corrupt_mirror_does_not_win() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rt = RuntimeDir::open(dir.path().join("run")).unwrap();
    {
        let store = Store::open_with_mirror(&state, rt.clone()).unwrap();
        store.put(&full_record("a")).unwrap();
        store.put(&full_record("b")).unwrap();
        store.put_raw("pod/a", b"\x01junk").unwrap();
    }
    let b_mirror = rt
        .container_dir(&ContainerId::new("pod").child("b"))
        .join(runtime::RECORD);
    fs::write(&b_mirror, b"\x01junk").unwrap();
    let store = Store::open_with_mirror(&state, rt).unwrap();
    assert_eq!(ids(&store.list().unwrap()), vec!["pod/a", "pod/b"]);
}

#[test]
fn records_only_in_sled_survive_an_emptied_runtime_dir() {
    // /run is a tmpfs: after a reboot the mirrors are gone, the records
    // (needed to clean up rootfs and sandboxes) must not be.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    {
        let rt = RuntimeDir::open(dir.path().join("run")).unwrap();
        let store = Store::open_with_mirror(&state, rt).unwrap();
        fill(&store, 3);
    }
    fs::remove_dir_all(dir.path().join("run")).unwrap();
    let rt = RuntimeDir::open(dir.path().join("run")).unwrap();
    let store = Store::open_with_mirror(&state, rt.clone()).unwrap();
    assert_eq!(store.list().unwrap().len(), 3);
    // …and are mirrored again, so a later rebuild has them.
    for id in ["pod/c00", "pod/c01", "pod/c02"] {
        let f = rt
            .container_dir(&ContainerId::parse(id).unwrap())
            .join(runtime::RECORD);
        assert!(f.exists(), "{} not mirrored", f.display());
    }
}

/// What a reopened store holds: key → seq of the workload, every record
/// whole.
fn contents(store: &Store, what: &str) -> BTreeMap<String, u64> {
    store
        .list()
        .unwrap()
        .into_iter()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{what}: torn record: {e}"));
            let seq = store_workload::seq_of(&r).unwrap();
            let key = r.id.unwrap().to_string();
            r_check(&key, seq);
            (key, seq)
        })
        .collect()
}

fn r_check(key: &str, seq: u64) {
    assert_eq!(
        store_workload::op(seq),
        store_workload::Op::Put {
            key: key.to_string(),
            seq
        },
        "record {key} names a step that did not write it"
    );
}

/// Kills a writer with SIGKILL at random moments, ≥ 50 times, and checks
/// after each kill that every acknowledged step survived and nothing is
/// torn: the store holds exactly the state after the acknowledged steps,
/// or after one more (the step in flight may or may not have landed).
#[test]
fn acknowledged_writes_survive_sigkill() {
    const KILLS: usize = 60;
    let env = TestEnv::new("store_sigkill");
    let seed: u64 = rand::random();
    eprintln!("acknowledged_writes_survive_sigkill: seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut next = 0u64; // first step not yet acknowledged
    let mut sled_alone_lost = Vec::new();
    let mut early_kills = 0;
    for round in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_store-writer"))
            .arg(&env.state_dir)
            .arg(&env.runtime_dir)
            .arg(next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut acked = Vec::new();
        // One round in five kills without waiting for the first ack: the
        // writer may be opening, recovering or reconciling.
        if rng.gen_ratio(1, 5) {
            early_kills += 1;
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..15)));
        } else {
            let mut first = String::new();
            stdout.read_line(&mut first).unwrap();
            if first.is_empty() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("round {round}: writer exited before its first ack: {err}");
            }
            acked.push(first);
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..30)));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        acked.extend(rest.split_inclusive('\n').map(str::to_string));
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            status.code().is_none(),
            "round {round}: writer failed: {status:?} {err}"
        );
        for line in acked {
            // A line without its newline is an ack cut short: not counted.
            let Some(seq) = line.strip_suffix('\n').and_then(|l| l.strip_prefix("ack ")) else {
                continue;
            };
            let seq: u64 = seq.parse().unwrap();
            assert_eq!(seq, next, "round {round}: acks out of order");
            next = seq + 1;
        }

        let what = format!("round {round} (seed {seed}, {next} steps acked)");
        let (done, in_flight) = (store_workload::model(next), store_workload::model(next + 1));
        // sled alone, without the mirror's help.
        {
            let store = Store::open(&env.state_dir)
                .unwrap_or_else(|e| panic!("{what}: sled alone cannot open: {e}"));
            let got = contents(&store, &what);
            if got != done && got != in_flight {
                sled_alone_lost.push(what.clone());
            }
        }
        // The store as the agent opens it.
        let store =
            Store::open_with_mirror(&env.state_dir, RuntimeDir::open(&env.runtime_dir).unwrap())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = contents(&store, &what);
        assert!(
            got == done || got == in_flight,
            "{what}: store holds {got:?}, want {done:?} or {in_flight:?}"
        );
    }
    eprintln!(
        "acknowledged_writes_survive_sigkill: {KILLS} kills ({early_kills} before the first ack), \
         {next} steps acked, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(next > KILLS as u64, "the writer barely wrote: {next} steps");
    assert!(
        sled_alone_lost.is_empty(),
        "sled alone lost acknowledged writes after SIGKILL: {sled_alone_lost:?}"
    );
}

#[test]
fn the_mirror_is_rewritten_in_place_and_an_update_cut_short_reads_as_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rt = RuntimeDir::open(dir.path().join("run")).unwrap();
    let long = full_record("x");
    let mut short = record("x", ContainerState::Running);
    short.id = long.id.clone();
    let mirror = rt
        .container_dir(long.id.as_ref().unwrap())
        .join(runtime::RECORD);
    use std::os::unix::fs::MetadataExt;
    {
        let store = Store::open_with_mirror(&state, rt.clone()).unwrap();
        store.put(&long).unwrap();
        let ino = fs::metadata(&mirror).unwrap().ino();
        // One inode for the file's life: no temp file, no rename.
        store.put(&short).unwrap();
        store.put(&long).unwrap();
        assert_eq!(fs::metadata(&mirror).unwrap().ino(), ino);
        assert_eq!(fs::read(&mirror).unwrap().len(), long.encoded_len() + 5);
    }
    // A crash between the write of the shorter record and the truncate:
    // its bytes, then the tail of the longer one. Sled still holds the
    // longer (the mirror is written first), and that copy must win.
    let full = fs::read(&mirror).unwrap();
    {
        let store = Store::open_with_mirror(&state, rt.clone()).unwrap();
        store.put(&short).unwrap();
    }
    let cut_short = {
        let mut v = fs::read(&mirror).unwrap();
        v.extend_from_slice(&full[v.len()..]);
        v
    };
    {
        // Sled back to the longer record, as if the put had died after
        // the mirror's write and before sled's.
        let store = Store::open_with_mirror(&state, rt.clone()).unwrap();
        store.put(&long).unwrap();
    }
    fs::write(&mirror, &cut_short).unwrap();
    let store = Store::open_with_mirror(&state, rt).unwrap();
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    let got = list
        .into_iter()
        .next()
        .unwrap()
        .expect("sled's record, whole");
    assert_eq!(got, long);
}

#[test]
fn a_store_behind_on_thousands_of_records_catches_up_from_the_mirror() {
    // Enough records that the mirror is read in several parts at once.
    const N: usize = 1500;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rt = RuntimeDir::open(dir.path().join("run")).unwrap();
    let name = |i: usize| format!("m{i:04}");
    {
        let store = Store::open_with_mirror(&state, rt.clone()).unwrap();
        for i in 0..N {
            store.put(&full_record(&name(i))).unwrap();
        }
    }
    // sled alone loses every seventh record; the mirrors keep them.
    {
        let store = Store::open(&state).unwrap();
        for i in (0..N).step_by(7) {
            store
                .delete(&ContainerId::new("pod").child(name(i)))
                .unwrap();
        }
        assert_eq!(store.list().unwrap().len(), N - N.div_ceil(7));
    }
    let store = Store::open_with_mirror(&state, rt).unwrap();
    let list = store.list().unwrap();
    assert_eq!(list.len(), N);
    for (i, r) in list.into_iter().enumerate() {
        assert_eq!(r.unwrap(), full_record(&name(i)));
    }
}
