//! `berth` flags for the volume, disk and network isolators: the operator's
//! node options (global) and the per-run options, kept out of main.rs.

use super::parse_size;
use berth::inflight::{CallKind, Timeouts};
use berth::state::{network, Device, Network};
use berth::{ContainerConfig, FetchCache, NodeOptions, UriFetcher, DEFAULT_CACHE_SIZE};
use berth_isolators::seccomp::UNCONFINED;
use berth_isolators::userns::{IdRange, UsernsMode};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Global flags: the operator's node options.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// Host directory that `--volume …:ro` may mount (repeatable).
    #[arg(long = "volume-allow-ro", value_name = "DIR")]
    pub volume_allow_ro: Vec<PathBuf>,
    /// Host directory that `--volume` may mount read-write (repeatable).
    #[arg(long = "volume-allow-rw", value_name = "DIR")]
    pub volume_allow_rw: Vec<PathBuf>,
    /// Milliseconds between two disk-usage measurements (`disk/du`).
    #[arg(long = "disk-check-interval-ms", value_name = "MS")]
    pub disk_check_interval_ms: Option<u64>,
    /// Directory of CNI network configs (default /etc/berth/cni).
    #[arg(long, value_name = "DIR")]
    pub cni_config_dir: Option<PathBuf>,
    /// Directory of CNI plugins (default /usr/lib/cni).
    #[arg(long, value_name = "DIR")]
    pub cni_plugin_dir: Option<PathBuf>,
    /// The shared cache of `--fetch …,cache` (default <root>/fetch-cache).
    #[arg(long, value_name = "DIR")]
    pub fetch_cache_dir: Option<PathBuf>,
    /// The fetch cache's size limit, e.g. 512M (default 2G); least
    /// recently used entries are evicted past it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub fetch_cache_size: Option<u64>,
    /// The seccomp profile of containers that name none: a profile file
    /// (Docker's or the OCI form) or `unconfined` (default: berth's,
    /// equal in effect to Docker's default).
    #[arg(long, value_name = "FILE|unconfined", value_parser = read_profile)]
    pub seccomp_default: Option<String>,
    /// The network of containers that ask for none: `host` (default, as
    /// Mesos, Nomad and YARN), `none`, or a CNI network's name.
    #[arg(long, value_parser = parse_network)]
    pub default_network: Option<Network>,
    /// The user namespace of containers that ask for none: `host`
    /// (default: none), `auto`, or HOST_ID:COUNT.
    #[arg(long, value_name = "host|auto|HOST_ID:COUNT", value_parser = UsernsMode::parse)]
    pub default_userns: Option<UsernsMode>,
    /// The host ids `--userns auto` allots from, 65536 per container
    /// (default: the `berth` lines of /etc/subuid and /etc/subgid).
    #[arg(long, value_name = "START:COUNT", value_parser = IdRange::parse)]
    pub userns_range: Option<IdRange>,
    /// The deadline of a kind of call into isolators, provisioner, fetcher
    /// and launcher, NAME=DURATION (recover, provision, prepare, isolate,
    /// fetch, launch, cleanup, query; e.g. prepare=30s, fetch=10m);
    /// repeatable. A launch call past it fails the launch (START_ERROR); a
    /// destroy call, that destroy (retried by the next).
    #[arg(long = "step-timeout", value_name = "NAME=DURATION", value_parser = Timeouts::parse_one)]
    pub step_timeouts: Vec<(CallKind, Duration)>,
    /// A container's log file is rotated past this size, e.g. 10M (the
    /// default); a container's `--log-opt max-size` overrides it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub log_max_size: Option<u64>,
    /// Files kept per log, the live one included (default 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub log_max_files: Option<u32>,
    /// The log format of containers that name none: plain (default:
    /// `stdout` and `stderr` files) or cri (one `container.log`).
    #[arg(long, value_name = "plain|cri", value_parser = parse_log_format)]
    pub default_log_format: Option<String>,
    /// An OCI runtime containers may choose with `--runtime NAME`:
    /// NAME=PATH (repeatable; `runc` and `runsc` on PATH are registered
    /// by name unless given).
    #[arg(long = "runtime-path", value_name = "NAME=PATH", value_parser = parse_runtime_path)]
    pub runtime_paths: Vec<(String, PathBuf)>,
    /// An extra global argument for runtime NAME, e.g.
    /// runsc=--platform=ptrace (repeatable, in order).
    #[arg(long = "runtime-arg", value_name = "NAME=ARG", value_parser = parse_runtime_arg)]
    pub runtime_args: Vec<(String, String)>,
    /// The runtime of containers that name none: native (default: berth's
    /// own launcher) or a registered OCI runtime's name.
    #[arg(long, value_name = "NAME")]
    pub default_runtime: Option<String>,
    /// A directory of isolator plugin files (`NAME.json`: a `socket` to
    /// dial or a `command` berth starts, `timeout_ms`, `order`); see the
    /// README's "Writing an isolator plugin".
    #[arg(long, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// The criu binary `berth checkpoint` and `berth restore` use
    /// (default: criu on PATH; CRIU 4.1 or later on kernels 6.13+).
    #[arg(long, value_name = "PATH")]
    pub criu_path: Option<PathBuf>,
}

fn parse_runtime_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, a)) if !n.is_empty() && !a.is_empty() => Ok((n.to_string(), a.to_string())),
        _ => Err(format!("{s:?}: expected NAME=ARG")),
    }
}

fn parse_runtime_path(s: &str) -> Result<(String, PathBuf), String> {
    let (n, p) = parse_runtime_arg(s)?;
    if n == berth::launcher::oci::NATIVE {
        return Err(format!("{s:?}: {n} is berth's own launcher"));
    }
    Ok((n, PathBuf::from(p)))
}

fn parse_log_format(s: &str) -> Result<String, String> {
    match s {
        "plain" | "cri" => Ok(s.to_string()),
        _ => Err(format!("log format {s:?}: expected plain or cri")),
    }
}

/// `--log-opt`: `max-size=SIZE` or `max-file=N`, as Docker's.
#[derive(Debug, Clone, Copy)]
pub enum LogOpt {
    MaxSize(u64),
    MaxFile(u32),
}

fn parse_log_opt(s: &str) -> Result<LogOpt, String> {
    match s.split_once('=') {
        Some(("max-size", v)) => parse_size(v).map(LogOpt::MaxSize),
        Some(("max-file", v)) => match v.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(LogOpt::MaxFile(n)),
            _ => Err(format!(
                "--log-opt {s:?}: max-file is a count of at least 1"
            )),
        },
        _ => Err(format!(
            "--log-opt {s:?}: expected max-size=SIZE or max-file=N"
        )),
    }
}

/// A seccomp profile option: `unconfined`, or a file read now (by the
/// client, so the agent never opens a path on a client's behalf).
fn read_profile(s: &str) -> Result<String, String> {
    if s == UNCONFINED {
        return Ok(s.to_string());
    }
    std::fs::read_to_string(s).map_err(|e| format!("seccomp profile {s}: {e}"))
}

/// Per-run flags of `berth run` for the disk and network isolators.
#[derive(Args, Debug, Clone, Default)]
pub struct RunExtra {
    /// Disk quota of the sandbox, e.g. 64M; exceeding it kills the
    /// container with reason LIMITATION (disk).
    #[arg(long, value_parser = parse_size)]
    pub disk: Option<u64>,
    /// `none` (own netns, only lo), `host` (default), or the name of a CNI
    /// network in the CNI config dir.
    #[arg(long, value_parser = parse_network)]
    pub network: Option<Network>,
    /// Without --image: `ro` (default) shows the host's root read-only
    /// inside, recursively; `rw` opts in to a writable host root.
    #[arg(long, value_name = "ro|rw", value_parser = parse_host_rootfs)]
    pub host_rootfs: Option<bool>,
    /// With --image: the image's rootfs is read-only too (the sandbox,
    /// /dev and volumes stay as they are).
    #[arg(long)]
    pub read_only: bool,
    /// The container's seccomp profile: a file (Docker's or the OCI form)
    /// or `unconfined` (default: the agent's default).
    #[arg(long, value_name = "FILE|unconfined", value_parser = read_profile)]
    pub seccomp_profile: Option<String>,
    /// Add a capability to the default set (`NET_ADMIN`, `CAP_NET_ADMIN`,
    /// `ALL`); repeatable.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability from the default set (`NET_RAW`, `ALL`); repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Size of /dev/shm, e.g. 256M (default 64M).
    #[arg(long, value_parser = parse_size)]
    pub shm_size: Option<u64>,
    /// A namespaced sysctl KEY=VALUE (net.* needs --network none or a CNI
    /// network; kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*);
    /// repeatable.
    #[arg(long = "sysctl", value_name = "KEY=VALUE", value_parser = parse_sysctl)]
    pub sysctls: Vec<(String, String)>,
    /// The container's user namespace: `auto` (65536 ids of its own from
    /// the agent's range), HOST_ID:COUNT, or `host` (none); default: the
    /// agent's default.
    #[arg(long, value_name = "auto|host|HOST_ID:COUNT", value_parser = check_userns)]
    pub userns: Option<String>,
    /// A host device HOST[:CONTAINER][:rwm] made available inside (as
    /// Docker's: CONTAINER defaults to HOST, the permissions to rwm);
    /// repeatable.
    #[arg(long = "device", value_name = "HOST[:CONTAINER][:rwm]", value_parser = parse_device)]
    pub devices: Vec<Device>,
    /// For a nested container (a pod member, `--name POD/NAME`): join the
    /// parent's pid namespace too (it already shares its network, IPC and
    /// UTS): each sees the other's processes.
    #[arg(long)]
    pub share_pid_namespace: bool,
    /// No pid namespace of its own: the host's (a pod's members that
    /// share its pid namespace then see the host's processes too).
    #[arg(long)]
    pub host_pid: bool,
    /// Let the command gain privileges through setuid binaries and file
    /// capabilities (no_new_privs is set by default).
    #[arg(long)]
    pub allow_privilege_escalation: bool,
    /// A pod with no command: berth's init alone holds its namespaces
    /// (network, IPC, UTS, pid) for the members launched as `NAME/MEMBER`;
    /// `stop` or `destroy` ends it and its members.
    #[arg(long)]
    pub pod: bool,
    /// Run berth's small init as the container's pid 1: it forwards
    /// signals to the command (so a handler-less command still ends on
    /// SIGTERM), reaps orphans, and exits with the command's code (128+N
    /// when killed by signal N).
    #[arg(long)]
    pub init: bool,
    /// Give the command a terminal (a pty of its own; stdout and stderr
    /// are one stream). `berth run -t` attaches to it.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Keep the command's stdin open, fed by `berth attach` (`berth run
    /// -i` forwards its own stdin).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// How the output is kept in the sandbox: plain (`stdout`, `stderr`)
    /// or cri (`container.log`, timestamped lines); default: the agent's.
    #[arg(long, value_name = "plain|cri", value_parser = parse_log_format)]
    pub log_format: Option<String>,
    /// Log rotation: max-size=SIZE (e.g. 10M), max-file=N; repeatable;
    /// default: the agent's.
    #[arg(long = "log-opt", value_name = "KEY=VALUE", value_parser = parse_log_opt)]
    pub log_opts: Vec<LogOpt>,
}

/// `--userns`, checked here so a typo fails before anything starts.
fn check_userns(s: &str) -> Result<String, String> {
    UsernsMode::parse(s).map(|_| s.trim().to_string())
}

/// Docker's `--device` syntax: `HOST`, `HOST:CONTAINER`, `HOST:PERMS`
/// (a second part made only of distinct `r`, `w`, `m` is permissions),
/// `HOST:CONTAINER:PERMS`. Only the syntax is checked here; the paths and
/// permissions are checked when the container starts.
fn parse_device(s: &str) -> Result<Device, String> {
    let is_mode = |p: &str| {
        !p.is_empty()
            && p.len() <= 3
            && p.chars().all(|c| "rwm".contains(c))
            && p.chars().enumerate().all(|(i, c)| !p[..i].contains(c))
    };
    let parts: Vec<&str> = s.split(':').collect();
    let (host, inside, perms) = match parts[..] {
        [h] => (h, "", ""),
        [h, p] if is_mode(p) => (h, "", p),
        [h, c] => (h, c, ""),
        [h, c, p] => (h, c, p),
        _ => {
            return Err(format!(
                "--device: expected HOST[:CONTAINER][:rwm], got {s:?}"
            ))
        }
    };
    if host.is_empty() {
        return Err(format!("--device: no host path in {s:?}"));
    }
    Ok(Device {
        host_path: host.to_string(),
        container_path: inside.to_string(),
        permissions: perms.to_string(),
    })
}

fn parse_sysctl(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("--sysctl: expected KEY=VALUE, got {s:?}")),
    }
}

/// `--host-rootfs`: true for `rw`.
fn parse_host_rootfs(s: &str) -> Result<bool, String> {
    match s {
        "ro" => Ok(false),
        "rw" => Ok(true),
        _ => Err(format!("--host-rootfs: expected ro or rw, got {s:?}")),
    }
}

fn parse_network(s: &str) -> Result<Network, String> {
    let (mode, name) = match s {
        "" => return Err("network: expected none, host or a CNI network name".into()),
        "host" => (network::Mode::Host, ""),
        "none" => (network::Mode::None, ""),
        name => (network::Mode::Cni, name),
    };
    Ok(Network {
        mode: mode as i32,
        cni_network: name.to_string(),
    })
}

impl RunExtra {
    /// Applies these flags to `config`.
    pub fn apply(&self, config: &mut ContainerConfig) {
        if let Some(d) = self.disk {
            config
                .resources
                .get_or_insert_with(Default::default)
                .disk_bytes = d;
        }
        if let Some(n) = &self.network {
            config.network = Some(n.clone());
        }
        config.host_rootfs_rw = self.host_rootfs.unwrap_or(false);
        config.seccomp_profile = self.seccomp_profile.clone().unwrap_or_default();
        config.cap_add = self.cap_add.clone();
        config.cap_drop = self.cap_drop.clone();
        config.shm_size_bytes = self.shm_size.unwrap_or(0);
        config.sysctls = self.sysctls.iter().cloned().collect();
        config.read_only_rootfs = self.read_only;
        config.userns = self.userns.clone().unwrap_or_default();
        config.devices = self.devices.clone();
        config.share_pid_namespace = self.share_pid_namespace;
        config.host_pid = self.host_pid;
        config.allow_privilege_escalation = self.allow_privilege_escalation;
        config.pod = self.pod;
        config.init = self.init;
        config.tty = self.tty;
        config.stdin_open = self.interactive;
        config.log_format = self.log_format.clone().unwrap_or_default();
        for o in &self.log_opts {
            match *o {
                LogOpt::MaxSize(b) => config.log_max_bytes = b,
                LogOpt::MaxFile(n) => config.log_max_files = n,
            }
        }
    }
}

impl NodeArgs {
    /// The URI fetcher with its shared cache under `root`.
    pub fn fetcher(&self, root: &std::path::Path) -> UriFetcher {
        let dir = self
            .fetch_cache_dir
            .clone()
            .unwrap_or_else(|| root.join("fetch-cache"));
        let size = self.fetch_cache_size.unwrap_or(DEFAULT_CACHE_SIZE);
        UriFetcher::new(Some(FetchCache::new(dir, size)))
    }

    pub fn options(&self) -> NodeOptions {
        NodeOptions {
            volume_allow_ro: self.volume_allow_ro.clone(),
            volume_allow_rw: self.volume_allow_rw.clone(),
            disk_check_interval: self.disk_check_interval_ms.map(Duration::from_millis),
            cni_config_dir: self.cni_config_dir.clone(),
            cni_plugin_dir: self.cni_plugin_dir.clone(),
            seccomp_default: self.seccomp_default.clone(),
            default_network: self.default_network.clone(),
            default_userns: self.default_userns,
            userns_range: self.userns_range,
            timeouts: {
                let mut t = Timeouts::default();
                for (k, d) in &self.step_timeouts {
                    t.set(*k, *d);
                }
                t
            },
            log_max_bytes: self.log_max_size,
            log_max_files: self.log_max_files,
            log_format: self.default_log_format.clone(),
            runtime_paths: self.runtime_paths.clone(),
            runtime_args: self.runtime_args.clone(),
            default_runtime: self.default_runtime.clone(),
            plugin_dir: self.plugin_dir.clone(),
            criu_path: self.criu_path.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_syntax_is_dockers() {
        let d = |h: &str, c: &str, p: &str| Device {
            host_path: h.into(),
            container_path: c.into(),
            permissions: p.into(),
        };
        let cases = [
            ("/dev/loop-control", d("/dev/loop-control", "", "")),
            ("/dev/x:/dev/y", d("/dev/x", "/dev/y", "")),
            ("/dev/x:rw", d("/dev/x", "", "rw")),
            ("/dev/x:/dev/y:r", d("/dev/x", "/dev/y", "r")),
            // Not a mode: a (relative, refused at start) container path.
            ("/dev/null:relative", d("/dev/null", "relative", "")),
            ("/dev/null:rr", d("/dev/null", "rr", "")),
            // Bad permissions are refused at start, naming them.
            ("/dev/null:/dev/x:rwx", d("/dev/null", "/dev/x", "rwx")),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_device(arg), Ok(want), "{arg}");
        }
        for bad in ["", ":/dev/y", "/a:/b:r:w"] {
            assert!(parse_device(bad).is_err(), "{bad}");
        }
    }
}
