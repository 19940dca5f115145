//! A container's own cgroup namespace (`namespaces/cgroup`, a default
//! isolator), seen from inside real containers: `/proc/self/cgroup`
//! shows `/`, and `/sys/fs/cgroup` holds only the hierarchies the
//! container joined, each rooted at the container's own cgroup and
//! read-only — with an image or on the host filesystem, sharing the
//! host's network (a bind of the host's /sys) or with its own (a fresh
//! sysfs). And the cgroup2 case, through the launcher with its kill
//! cgroup on the unified hierarchy.

use berth_launcher::{LaunchSpec, Launcher, LauncherConfig, LinuxLauncher, Stdio};
use berth_state::{ContainerId, LaunchInfo, Namespace};
use berth_tests::{cgroup_mounts, require_tool, TestEnv};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn both(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// `key=value` lines of the container's report.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in output:\n{out}"))
        .trim()
}

/// What the container reports about its cgroups (busybox applets, so the
/// same script serves the image and the host filesystem).
const REPORT: &str = "\
echo lines=$(busybox wc -l < /proc/self/cgroup); \
echo notroot=$(busybox grep -vc ':/$' /proc/self/cgroup); \
echo top=$(busybox ls /sys/fs/cgroup | busybox tr '\\n' ' '); \
echo topdirs=$(busybox find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d | busybox wc -l); \
echo files=$(busybox ls /sys/fs/cgroup/memory | busybox tr '\\n' ' '); \
echo dirs=$(busybox find /sys/fs/cgroup/memory -mindepth 1 -type d | busybox wc -l); \
echo limit=$(busybox cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
echo procs=$(busybox cat /sys/fs/cgroup/pids/cgroup.procs | busybox tr '\\n' ' '); \
(echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes) 2>/dev/null; echo write=$?; \
(echo 1 > /sys/fs/cgroup/pids/pids.max) 2>/dev/null; echo write_pids=$?; \
busybox mkdir /sys/fs/cgroup/memory/sub 2>/dev/null; echo mkdir=$?; \
busybox touch /sys/fs/cgroup/x 2>/dev/null; echo touch=$?; \
echo mounts=$(busybox grep -c ' - cgroup' /proc/self/mountinfo)";

const LIMIT: u64 = 48 << 20;

/// The host's v1 hierarchies (by their place under /sys/fs/cgroup) that
/// hold none of the controllers a berth container joins: they must not
/// show inside. Plus the unified mount, which holds none of them here.
fn not_joined() -> Vec<String> {
    const JOINED: &[&str] = &["cpu", "cpuacct", "memory", "pids", "devices", "freezer"];
    cgroup_mounts()
        .into_iter()
        .filter(|m| !m.v2 && !m.controllers.iter().any(|c| JOINED.contains(&c.as_str())))
        .filter_map(|m| {
            m.mount_point
                .strip_prefix("/sys/fs/cgroup")
                .ok()
                .map(|p| p.display().to_string())
        })
        .filter(|p| !p.is_empty())
        .collect()
}

fn check_report(what: &str, out: &Output) {
    let all = both(out);
    assert_eq!(out.status.code(), Some(0), "{what}: {all}");
    let s = text(&out.stdout);
    assert!(
        field(&s, "lines").parse::<u32>().unwrap() > 0,
        "{what}: {all}"
    );
    assert_eq!(
        field(&s, "notroot"),
        "0",
        "{what}: every /proc/self/cgroup path is /: {all}"
    );
    let top: Vec<&str> = field(&s, "top").split_whitespace().collect();
    for h in ["memory", "pids", "devices"] {
        assert!(top.contains(&h), "{what}: {h} is shown: {all}");
    }
    for h in not_joined() {
        assert!(
            !top.contains(&h.as_str()),
            "{what}: {h} was not joined and must not show: {all}"
        );
    }
    let files = field(&s, "files");
    assert!(
        files
            .split_whitespace()
            .any(|f| f == "memory.limit_in_bytes"),
        "{what}: {all}"
    );
    assert!(
        !files.contains("berth"),
        "{what}: no berth (or other container's) dir: {all}"
    );
    assert_eq!(
        field(&s, "dirs"),
        "0",
        "{what}: the container's own cgroup has no child: {all}"
    );
    assert_eq!(
        field(&s, "limit"),
        LIMIT.to_string(),
        "{what}: the limit asked: {all}"
    );
    // The container's own processes, by their pids in its pid namespace.
    assert!(
        field(&s, "procs").split_whitespace().any(|p| p == "1"),
        "{what}: {all}"
    );
    for k in ["write", "write_pids", "mkdir", "touch"] {
        assert_ne!(
            field(&s, k),
            "0",
            "{what}: {k} must fail (read-only): {all}"
        );
    }
    assert_eq!(
        field(&s, "mounts"),
        field(&s, "topdirs"),
        "{what}: one cgroup mount per shown hierarchy, no host mount left below: {all}"
    );
}

fn run(env: &TestEnv, args: &[&str]) -> Output {
    env.berth()
        .arg("run")
        .args(["--memory", &LIMIT.to_string()])
        .args(args)
        .args(["--", "sh", "-c", REPORT])
        .output()
        .expect("run berth")
}

#[test]
fn an_image_container_sees_only_its_own_cgroups_read_only() {
    require_tool("umoci");
    let env = TestEnv::new("cgns-image");
    berth_tests::import_busybox(&env);
    check_report("image", &run(&env, &["--image", "busybox"]));
    check_report(
        "image, own network",
        &run(&env, &["--image", "busybox", "--network", "none"]),
    );
}

#[test]
fn a_host_filesystem_container_sees_only_its_own_cgroups_read_only() {
    let env = TestEnv::new("cgns-host");
    check_report("host filesystem", &run(&env, &[]));
    check_report(
        "host filesystem, own network",
        &run(&env, &["--network", "none"]),
    );
    // The host's own view is untouched: the detach and the tmpfs were
    // the container's mount namespace's only.
    assert!(std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists());
    let top: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for h in not_joined() {
        assert!(top.contains(&h), "the host lost {h}: {top:?}");
    }
}

/// The launcher alone, with its kill cgroup on the unified (cgroup2)
/// hierarchy: the cgroup2 fs is mounted fresh inside the namespace, at
/// its place, showing the container's own cgroup as its root.
#[actix_rt::test]
async fn a_cgroup2_hierarchy_shows_the_containers_own_cgroup() {
    let env = TestEnv::new("cgns-v2");
    let unified = env.cgroup_dir("unified");
    let mount = unified.parent().unwrap().to_path_buf();
    let rel = mount
        .strip_prefix("/sys/fs/cgroup")
        .expect("the unified hierarchy lies below /sys/fs/cgroup")
        .to_path_buf();
    let inside = PathBuf::from("/sys/fs/cgroup").join(&rel);
    let mut cfg = LauncherConfig::new(&env.runtime_dir);
    cfg.cgroup_root = env.cgroup_root.clone();
    cfg.supervisor = Some(PathBuf::from(env!("CARGO_BIN_EXE_berth-test-supervisor")));
    cfg.cgroup_mount = Some(mount.clone());
    let l = LinuxLauncher::new(cfg).unwrap();
    let id = ContainerId::new("v2");
    let script = format!(
        "echo self=$(grep '^0::' /proc/self/cgroup); \
         echo procs=$(cat {d}/cgroup.procs | tr '\\n' ' '); \
         echo dirs=$(find {d} -mindepth 1 -type d | wc -l); \
         echo top=$(ls /sys/fs/cgroup | tr '\\n' ' '); \
         (echo 1 > {d}/cgroup.procs) 2>/dev/null; echo write=$?",
        d = inside.display()
    );
    let sandbox = env.mkdir("sandbox-v2");
    let spec = LaunchSpec {
        id: id.clone(),
        argv: vec!["/bin/sh".into(), "-c".into(), script],
        env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
        launch_info: LaunchInfo {
            clone_namespaces: [Namespace::Pid, Namespace::Mount, Namespace::Cgroup]
                .iter()
                .map(|n| *n as i32)
                .collect(),
            ..Default::default()
        },
        user: None,
        sandbox_dir: sandbox.clone(),
        sandbox_identity: None,
        stdio: Stdio::SandboxFiles,
        init: false,
        io: Default::default(),
        restore: None,
    };
    l.fork(spec).await.expect("fork");
    l.release(id.clone()).await.expect("release");
    let status = tokio::time::timeout(Duration::from_secs(30), l.wait(id.clone()))
        .await
        .expect("the container exits within 30 s")
        .expect("wait");
    l.destroy(id.clone()).await.expect("destroy");
    l.remove(id).await.expect("remove");
    let out = std::fs::read_to_string(sandbox.join("stdout")).unwrap_or_default();
    let err = std::fs::read_to_string(sandbox.join("stderr")).unwrap_or_default();
    let all = format!("{status:?}\nstdout: {out}\nstderr: {err}");
    assert_eq!(field(&out, "self"), "0::/", "{all}");
    assert_eq!(
        field(&out, "procs").split_whitespace().next(),
        Some("1"),
        "{all}"
    );
    assert_eq!(field(&out, "dirs"), "0", "{all}");
    // Only the joined hierarchy shows (the launcher's alone here).
    assert_eq!(field(&out, "top"), rel.display().to_string(), "{all}");
    assert_ne!(field(&out, "write"), "0", "{all}");
}
