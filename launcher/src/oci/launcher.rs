//! `OciLauncher`: berth's supervisor per container, with the init made
//! and killed by an OCI runtime. Everything else (release, wait, status,
//! recovery of the supervisor) is the engine the other launchers share.

use crate::config::LauncherConfig;
use crate::engine::{Engine, Kind};
use crate::oci::OciRuntime;
use crate::LaunchError;
use std::sync::Arc;

/// One OCI runtime as a launcher. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OciLauncher {
    pub(crate) engine: Arc<Engine>,
    runtime: OciRuntime,
}

impl OciLauncher {
    /// A launcher for `runtime` (its `--root` is made at the first launch).
    pub fn new(cfg: LauncherConfig, runtime: OciRuntime) -> Result<Self, LaunchError> {
        Ok(OciLauncher {
            engine: Arc::new(Engine::new(cfg, Kind::Oci(runtime.clone()))?),
            runtime,
        })
    }

    /// The runtime this launcher drives.
    pub fn runtime(&self) -> &OciRuntime {
        &self.runtime
    }
}

impl_launcher!(OciLauncher, "oci");
