//! The launchers' configuration.

use crate::LaunchError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The supervisor binary's file name.
pub const SUPERVISOR_BIN: &str = "berth-supervisor";

/// How a [`LinuxLauncher`](crate::LinuxLauncher) or
/// [`PosixLauncher`](crate::PosixLauncher) is set up.
#[derive(Debug, Clone)]
pub struct LauncherConfig {
    /// The agent's runtime dir (`/run/berth`): pid files and exit statuses
    /// live in `<runtime_dir>/containers/<id>/`.
    pub runtime_dir: PathBuf,
    /// The cgroup directory under which the launcher makes one cgroup per
    /// container (v1: `/sys/fs/cgroup/freezer/<cgroup_root>/<id>`).
    /// Tests use a unique one each.
    pub cgroup_root: String,
    /// The `berth-supervisor` binary; `None` = [`default_supervisor_path`].
    pub supervisor: Option<PathBuf>,
    /// The cgroup mount to use for the per-container kill cgroup; `None` =
    /// detect (the v1 freezer hierarchy, else the cgroup2 mount).
    pub cgroup_mount: Option<PathBuf>,
    /// How long a supervisor may take to report its init set up.
    pub startup_timeout: Duration,
    /// How long `destroy` waits for the processes to go and the supervisor
    /// to record the exit.
    pub destroy_timeout: Duration,
    /// How many supervisors the native launcher keeps started ahead of
    /// their launch (see `berth_launcher::pool`); 0 starts each at its
    /// launch.
    pub supervisor_pool: usize,
    /// The pool is started as soon as the supervisor's sealed copy exists
    /// and is not topped up once taken from (a one-container process: a
    /// cold `berth run`); otherwise it fills after the first launch and
    /// is topped up after each.
    pub supervisor_pool_once: bool,
    /// A pooled supervisor moves into `.supervisors` as it starts rather
    /// than at its claim, taking that move (a fork into the v2 cgroup and
    /// a `tasks` write per v1 hierarchy) off each launch. An unclaimed one
    /// then sits in berth's cgroup root until its launcher is dropped or
    /// its process ends: an embedder that checks the root is empty right
    /// after dropping its containerizer (while its runtime still runs)
    /// finds it there.
    pub supervisor_pool_placed: bool,
}

impl LauncherConfig {
    /// Defaults with the given runtime dir: cgroup root `berth`, the
    /// supervisor found beside the current executable.
    pub fn new(runtime_dir: impl Into<PathBuf>) -> Self {
        LauncherConfig {
            runtime_dir: runtime_dir.into(),
            cgroup_root: "berth".into(),
            supervisor: None,
            cgroup_mount: None,
            startup_timeout: Duration::from_secs(60),
            destroy_timeout: Duration::from_secs(30),
            supervisor_pool: 0,
            supervisor_pool_once: false,
            supervisor_pool_placed: false,
        }
    }

    /// The supervisor to exec, which must exist.
    pub fn supervisor_path(&self) -> Result<PathBuf, LaunchError> {
        let p = match &self.supervisor {
            Some(p) => p.clone(),
            None => default_supervisor_path().map_err(|e| LaunchError::SupervisorMissing {
                path: PathBuf::from(SUPERVISOR_BIN),
                why: e,
            })?,
        };
        if !p.is_file() {
            return Err(LaunchError::SupervisorMissing {
                why: format!(
                    "no such file (build it with `cargo build -p berth-launcher --bin {SUPERVISOR_BIN}` \
                     or set LauncherConfig::supervisor)"
                ),
                path: p,
            });
        }
        Ok(p)
    }
}

/// The environment variable that overrides the default supervisor path
/// (handy for test binaries of crates that do not build the supervisor).
pub const SUPERVISOR_ENV: &str = "BERTH_SUPERVISOR";

/// `$BERTH_SUPERVISOR` if set; else `berth-supervisor` beside the current
/// executable; for a cargo test binary in `target/<profile>/deps/`, the one
/// in `target/<profile>/`.
pub fn default_supervisor_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(SUPERVISOR_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    Ok(supervisor_beside(&exe))
}

/// Where the supervisor is expected for the executable `exe`.
pub fn supervisor_beside(exe: &Path) -> PathBuf {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let here = dir.join(SUPERVISOR_BIN);
    if here.is_file() {
        return here;
    }
    if dir.file_name().is_some_and(|n| n == "deps") {
        if let Some(profile_dir) = dir.parent() {
            return profile_dir.join(SUPERVISOR_BIN);
        }
    }
    here
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_binaries_look_in_the_profile_dir() {
        assert_eq!(
            supervisor_beside(Path::new("/nonexistent/target/debug/deps/launcher-0123")),
            Path::new("/nonexistent/target/debug/berth-supervisor")
        );
        assert_eq!(
            supervisor_beside(Path::new("/nonexistent/bin/berth")),
            Path::new("/nonexistent/bin/berth-supervisor")
        );
    }

    #[test]
    fn a_missing_supervisor_is_named() {
        let mut c = LauncherConfig::new("/nonexistent/run");
        c.supervisor = Some("/nonexistent/berth-supervisor".into());
        let e = c.supervisor_path().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/berth-supervisor"), "{e}");
    }
}
