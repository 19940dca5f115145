//! Checkpoint and restore of a native container's processes with CRIU.
//!
//! The dump runs from the agent (`criu dump -t INIT`, the container frozen
//! by its freezer cgroup first, so the rootfs saved meanwhile and the dump
//! agree); the restore runs in the new container's supervisor
//! (`supervisor/criu.rs`), so the restored init is its child as a forked one
//! would be. What lies outside the dumped tree is named to CRIU by key and
//! given back on restore: the bind mounts from the host (`berth-mnt:PATH`:
//! the sandbox, the volumes), the network namespace the network isolator
//! made (`berth-netns`: the restore joins the new container's), the
//! supervisor's ends of the stdio (`pipe:[INODE]`, the host's `/dev/null`
//! as `file[MNT:INODE]`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// berth's manifest in the image dir ([`berth_state::CriuCheckpoint`]).
pub const MANIFEST: &str = "berth.checkpoint";
/// CRIU's logs, kept in the image dir.
pub const DUMP_LOG: &str = "dump.log";
pub const RESTORE_LOG: &str = "restore.log";
/// The external key of the container's network namespace.
pub const NETNS_KEY: &str = "berth-netns";
/// The rootfs changes (the overlay upper dir), beside the images.
pub const ROOTFS_TAR: &str = "rootfs-upper.tar";

/// The external key of a bind mount at `target` in the container.
pub fn mount_key(target: &str) -> String {
    format!("berth-mnt:{target}")
}

/// The criu binary: `configured`, else `criu` on PATH.
pub fn resolve(configured: Option<&Path>) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let ok = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if let Some(p) = configured {
        return match ok(p) {
            true => Ok(p.to_path_buf()),
            false => Err(format!(
                "criu not found at {} (--criu-path): not an executable file",
                p.display()
            )),
        };
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("criu"))
                .find(|p| ok(p))
        })
        .ok_or_else(|| {
            "criu not found on PATH (install CRIU 4.1 or later, or give the agent --criu-path)"
                .to_string()
        })
}

/// What the dump needs besides the container's init and freezer cgroup.
pub struct DumpSpec {
    pub criu: PathBuf,
    /// Made by the caller, empty.
    pub image_dir: PathBuf,
    /// Container paths of the bind mounts from the host (sandbox, volumes).
    pub external_mounts: Vec<String>,
    /// Keep the container running after the dump (else it stays frozen,
    /// for the caller's destroy).
    pub leave_running: bool,
    /// Run while the container is frozen, before the dump (saving the
    /// rootfs changes); its error aborts the checkpoint.
    pub while_frozen: Option<Box<dyn FnOnce() -> Result<(), String> + Send>>,
}

impl std::fmt::Debug for DumpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpSpec")
            .field("criu", &self.criu)
            .field("image_dir", &self.image_dir)
            .field("external_mounts", &self.external_mounts)
            .field("leave_running", &self.leave_running)
            .finish()
    }
}

/// What the restore must be told about the dumped tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dumped {
    /// CRIU's names of the init's fds 0..2 (see [`stdio_key`]).
    pub stdio: Vec<String>,
    /// The network namespace was dumped as external ([`NETNS_KEY`]).
    pub external_netns: bool,
    /// How long the container was frozen.
    pub frozen: Duration,
}

/// CRIU's name for fd `fd` of `pid` when it is outside the container:
/// `pipe:[INODE]` for a pipe, `file[MNT:INODE]` (hex) for a file of another
/// mount namespace (the supervisor's `/dev/null`). `Ok(None)`: something
/// CRIU dumps itself (a pty of the container's devpts).
pub fn stdio_key(pid: i32, fd: i32) -> Result<Option<String>, String> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map_err(|e| format!("read /proc/{pid}/fd/{fd}: {e}"))?;
    let text = link.display().to_string();
    if text.starts_with("pipe:[") {
        return Ok(Some(text));
    }
    if text.starts_with("/dev/pts/") {
        return Ok(None);
    }
    if text != "/dev/null" {
        return Err(format!(
            "fd {fd} of the init is {text}, which CRIU cannot restore for another container"
        ));
    }
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .map_err(|e| format!("read /proc/{pid}/fdinfo/{fd}: {e}"))?;
    let mnt_id: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no mnt_id in /proc/{pid}/fdinfo/{fd}"))?;
    let st = nix::sys::stat::stat(format!("/proc/{pid}/fd/{fd}").as_str())
        .map_err(|e| format!("stat /proc/{pid}/fd/{fd}: {e}"))?;
    Ok(Some(format!("file[{mnt_id:x}:{:x}]", st.st_ino)))
}

/// Dumps the process tree of `init` (a pid on the host) into the image
/// dir; the container's freezer cgroup `freezer_dir` is frozen around it.
pub fn dump(
    freezer: &crate::freezer::Freezer,
    freezer_dir: &Path,
    init: i32,
    mut spec: DumpSpec,
    timeout: Duration,
) -> Result<Dumped, String> {
    let mut stdio = Vec::new();
    for fd in 0..3 {
        stdio.push(stdio_key(init, fd)?.unwrap_or_default());
    }
    let ns = |pid: &str| {
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .map_err(|e| format!("stat /proc/{pid}/ns/net: {e}"))
    };
    let netns = ns(&init.to_string())?;
    let external_netns = netns != ns("self")?;

    let mut args: Vec<String> = vec![
        "dump".into(),
        "-t".into(),
        init.to_string(),
        "-D".into(),
        spec.image_dir.display().to_string(),
        "-o".into(),
        DUMP_LOG.into(),
        "-v4".into(),
        // The freezer berth already holds; CRIU leaves it frozen.
        "--freeze-cgroup".into(),
        freezer_dir.display().to_string(),
        // The restore gives the tasks the new container's cgroups.
        "--manage-cgroups=ignore".into(),
        // Always: killing is the destroy's (after the caller decided).
        "--leave-running".into(),
    ];
    for target in &spec.external_mounts {
        args.push("--external".into());
        args.push(format!("mnt[{target}]:{}", mount_key(target)));
    }
    if external_netns {
        args.push("--external".into());
        args.push(format!("net[{netns}]:{NETNS_KEY}"));
    }
    for key in stdio.iter().filter(|k| k.starts_with("file[")) {
        args.push("--external".into());
        args.push(key.clone());
    }

    let started = std::time::Instant::now();
    freezer
        .set_frozen(freezer_dir, true, timeout)
        .map_err(|e| format!("freeze {}: {e}", freezer_dir.display()))?;
    let result = (|| {
        if let Some(f) = spec.while_frozen.take() {
            f()?;
        }
        run(&spec.criu, &args, &spec.image_dir, DUMP_LOG, timeout)
    })();
    let frozen = started.elapsed();
    if result.is_err() || spec.leave_running {
        freezer
            .set_frozen(freezer_dir, false, timeout)
            .map_err(|e| format!("thaw {} after the dump: {e}", freezer_dir.display()))?;
    }
    result?;
    Ok(Dumped {
        stdio,
        external_netns,
        frozen,
    })
}

/// Dumps a container of OCI runtime `rt` (runc) with `RUNTIME --criu
/// PATH checkpoint --leave-running`, paused around it as a native one is
/// frozen; without `leave_running` it is killed while still paused, so
/// nothing runs past the dump.
pub fn dump_oci(
    rt: &crate::oci::OciRuntime,
    id: &str,
    mut spec: DumpSpec,
    timeout: Duration,
) -> Result<Dumped, String> {
    let dir = spec.image_dir.display().to_string();
    let mut args = rt.global_args();
    args.extend([
        "--criu".to_string(),
        spec.criu.display().to_string(),
        "checkpoint".into(),
        "--image-path".into(),
        dir.clone(),
        "--work-path".into(),
        dir,
        "--leave-running".into(),
        id.to_string(),
    ]);
    let started = std::time::Instant::now();
    rt.set_frozen(id, true).map_err(|e| e.to_string())?;
    let result = (|| {
        if let Some(f) = spec.while_frozen.take() {
            f()?;
        }
        run(&rt.path, &args, &spec.image_dir, DUMP_LOG, timeout)
    })();
    let frozen = started.elapsed();
    if result.is_ok() && !spec.leave_running {
        // runc's `kill --all` of a paused container freezes, kills and
        // thaws it itself: nothing runs past the dump.
        rt.kill(id, libc::SIGKILL, true)
            .map_err(|e| format!("kill after the dump: {e}"))?;
    } else {
        rt.set_frozen(id, false)
            .map_err(|e| format!("resume after the dump: {e}"))?;
    }
    result?;
    Ok(Dumped {
        stdio: Vec::new(),
        external_netns: false,
        frozen,
    })
}

/// Runs `program` (criu, or a runtime driving it) with `args`; a failure
/// quotes the last lines of CRIU's log `log` (in `dir`, where it stays).
pub fn run(
    criu: &Path,
    args: &[String],
    dir: &Path,
    log: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut child = Command::new(criu)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("run {}: {e}", criu.display()))?;
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish within {timeout:?}; its log: {}",
                    criu.display(),
                    dir.join(log).display()
                ));
            }
            Err(e) => return Err(format!("wait for {}: {e}", criu.display())),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let op = match log {
        DUMP_LOG => "dump",
        _ => "restore",
    };
    Err(format!(
        "criu {op} failed ({status}); log {}: {}",
        dir.join(log).display(),
        log_tail(&dir.join(log)).unwrap_or(stderr)
    ))
}

/// The last error lines of a CRIU log (its `Error` lines, else its end).
pub fn log_tail(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // RLIMIT_NOFILE is CRIU's own harmless complaint on every run.
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .collect();
    let pick = match errors.is_empty() {
        true => &lines[lines.len().saturating_sub(3)..],
        false => &errors[errors.len().saturating_sub(4)..],
    };
    Some(pick.join(" | "))
}

/// `criu restore`'s arguments for the new container (beside the image
/// dir, log, pid file and stdio, which the supervisor adds): its rootfs
/// as the root and each dumped external mount mapped to the new
/// container's source of the same container path.
pub fn restore_args(
    rootfs: &Path,
    dumped_mounts: &[String],
    new_mounts: &[(String, String)],
) -> Result<Vec<String>, String> {
    let mut args = vec!["--root".to_string(), rootfs.display().to_string()];
    for target in dumped_mounts {
        let Some((_, source)) = new_mounts.iter().find(|(t, _)| t == target) else {
            return Err(format!(
                "the checkpoint has a mount at {target} that the new container lacks"
            ));
        };
        args.push("--external".into());
        args.push(format!("mnt[{}]:{source}", mount_key(target)));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_maps_each_dumped_mount_to_the_new_source() {
        let args = restore_args(
            Path::new("/r"),
            &["/mnt/sandbox".into(), "/data".into()],
            &[
                ("/data".into(), "/vol".into()),
                ("/mnt/sandbox".into(), "/sb/new".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            args,
            [
                "--root",
                "/r",
                "--external",
                "mnt[berth-mnt:/mnt/sandbox]:/sb/new",
                "--external",
                "mnt[berth-mnt:/data]:/vol"
            ]
        );
    }

    #[test]
    fn a_missing_mount_is_named() {
        let e = restore_args(Path::new("/r"), &["/data".into()], &[]).unwrap_err();
        assert!(e.contains("/data"), "{e}");
    }

    #[test]
    fn a_configured_path_that_is_no_binary_is_refused() {
        let e = resolve(Some(Path::new("/nonexistent/criu"))).unwrap_err();
        assert!(e.contains("/nonexistent/criu"), "{e}");
    }
}
