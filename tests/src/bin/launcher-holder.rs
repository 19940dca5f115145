//! A stand-in for the agent in the launcher tests: forks and releases one
//! container, prints its supervisor and init, and then waits to be
//! killed — so a test can show that the container outlives its agent.
//!
//! `launcher-holder RUNTIME_DIR CGROUP_ROOT SUPERVISOR SANDBOX ID PIDNS(0|1) SHELL_COMMAND`
//! prints `forked SUP_PID SUP_START INIT_PID INIT_START`.

use berth_launcher::{LaunchSpec, Launcher, LauncherConfig, LinuxLauncher};
use berth_state::{ContainerId, LaunchInfo, Namespace};
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 8 {
        eprintln!("usage: launcher-holder RUNTIME_DIR CGROUP_ROOT SUPERVISOR SANDBOX ID PIDNS SHELL_COMMAND");
        std::process::exit(2);
    }
    let mut cfg = LauncherConfig::new(&args[1]);
    cfg.cgroup_root = args[2].clone();
    cfg.supervisor = Some(args[3].clone().into());
    let mut info = LaunchInfo {
        clone_namespaces: vec![Namespace::Mount as i32],
        ..Default::default()
    };
    if args[6] == "1" {
        info.clone_namespaces.push(Namespace::Pid as i32);
    }
    let spec = LaunchSpec {
        id: ContainerId::new(args[5].clone()),
        argv: vec!["/bin/sh".into(), "-c".into(), args[7].clone()],
        env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
        launch_info: info,
        user: None,
        sandbox_dir: args[4].clone().into(),
        sandbox_identity: None,
        stdio: Default::default(),
        init: false,
        io: Default::default(),
        restore: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let forked = rt.block_on(async {
        let l = LinuxLauncher::new(cfg).expect("launcher");
        let id = spec.id.clone();
        let forked = l.fork(spec).await.expect("fork");
        l.release(id).await.expect("release");
        forked
    });
    println!(
        "forked {} {} {} {}",
        forked.supervisor.pid,
        forked.supervisor.start_time,
        forked.init.pid,
        forked.init.start_time
    );
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
