//! `disk/du`: usage of the sandbox in usage(), and a container writing
//! beyond its disk limit destroyed with reason LIMITATION (disk).

use berth::{ContainerConfig, ContainerId, Containerizer, NodeOptions, Resources};
use berth_tests::TestEnv;
use std::time::Duration;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn writing_beyond_the_disk_limit_is_a_disk_limitation() {
    let env = TestEnv::new("disk-limit");
    let out = env
        .berth()
        .args(["run", "--disk-check-interval-ms", "100", "--json"])
        .args(["--name", &env.name, "--disk", "4M", "--"])
        .args([
            "sh",
            "-c",
            "dd if=/dev/zero of=\"$BERTH_SANDBOX/big\" bs=1M count=16 2>/dev/null; sleep 100",
        ])
        .output()
        .expect("run berth");
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("{e}: {} / {}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(json["reason"], "LIMITATION", "{json}");
    assert_eq!(json["limited_resource"], "disk", "{json}");
    let msg = json["message"].as_str().unwrap();
    assert!(msg.contains("exceeds the limit of 4194304 bytes"), "{json}");
    assert_eq!(out.status.code(), Some(137), "{json}");
}

#[actix_rt::test]
async fn usage_reports_the_sandbox_and_the_limit() {
    let env = TestEnv::new("disk-usage");
    let c = Containerizer::builder(&env.state_dir, &env.runtime_dir)
        .cgroup_root(&env.cgroup_root)
        .supervisor(env!("CARGO_BIN_EXE_berth-test-supervisor"))
        .node_options(NodeOptions {
            disk_check_interval: Some(Duration::from_millis(100)),
            ..Default::default()
        })
        .default_isolators()
        .build()
        .unwrap();
    c.recover().await.unwrap();
    let id = ContainerId::new(&env.name);
    let config = ContainerConfig {
        command: vec![
            "dd if=/dev/zero of=\"$BERTH_SANDBOX/f\" bs=1M count=3 2>/dev/null; \
             touch \"$BERTH_SANDBOX/done\"; sleep 100"
                .into(),
        ],
        shell: true,
        resources: Some(Resources {
            disk_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    };
    c.launch(id.clone(), config).await.unwrap();
    let mut used = 0;
    for _ in 0..100 {
        let u = c.usage(id.clone()).await.unwrap();
        assert_eq!(u.disk_limit_bytes, 64 << 20);
        used = u.disk_used_bytes;
        if used >= 3 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        used >= 3 << 20,
        "usage never reached the 3 MiB written: {used}"
    );
    let t = c.destroy(id.clone()).await.unwrap();
    assert_eq!(t.reason(), berth::TerminationReason::Destroyed, "{t:?}");
    c.remove(id).await.unwrap();
}
