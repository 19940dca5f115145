//! berth's isolator plugin API and its built-in isolators.
//!
//! An isolator owns one aspect of a container's isolation — a namespace, a
//! cgroup controller, a volume, the network. The containerizer calls it at
//! fixed points of every container's life (as Mesos does):
//!
//! | call | when | order |
//! |---|---|---|
//! | [`recover`](Isolator::recover) | agent start | all isolators in parallel |
//! | [`prepare`](Isolator::prepare) | PREPARING, before the init exists | serially, in isolator order |
//! | [`isolate`](Isolator::isolate) | ISOLATING, init forked but blocked | in parallel |
//! | [`watch`](Isolator::watch) | once RUNNING | in parallel; resolving = a limitation |
//! | [`update`](Isolator::update) / [`usage`](Isolator::usage) / [`status`](Isolator::status) | on request | in parallel |
//! | [`cleanup`](Isolator::cleanup) | destroy | serially, in reverse order; every isolator tried |
//!
//! Every call has a default, so a plugin implements only what it needs. The
//! framework runs each isolator in its own actor ([`IsolatorActor`]): calls
//! to one isolator never overlap, so `&mut self` state needs no lock. Calls
//! return `'static` futures: do the quick, non-blocking part in the method
//! body, and put blocking syscalls in the future via
//! [`blocking`] (a blocking pool), never on the actor's thread.
//! A panic in a plugin is caught and turned into an [`IsolatorError`].
//!
//! # Example: a complete isolator
//!
//! ```
//! use berth_isolators::{Isolator, IsolatorError, IsolatorFuture, PrepareRequest, blocking};
//! use berth_state::{ContainerId, LaunchInfo};
//!
//! /// Gives every container `GREETING=hello` and a `motd` file in its sandbox.
//! struct Greeter;
//!
//! impl Isolator for Greeter {
//!     fn name(&self) -> &str {
//!         "example/greeter"
//!     }
//!
//!     fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
//!         let motd = req.sandbox_dir.join("motd");
//!         let id = req.id.clone();
//!         Box::pin(async move {
//!             // File I/O blocks: run it on the blocking pool.
//!             let path = motd.clone();
//!             blocking(move || std::fs::write(&path, "hello\n"))
//!                 .await
//!                 .map_err(|e| IsolatorError::io(&id, "write", &motd, e))?;
//!             let mut info = LaunchInfo::default();
//!             info.env.insert("GREETING".into(), "hello".into());
//!             Ok(Some(info))
//!         })
//!     }
//!
//!     fn cleanup(&mut self, _id: &ContainerId) -> IsolatorFuture<()> {
//!         // The sandbox (and the motd in it) is removed by the containerizer.
//!         Box::pin(async { Ok(()) })
//!     }
//! }
//!
//! // Hand it to the containerizer's builder:
//! // berth::Containerizer::builder(root, runtime).isolator(Greeter)…
//! ```

mod actor;
pub mod cgroups;
pub mod disk;
pub mod filesystem;
pub mod namespaces;
pub mod network;
pub mod remote;
pub mod rlimits;
pub mod seccomp;
pub mod userns;
pub mod volume;

pub use actor::{IsolatorActor, IsolatorCall, IsolatorHandle};

use berth_state::{
    ContainerConfig, ContainerId, ContainerRecord, LaunchInfo, ResourceStatistics, Resources,
    TerminationReason,
};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The future every isolator call returns.
pub type IsolatorFuture<T> = BoxFuture<'static, Result<T, IsolatorError>>;

/// What [`Isolator::prepare`] is told about the container being launched.
#[derive(Debug, Clone)]
pub struct PrepareRequest {
    pub id: ContainerId,
    pub config: ContainerConfig,
    /// The container's sandbox directory on the host (exists).
    pub sandbox_dir: PathBuf,
    /// The root filesystem the provisioner made; `None` = host filesystem.
    pub rootfs: Option<PathBuf>,
    /// The cgroup root name of this agent (e.g. "berth"): cgroup isolators
    /// keep their cgroups under `<hierarchy>/<cgroup_root>/…`.
    pub cgroup_root: String,
}

/// A resource limit a container hit; resolving [`Isolator::watch`] with one
/// makes the containerizer destroy the container with this reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Limitation {
    /// `OomKilled` for the memory limit, else `Limitation`.
    pub reason: TerminationReason,
    /// The resource: "memory", "disk", "pids", …
    pub resource: String,
    /// Human-readable detail, e.g. the limit and the usage.
    pub message: String,
}

/// Extra facts an isolator reports in a container's status (e.g.
/// `network.ip` → `10.88.0.5`).
pub type StatusFields = BTreeMap<String, String>;

/// An isolator's failure, naming the isolator or container and the cause.
#[derive(Debug, thiserror::Error)]
pub enum IsolatorError {
    #[error("container {id}: {op} {path}: {source}")]
    Io {
        id: String,
        op: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id}: invalid {field}: {why}")]
    InvalidConfig {
        id: String,
        field: String,
        why: String,
    },
    #[error("container {id}: {message}")]
    Failed { id: String, message: String },
    #[error("isolator {isolator} panicked in {call}: {message}")]
    Panicked {
        isolator: String,
        call: &'static str,
        message: String,
    },
    #[error("isolator {isolator} is gone (its actor stopped)")]
    Gone { isolator: String },
    /// An out-of-process plugin's failure outside any one container
    /// (its recovery); the message names the plugin.
    #[error("{message}")]
    Plugin { message: String },
}

impl IsolatorError {
    /// An I/O error on `path` while doing `op` for container `id`.
    pub fn io(id: &ContainerId, op: &str, path: &Path, source: std::io::Error) -> Self {
        IsolatorError::Io {
            id: id.to_string(),
            op: op.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }

    /// A config field the isolator cannot accept.
    pub fn invalid(id: &ContainerId, field: &str, why: impl Into<String>) -> Self {
        IsolatorError::InvalidConfig {
            id: id.to_string(),
            field: field.to_string(),
            why: why.into(),
        }
    }

    /// Any other failure, with a message.
    pub fn failed(id: &ContainerId, message: impl Into<String>) -> Self {
        IsolatorError::Failed {
            id: id.to_string(),
            message: message.into(),
        }
    }
}

/// Runs a blocking closure on the blocking pool (cgroup writes, mounts,
/// file I/O), so the actor's thread never blocks.
pub async fn blocking<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        // The closure panicked: keep the panic (IsolatorActor catches it).
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The isolator plugin interface. See the crate docs for the call order
/// and a complete example.
pub trait Isolator: Send + 'static {
    /// A unique name, by convention `kind/what` ("cgroups/mem").
    fn name(&self) -> &str;

    /// Whether it can isolate nested containers.
    fn supports_nesting(&self) -> bool {
        false
    }

    /// Whether it can isolate standalone containers (launched without an
    /// executor, as berth's are).
    fn supports_standalone(&self) -> bool {
        true
    }

    /// After an agent restart: `states` are the containers that are being
    /// recovered (re-adopt their resources), `orphans` are containers found
    /// on the host that no record explains (release their resources).
    fn recover(
        &mut self,
        _states: &[ContainerRecord],
        _orphans: &[ContainerId],
    ) -> IsolatorFuture<()> {
        Box::pin(async { Ok(()) })
    }

    /// Before the init exists: validate the config and contribute launch
    /// info (env, mounts, namespaces, rlimits, …). `None` = nothing to add.
    fn prepare(&mut self, _req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        Box::pin(async { Ok(None) })
    }

    /// The init `pid` exists (blocked before exec): isolate it (e.g. move
    /// it into cgroups).
    fn isolate(&mut self, _id: &ContainerId, _pid: i32) -> IsolatorFuture<()> {
        Box::pin(async { Ok(()) })
    }

    /// Whether [`isolate`](Isolator::isolate) ever does anything. Asked
    /// once, when the isolator is registered: only isolators that say
    /// `true` (the default) are called at each launch's ISOLATING step,
    /// which every launch waits on. Say `false` only when `isolate` keeps
    /// its default.
    ///
    /// ```
    /// use berth_isolators::Isolator;
    ///
    /// /// Adds environment at `prepare`; nothing to do once the init exists.
    /// struct EnvOnly;
    ///
    /// impl Isolator for EnvOnly {
    ///     fn name(&self) -> &str {
    ///         "example/env-only"
    ///     }
    ///     fn isolates(&self) -> bool {
    ///         false
    ///     }
    /// }
    /// assert!(!EnvOnly.isolates());
    /// ```
    fn isolates(&self) -> bool {
        true
    }

    /// Resolves when the container hits a limit. The default never resolves.
    fn watch(&mut self, _id: &ContainerId) -> BoxFuture<'static, Limitation> {
        Box::pin(futures::future::pending())
    }

    /// Whether [`watch`](Isolator::watch) can ever resolve. Asked once,
    /// when the isolator is registered: only isolators that say `true` (the
    /// default) are asked to watch each running container, and for a
    /// [`limitation`](Isolator::limitation) once a command exited, which
    /// spares the others a call and a task per container (thousands of
    /// them at an agent's restart) and a call per exit. Say `false` only
    /// when `watch` and `limitation` keep their defaults.
    ///
    /// ```
    /// use berth_isolators::Isolator;
    ///
    /// /// Adds environment at `prepare` and never limits a container.
    /// struct EnvOnly;
    ///
    /// impl Isolator for EnvOnly {
    ///     fn name(&self) -> &str {
    ///         "example/env-only"
    ///     }
    ///     fn watches(&self) -> bool {
    ///         false
    ///     }
    /// }
    /// assert!(!EnvOnly.watches());
    /// ```
    fn watches(&self) -> bool {
        true
    }

    /// Asked once the container's processes are gone and before any
    /// `cleanup`: a limit the container hit that `watch` may not have
    /// reported yet (an OOM kill whose notice is still in flight when the
    /// init's exit is learned). The default knows of none.
    fn limitation(&mut self, _id: &ContainerId) -> IsolatorFuture<Option<Limitation>> {
        Box::pin(async { Ok(None) })
    }

    /// Applies new resources to a running container.
    fn update(&mut self, _id: &ContainerId, _resources: &Resources) -> IsolatorFuture<()> {
        Box::pin(async { Ok(()) })
    }

    /// Resource usage; fill only the fields this isolator knows (the
    /// containerizer merges every isolator's figures).
    fn usage(&mut self, _id: &ContainerId) -> IsolatorFuture<ResourceStatistics> {
        Box::pin(async { Ok(ResourceStatistics::default()) })
    }

    /// Extra status facts.
    fn status(&mut self, _id: &ContainerId) -> IsolatorFuture<StatusFields> {
        Box::pin(async { Ok(StatusFields::new()) })
    }

    /// Releases what `prepare`/`isolate` created. Called once per destroy
    /// attempt, only for containers whose `prepare` ran; must tolerate
    /// being called again after a failed attempt or for a container it
    /// never saw (after a crash).
    fn cleanup(&mut self, _id: &ContainerId) -> IsolatorFuture<()> {
        Box::pin(async { Ok(()) })
    }
}
