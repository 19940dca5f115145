//! The bind backend: a single-layer image's cached layer bound read-only
//! as the rootfs (no copy, no overlay). The image must already hold the
//! mount points the container needs (`/proc`, `/dev`, `/sys`, the sandbox
//! dir): nothing can be created in a read-only root.

use crate::error::{io, Error, Result};
use nix::mount::{mount, MsFlags};
use std::path::Path;

pub fn mount_rootfs(cdir: &Path, layer: &Path) -> Result<()> {
    let rootfs = cdir.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(io("create", &rootfs))?;
    let sys = |op, e| Error::Sys {
        op,
        path: rootfs.clone(),
        source: e,
    };
    mount(
        Some(layer),
        &rootfs,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| sys("bind layer onto", e))?;
    mount(
        None::<&str>,
        &rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| sys("remount read-only", e))
}
