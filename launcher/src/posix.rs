//! `PosixLauncher`: no namespaces and no cgroups of its own; the init
//! leads a session and process group, and destroy kills the group. For
//! hosts where the Linux launcher cannot run. The supervisor is the same,
//! so containers still outlive the agent. Processes that leave the group
//! (setsid) escape it: that is the price of having no cgroup.

use crate::config::LauncherConfig;
use crate::engine::{Engine, Kind};
use crate::LaunchError;
use std::sync::Arc;

/// The POSIX launcher (Mesos's `PosixLauncher`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct PosixLauncher {
    pub(crate) engine: Arc<Engine>,
}

impl PosixLauncher {
    /// A launcher with `cfg` (`cgroup_root` and `cgroup_mount` are unused).
    pub fn new(cfg: LauncherConfig) -> Result<Self, LaunchError> {
        Ok(PosixLauncher {
            engine: Arc::new(Engine::new(cfg, Kind::Posix)?),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &LauncherConfig {
        &self.engine.cfg
    }
}

impl_launcher!(PosixLauncher, "posix");
