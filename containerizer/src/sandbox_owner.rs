//! A container that runs as a user owns its sandbox, as in Mesos: its
//! working dir must be writable by it, and what the fetcher put there
//! (downloads, extracted trees) belongs to it as if it had fetched them.
//! The walk never follows a symlink (a link is chowned itself, its target
//! never) and never leaves the sandbox's filesystem, so nothing outside
//! berth's directories changes owner.

use nix::fcntl::AtFlags;
use nix::unistd::{fchownat, Gid, Uid};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Gives `sandbox` and everything in it to `uid:gid`. Blocking.
pub(crate) fn chown_sandbox(sandbox: &Path, uid: u32, gid: u32) -> Result<(), String> {
    let dev = fs::symlink_metadata(sandbox)
        .map_err(|e| format!("stat {}: {e}", sandbox.display()))?
        .dev();
    chown_tree(sandbox, dev, Uid::from_raw(uid), Gid::from_raw(gid))
}

fn chown_tree(path: &Path, dev: u64, uid: Uid, gid: Gid) -> Result<(), String> {
    let md = fs::symlink_metadata(path).map_err(|e| format!("stat {}: {e}", path.display()))?;
    if md.dev() != dev {
        return Ok(());
    }
    fchownat(
        None,
        path,
        Some(uid),
        Some(gid),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| format!("chown {}: {e}", path.display()))?;
    if md.is_dir() {
        let rd = fs::read_dir(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        for e in rd {
            let e = e.map_err(|e| format!("read {}: {e}", path.display()))?;
            chown_tree(&e.path(), dev, uid, gid)?;
        }
    }
    Ok(())
}
