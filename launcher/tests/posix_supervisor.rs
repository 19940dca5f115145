//! The crate's own `berth-supervisor` binary, end to end through the
//! POSIX launcher (no root, namespaces or cgroups needed): fork, release,
//! exit status, start errors, destroy, and the default path lookup.

use berth_launcher::{LaunchSpec, Launcher, LauncherConfig, PosixLauncher, ProcessStatus, Stdio};
use berth_state::{ContainerId, ExitStatus, LaunchInfo};
use std::path::PathBuf;
use std::time::Duration;

fn launcher(dir: &std::path::Path) -> PosixLauncher {
    let mut cfg = LauncherConfig::new(dir.join("run"));
    cfg.supervisor = Some(PathBuf::from(env!("CARGO_BIN_EXE_berth-supervisor")));
    PosixLauncher::new(cfg).unwrap()
}

fn spec(dir: &std::path::Path, id: &str, argv: &[&str]) -> LaunchSpec {
    let sandbox = dir.join(id);
    std::fs::create_dir_all(&sandbox).unwrap();
    LaunchSpec {
        id: ContainerId::new(id),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        launch_info: LaunchInfo::default(),
        user: None,
        sandbox_dir: sandbox,
        sandbox_identity: None,
        stdio: Stdio::SandboxFiles,
        init: false,
        io: Default::default(),
        restore: None,
    }
}

#[actix_rt::test]
async fn runs_a_command_and_records_its_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let l = launcher(tmp.path());
    let id = ContainerId::new("echo");
    let f = l
        .fork(spec(
            tmp.path(),
            "echo",
            &["/bin/sh", "-c", "echo hello; exit 4"],
        ))
        .await
        .unwrap();
    assert!(matches!(
        l.status(id.clone()).await.unwrap(),
        ProcessStatus::Running(_)
    ));
    l.release(id.clone()).await.unwrap();
    let s = tokio::time::timeout(Duration::from_secs(10), l.wait(id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(s, ExitStatus::Exited { code: 4, .. }), "{s:?}");
    let out = std::fs::read_to_string(tmp.path().join("echo/stdout")).unwrap();
    assert_eq!(out, "hello\n");
    l.destroy(id.clone()).await.unwrap();
    // destroy returns once the supervisor has exited (maybe not yet reaped).
    let stat =
        std::fs::read_to_string(format!("/proc/{}/stat", f.supervisor.pid)).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z ") || !f.supervisor.is_alive());
    assert!(matches!(
        l.status(id.clone()).await.unwrap(),
        ProcessStatus::Exited(_)
    ));
    l.remove(id.clone()).await.unwrap();
    assert!(!tmp.path().join("run/containers/echo").exists());
}

#[actix_rt::test]
async fn an_exec_failure_is_a_start_error() {
    let tmp = tempfile::tempdir().unwrap();
    let l = launcher(tmp.path());
    let id = ContainerId::new("missing");
    l.fork(spec(tmp.path(), "missing", &["/nonexistent"]))
        .await
        .unwrap();
    l.release(id.clone()).await.unwrap();
    match l.wait(id.clone()).await.unwrap() {
        ExitStatus::StartError { errno, message, .. } => {
            assert_eq!(errno, libc::ENOENT);
            assert_eq!(
                message,
                "exec /nonexistent: No such file or directory (os error 2)"
            );
        }
        other => panic!("{other:?}"),
    }
    l.destroy(id.clone()).await.unwrap();
    l.remove(id).await.unwrap();
}

#[test]
fn the_default_lookup_finds_the_built_supervisor() {
    // This test binary lives in target/<profile>/deps/; cargo built the
    // supervisor into target/<profile>/.
    let found = berth_launcher::default_supervisor_path().unwrap();
    assert_eq!(
        found.canonicalize().unwrap(),
        PathBuf::from(env!("CARGO_BIN_EXE_berth-supervisor"))
            .canonicalize()
            .unwrap()
    );
}
