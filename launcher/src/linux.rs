//! `LinuxLauncher`: namespaces, a per-container freezer (or cgroup2 kill)
//! cgroup, the container's filesystem, and the supervisor.

use crate::config::LauncherConfig;
use crate::engine::{Engine, Kind};
use crate::freezer::Freezer;
use crate::LaunchError;
use berth_state::ContainerId;
use std::path::PathBuf;
use std::sync::Arc;

/// The Linux launcher (Mesos's `LinuxLauncher`). Cheap to clone: clones
/// share their state.
///
/// ```no_run
/// use berth_launcher::{LauncherConfig, LinuxLauncher};
/// let mut cfg = LauncherConfig::new("/run/berth");
/// cfg.cgroup_root = "berth".into();
/// let launcher = LinuxLauncher::new(cfg)?;
/// # Ok::<(), berth_launcher::LaunchError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LinuxLauncher {
    pub(crate) engine: Arc<Engine>,
}

impl LinuxLauncher {
    /// A launcher with `cfg`: opens the runtime dir and finds the cgroup
    /// hierarchy for the per-container kill cgroups (the supervisor binary
    /// is looked up at each fork, so a missing one is named there).
    pub fn new(cfg: LauncherConfig) -> Result<Self, LaunchError> {
        let freezer = match &cfg.cgroup_mount {
            Some(m) => Freezer::at(m.clone()),
            None => Freezer::detect().map_err(|e| LaunchError::Other {
                id: String::new(),
                message: e.to_string(),
            })?,
        };
        Ok(LinuxLauncher {
            engine: Arc::new(Engine::new(cfg, Kind::Linux(freezer))?),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &LauncherConfig {
        &self.engine.cfg
    }

    /// The container's kill cgroup (v1: its freezer cgroup).
    pub fn cgroup_dir(&self, id: &ContainerId) -> PathBuf {
        match &self.engine.kind {
            Kind::Linux(f) => f.dir(&self.engine.cfg.cgroup_root, id),
            Kind::Posix | Kind::Oci(_) => PathBuf::new(),
        }
    }
}

impl_launcher!(LinuxLauncher, "linux");
