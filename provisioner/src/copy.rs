//! The copy backend, for where overlayfs is unavailable: the layers are
//! unpacked one over the other into the container's own rootfs dir, with
//! whiteouts applied (the same safe unpack as the cache; symlinks made by
//! an earlier layer are never written through).

use crate::cache;
use crate::error::{io, Result};
use crate::store::LayerRecord;
use crate::store::Store;
use crate::unpack::Whiteouts;
use std::path::Path;

pub fn build_rootfs(store: &Store, cdir: &Path, layers: &[LayerRecord]) -> Result<()> {
    let rootfs = cdir.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(io("create", &rootfs))?;
    for l in layers {
        cache::unpack_checked(store, l, &rootfs, Whiteouts::Apply)?;
    }
    Ok(())
}
