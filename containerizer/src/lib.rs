//! berth: a containerizer framework in the shape of Mesos's
//! MesosContainerizer.
//!
//! [`Containerizer`] is the handle a cluster agent embeds. Behind it, an
//! actix actor drives each container through STARTING → PROVISIONING →
//! PREPARING → ISOLATING → FETCHING → RUNNING → DESTROYING, calling the
//! isolators (each in its own actor), the launcher and the fetcher, and
//! checkpointing every step so that an agent restart loses nothing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), berth::ContainerizerError> {
//! use berth::{Containerizer, ContainerConfig, ContainerId};
//! // Inside an actix System (e.g. #[actix::main]):
//! let c = Containerizer::builder("/var/lib/berth", "/run/berth")
//!     .default_isolators()
//!     .build()?;
//! c.recover().await?;
//! let id = ContainerId::new("hello");
//! let config = ContainerConfig {
//!     command: vec!["/bin/echo".into(), "hi".into()],
//!     ..Default::default()
//! };
//! c.launch(id.clone(), config).await?;
//! let termination = c.wait(id.clone()).await?;
//! assert_eq!(termination.exit_code, 0);
//! c.remove(id).await?;
//! # Ok(()) }
//! ```

mod actor;
pub mod agent;
mod checkpoint;
mod checkpoint_criu;
mod claim;
pub mod cri;
mod destroy;
mod error;
pub use berth_launcher::failpoint;
pub mod fetcher;
pub mod inflight;
mod launch;
mod merge;
pub mod metrics;
mod node_options;
mod pod;
mod recover;
mod sandbox_owner;
pub mod streaming;
mod termination;
mod user;
mod validate;

pub use actor::{ContainerStatus, ContainerizerActor};
pub use berth_isolators as isolators;
pub use berth_launcher as launcher;
pub use berth_provisioner as provisioner;
pub use berth_state as state;
pub use berth_state::{
    ContainerConfig, ContainerId, ContainerState, ContainerTermination, ResourceStatistics,
    Resources, TerminationReason,
};
pub use checkpoint_criu::Checkpointed;
pub use claim::{cgroup_claim_path, CGROUP_CLAIMS_DIR};
pub use error::ContainerizerError;
pub use fetcher::{CacheOutcome, FetchCache, Fetcher, NoFetcher, UriFetcher, DEFAULT_CACHE_SIZE};
pub use merge::merge as merge_launch_infos;
pub use metrics::Metrics;
pub use node_options::NodeOptions;
pub use recover::RecoverySummary;
pub use termination::NO_EXIT_CODE;

use actix::prelude::*;
use berth_isolators::{Isolator, IsolatorActor};
use berth_launcher::{Launcher, Stdio};
use std::path::PathBuf;
use std::sync::Arc;

/// The handle an agent embeds: cheap to clone, every call is a message to
/// the containerizer actor.
#[derive(Clone)]
pub struct Containerizer {
    addr: Addr<ContainerizerActor>,
    metrics: Arc<Metrics>,
    /// The fetcher's cache counters, for the exposition.
    fetch_cache: Option<Arc<metrics::CacheCounters>>,
    events: tokio::sync::broadcast::Sender<agent::api::Event>,
    /// For image pruning, which needs no container state.
    provisioner: Option<Arc<dyn berth_provisioner::Provisioner>>,
    inflight: Arc<inflight::InFlight>,
    /// Where the supervisors serve their attach sockets.
    runtime: berth_state::RuntimeDir,
}

/// Builds a [`Containerizer`]. See [`Containerizer::builder`].
pub struct ContainerizerBuilder {
    root: PathBuf,
    runtime_dir: PathBuf,
    cgroup_root: String,
    launcher: Option<Arc<dyn Launcher>>,
    supervisor: Option<PathBuf>,
    provisioner: Option<Arc<dyn berth_provisioner::Provisioner>>,
    isolators: Vec<Slot>,
    fetcher: Box<dyn Fetcher>,
    node: NodeOptions,
    supervisor_pool: usize,
    supervisor_pool_once: bool,
    supervisor_pool_placed: bool,
}

/// Supervisors the default launcher keeps started ahead of their launch
/// (see [`ContainerizerBuilder::supervisor_pool`]).
pub const DEFAULT_SUPERVISOR_POOL: usize = 2;

/// Overlay rootfs `berth agent` keeps mounted ahead of their launch per
/// recently launched image (see
/// [`provisioner::ImageProvisioner::with_rootfs_pool`]).
pub const DEFAULT_ROOTFS_POOL: usize = 1;

/// An isolator, or the place where the defaults go: they are made at
/// `build`, once the cgroup root is known.
enum Slot {
    One(Box<dyn Isolator>),
    Defaults,
}

impl ContainerizerBuilder {
    /// The launcher (default: the Linux launcher, with a supervisor per
    /// container).
    pub fn launcher(mut self, launcher: impl Launcher) -> Self {
        self.launcher = Some(Arc::new(launcher));
        self
    }

    /// The `berth-supervisor` binary the default launcher runs (default:
    /// `$BERTH_SUPERVISOR`, else beside the current executable).
    pub fn supervisor(mut self, path: impl Into<PathBuf>) -> Self {
        self.supervisor = Some(path.into());
        self
    }

    /// How many supervisors the default launcher keeps started ahead of
    /// their launch (default [`DEFAULT_SUPERVISOR_POOL`]; 0: each is
    /// started at its launch). A launch whose supervisor makes the
    /// container's stdio itself (sandbox files, attach) takes one, which
    /// saves the spawn, the loader and the detach (about 1.2 ms here); the
    /// pool is topped up off the launch's path. Unclaimed members hold no
    /// container and end with the launcher (or the agent).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), berth::ContainerizerError> {
    /// let c = berth::Containerizer::builder("/var/lib/berth", "/run/berth")
    ///     .supervisor_pool(8)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn supervisor_pool(mut self, size: usize) -> Self {
        self.supervisor_pool = size;
        self.supervisor_pool_once = false;
        self
    }

    /// Instead of a pool kept topped up ([`supervisor_pool`](Self::supervisor_pool)):
    /// `size` supervisors started at `build`, beside the store's open and
    /// the recovery, and not replaced once taken. For a process that
    /// launches a container or two and ends (`berth run` without an
    /// agent): its launch finds its supervisor started, and none is left
    /// unused to start and kill. An unclaimed one ends with the process.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), berth::ContainerizerError> {
    /// let c = berth::Containerizer::builder("/var/lib/berth", "/run/berth")
    ///     .supervisor_pool_once(1)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn supervisor_pool_once(mut self, size: usize) -> Self {
        self.supervisor_pool = size;
        self.supervisor_pool_once = true;
        self
    }

    /// Pooled supervisors move out of this process's cgroups into the
    /// supervisors' cgroup (`<cgroup root>/.supervisors` in every
    /// hierarchy) as they start, not when a launch claims one: each
    /// launch is spared that move (about 0.7 ms here). Default off: an
    /// unclaimed member then lives in berth's cgroup root until the
    /// containerizer's actors stop (or the process ends), so an embedder
    /// that checks the root is empty right after dropping its
    /// [`Containerizer`] would find it there. `berth agent` and `berth
    /// run` turn it on.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), berth::ContainerizerError> {
    /// let c = berth::Containerizer::builder("/var/lib/berth", "/run/berth")
    ///     .supervisor_pool(8)
    ///     .supervisor_pool_placed(true)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn supervisor_pool_placed(mut self, placed: bool) -> Self {
        self.supervisor_pool_placed = placed;
        self
    }

    /// The provisioner that makes root filesystems from images (without
    /// one, configs with an image are refused).
    pub fn provisioner(mut self, provisioner: impl berth_provisioner::Provisioner) -> Self {
        self.provisioner = Some(Arc::new(provisioner));
        self
    }

    /// Appends an isolator; isolators run in the order they are added.
    pub fn isolator(mut self, isolator: impl Isolator) -> Self {
        self.isolators.push(Slot::One(Box::new(isolator)));
        self
    }

    /// Appends the default isolators: `filesystem/linux`, `namespaces/pid`,
    /// `namespaces/ipc`, `namespaces/uts`, `namespaces/cgroup`,
    /// `posix/rlimits`, and the cgroup isolators
    /// `cgroups/cpu`, `cgroups/mem`, `cgroups/pids`, `cgroups/devices`
    /// (on the hierarchies detected at `build`, under the cgroup root).
    /// (and, from [`NodeOptions`], `volume/host_path`, `disk/du` and
    /// `network/cni`).
    pub fn default_isolators(mut self) -> Self {
        self.isolators.push(Slot::Defaults);
        self
    }

    fn defaults(cgroup_root: &str, hidden: &[PathBuf]) -> Vec<Box<dyn Isolator>> {
        use berth_isolators::cgroups::{Cpu, Devices, Hierarchies, Memory, Pids};
        use berth_isolators::{filesystem, namespaces};
        let h = Hierarchies::detect().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the cgroup hierarchies; cgroup isolators are inert");
            Hierarchies::default()
        });
        vec![
            Box::new(filesystem::LinuxFilesystem::hiding(hidden.to_vec())),
            Box::new(namespaces::PidNamespace),
            Box::new(namespaces::IpcNamespace),
            Box::new(namespaces::UtsNamespace),
            Box::new(namespaces::CgroupNamespace),
            Box::new(berth_isolators::rlimits::PosixRlimits),
            Box::new(Cpu::isolator(h.clone(), cgroup_root)),
            Box::new(Memory::isolator(h.clone(), cgroup_root)),
            Box::new(Pids::isolator(h.clone(), cgroup_root)),
            Box::new(Devices::isolator(h, cgroup_root)),
        ]
    }

    /// The operator's options for the volume, disk and network isolators
    /// that [`default_isolators`](Self::default_isolators) adds.
    pub fn node_options(mut self, node: NodeOptions) -> Self {
        self.node = node;
        self
    }

    /// The fetcher (default: [`NoFetcher`]).
    pub fn fetcher(mut self, fetcher: impl Fetcher) -> Self {
        self.fetcher = Box::new(fetcher);
        self
    }

    /// The cgroup root name (default `berth`): side-by-side agents and
    /// tests use their own.
    pub fn cgroup_root(mut self, name: impl Into<String>) -> Self {
        self.cgroup_root = name.into();
        self
    }

    /// Opens the checkpoint store (`<root>/state`, locked against a second
    /// agent) and starts the actors. Must run inside an actix System.
    pub fn build(self) -> Result<Containerizer, ContainerizerError> {
        let setup = |what: &str, e: &dyn std::fmt::Display| {
            ContainerizerError::Setup(format!("{what}: {e}"))
        };
        // The cgroup hierarchies, read from mountinfo by the launcher and
        // the cgroup isolators below: with thousands of containers (as
        // many overlay mounts) that read alone is ~30 ms, done here beside
        // the store's open (the later readers share it; see
        // `cgroup_mountinfo`).
        std::thread::Builder::new()
            .name("berth-mountinfo".into())
            .spawn(|| {
                let _ = berth_state::cgroupfs::cgroup_mountinfo();
            })
            .map_err(|e| setup("mountinfo thread", &e))?;
        let runtime = berth_state::RuntimeDir::open(&self.runtime_dir)
            .map_err(|e| setup("runtime dir", &e))?;
        let store = berth_state::Store::open_with_mirror(self.root.join("state"), runtime.clone())
            .map_err(|e| setup("checkpoint store", &e))?;
        // After the store's lock: a second agent on this root is refused
        // by that lock; a second root on our cgroup root or runtime dir here.
        claim::claim_all(&self.root, &self.cgroup_root, &self.runtime_dir)
            .map_err(ContainerizerError::Setup)?;
        // Container dirs the last process discarded and did not get to.
        runtime.trash().sweep();
        let checkpoints =
            checkpoint::Checkpointer::start(store).map_err(|e| setup("checkpoint writer", &e))?;
        // Canonical, so that every sandbox path below it has no symlink of
        // berth's own: any symlink met under it was planted by a container.
        let sandboxes = self.root.join("sandboxes");
        let sandboxes = std::fs::create_dir_all(&sandboxes)
            .and_then(|()| std::fs::canonicalize(&sandboxes))
            .map_err(|e| setup(&format!("sandboxes dir {}", sandboxes.display()), &e))?;
        let launcher = match self.launcher {
            Some(l) => l,
            None => {
                let mut cfg = berth_launcher::LauncherConfig::new(&self.runtime_dir);
                cfg.cgroup_root = self.cgroup_root.clone();
                cfg.supervisor = self.supervisor.clone();
                let mut native_cfg = cfg.clone();
                native_cfg.supervisor_pool = self.supervisor_pool;
                native_cfg.supervisor_pool_once = self.supervisor_pool_once;
                native_cfg.supervisor_pool_placed = self.supervisor_pool_placed;
                let native: Arc<dyn Launcher> = Arc::new(
                    berth_launcher::LinuxLauncher::new(native_cfg)
                        .map_err(|e| setup("launcher", &e))?,
                );
                // The OCI runtimes beside it, chosen per container.
                let oci = self
                    .node
                    .oci_runtimes(&self.runtime_dir)
                    .into_iter()
                    .map(|rt| berth_launcher::OciLauncher::new(cfg.clone(), rt))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| setup("launcher", &e))?;
                let default = self.node.default_runtime.clone().unwrap_or_default();
                Arc::new(
                    berth_launcher::Runtimes::new(native, oci, &default, runtime.clone())
                        .map_err(|e| setup("launcher", &e))?,
                )
            }
        };
        let cgroup_root = self.cgroup_root.clone();
        let default_network = self.node.default_network.clone();
        // What a host-filesystem container must not see: berth's state,
        // runtime dir and binaries (the CVE-2019-5736 class).
        let mut hidden = vec![self.root.clone(), self.runtime_dir.clone()];
        hidden.extend(std::env::current_exe().ok());
        hidden.extend(
            self.supervisor
                .clone()
                .or_else(|| berth_launcher::config::default_supervisor_path().ok()),
        );
        let hidden: Vec<PathBuf> = hidden
            .into_iter()
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
            .collect();
        // Out-of-process isolators: after the built-in ones, each in the
        // same actor as they are. A command plugin starts here.
        let plugins = match &self.node.plugin_dir {
            Some(dir) => berth_isolators::remote::RemoteIsolator::load_dir(dir, &self.runtime_dir)
                .map_err(|e| setup("isolator plugins", &e))?,
            None => Vec::new(),
        };
        let isolators = self
            .isolators
            .into_iter()
            .flat_map(|slot| match slot {
                Slot::One(i) => vec![i],
                Slot::Defaults => {
                    let mut v = Self::defaults(&cgroup_root, &hidden);
                    v.extend(self.node.isolators(&self.runtime_dir));
                    v
                }
            })
            .chain(
                plugins
                    .into_iter()
                    .map(|p| Box::new(p) as Box<dyn Isolator>),
            )
            .map(IsolatorActor::spawn)
            .collect();
        let metrics = Arc::new(Metrics::default());
        let fetch_cache = self.fetcher.cache_counters();
        let inflight = Arc::new(inflight::InFlight::new(self.node.timeouts));
        // Subscribers that fall this far behind miss events (and are told).
        let (events, _) = tokio::sync::broadcast::channel(4096);
        let actor = ContainerizerActor {
            checkpoints,
            sandboxes,
            cgroup_root: self.cgroup_root,
            launcher,
            provisioner: self.provisioner.clone(),
            isolators,
            fetcher: crate::fetcher::FetcherHandle::spawn(self.fetcher),
            containers: Default::default(),
            metrics: metrics.clone(),
            events: events.clone(),
            default_network: default_network.clone(),
            default_logs: self.node.logs(),
            inflight: inflight.clone(),
            criu_path: self.node.criu_path.clone(),
        };
        Ok(Containerizer {
            addr: actor.start(),
            metrics,
            fetch_cache,
            events,
            provisioner: self.provisioner,
            inflight,
            runtime,
        })
    }
}

impl Containerizer {
    /// A builder with state under `root` (checkpoints in `root/state`,
    /// sandboxes in `root/sandboxes`) and supervisor files under
    /// `runtime_dir`.
    pub fn builder(
        root: impl Into<PathBuf>,
        runtime_dir: impl Into<PathBuf>,
    ) -> ContainerizerBuilder {
        ContainerizerBuilder {
            root: root.into(),
            runtime_dir: runtime_dir.into(),
            cgroup_root: "berth".into(),
            launcher: None,
            supervisor: None,
            provisioner: None,
            isolators: Vec::new(),
            fetcher: Box::new(NoFetcher),
            node: NodeOptions::default(),
            supervisor_pool: DEFAULT_SUPERVISOR_POOL,
            supervisor_pool_once: false,
            supervisor_pool_placed: false,
        }
    }

    async fn ask<M>(&self, msg: M) -> Result<M::Result, ContainerizerError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        ContainerizerActor: Handler<M>,
    {
        self.addr
            .send(msg)
            .await
            .map_err(|_| ContainerizerError::Gone)
    }

    /// Recovers the checkpointed containers; call once before launching.
    pub async fn recover(&self) -> Result<RecoverySummary, ContainerizerError> {
        self.ask(recover::Recover).await?
    }

    /// Launches a container whose output goes to `stdout`/`stderr` files in
    /// its sandbox. Resolves once its command runs; a failed launch is an
    /// error, and `wait` then returns a START_ERROR termination.
    pub async fn launch(
        &self,
        id: ContainerId,
        config: ContainerConfig,
    ) -> Result<(), ContainerizerError> {
        self.launch_with_stdio(id, config, Stdio::SandboxFiles)
            .await
    }

    /// As [`launch`](Self::launch), with the command's output going to `stdio`.
    pub async fn launch_with_stdio(
        &self,
        id: ContainerId,
        config: ContainerConfig,
        stdio: Stdio,
    ) -> Result<(), ContainerizerError> {
        self.ask(launch::Launch { id, config, stdio }).await?
    }

    /// The container's termination, once it has ended.
    pub async fn wait(&self, id: ContainerId) -> Result<ContainerTermination, ContainerizerError> {
        self.ask(actor::Wait(id)).await?
    }

    /// Destroys the container (in any state) and returns its termination.
    pub async fn destroy(
        &self,
        id: ContainerId,
    ) -> Result<ContainerTermination, ContainerizerError> {
        self.ask(actor::Destroy(id)).await?
    }

    /// Stops the container: SIGTERM to its init, SIGKILL to whatever is
    /// left after `grace`, then the destroy; returns its termination.
    pub async fn stop(
        &self,
        id: ContainerId,
        grace: std::time::Duration,
    ) -> Result<ContainerTermination, ContainerizerError> {
        self.ask(actor::Stop(id, grace)).await?
    }

    /// Checkpoints a RUNNING container with CRIU into `image_dir` (made,
    /// must be empty; state CHECKPOINTING meanwhile); then destroys it
    /// unless `leave_running`.
    pub async fn checkpoint(
        &self,
        id: ContainerId,
        image_dir: PathBuf,
        leave_running: bool,
    ) -> Result<Checkpointed, ContainerizerError> {
        self.ask(checkpoint_criu::Checkpoint {
            id,
            image_dir,
            leave_running,
        })
        .await?
    }

    /// Launches container `id` from a checkpoint's `image_dir`: the
    /// checkpointed config and image, its rootfs changes, its processes
    /// restored by CRIU. Resolves once it runs.
    pub async fn restore(
        &self,
        id: ContainerId,
        image_dir: PathBuf,
    ) -> Result<(), ContainerizerError> {
        if !image_dir.is_absolute() {
            return Err(ContainerizerError::InvalidConfig {
                id: id.to_string(),
                why: format!(
                    "restore image dir {} is not an absolute path",
                    image_dir.display()
                ),
            });
        }
        let dir = image_dir.clone();
        let manifest = tokio::task::spawn_blocking(move || checkpoint_criu::read_manifest(&dir))
            .await
            .map_err(|e| ContainerizerError::Setup(e.to_string()))?
            .map_err(|why| ContainerizerError::InvalidConfig {
                id: id.to_string(),
                why: format!("restore: {why}"),
            })?;
        self.ask(checkpoint_criu::Restore {
            id,
            image_dir,
            manifest,
        })
        .await?
    }

    /// Freezes every process of a RUNNING container (state PAUSED).
    pub async fn pause(&self, id: ContainerId) -> Result<(), ContainerizerError> {
        self.ask(actor::SetPaused(id, true)).await?
    }

    /// Thaws a paused container (RUNNING again).
    pub async fn resume(&self, id: ContainerId) -> Result<(), ContainerizerError> {
        self.ask(actor::SetPaused(id, false)).await?
    }

    /// Sends `signal` to the container's init.
    pub async fn kill(&self, id: ContainerId, signal: i32) -> Result<(), ContainerizerError> {
        self.ask(actor::Kill(id, signal)).await?
    }

    /// Changes the resources of a running container.
    pub async fn update(
        &self,
        id: ContainerId,
        resources: Resources,
    ) -> Result<(), ContainerizerError> {
        self.ask(actor::Update(id, resources)).await?
    }

    /// Resource usage of a container.
    pub async fn usage(&self, id: ContainerId) -> Result<ResourceStatistics, ContainerizerError> {
        self.ask(actor::Usage(id)).await?
    }

    /// The status of a container.
    pub async fn status(&self, id: ContainerId) -> Result<ContainerStatus, ContainerizerError> {
        self.ask(actor::Status(id)).await?
    }

    /// Every known container (terminated ones until removed).
    pub async fn containers(&self) -> Result<Vec<ContainerId>, ContainerizerError> {
        self.ask(actor::List).await
    }

    /// Drops a terminated container's record and sandbox.
    pub async fn remove(&self, id: ContainerId) -> Result<(), ContainerizerError> {
        self.ask(actor::Remove(id)).await?
    }

    /// Removes every image except `excluded` and those of live containers,
    /// with their blobs and cached layers (no-op without a provisioner).
    pub async fn prune_images(&self, excluded: Vec<String>) -> Result<(), ContainerizerError> {
        match &self.provisioner {
            Some(p) => p
                .prune(excluded)
                .await
                .map_err(|e| ContainerizerError::Setup(format!("prune images: {e}"))),
            None => Ok(()),
        }
    }

    /// The counters (e.g. `container_destroy_errors`).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every metric in Prometheus's text format ([`metrics::CONTENT_TYPE`]),
    /// as `berth agent --metrics-listen` serves it: the counters and
    /// histograms, the containers per state, and each RUNNING container's
    /// usage (read now from the isolators, as [`usage`](Self::usage); a
    /// container whose usage does not come within 5 s is left out).
    pub async fn metrics_text(&self) -> Result<String, ContainerizerError> {
        const USAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
        let (states, running) = self.ask(actor::Census).await?;
        let usages = running.into_iter().map(|id| async move {
            let u = tokio::time::timeout(USAGE_TIMEOUT, self.usage(id.clone())).await;
            match u {
                Ok(Ok(u)) => Some((id, u)),
                // It may have stopped meanwhile, or an isolator failed:
                // its series are left out of this scrape.
                Ok(Err(e)) => {
                    tracing::debug!(container = %id, error = %e, "no usage for the metrics");
                    None
                }
                Err(_) => {
                    tracing::warn!(container = %id, "usage took over 5 s; left out of the metrics");
                    None
                }
            }
        });
        let running = futures::future::join_all(usages)
            .await
            .into_iter()
            .flatten()
            .collect();
        Ok(metrics::encode(
            self.metrics.clone(),
            self.fetch_cache.clone(),
            metrics::Snapshot { states, running },
        ))
    }

    /// The calls into isolators, the provisioner, the fetcher and the
    /// launcher under way now, oldest first (`berth debug`).
    pub fn in_flight(&self) -> Vec<inflight::CallInfo> {
        self.inflight.list()
    }

    /// The deadline of each kind of call.
    pub fn timeouts(&self) -> inflight::Timeouts {
        self.inflight.timeouts()
    }

    /// Every state transition (with the termination at TERMINATED) and
    /// every limitation from now on, in order. A subscriber more than 4096
    /// events behind gets `Lagged` and resumes with the newest.
    /// The attach socket of container `id`'s supervisor (it may be gone).
    pub fn attach_socket(&self, id: &ContainerId) -> PathBuf {
        self.runtime
            .container_dir(id)
            .join(berth_launcher::attach::SOCKET)
    }

    pub fn events(&self) -> tokio::sync::broadcast::Receiver<agent::api::Event> {
        self.events.subscribe()
    }
}
