//! `network/cni`: `--network none`, and two containers on a CNI bridge
//! talking TCP. Everything runs inside a network namespace the test makes
//! (`ip netns add`), so the bridge, the veths and the addresses live only
//! there; the host's network is never touched.

use berth::state::{network, Network};
use berth::{ContainerConfig, ContainerId, Containerizer, NodeOptions, TerminationReason};
use berth_tests::{require_tool, TestEnv};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A network namespace of the test's own, deleted on drop.
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn new(env: &TestEnv) -> TestNetns {
        require_tool("ip");
        let name = env.name.clone();
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(st.success(), "ip netns add {name} failed");
        TestNetns { name }
    }
    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
    /// `ip -n NS …` output.
    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run ip");
        assert!(out.status.success(), "ip {args:?}: {:?}", out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn network_none_has_only_lo_up() {
    require_tool("nsenter");
    let env = TestEnv::new("net-none");
    let ns = TestNetns::new(&env);
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg(berth_tests::berth_bin())
        .args(["--root".as_ref(), env.state_dir.as_os_str()])
        .args(["--runtime-dir".as_ref(), env.runtime_dir.as_os_str()])
        .args(["--cgroup-root", &env.cgroup_root])
        .args(["run", "--network", "none", "--"])
        .args(["sh", "-c", "ip -o link; ls /sys/class/net"])
        .output()
        .expect("run berth");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one interface, and only lo in sysfs: {stdout}"
    );
    assert!(
        lines[0].starts_with("1: lo:") && lines[0].contains(",UP"),
        "{stdout}"
    );
    assert_eq!(
        lines[1], "lo",
        "sysfs shows the container's netns: {stdout}"
    );
    assert_eq!(
        std::fs::read_dir(env.runtime_dir.join("netns"))
            .unwrap()
            .count(),
        0,
        "the netns file is gone"
    );
}

fn sh(script: &str, net: &str) -> ContainerConfig {
    ContainerConfig {
        command: vec![script.into()],
        shell: true,
        network: Some(Network {
            mode: network::Mode::Cni as i32,
            cni_network: net.into(),
        }),
        ..Default::default()
    }
}

/// The test body, run on a thread that has joined the test's netns (the
/// actix system, its blocking pool and every process it starts inherit it).
async fn two_containers_talk(env: &TestEnv, ns: &TestNetns) {
    let conf_dir = env.mkdir("cni");
    let ipam = env.path("ipam");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "berthnet",
        "plugins": [
            {"type": "bridge", "bridge": "berthbr0", "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "dataDir": ipam,
                      "ranges": [[{"subnet": "10.231.0.0/24"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(conf_dir.join("10-berthnet.conflist"), conflist.to_string()).unwrap();
    let c = Containerizer::builder(&env.state_dir, &env.runtime_dir)
        .cgroup_root(&env.cgroup_root)
        .supervisor(env!("CARGO_BIN_EXE_berth-test-supervisor"))
        .node_options(NodeOptions {
            cni_config_dir: Some(conf_dir),
            ..Default::default()
        })
        .default_isolators()
        .build()
        .unwrap();
    c.recover().await.unwrap();

    // An unknown network is refused before anything is created.
    let bad = ContainerId::new(format!("{}-bad", env.name));
    let e = c.launch(bad.clone(), sh("true", "nosuchnet")).await;
    assert!(
        e.as_ref()
            .is_err_and(|e| e.to_string().contains("no CNI network named \"nosuchnet\"")),
        "{e:?}"
    );
    let t = c.wait(bad.clone()).await.unwrap();
    assert_eq!(t.reason(), TerminationReason::StartError, "{t:?}");
    c.remove(bad).await.unwrap();

    let server = ContainerId::new(format!("{}-srv", env.name));
    // The server's stdin is a FIFO it holds open itself, so it never reads
    // EOF there: busybox nc half-closes the connection on stdin EOF, and a
    // client that sees that EOF before its `echo` has written exits having
    // sent nothing (the server then records "").
    c.launch(
        server.clone(),
        sh(
            "busybox mkfifo \"$BERTH_SANDBOX/in\" && exec 3<>\"$BERTH_SANDBOX/in\" && \
             busybox nc -l -p 8080 <&3 > \"$BERTH_SANDBOX/got\"",
            "berthnet",
        ),
    )
    .await
    .unwrap();
    let st = c.status(server.clone()).await.unwrap();
    let ip = st
        .isolator_fields
        .get("network.ip")
        .cloned()
        .unwrap_or_else(|| panic!("no network.ip in {:?}", st.isolator_fields));
    assert!(ip.starts_with("10.231.0."), "{ip}");
    assert_eq!(st.isolator_fields["network.name"], "berthnet");

    let client = ContainerId::new(format!("{}-cli", env.name));
    c.launch(
        client.clone(),
        sh(
            &format!(
                "for i in $(seq 100); do echo hello | busybox nc {ip} 8080 && exit 0; \
                 sleep 0.1; done; exit 1"
            ),
            "berthnet",
        ),
    )
    .await
    .unwrap();
    let cip = c.status(client.clone()).await.unwrap().isolator_fields["network.ip"].clone();
    assert_ne!(cip, ip);
    assert_eq!(
        ns.ip(&["-o", "link", "show", "type", "veth"])
            .lines()
            .count(),
        2
    );

    let t = c.wait(client.clone()).await.unwrap();
    assert_eq!(t.reason(), TerminationReason::Completed, "client: {t:?}");
    let t = tokio::time::timeout(Duration::from_secs(30), c.wait(server.clone()))
        .await
        .expect("the server got its connection")
        .unwrap();
    assert_eq!(t.reason(), TerminationReason::Completed, "server: {t:?}");
    let got = std::fs::read_to_string(st.sandbox_dir.join("got")).unwrap();
    assert_eq!(got, "hello\n", "what the server received over TCP");
    c.remove(client).await.unwrap();
    c.remove(server).await.unwrap();

    // Nothing remains: no veth, no netns file (or mount), no lease.
    assert_eq!(ns.ip(&["-o", "link", "show", "type", "veth"]), "");
    let left: Vec<_> = std::fs::read_dir(env.runtime_dir.join("netns"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "netns files left: {left:?}");
    let leases: Vec<String> = std::fs::read_dir(ipam.join("berthnet"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert!(leases.is_empty(), "IPAM leases left: {leases:?}");
}

#[test]
fn two_containers_on_a_cni_bridge_talk_tcp() {
    require_tool("busybox");
    let env = TestEnv::new("net-cni");
    let ns = TestNetns::new(&env);
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(ns.path()).expect("open the test netns");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            actix_rt::System::new().block_on(two_containers_talk(&env, &ns));
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
}

/// A network left by an agent that died (no record explains it) is DEL'd
/// and its netns removed when the next agent's isolator recovers.
async fn orphan_is_released(env: &TestEnv, ns: &TestNetns) {
    use berth::isolators::network::{CniConfig, CniNetwork};
    use berth::isolators::{Isolator, PrepareRequest};
    let conf_dir = env.mkdir("cni");
    let ipam = env.path("ipam");
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "orphannet", "type": "bridge", "bridge": "berthbr1",
        "ipam": {"type": "host-local", "dataDir": ipam, "ranges": [[{"subnet": "10.232.0.0/24"}]]}
    });
    std::fs::write(conf_dir.join("orphannet.conf"), conf.to_string()).unwrap();
    let cfg = CniConfig {
        config_dir: conf_dir,
        ..CniConfig::new(&env.runtime_dir)
    };
    let id = ContainerId::new(format!("{}-gone", env.name));
    let sandbox = env.mkdir("sandbox");
    let mut first = CniNetwork::new(cfg.clone());
    let info = first
        .prepare(&PrepareRequest {
            id: id.clone(),
            config: sh("true", "orphannet"),
            sandbox_dir: sandbox,
            rootfs: None,
            cgroup_root: env.cgroup_root.clone(),
        })
        .await
        .unwrap()
        .expect("a netns to join");
    assert_eq!(info.join_namespaces.len(), 1);
    first.isolate(&id, 1).await.unwrap();
    let ip = first.status(&id).await.unwrap()["network.ip"].clone();
    assert!(ipam.join("orphannet").join(&ip).exists(), "lease of {ip}");
    assert_eq!(
        ns.ip(&["-o", "link", "show", "type", "veth"])
            .lines()
            .count(),
        1
    );
    drop(first); // the agent dies without cleanup

    let mut next = CniNetwork::new(cfg);
    next.recover(&[], std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(ns.ip(&["-o", "link", "show", "type", "veth"]), "");
    assert!(
        !ipam.join("orphannet").join(&ip).exists(),
        "lease of {ip} left"
    );
    let left = std::fs::read_dir(env.runtime_dir.join("netns"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "netns files left");
    // Cleanup after recovery (a destroy retried) finds nothing and is fine.
    next.cleanup(&id).await.unwrap();
}

#[test]
fn an_orphans_network_is_released_at_recovery() {
    let env = TestEnv::new("net-orphan");
    let ns = TestNetns::new(&env);
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(ns.path()).expect("open the test netns");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            actix_rt::System::new().block_on(orphan_is_released(&env, &ns));
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
}
