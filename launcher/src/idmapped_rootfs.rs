//! The rootfs of a container with a user namespace, idmapped so that the
//! image's root-owned files are its root's.
//!
//! An overlay mount itself cannot be idmapped (`mount_setattr` says
//! EINVAL), but its layers can: in the init's own mount namespace, a
//! second overlay is made over the same layers — each lower layer and the
//! dir holding `upper` and `uwork` (a work dir of its own: the
//! provisioner's volatile overlay marks `work` as unusable by any other
//! mount) cloned (`open_tree`) and idmapped with the container's user
//! namespace, handed to overlay by fd (`lowerdir+`, `upperdir`,
//! `workdir`), volatile too — and stacked on the rootfs. Its
//! superblock is created with the container root's host ids as fsuid and
//! fsgid (capabilities kept): overlay does its upper-layer work with the
//! creator's credentials, and the host's root has no id in the idmapping.
//!
//! The provisioner's overlay (`<cdir>/l/N` links to the layers, bottom
//! first; `<cdir>/upper`, `<cdir>/work`, `<cdir>/rootfs`) stays mounted on
//! the host, unused while the container runs (overlay warns once in the
//! kernel log that the upper dir is used by two mounts). Any other rootfs
//! (a plain directory) is bound with an idmapped bind.

use crate::mounts::Userns;
use crate::step::{StepError, StepResult};
use crate::sys;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// The idmapped overlay's work dir, beside the provisioner's `work`.
const IDMAPPED_WORK: &str = "uwork";
const IDMAPPED_WORK_C: &std::ffi::CStr = c"uwork";

/// Whether `rootfs` is a provisioner overlay this module can rebuild.
pub fn is_overlay(rootfs: &Path) -> bool {
    let overlay = nix::sys::statfs::statfs(rootfs)
        .map(|s| s.filesystem_type().0 == OVERLAYFS_SUPER_MAGIC)
        .unwrap_or(false);
    overlay && rootfs.parent().is_some_and(|c| c.join("l").is_dir())
}

fn cstr(p: &Path) -> StepResult<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| StepError::invalid(format!("path {}", p.display()), "contains a NUL byte"))
}

/// A detached, idmapped clone of the directory at `p`.
fn idmapped(p: &Path, u: &Userns<'_>) -> StepResult<OwnedFd> {
    let tree = sys::open_tree_clone(&cstr(p)?, false)
        .map_err(|e| StepError::io(format!("open_tree {}", p.display()), e))?;
    sys::idmap_tree(&tree, &u.fd).map_err(|e| {
        StepError::io(
            format!(
                "idmap {} (its filesystem may not support idmapped mounts)",
                p.display()
            ),
            e,
        )
    })?;
    Ok(tree)
}

/// Stacks an overlay of idmapped layers on `rootfs` (see the module doc).
pub fn mount(rootfs: &Path, u: &Userns<'_>) -> StepResult {
    let cdir = rootfs
        .parent()
        .ok_or_else(|| StepError::invalid("rootfs", "has no parent dir"))?;
    let links = cdir.join("l");
    let mut layers: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&links)
        .map_err(|e| StepError::io(format!("read {}", links.display()), e))?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    // Overlay takes the top layer first.
    layers.sort_by_key(|l| std::cmp::Reverse(l.0));

    let fs = sys::fsopen(c"overlay").map_err(|e| StepError::io("fsopen overlay", e))?;
    // Held until the superblock exists: closing the last fd on a detached
    // mount unmounts it, and overlay would find its layer gone.
    let mut held = Vec::with_capacity(layers.len());
    for (_, link) in &layers {
        // The link is berth's own (the image store is not the container's).
        let layer = idmapped(link, u)?;
        sys::fsconfig_set_fd(&fs, c"lowerdir+", &layer)
            .map_err(|e| StepError::io(format!("overlay lowerdir+ {}", link.display()), e))?;
        held.push(layer);
    }
    // A work dir of its own: the provisioner's overlay is volatile, which
    // marks `work` (`work/incompat/volatile`) and overlay then refuses that
    // work dir to any other mount. The container's dir is berth's own.
    // Root's on disk as `work` is (made under the container root's fsuid,
    // it would be that id's, which the idmapped mount shows as nobody's,
    // and overlay would fall back to a read-only mount).
    let uwork = cdir.join(IDMAPPED_WORK);
    match std::fs::create_dir(&uwork) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(StepError::io(format!("create {}", uwork.display()), e))
        }
        _ => {}
    }
    std::os::unix::fs::lchown(&uwork, Some(0), Some(0))
        .map_err(|e| StepError::io(format!("chown {} to root", uwork.display()), e))?;
    // Upper and work must lie on one mount: the dir holding both.
    let holder = idmapped(cdir, u)?;
    for (key, name) in [(c"upperdir", c"upper"), (c"workdir", IDMAPPED_WORK_C)] {
        let fd = nix::fcntl::openat(
            Some(holder.as_raw_fd()),
            name,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| StepError::nix(format!("open {}/{name:?}", cdir.display()), e))?;
        // SAFETY: openat just returned this fd and nothing else owns it.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        sys::fsconfig_set_fd(&fs, key, &fd)
            .map_err(|e| StepError::io(format!("overlay {key:?}"), e))?;
    }
    // As the provisioner's overlay: no sync of the upper filesystem,
    // which this mount's teardown (the container's last exit) would do.
    sys::fsconfig_set_flag(&fs, c"volatile").map_err(|e| StepError::io("overlay volatile", e))?;
    // Overlay keeps the creator's credentials for its upper-layer work:
    // this runs as the container's root (see `as_container_root`).
    sys::fsconfig_create(&fs).map_err(|e| StepError::io("create the idmapped overlay", e))?;
    let mnt = sys::fsmount(&fs).map_err(|e| StepError::io("fsmount overlay", e))?;
    drop((held, holder));
    sys::move_mount_to(&mnt, &cstr(rootfs)?).map_err(|e| {
        StepError::io(
            format!("mount the idmapped overlay on {}", rootfs.display()),
            e,
        )
    })
}

/// Runs `f` with the container root's host ids as fsuid and fsgid and
/// every capability kept (`SECBIT_NO_SETUID_FIXUP` meanwhile): what the
/// filesystem setup creates in the idmapped rootfs (mount points, the
/// overlay's work files) is then the container root's, and the host's
/// root, which has no id there, never writes through the idmapping.
pub fn as_container_root<T>(u: &Userns<'_>, f: impl FnOnce() -> StepResult<T>) -> StepResult<T> {
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    // SAFETY: prctl with integer arguments only.
    let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    if bits < 0 {
        return Err(StepError::io(
            "get securebits",
            std::io::Error::last_os_error(),
        ));
    }
    let set = |b: libc::c_ulong| {
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, b, 0, 0, 0) } < 0 {
            return Err(StepError::io(
                "set securebits",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    };
    set(bits as libc::c_ulong | SECBIT_NO_SETUID_FIXUP)?;
    // SAFETY: setfsuid/setfsgid take an id; as root they always succeed.
    unsafe {
        libc::setfsgid(u.host_gid(0));
        libc::setfsuid(u.host_uid(0));
    }
    let r = f();
    // SAFETY: as above: back to the root we are.
    unsafe {
        libc::setfsuid(0);
        libc::setfsgid(0);
    }
    set(bits as libc::c_ulong)?;
    r
}
