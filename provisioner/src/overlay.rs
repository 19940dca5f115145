//! The overlay backend: lowerdirs = the cached layers, an upper and a work
//! dir per container.
//!
//! Long layer lists: the mount data is limited to one page (4096 bytes),
//! and 64-hex layer paths would overflow it after ~35 layers. As Docker's
//! overlay2 driver does, the container dir gets short symlinks `l/0`,
//! `l/1`, … to the layer dirs, and the mount is made with paths relative
//! to the container dir from a helper thread that has its own cwd
//! (`unshare(CLONE_FS)`, so berth's cwd is untouched): `lowerdir=l/2:l/1:l/0`
//! is about 5 bytes per layer, which is enough for the 500 layers overlay
//! itself allows.

use crate::error::{io, Error, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// Whether this kernel has overlayfs (built in or loaded).
pub fn available() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.trim_end().ends_with("\toverlay") || l.trim() == "nodev\toverlay")
        })
        .unwrap_or(false)
}

/// Mounts the overlay of `layers` (bottom first) at `<cdir>/rootfs`.
pub fn mount_rootfs(cdir: &Path, layers: &[PathBuf]) -> Result<()> {
    let l = cdir.join("l");
    for d in ["l", "upper", "work", "rootfs"] {
        let p = cdir.join(d);
        std::fs::create_dir_all(&p).map_err(io("create", &p))?;
    }
    for (i, layer) in layers.iter().enumerate() {
        let link = l.join(i.to_string());
        std::os::unix::fs::symlink(layer, &link).map_err(io("symlink", &link))?;
    }
    // Overlay lists the top layer first.
    let lower: Vec<String> = (0..layers.len()).rev().map(|i| format!("l/{i}")).collect();
    // `volatile`: no sync of the upper filesystem, ever. Without it the
    // overlay's unmount at every destroy syncs the whole filesystem the
    // upper dir lives on (~0.7 ms of each destroy here, and every dirty
    // page of that disk written out), and a container's fsync reaches the
    // disk. Nothing in an upper dir outlives its container: after a host
    // crash recovery destroys the container and discards the dir, never
    // mounting it again (which a volatile upper would refuse).
    let data = format!(
        "lowerdir={},upperdir=upper,workdir=work,volatile",
        lower.join(":")
    );
    let cdir2 = cdir.to_path_buf();
    let rootfs = cdir.join("rootfs");
    std::thread::spawn(move || -> Result<()> {
        let sys = |op, e| Error::Sys {
            op,
            path: cdir2.clone(),
            source: e,
        };
        // A private fs context: chdir here does not move berth's cwd.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
            .map_err(|e| sys("unshare(CLONE_FS)", e))?;
        nix::unistd::chdir(&cdir2).map_err(|e| sys("chdir", e))?;
        mount(
            Some("overlay"),
            "rootfs",
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| sys("mount overlay on rootfs in", e))
    })
    .join()
    .map_err(|_| Error::Layer {
        layer: rootfs.display().to_string(),
        why: "the overlay mount thread panicked".into(),
    })?
}

/// Unmounts `path` if something is mounted there (lazily if busy).
pub fn unmount(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()), // not a mount point
        Err(nix::Error::EBUSY) => umount2(path, MntFlags::MNT_DETACH).map_err(|e| Error::Sys {
            op: "umount (detach)",
            path: path.to_path_buf(),
            source: e,
        }),
        Err(e) => Err(Error::Sys {
            op: "umount",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}
