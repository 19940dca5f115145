//! The benchmark's smoke mode (a few iterations of every part), so the
//! benchmark command cannot rot. Its numbers are not checked here: speed
//! is shown by `scripts/bench`, never by a timed test.

use berth_tests::{require_tool, TestEnv};
use std::process::Command;

#[test]
fn the_benchmark_runs_end_to_end_and_cleans_up() {
    for t in ["umoci", "skopeo", "runc", "containerd", "ctr"] {
        require_tool(t);
    }
    let env = TestEnv::new("bench-smoke");
    let json = env.path("bench.json");
    let child = Command::new(env!("CARGO_BIN_EXE_berth-bench"))
        .args(["--smoke", "--json"])
        .arg(&json)
        // The bench's temp dir goes inside the test's (leak-checked) one.
        .env("TMPDIR", &env.temp_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "### Lifecycle",
        "| runc run |",
        "| containerd (ctr run --rm) |",
        "| berth (embedded API) |",
        "| berth run (process) |",
        "| berth run (agent) |",
        "| berth run (agent), quiet node (50 ms apart) |",
        "| runc run, quiet node (50 ms apart) |",
        "On a quiet node",
        "| berth (embedded API) + no-op remote plugin |",
        "A no-op remote isolator plugin",
        "### Where berth's time goes",
        "### Throughput",
        "### Recovery",
        "### Memory per running container",
        "### Images",
        "### Targets",
    ] {
        assert!(stdout.contains(part), "no {part:?} in:\n{stdout}");
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for peer in [
        "berth (embedded API)",
        "runc run",
        "containerd (ctr run --rm)",
        "berth run (process)",
        "berth run (agent)",
        "berth run (agent), quiet node (50 ms apart)",
        "runc run, quiet node (50 ms apart)",
        "berth (embedded API) + no-op remote plugin",
    ] {
        let d = &report["lifecycle_ms"][peer];
        assert_eq!(d["n"], 3, "{peer}: {d}");
        assert!(d["p50_ms"].as_f64().unwrap() > 0.0, "{peer}: {d}");
    }
    assert!(report["supervisor_private_dirty_kib"].as_f64().unwrap() > 0.0);
    assert!(report["noop_plugin_preparing_p50_ms"].as_f64().unwrap() > 0.0);
    assert!(report["shim_private_dirty_kib"].as_f64().unwrap() > 0.0);
    assert_eq!(report["targets"].as_array().unwrap().len(), 10);
    // Nothing of the bench is left in any cgroup hierarchy (its roots end
    // with its pid).
    let suffix = format!("-{pid}");
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for e in std::fs::read_dir(h.path()).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(
                !(n.starts_with("berth-bench-") && n.ends_with(&suffix)),
                "cgroup {} left behind",
                e.path().display()
            );
        }
    }
}
