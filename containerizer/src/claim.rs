//! One berth state per cgroup root and per runtime dir. Recovery treats
//! every container under them that its store does not know as an orphan
//! and kills it, so two states (two `--root`s) sharing either would kill
//! each other's containers. The first state to use one claims it; another
//! state is refused while the owner's store exists, and takes over once
//! the owner's root is gone (its containers are then true orphans).
//!
//! Cgroup roots are node-wide, so their claims live in a node-wide dir on
//! /run, which, like the cgroup hierarchies, starts empty at boot. A
//! runtime dir's claim is a file inside it.

use nix::fcntl::{Flock, FlockArg};
use std::fs;
use std::path::{Path, PathBuf};

/// Where the claims of cgroup roots live.
pub const CGROUP_CLAIMS_DIR: &str = "/run/berth-cgroup-roots";

/// The claim file of cgroup root `name` (a test harness removes it with
/// the cgroup root).
pub fn cgroup_claim_path(name: &str) -> PathBuf {
    Path::new(CGROUP_CLAIMS_DIR).join(name.replace('%', "%25").replace('/', "%2F"))
}

/// Claims `cgroup_root` and `runtime_dir` for the state at `root`.
pub(crate) fn claim_all(root: &Path, cgroup_root: &str, runtime_dir: &Path) -> Result<(), String> {
    let owner = fs::canonicalize(root).map_err(|e| format!("resolve {}: {e}", root.display()))?;
    fs::create_dir_all(CGROUP_CLAIMS_DIR)
        .map_err(|e| format!("create {CGROUP_CLAIMS_DIR}: {e}"))?;
    claim(
        &cgroup_claim_path(cgroup_root),
        &format!("cgroup root {cgroup_root:?}"),
        "--cgroup-root",
        &owner,
    )?;
    claim(
        &runtime_dir.join("owner"),
        &format!("runtime dir {}", runtime_dir.display()),
        "--runtime-dir",
        &owner,
    )
}

fn claim(file: &Path, what: &str, flag: &str, owner: &Path) -> Result<(), String> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    // Claimers of one dir take turns, so two first claims cannot both win.
    let d = fs::File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    let _turn = Flock::lock(d, FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("flock {}: {e}", dir.display()))?;
    let ours = owner.to_string_lossy();
    match fs::read_to_string(file) {
        Ok(theirs) if theirs.trim() == ours => return Ok(()),
        Ok(theirs) => {
            let theirs = theirs.trim();
            if Path::new(theirs).join("state").is_dir() {
                return Err(format!(
                    "{what} belongs to the berth state at {theirs} (claimed in {}); two states \
                     sharing it would kill each other's containers at recovery: give this one \
                     (at {ours}) its own {flag}",
                    file.display()
                ));
            }
            tracing::warn!(
                claim = %file.display(),
                previous = theirs,
                "taking over {what}: its previous owner's state is gone"
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("read {}: {e}", file.display())),
    }
    let tmp = file.with_extension("tmp");
    fs::write(&tmp, format!("{ours}\n")).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, file).map_err(|e| format!("rename {}: {e}", tmp.display()))
}
