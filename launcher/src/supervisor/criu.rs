//! The supervisor's side of a restore (`SupervisorRequest.criu_image_dir`):
//! instead of forking the init it runs `criu restore --restore-detached`
//! from a child that joined the container's cgroups first (so the restored
//! tasks, CRIU's children, start there, and the cgroup namespace CRIU makes
//! is rooted there, as a forked init's is). The restored init is left
//! behind when CRIU exits and re-parented to the supervisor, the child
//! subreaper, which reaps it and records its exit as for its own init.
//! The dumped tree's outside ends are handed over by key: the
//! supervisor's new stdio pipes (and `/dev/null`) and the new container's
//! network namespace (`--inherit-fd`).

use super::Stdio;
use crate::criu::{NETNS_KEY, RESTORE_LOG};
use berth_state::{Namespace, SupervisorRequest};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// CRIU writes the restored init's pid here (in the runtime dir).
pub(crate) const PID_FILE: &str = "criu.pid";

/// Restores the dumped tree; the restored init's pid.
pub(super) fn restore(req: &SupervisorRequest, stdio: Stdio) -> Result<Pid, (i32, String)> {
    let io = |what: String| move |e: std::io::Error| (e.raw_os_error().unwrap_or(0), what);
    let rt = PathBuf::from(&req.runtime_dir);
    let pid_file = rt.join(PID_FILE);
    // CRIU refuses to write over an existing pid file.
    let _ = std::fs::remove_file(&pid_file);

    // (fd, key) pairs CRIU puts in place of what the dump named `key`.
    let mut keep: Vec<(OwnedFd, String)> = Vec::new();
    let key = |i: usize| req.criu_stdio.get(i).cloned().unwrap_or_default();
    if !key(0).is_empty() {
        keep.push((stdio.stdin, key(0)));
    }
    if let Some((out, err)) = stdio.files {
        for (fd, k) in [(out, key(1)), (err, key(2))] {
            if !k.is_empty() {
                keep.push((fd, k));
            }
        }
    }
    let info = req.launch_info.clone().unwrap_or_default();
    let netns = info
        .join_namespaces
        .iter()
        .find(|j| j.namespace == Namespace::Net as i32 && !j.path.is_empty());
    if let Some(j) = netns {
        let f = std::fs::File::open(&j.path).map_err(io(format!(
            "open the network namespace {} for the restore",
            j.path
        )))?;
        keep.push((f.into(), NETNS_KEY.to_string()));
    }

    let mut args: Vec<String> = vec![
        "restore".into(),
        "-D".into(),
        req.criu_image_dir.clone(),
        "-o".into(),
        RESTORE_LOG.into(),
        "-v4".into(),
        "--restore-detached".into(),
        "--pidfile".into(),
        pid_file.display().to_string(),
        "--manage-cgroups=ignore".into(),
    ];
    for (fd, k) in &keep {
        args.push("--inherit-fd".into());
        args.push(format!("fd[{}]:{k}", fd.as_raw_fd()));
    }
    args.extend(req.criu_args.iter().cloned());

    let raw: Vec<i32> = keep.iter().map(|(fd, _)| fd.as_raw_fd()).collect();
    let cgroups = req.cgroups.clone();
    let mut cmd = Command::new(&req.criu_path);
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: between fork and exec of a single-threaded process: fcntl,
    // sigprocmask and plain file writes only.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &raw {
                libc::fcntl(*fd, libc::F_SETFD, 0);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            // The container's cgroups, as the init joins them: the
            // restored tasks are forked by CRIU, so they start there.
            for dir in &cgroups {
                super::cgroup_join::join_self(Path::new(dir)).map_err(|(_, e)| e)?;
            }
            Ok(())
        });
    }
    let status = cmd.status().map_err(io(format!("run {}", req.criu_path)))?;
    drop(keep);
    let dir = PathBuf::from(&req.criu_image_dir);
    if !status.success() {
        return Err((
            libc::ENOEXEC,
            format!(
                "criu restore failed ({status}); log {}: {}",
                dir.join(RESTORE_LOG).display(),
                crate::criu::log_tail(&dir.join(RESTORE_LOG)).unwrap_or_default()
            ),
        ));
    }
    std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
        .map(Pid::from_raw)
        .ok_or((
            libc::ENOENT,
            format!("criu restore left no pid in {}", pid_file.display()),
        ))
}
