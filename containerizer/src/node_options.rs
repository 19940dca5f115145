//! The operator's options for the isolators that need node-level config
//! (allow-lists, directories, intervals). The agent of a later issue reads
//! them from its config; `berth run` from its global flags.

use berth_isolators::disk::{self, DiskDu};
use berth_isolators::network::{CniConfig, CniNetwork};
use berth_isolators::seccomp::SeccompIsolator;
use berth_isolators::userns::{self, IdRange, UserNamespace, UsernsMode};
use berth_isolators::volume::{HostPathConfig, HostPathVolumes};
use berth_isolators::Isolator;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Node-level options of the volume, disk and network isolators.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Host directories that volumes may mount read-only.
    pub volume_allow_ro: Vec<PathBuf>,
    /// Host directories that volumes may mount read-write.
    pub volume_allow_rw: Vec<PathBuf>,
    /// Time between two disk measurements of `disk/du` (default 15 s).
    pub disk_check_interval: Option<Duration>,
    /// CNI network configs (default `/etc/berth/cni`).
    pub cni_config_dir: Option<PathBuf>,
    /// CNI plugins (default `/usr/lib/cni`).
    pub cni_plugin_dir: Option<PathBuf>,
    /// The seccomp profile of containers that name none: a profile's JSON
    /// text or `unconfined`; `None` = berth's default (Docker's in effect).
    pub seccomp_default: Option<String>,
    /// The network of containers whose config names none (default: the
    /// host's).
    pub default_network: Option<berth_state::Network>,
    /// The user namespace of containers that name none (default: `host`,
    /// none).
    pub default_userns: Option<UsernsMode>,
    /// The host id range `--userns auto` allots from (for uids and gids);
    /// default: the `berth` lines of /etc/subuid and /etc/subgid.
    pub userns_range: Option<IdRange>,
    /// The deadline of each kind of call into isolators, provisioner,
    /// fetcher and launcher.
    pub timeouts: crate::inflight::Timeouts,
}

impl NodeOptions {
    /// The isolators these options configure, in launch order.
    pub(crate) fn isolators(&self, runtime_dir: &Path) -> Vec<Box<dyn Isolator>> {
        let mut cni = CniConfig::new(runtime_dir);
        if let Some(d) = &self.cni_config_dir {
            cni.config_dir = d.clone();
        }
        if let Some(d) = &self.cni_plugin_dir {
            cni.plugin_dir = d.clone();
        }
        vec![
            Box::new(HostPathVolumes::new(HostPathConfig {
                allow_ro: self.volume_allow_ro.clone(),
                allow_rw: self.volume_allow_rw.clone(),
            })),
            Box::new(DiskDu::new(
                self.disk_check_interval.unwrap_or(disk::DEFAULT_INTERVAL),
            )),
            Box::new(CniNetwork::new(cni)),
            Box::new(UserNamespace::new(
                self.default_userns.unwrap_or(UsernsMode::Host),
                self.userns_range
                    .map(|r| (r, r))
                    .or_else(userns::subid_ranges),
            )),
            Box::new(
                SeccompIsolator::new(self.seccomp_default.clone())
                    .cache_dir(runtime_dir.join("seccomp")),
            ),
        ]
    }
}
