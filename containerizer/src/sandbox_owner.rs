//! A container that runs as a user owns its sandbox, as in Mesos: its
//! working dir must be writable by it, and what the fetcher put there
//! (downloads, extracted trees) belongs to it as if it had fetched them.
//!
//! A nested sandbox lies in its parent's, which the parent container
//! writes, so the walk is [`berth_state::safe_path::chown_tree`]: fd by
//! fd, a link chowned itself and never followed, a file with other hard
//! links (perhaps a host file linked in) left alone, other filesystems
//! not entered. The sandbox itself must still be the directory berth
//! made.

use berth_state::safe_path::{self, Identity};
use std::path::Path;

/// Gives `sandbox` and everything in it to `uid:gid`. Blocking.
pub(crate) fn chown_sandbox(
    sandbox: &Path,
    identity: Option<Identity>,
    uid: u32,
    gid: u32,
) -> Result<(), String> {
    let dir = safe_path::open_dir(sandbox, identity).map_err(|e| e.to_string())?;
    safe_path::chown_tree(dir, sandbox, uid, gid).map_err(|e| e.to_string())
}
