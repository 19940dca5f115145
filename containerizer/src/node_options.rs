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
    /// A log file is rotated past this size (default [`DEFAULT_LOG_MAX_BYTES`]).
    pub log_max_bytes: Option<u64>,
    /// Files kept per log, the live one included (default
    /// [`DEFAULT_LOG_MAX_FILES`]).
    pub log_max_files: Option<u32>,
    /// The log format of containers that name none: `plain` (default) or
    /// `cri`.
    pub log_format: Option<String>,
    /// OCI runtimes by name (`runc` → `/usr/sbin/runc`); `runc` and
    /// `runsc` found on PATH are registered by name unless given here.
    pub runtime_paths: Vec<(String, PathBuf)>,
    /// Extra global arguments per runtime name, in order.
    pub runtime_args: Vec<(String, String)>,
    /// The runtime of containers that name none (default `native`).
    pub default_runtime: Option<String>,
    /// A directory of isolator plugin files (`*.json`, one per plugin):
    /// out-of-process isolators, run after the built-in ones.
    pub plugin_dir: Option<PathBuf>,
    /// The criu binary for checkpoint and restore (default: `criu` on
    /// PATH, looked up when used).
    pub criu_path: Option<PathBuf>,
}

/// 10 MiB per log file, as Docker's json-file `max-size` is commonly set.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 << 20;
/// Five files per log (the live one and four rotated): 50 MiB at most.
pub const DEFAULT_LOG_MAX_FILES: u32 = 5;

impl NodeOptions {
    /// The OCI runtimes to register: those given, then `runc` and `runsc`
    /// when on PATH and not given; each with its extra arguments and its
    /// `--root` under berth's runtime dir.
    pub(crate) fn oci_runtimes(&self, runtime_dir: &Path) -> Vec<berth_launcher::OciRuntime> {
        let mut named = self.runtime_paths.clone();
        for name in ["runc", "runsc"] {
            if named.iter().any(|(n, _)| n == name) {
                continue;
            }
            if let Some(path) = on_path(name) {
                named.push((name.to_string(), path));
            }
        }
        named
            .into_iter()
            .map(|(name, path)| berth_launcher::OciRuntime {
                args: self
                    .runtime_args
                    .iter()
                    .filter(|(n, _)| *n == name)
                    .map(|(_, a)| a.clone())
                    .collect(),
                root: berth_launcher::OciRuntime::root_in(runtime_dir, &name),
                name,
                path,
            })
            .collect()
    }

    /// The log settings of containers that set none.
    pub(crate) fn logs(&self) -> berth_state::LogSettings {
        berth_state::LogSettings {
            format: self.log_format.clone().unwrap_or_default(),
            max_bytes: self.log_max_bytes.unwrap_or(DEFAULT_LOG_MAX_BYTES),
            max_files: self.log_max_files.unwrap_or(DEFAULT_LOG_MAX_FILES),
        }
    }

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

/// `name` in a directory of `$PATH` (and the sbin dirs, which a root
/// shell has but a service's PATH may lack), as an executable file.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    found
}
