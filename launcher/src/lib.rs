//! berth's launchers: how a container's command becomes processes.
//!
//! A [`Launcher`] creates the container's init **blocked** (so isolators can
//! place it in cgroups and the fetcher can fill the sandbox first), releases
//! it to exec the command, kills every process of the container on destroy,
//! and reports the exit status — also after an agent restart, because the
//! container's processes belong to a per-container supervisor, not to the
//! agent.

#[macro_use]
mod engine;
pub mod actor;
pub mod attach;
pub mod capabilities;
pub mod cgroup_view;
pub mod config;
pub mod criu;
pub mod failpoint;
pub mod freezer;
pub mod idmapped_rootfs;
mod linux;
pub mod mounts;
pub mod namespaces;
pub mod oci;
mod pool;
mod posix;
pub mod protocol;
pub mod rlimits;
pub mod sealed;
mod spawn;
pub mod step;
pub mod supervisor;
pub mod sys;
mod watch;

pub use actor::LauncherActor;
pub use config::{default_supervisor_path, LauncherConfig, SUPERVISOR_BIN, SUPERVISOR_ENV};
pub use engine::SUPERVISORS_CGROUP;
pub use linux::LinuxLauncher;
pub use oci::{OciLauncher, OciRuntime, Runtimes};
pub use posix::PosixLauncher;

use berth_state::{ContainerId, ContainerRecord, ExitStatus, LaunchInfo, ProcessRef};
use futures::future::BoxFuture;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Where the command's stdout and stderr go.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The supervisor's: pipes (or a tty) it copies into the sandbox's log
    /// files and serves on the attach socket ([`StdioOptions`]).
    #[default]
    SandboxFiles,
    /// These fds (e.g. `berth run`'s terminal, an exec's pipes),
    /// duplicated into the init; stdin is `/dev/null` unless given.
    Fds {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// As [`Stdio::SandboxFiles`], and the command is released only once a
    /// client attached (`berth run -t/-i` attaches after the launch).
    Attached,
}

/// Everything the launcher needs to start one container.
#[derive(Debug)]
pub struct LaunchSpec {
    pub id: ContainerId,
    /// The argv to exec (already resolved: shell wrapping, image entrypoint).
    pub argv: Vec<String>,
    /// The complete environment of the command.
    pub env: Vec<(String, String)>,
    /// The merged launch info of all isolators: namespaces, mounts, rootfs,
    /// rlimits, hostname, capabilities, working dir, cgroup paths.
    pub launch_info: LaunchInfo,
    /// uid, gid and supplementary gids; `None` = stay root.
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// The container's sandbox dir on the host (its working dir when it
    /// runs on the host filesystem).
    pub sandbox_dir: PathBuf,
    /// The sandbox directory as berth made it: the supervisor refuses a
    /// sandbox that is another directory by then (swapped by rename in a
    /// parent container's sandbox). `None`: not checked.
    pub sandbox_identity: Option<berth_state::safe_path::Identity>,
    pub stdio: Stdio,
    /// `--init`: the init forks the command and stays as its reaper
    /// (signals forwarded, orphans reaped, the command's exit code).
    pub init: bool,
    /// With [`Stdio::SandboxFiles`]: tty, stdin and the log files.
    pub io: StdioOptions,
    /// Set: the init is restored by CRIU from a checkpoint, not forked
    /// (the native launcher only).
    pub restore: Option<RestoreSpec>,
}

/// How the supervisor restores a checkpointed init ([`criu`]).
#[derive(Debug, Clone, Default)]
pub struct RestoreSpec {
    pub criu: PathBuf,
    /// CRIU's images (`berth checkpoint --image-dir`).
    pub image_dir: PathBuf,
    /// The root and the external mounts ([`criu::restore_args`]).
    pub args: Vec<String>,
    /// The dumped init's stdio keys ([`criu::Dumped::stdio`]).
    pub stdio: Vec<String>,
}

/// How the supervisor handles the command's stdio.
#[derive(Debug, Clone, Default)]
pub struct StdioOptions {
    /// The command's stdio is a pty of the container's own devpts.
    pub tty: bool,
    /// stdin is a pipe fed by attached clients; else `/dev/null`.
    pub stdin_open: bool,
    /// Format and rotation of the sandbox's log files.
    pub logs: berth_state::LogSettings,
}

/// What [`Launcher::fork`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forked {
    /// The per-container supervisor (parent of the init).
    pub supervisor: ProcessRef,
    /// The container's init, blocked until [`Launcher::release`].
    pub init: ProcessRef,
}

/// What the launcher knows of a container's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessStatus {
    /// The init is alive (blocked or running).
    Running(Forked),
    /// The init has exited with this status.
    Exited(ExitStatus),
    /// No process and no exit status: never forked, or the status was lost.
    Unknown,
}

/// A launcher failure, naming the container and the step.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("container {id}: {op}: {source}")]
    Sys {
        id: String,
        op: String,
        #[source]
        source: nix::Error,
    },
    #[error("container {id}: {op} {path}: {source}")]
    Io {
        id: String,
        op: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id}: {source}")]
    Runtime {
        id: String,
        #[source]
        source: berth_state::RuntimeError,
    },
    #[error("container {id} is unknown to the launcher")]
    UnknownContainer { id: String },
    #[error("container {id}: supervisor failed: {message}")]
    Supervisor { id: String, message: String },
    #[error("container {id}: {message}")]
    Other { id: String, message: String },
    /// The supervisor binary is not where the config says.
    #[error("berth-supervisor not found at {path}: {why}")]
    SupervisorMissing { path: PathBuf, why: String },
    /// The supervisor's sealed copy could not be made; supervisors never
    /// run from the host's binary instead.
    #[error("container {id}: {source}")]
    SupervisorCopy {
        id: String,
        #[source]
        source: sealed::SealError,
    },
    /// The init could not be set up (a namespace, mount, cgroup step
    /// failed); the exit status records the same as `StartError`.
    #[error("container {id}: start failed: {message}")]
    StartFailed {
        id: String,
        errno: i32,
        message: String,
    },
    /// The supervisor is gone and left no exit status (it was killed, or
    /// the runtime dir was lost): the containerizer reports UNKNOWN.
    #[error("container {id}: the supervisor exited without recording an exit status")]
    ExitStatusLost { id: String },
}

/// The launcher interface (Mesos's `launcher.hpp`, in async Rust).
///
/// Implementations must be idempotent where noted and must never block
/// the calling thread: blocking syscalls go to a blocking pool.
pub trait Launcher: Send + Sync + 'static {
    /// A short name for logs ("linux", "posix").
    fn name(&self) -> &'static str;

    /// Re-attaches to the containers of `records` whose supervisor is still
    /// alive (pid **and** start time match). Returns the ids of orphans:
    /// containers the launcher finds on the host (cgroups, supervisors,
    /// runtime dirs) that no record names.
    fn recover(
        &self,
        records: Vec<ContainerRecord>,
    ) -> BoxFuture<'static, Result<Vec<ContainerId>, LaunchError>>;

    /// Creates the container's supervisor and init; the init is blocked
    /// until [`release`](Launcher::release).
    fn fork(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Forked, LaunchError>>;

    /// Lets the init exec the command.
    fn release(&self, id: ContainerId) -> BoxFuture<'static, Result<(), LaunchError>>;

    /// Sends `signal` to the container's init.
    fn kill(&self, id: ContainerId, signal: i32) -> BoxFuture<'static, Result<(), LaunchError>>;

    /// Kills every process of the container (also ones that escaped the
    /// init) and removes the launcher's cgroups. Idempotent: destroying a
    /// gone container is `Ok`.
    fn destroy(&self, id: ContainerId) -> BoxFuture<'static, Result<(), LaunchError>>;

    /// What is known of the container's processes now.
    fn status(&self, id: ContainerId) -> BoxFuture<'static, Result<ProcessStatus, LaunchError>>;

    /// [`status`](Launcher::status) of each of `ids`, in their order:
    /// recovery asks this of thousands of containers at once. The default
    /// asks `status` of each, 64 at a time; a launcher whose status is a
    /// blocking call answers them all in one trip to the blocking pool.
    fn statuses(
        &self,
        ids: Vec<ContainerId>,
    ) -> BoxFuture<'static, Vec<Result<ProcessStatus, LaunchError>>> {
        use futures::stream::StreamExt as _;
        let calls: Vec<_> = ids.into_iter().map(|id| self.status(id)).collect();
        Box::pin(futures::stream::iter(calls).buffered(64).collect())
    }

    /// Resolves when the init has exited, with its status (learned without
    /// polling). Resolves at once for a container that already exited.
    fn wait(&self, id: ContainerId) -> BoxFuture<'static, Result<ExitStatus, LaunchError>>;

    /// Forgets the container (after its destroy finished): removes its
    /// runtime dir.
    fn remove(&self, id: ContainerId) -> BoxFuture<'static, Result<(), LaunchError>>;

    /// The runtime a container asking for `requested` runs under (empty:
    /// the default), or why none: an unknown name. A launcher without a
    /// choice of runtimes is `native` only.
    fn runtime_for(&self, requested: &str) -> Result<String, String> {
        match requested {
            "" | oci::NATIVE => Ok(oci::NATIVE.to_string()),
            other => Err(format!(
                "unknown runtime {other:?} (this launcher has only {:?})",
                oci::NATIVE
            )),
        }
    }

    /// Dumps the container's processes with CRIU ([`criu::dump`]). The
    /// default cannot: only berth's native launcher checkpoints.
    fn checkpoint(
        &self,
        id: ContainerId,
        _spec: criu::DumpSpec,
    ) -> BoxFuture<'static, Result<criu::Dumped, LaunchError>> {
        let name = self.name();
        Box::pin(async move {
            Err(LaunchError::Other {
                id: id.to_string(),
                message: format!("the {name} launcher cannot checkpoint a container"),
            })
        })
    }

    /// Freezes (`true`) or thaws every process of the container (`berth
    /// pause`/`resume`). The default cannot: a launcher without a freezer
    /// says so.
    fn set_frozen(
        &self,
        id: ContainerId,
        _frozen: bool,
    ) -> BoxFuture<'static, Result<(), LaunchError>> {
        let name = self.name();
        Box::pin(async move {
            Err(LaunchError::Other {
                id: id.to_string(),
                message: format!("the {name} launcher cannot pause or resume a container"),
            })
        })
    }
}
