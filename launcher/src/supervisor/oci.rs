//! The supervisor's side of an OCI runtime (`SupervisorRequest.oci_runtime`):
//! instead of forking the init, it runs `RUNTIME create --bundle B
//! --pid-file P ID` with the command's stdio as the runtime's own (runc
//! and runsc hand them to the container), as the child subreaper it
//! already is (as containerd's shim): the runtime's init, left behind by
//! `create`, is re-parented to it, so it reaps the init and records the
//! exit status as for its own init. The release is `RUNTIME start ID`.

use super::Stdio;
use berth_state::SupervisorRequest;
use nix::unistd::Pid;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The runtime writes the init's pid here (in the container's runtime dir).
pub(crate) const PID_FILE: &str = "oci.pid";
/// The runtime's own log (`--log`), read back for a failed `create`.
pub(crate) const LOG_FILE: &str = "oci.log";

/// `start` for the container, run at the release.
pub(super) struct Starter {
    cmd: Vec<String>,
}

impl Starter {
    /// Runs `start`; its failure text on error.
    pub(super) fn start(self) -> Result<(), String> {
        let out = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("run {}: {e}", self.cmd[0]))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{} start failed ({}): {}",
            self.cmd[0],
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs the runtime's `argv` on the container's stdio and waits for it.
fn run_runtime(argv: &[String], stdio: Stdio) -> Result<std::process::ExitStatus, (i32, String)> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(stdio.stdin);
    if let Some((out, err)) = stdio.files {
        cmd.stdout(out).stderr(err);
    }
    // SAFETY: between fork and exec: sigprocmask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // The supervisor blocks SIGCHLD for its signalfd: the runtime,
            // and the container after it, start with no signal blocked.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd.status().map_err(|e| {
        (
            e.raw_os_error().unwrap_or(0),
            format!("run {}: {e}", argv[0]),
        )
    })
}

fn base(req: &SupervisorRequest, rt: &Path) -> Vec<String> {
    let mut v = vec![req.oci_runtime.clone()];
    v.extend(req.oci_args.iter().cloned());
    v.extend(["--log".into(), rt.join(LOG_FILE).display().to_string()]);
    v
}

/// Runs `create`; the init's pid (from the pid file) once it waits for
/// `start`, and the [`Starter`] that releases it.
pub(super) fn create(
    req: &SupervisorRequest,
    stdio: Stdio,
) -> Result<(Pid, Starter), (i32, String)> {
    let rt = PathBuf::from(&req.runtime_dir);
    let pid_file = rt.join(PID_FILE);
    let _ = std::fs::remove_file(&pid_file);
    let mut argv = base(req, &rt);
    argv.push("create".into());
    argv.extend(req.oci_create_args.iter().cloned());
    argv.extend([
        "--bundle".into(),
        req.oci_bundle.clone(),
        "--pid-file".into(),
        pid_file.display().to_string(),
        req.container_id.clone(),
    ]);
    let status = run_runtime(&argv, stdio)?;
    if !status.success() {
        return Err((
            libc::ENOEXEC,
            format!(
                "{} create failed ({status}): {}",
                req.oci_runtime,
                last_error(&rt.join(LOG_FILE))
            ),
        ));
    }
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
        .ok_or((
            libc::ENOENT,
            format!(
                "{} create left no pid in {}",
                req.oci_runtime,
                pid_file.display()
            ),
        ))?;
    let mut start = base(req, &rt);
    start.extend(["start".into(), req.container_id.clone()]);
    Ok((Pid::from_raw(pid), Starter { cmd: start }))
}

/// Runs `RUNTIME --criu PATH restore --detach` of the checkpoint in
/// `criu_image_dir` with the new bundle (the runtime maps the dumped
/// stdio pipes onto its own fds, and the mounts and namespaces from the
/// bundle); the restored init's pid, re-parented to us when the runtime
/// exits.
pub(super) fn restore(req: &SupervisorRequest, stdio: Stdio) -> Result<Pid, (i32, String)> {
    let rt = PathBuf::from(&req.runtime_dir);
    let pid_file = rt.join(PID_FILE);
    let _ = std::fs::remove_file(&pid_file);
    let mut argv = base(req, &rt);
    argv.extend([
        "--criu".into(),
        req.criu_path.clone(),
        "restore".into(),
        "--detach".into(),
        "--bundle".into(),
        req.oci_bundle.clone(),
        "--pid-file".into(),
        pid_file.display().to_string(),
        "--image-path".into(),
        req.criu_image_dir.clone(),
        "--work-path".into(),
        req.criu_image_dir.clone(),
        req.container_id.clone(),
    ]);
    let status = run_runtime(&argv, stdio)?;
    if !status.success() {
        let dir = Path::new(&req.criu_image_dir);
        return Err((
            libc::ENOEXEC,
            format!(
                "{} restore failed ({status}): {}; CRIU's log {}: {}",
                req.oci_runtime,
                last_error(&rt.join(LOG_FILE)),
                dir.join(crate::criu::RESTORE_LOG).display(),
                crate::criu::log_tail(&dir.join(crate::criu::RESTORE_LOG)).unwrap_or_default()
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
            format!(
                "{} restore left no pid in {}",
                req.oci_runtime,
                pid_file.display()
            ),
        ))
}

/// The last error the runtime logged (runc: `level=error msg="…"`; runsc:
/// its last line), else the log's last line.
fn last_error(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let pick = lines
        .iter()
        .rev()
        .find(|l| l.contains("level=error") || l.contains("\"level\":\"error\""))
        .or(lines.last())
        .copied()
        .unwrap_or("(no log)");
    match pick.find("msg=") {
        Some(i) => pick[i + 4..].trim_matches('"').to_string(),
        None => pick.to_string(),
    }
}

/// An unused fd standing in for the init's status pipe: the runtime's init
/// reports nothing to the supervisor, so reading it gives EOF at once.
pub(super) fn no_status_pipe() -> Result<OwnedFd, (i32, String)> {
    let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| (e as i32, format!("pipe: {e}")))?;
    Ok(r)
}
