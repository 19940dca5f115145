//! What the Linux and POSIX launchers share: starting a supervisor,
//! releasing, signalling, status, wait, recovery. They differ only in how
//! they validate a launch and how they kill every process of a container
//! ([`Kind`]).
//!
//! Methods here block (syscalls, files); the `Launcher` impls run them on
//! tokio's blocking pool. Nothing is kept that the runtime dir cannot
//! tell again after a restart, except the control sockets of containers
//! not yet released.

/// Implements [`Launcher`] for a type with an `engine: Arc<Engine>`.
macro_rules! impl_launcher {
    ($ty:ty, $name:literal) => {
        impl $crate::Launcher for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn recover(
                &self,
                records: Vec<berth_state::ContainerRecord>,
            ) -> futures::future::BoxFuture<
                'static,
                Result<Vec<berth_state::ContainerId>, $crate::LaunchError>,
            > {
                let e = self.engine.clone();
                Box::pin($crate::engine::blocking(String::new(), move || {
                    e.recover(records)
                }))
            }

            fn fork(
                &self,
                spec: $crate::LaunchSpec,
            ) -> futures::future::BoxFuture<'static, Result<$crate::Forked, $crate::LaunchError>>
            {
                let e = self.engine.clone();
                Box::pin($crate::engine::blocking(spec.id.to_string(), move || {
                    e.fork(spec)
                }))
            }

            fn release(
                &self,
                id: berth_state::ContainerId,
            ) -> futures::future::BoxFuture<'static, Result<(), $crate::LaunchError>> {
                let e = self.engine.clone();
                Box::pin($crate::engine::blocking(id.to_string(), move || {
                    e.release(&id)
                }))
            }

            fn kill(
                &self,
                id: berth_state::ContainerId,
                signal: i32,
            ) -> futures::future::BoxFuture<'static, Result<(), $crate::LaunchError>> {
                let e = self.engine.clone();
                Box::pin($crate::engine::blocking(id.to_string(), move || {
                    e.kill(&id, signal)
                }))
            }

            fn destroy(
                &self,
                id: berth_state::ContainerId,
            ) -> futures::future::BoxFuture<'static, Result<(), $crate::LaunchError>> {
                Box::pin($crate::engine::destroy(self.engine.clone(), id))
            }

            fn status(
                &self,
                id: berth_state::ContainerId,
            ) -> futures::future::BoxFuture<
                'static,
                Result<$crate::ProcessStatus, $crate::LaunchError>,
            > {
                let e = self.engine.clone();
                Box::pin($crate::engine::blocking(id.to_string(), move || {
                    e.status(&id)
                }))
            }

            fn statuses(
                &self,
                ids: Vec<berth_state::ContainerId>,
            ) -> futures::future::BoxFuture<
                'static,
                Vec<Result<$crate::ProcessStatus, $crate::LaunchError>>,
            > {
                let e = self.engine.clone();
                let n = ids.len();
                Box::pin(async move {
                    let all = $crate::engine::blocking(String::new(), move || {
                        Ok(ids.iter().map(|id| e.status(id)).collect::<Vec<_>>())
                    })
                    .await;
                    match all {
                        Ok(v) => v,
                        Err(err) => (0..n)
                            .map(|_| {
                                Err($crate::LaunchError::Other {
                                    id: String::new(),
                                    message: err.to_string(),
                                })
                            })
                            .collect(),
                    }
                })
            }

            fn wait(
                &self,
                id: berth_state::ContainerId,
            ) -> futures::future::BoxFuture<
                'static,
                Result<berth_state::ExitStatus, $crate::LaunchError>,
            > {
                Box::pin($crate::engine::wait(self.engine.clone(), id))
            }

            fn remove(
                &self,
                id: berth_state::ContainerId,
            ) -> futures::future::BoxFuture<'static, Result<(), $crate::LaunchError>> {
                let e = self.engine.clone();
                Box::pin($crate::engine::blocking(id.to_string(), move || {
                    e.remove(&id)
                }))
            }

            fn checkpoint(
                &self,
                id: berth_state::ContainerId,
                spec: $crate::criu::DumpSpec,
            ) -> futures::future::BoxFuture<
                'static,
                Result<$crate::criu::Dumped, $crate::LaunchError>,
            > {
                let e = self.engine.clone();
                Box::pin($crate::engine::blocking(id.to_string(), move || {
                    e.checkpoint(&id, spec)
                }))
            }

            fn set_frozen(
                &self,
                id: berth_state::ContainerId,
                frozen: bool,
            ) -> futures::future::BoxFuture<'static, Result<(), $crate::LaunchError>> {
                let e = self.engine.clone();
                Box::pin($crate::engine::blocking(id.to_string(), move || {
                    e.set_frozen(&id, frozen)
                }))
            }
        }
    };
}

use crate::config::LauncherConfig;
use crate::freezer::Freezer;
use crate::protocol::{self, Reply};
use crate::sealed::SealedExe;
use crate::{capabilities, namespaces, rlimits, sys, watch};
use crate::{Forked, LaunchError, LaunchSpec, ProcessStatus, Stdio};
use berth_state::runtime::{self, ExitStatus, RuntimeDir};
use berth_state::{ContainerId, ContainerRecord, EnvVar, ProcessRef, SupervisorRequest, UserSpec};
use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a launcher kills a container.
#[derive(Debug)]
pub(crate) enum Kind {
    /// Per-container freezer (v1) or cgroup.kill (v2) cgroup.
    Linux(Freezer),
    /// The init's process group.
    Posix,
    /// An OCI runtime makes the init and kills the container; berth's
    /// supervisor stays its parent (see [`crate::oci`]).
    Oci(crate::oci::OciRuntime),
}

/// The launcher's memory of one container.
#[derive(Debug)]
struct Entry {
    forked: Forked,
    /// The control socket, until the release is sent.
    control: Option<UnixStream>,
    /// The control socket again, kept past the release: the supervisor
    /// writes one byte on it once it has recorded the init's exit status
    /// (and it closes when the supervisor exits), so `wait` learns of the
    /// exit without waiting for the supervisor's own exit. Being a second
    /// fd of the socket, dropping `control` no longer closes it: an
    /// abandoned launch is told by a shutdown (see `kill_all`).
    exit_notice: Option<Arc<OwnedFd>>,
    /// A pidfd on the supervisor.
    pidfd: Option<Arc<OwnedFd>>,
    /// The init is pid 1 of a new pid namespace: its exit ends every
    /// process of the container (and the supervisor exits right after
    /// writing the exit status).
    own_pid_ns: bool,
    /// The init's mount namespace, held from its READY: so that the
    /// namespace's teardown (every mount of the container unmounted, its
    /// `/proc`, `/dev` and `/sys` superblocks killed) is not done by the
    /// command's exit, ahead of its exit status, but by a blocking-pool
    /// thread once the container is removed (see [`Engine::remove`]).
    mount_ns: Option<OwnedFd>,
}

/// How long a dump may take (CRIU is killed past it).
const CRIU_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether the init's mount namespace is made from the launcher's (it
/// joins none): its cgroup mounts are then the launcher's.
fn copied_mount_ns(info: &berth_state::LaunchInfo) -> bool {
    !info
        .join_namespaces
        .iter()
        .any(|j| j.namespace == berth_state::Namespace::Mount as i32)
}

fn new_pid_ns(info: Option<&berth_state::LaunchInfo>) -> bool {
    info.is_some_and(|i| {
        i.clone_namespaces
            .contains(&(berth_state::Namespace::Pid as i32))
    })
}

/// The shared launcher implementation.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) cfg: LauncherConfig,
    pub(crate) runtime: RuntimeDir,
    pub(crate) kind: Kind,
    containers: Mutex<HashMap<String, Entry>>,
    /// `<hierarchy>/<cgroup root>/.supervisors` in every cgroup hierarchy
    /// (Linux only): where supervisors live, out of the agent's cgroups.
    supervisor_cgroups: Vec<PathBuf>,
    /// The supervisor binary's sealed copy, shared by every launch (see
    /// [`crate::sealed`]): the native launcher starts making it beside
    /// the agent's start-up (its recovery), the others at their first
    /// launch.
    sealed: Arc<Mutex<Option<Arc<SealedExe>>>>,
    /// Containers an OCI runtime holds that no record named at recovery:
    /// their destroy also deletes them from the runtime (no `remove`
    /// follows an orphan's destroy).
    runtime_orphans: Mutex<BTreeSet<String>>,
    /// The host's cgroup mountinfo lines, read once at the start (as the
    /// isolators detect the hierarchies once): every init whose mount
    /// namespace copies ours is handed them (see the request's
    /// `cgroup_mountinfo`). A reread per launch would cost what it saves:
    /// each launch's rootfs mount marks the mountinfo changed.
    cgroup_lines: String,
    /// Supervisors started ahead of their launch (see [`crate::pool`]).
    pool: crate::pool::SupervisorPool,
}

/// The cgroup (under the cgroup root of each hierarchy) holding the
/// supervisors; not a valid container id, so never taken for one.
pub const SUPERVISORS_CGROUP: &str = ".supervisors";

fn other(id: &ContainerId, message: impl Into<String>) -> LaunchError {
    LaunchError::Other {
        id: id.to_string(),
        message: message.into(),
    }
}

fn rt_err(id: &ContainerId) -> impl Fn(berth_state::RuntimeError) -> LaunchError + '_ {
    move |source| LaunchError::Runtime {
        id: id.to_string(),
        source,
    }
}

impl Engine {
    pub(crate) fn new(cfg: LauncherConfig, kind: Kind) -> Result<Engine, LaunchError> {
        let runtime =
            RuntimeDir::open(&cfg.runtime_dir).map_err(|source| LaunchError::Runtime {
                id: String::new(),
                source,
            })?;
        let cgroup_lines = match kind {
            Kind::Posix => String::new(),
            _ => berth_state::cgroupfs::cgroup_mountinfo()
                .map(|l| l.to_string())
                .unwrap_or_default(),
        };
        let supervisor_cgroups = match kind {
            Kind::Linux(_) | Kind::Oci(_) => berth_state::cgroupfs::mounts()
                .unwrap_or_default()
                .into_iter()
                .map(|m| m.join(&cfg.cgroup_root).join(SUPERVISORS_CGROUP))
                .collect(),
            Kind::Posix => Vec::new(),
        };
        // The native launcher's only: one pool per agent is enough, and
        // an OCI runtime's supervisor waits on the runtime anyway.
        let size = match kind {
            Kind::Linux(_) => cfg.supervisor_pool,
            _ => 0,
        };
        let placement = match cfg.supervisor_pool_placed {
            true => supervisor_cgroups.clone(),
            false => Vec::new(),
        };
        let pool = match cfg.supervisor_pool_once {
            true => crate::pool::SupervisorPool::once(size, placement),
            false => crate::pool::SupervisorPool::new(size, placement),
        };
        let sealed = Arc::new(Mutex::new(None));
        if matches!(kind, Kind::Linux(_)) {
            // About 0.7 ms (a 1 MiB copy and its seals) that a cold
            // `berth run` would otherwise pay at its fork. The thread holds
            // the slot while it copies, so a launch waits for this copy
            // rather than making a second; a failure is left for that
            // launch to report.
            let slot = sealed.clone();
            let path = cfg.supervisor_path();
            let pool = pool.clone();
            let _ = std::thread::Builder::new()
                .name("berth-seal".into())
                .spawn(move || {
                    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
                    if let (None, Ok(path)) = (slot.as_ref(), path) {
                        if let Ok(s) = SealedExe::copy_of(&path) {
                            tracing::info!(path = %path.display(), bytes = s.size,
                                took_us = s.took.as_micros() as u64,
                                "sealed copy of the supervisor made");
                            let s = Arc::new(s);
                            // A one-shot pool starts now, beside the rest
                            // of the process's start.
                            pool.start(&s);
                            *slot = Some(s);
                        }
                    }
                });
        }
        Ok(Engine {
            pool,
            cfg,
            runtime,
            kind,
            containers: Mutex::new(HashMap::new()),
            supervisor_cgroups,
            sealed,
            runtime_orphans: Mutex::new(BTreeSet::new()),
            cgroup_lines,
        })
    }

    /// The sealed copy of the supervisor, made now if this is the first
    /// launch (or the last attempt failed). No copy, no launch: the host's
    /// binary is never exec'd instead.
    fn sealed_supervisor(&self, id: &ContainerId) -> Result<Arc<SealedExe>, LaunchError> {
        let mut slot = self.sealed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let path = self.cfg.supervisor_path()?;
        let s = SealedExe::copy_of(&path).map_err(|source| LaunchError::SupervisorCopy {
            id: id.to_string(),
            source,
        })?;
        tracing::info!(
            path = %path.display(),
            bytes = s.size,
            took_us = s.took.as_micros() as u64,
            "sealed copy of the supervisor made"
        );
        let s = Arc::new(s);
        *slot = Some(s.clone());
        Ok(s)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves a usable map.
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn freezer_dir(&self, id: &ContainerId) -> Option<PathBuf> {
        match &self.kind {
            Kind::Linux(f) => Some(f.dir(&self.cfg.cgroup_root, id)),
            Kind::Posix | Kind::Oci(_) => None,
        }
    }

    /// Checks what would otherwise fail only inside the init.
    fn validate(&self, spec: &LaunchSpec) -> Result<(), LaunchError> {
        let id = &spec.id;
        id.validate().map_err(|e| other(id, e.to_string()))?;
        // With --init and no command, berth's init alone holds the
        // container's namespaces (a pod).
        if spec.argv.is_empty() && !spec.init {
            return Err(other(id, "the command (argv) is empty"));
        }
        let info = &spec.launch_info;
        rlimits::validate(&info.rlimits).map_err(|e| other(id, e.to_string()))?;
        match self.kind {
            Kind::Linux(_) => {
                let plan = namespaces::plan(info).map_err(|e| other(id, e.to_string()))?;
                capabilities::mask(&info.capabilities).map_err(|e| other(id, e.to_string()))?;
                if !plan.new_mount && (!info.rootfs.is_empty() || !info.mounts.is_empty()) {
                    return Err(other(
                        id,
                        "a rootfs or mounts need a mount namespace of its own (add MOUNT to clone_namespaces)",
                    ));
                }
                if !plan.new_mount && !info.devices.is_empty() {
                    return Err(other(
                        id,
                        "device nodes need a mount namespace of its own (add MOUNT to clone_namespaces)",
                    ));
                }
            }
            Kind::Oci(ref rt) => {
                capabilities::mask(&info.capabilities).map_err(|e| other(id, e.to_string()))?;
                if let Some(what) = crate::oci::spec::unsupported(spec) {
                    return Err(other(
                        id,
                        format!("the {} runtime: berth does not support {what}", rt.name),
                    ));
                }
            }
            Kind::Posix => {
                let unsupported = [
                    (!info.clone_namespaces.is_empty(), "namespaces"),
                    (!info.join_namespaces.is_empty(), "joining namespaces"),
                    (!info.rootfs.is_empty(), "a rootfs"),
                    (!info.mounts.is_empty(), "mounts"),
                    (!info.hostname.is_empty(), "a hostname"),
                    (!info.capabilities.is_empty(), "capabilities"),
                    (!info.devices.is_empty(), "device nodes"),
                ];
                if let Some((_, what)) = unsupported.iter().find(|(bad, _)| *bad) {
                    return Err(other(
                        id,
                        format!("the posix launcher does not support {what}"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn fork(&self, spec: LaunchSpec) -> Result<Forked, LaunchError> {
        let id = spec.id.clone();
        let _span = tracing::info_span!("launcher.fork", container = %id).entered();
        self.validate(&spec)?;
        if let Some(e) = self.entries().get(&id.to_string()) {
            if e.forked.supervisor.is_alive() {
                return Err(other(&id, "is already running"));
            }
        }
        let supervisor = self.sealed_supervisor(&id)?;
        let dir = self
            .runtime
            .create_container_dir(&id)
            .map_err(rt_err(&id))?;
        // A previous run's files must not be mistaken for this one's.
        for f in [
            runtime::EXIT_STATUS,
            runtime::SUPERVISOR_PID,
            runtime::INIT_PID,
            crate::attach::SOCKET,
        ] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let mut cgroups = Vec::new();
        if let (Kind::Linux(freezer), Some(cg)) = (&self.kind, self.freezer_dir(&id)) {
            freezer.create(&cg).map_err(|e| other(&id, e.to_string()))?;
            cgroups.push(cg.display().to_string());
        }
        let oci = match &self.kind {
            // The runtime's init joins the container's cgroups itself.
            Kind::Oci(rt) => Some(crate::oci::write_bundle(
                rt,
                &dir,
                &spec,
                &self.cfg.cgroup_root,
            )?),
            _ => {
                cgroups.extend(spec.launch_info.cgroup_paths.iter().cloned());
                None
            }
        };

        // Made on first use (and again after a `berth retire`); a
        // hierarchy where this fails keeps the supervisor where it is.
        let supervisor_cgroups = self
            .supervisor_cgroups
            .iter()
            .filter(|d| d.is_dir() || std::fs::create_dir_all(d).is_ok())
            .map(|d| d.display().to_string())
            .collect();
        let restore = spec.restore.as_ref();
        if restore.is_some() && matches!(self.kind, Kind::Posix) {
            return Err(other(&id, "the posix launcher cannot restore a checkpoint"));
        }
        let inherited = matches!(spec.stdio, Stdio::Fds { .. });
        let stdin_inherited = matches!(spec.stdio, Stdio::Fds { stdin: Some(_), .. });
        let req = SupervisorRequest {
            container_id: id.to_string(),
            argv: spec.argv.clone(),
            env: spec
                .env
                .iter()
                .map(|(name, value)| EnvVar {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            launch_info: Some(spec.launch_info.clone()),
            user: spec.user.as_ref().map(|(uid, gid, groups)| UserSpec {
                uid: *uid,
                gid: *gid,
                groups: groups.clone(),
            }),
            sandbox_dir: spec.sandbox_dir.display().to_string(),
            runtime_dir: dir.display().to_string(),
            cgroups,
            stdio_inherited: inherited,
            posix: matches!(self.kind, Kind::Posix),
            sandbox_dev: spec.sandbox_identity.map(|i| i.dev).unwrap_or(0),
            sandbox_ino: spec.sandbox_identity.map(|i| i.ino).unwrap_or(0),
            supervisor_cgroups,
            stdin_inherited,
            init: spec.init,
            tty: spec.io.tty && !inherited,
            stdin_open: spec.io.stdin_open && !inherited,
            logs: Some(spec.io.logs.clone()),
            await_attach: matches!(spec.stdio, Stdio::Attached),
            oci_runtime: oci.as_ref().map(|o| o.path.clone()).unwrap_or_default(),
            oci_args: oci.as_ref().map(|o| o.args.clone()).unwrap_or_default(),
            oci_create_args: oci
                .as_ref()
                .map(|o| o.create_args.clone())
                .unwrap_or_default(),
            oci_bundle: oci.map(|o| o.bundle).unwrap_or_default(),
            // Set when a pooled supervisor gets fds (start_supervisor).
            stdio_passed: false,
            cgroup_mountinfo: match copied_mount_ns(&spec.launch_info) {
                true => self.cgroup_lines.clone(),
                false => String::new(),
            },
            criu_image_dir: restore
                .map(|r| r.image_dir.display().to_string())
                .unwrap_or_default(),
            criu_path: restore
                .map(|r| r.criu.display().to_string())
                .unwrap_or_default(),
            criu_args: restore.map(|r| r.args.clone()).unwrap_or_default(),
            criu_stdio: restore.map(|r| r.stdio.clone()).unwrap_or_default(),
        };

        let own_pid_ns = !matches!(self.kind, Kind::Posix) && new_pid_ns(Some(&spec.launch_info));
        let own_mount_ns = matches!(self.kind, Kind::Linux(_))
            && spec
                .launch_info
                .clone_namespaces
                .contains(&(berth_state::Namespace::Mount as i32));
        match self.start_supervisor(&id, &supervisor, req, spec.stdio) {
            Ok((forked, control)) => {
                let exit_notice = control.try_clone().ok().map(|c| Arc::new(OwnedFd::from(c)));
                // The notice also tells the supervisor's end (its socket
                // hangs up): no pidfd is held beside it, one fd fewer per
                // running container (see `supervisor_alive`, `wait`).
                let pidfd = match exit_notice {
                    Some(_) => None,
                    None => open_pidfd(&forked.supervisor).map(Arc::new),
                };
                let mount_ns = own_mount_ns
                    .then(|| forked.init.open_namespace("mnt").ok())
                    .flatten();
                tracing::info!(
                    supervisor = forked.supervisor.pid,
                    init = forked.init.pid,
                    "forked"
                );
                self.entries().insert(
                    id.to_string(),
                    Entry {
                        forked: forked.clone(),
                        control: Some(control),
                        exit_notice,
                        pidfd,
                        own_pid_ns,
                        mount_ns,
                    },
                );
                Ok(forked)
            }
            Err(e) => {
                tracing::warn!(error = %e, "fork failed; cleaning up");
                if let Some(sup) = read_ref(&dir.join(runtime::SUPERVISOR_PID)) {
                    if let Some(fd) = open_pidfd(&sup) {
                        let _ = sys::pidfd_send_signal(&fd, libc::SIGKILL);
                    }
                }
                let _ = self.kill_all(&id);
                Err(e)
            }
        }
    }

    /// Execs the supervisor, sends it the request and reads its reply.
    fn start_supervisor(
        &self,
        id: &ContainerId,
        sealed: &Arc<SealedExe>,
        mut req: SupervisorRequest,
        stdio: Stdio,
    ) -> Result<(Forked, UnixStream), LaunchError> {
        let io = |op: &str, p: &std::path::Path| {
            let (op, p) = (op.to_string(), p.to_path_buf());
            move |source| LaunchError::Io {
                id: id.to_string(),
                op,
                path: p,
                source,
            }
        };
        let path = sealed.source.as_path();
        let (stdin, stdout, stderr) = match stdio {
            Stdio::SandboxFiles | Stdio::Attached => (None, None, None),
            Stdio::Fds {
                stdin,
                stdout,
                stderr,
            } => (stdin, Some(stdout), Some(stderr)),
        };
        let (mut ours, mut child) = match self.pool.take(sealed) {
            // Started with /dev/null: the stdio fds follow the request.
            Some(control) => {
                req.stdio_passed = stdout.is_some();
                (control, None)
            }
            None => {
                let (ours, theirs) = UnixStream::pair().map_err(io("socketpair for", path))?;
                let theirs_fd = theirs.as_raw_fd();
                // The sealed copy, by its fd; argv[0] keeps `ps` readable.
                let (control, id_arg) = (theirs_fd.to_string(), id.to_string());
                let argv: [&std::ffi::OsStr; 5] = [
                    crate::config::SUPERVISOR_BIN.as_ref(),
                    "--control-fd".as_ref(),
                    control.as_ref(),
                    "--id".as_ref(),
                    id_arg.as_ref(),
                ];
                let child = crate::spawn::spawn(
                    &sealed.exec_path(),
                    &argv,
                    [stdin.as_ref(), stdout.as_ref(), stderr.as_ref()],
                    theirs_fd,
                )
                .map_err(io("exec the sealed copy of supervisor", path))?;
                // Our copy: the supervisor has its own; EOF must mean it died.
                drop(theirs);
                (ours, Some(child))
            }
        };
        let mut sent = protocol::write_request(&mut ours, &req);
        if req.stdio_passed && sent.is_ok() {
            let fds: Vec<std::os::fd::RawFd> = [stdin.as_ref(), stdout.as_ref(), stderr.as_ref()]
                .into_iter()
                .flatten()
                .map(|f| f.as_raw_fd())
                .collect();
            sent = protocol::send_fds(&ours, &fds);
        }
        // Our copies: the supervisor has its own now.
        drop((stdin, stdout, stderr));
        let _ = ours.set_read_timeout(Some(self.cfg.startup_timeout));
        let mut line = String::new();
        let read = sent.and_then(|_| std::io::BufReader::new(&ours).read_line(&mut line));
        // The first process only detaches; reap it at once (a pooled
        // one's was reaped when it joined the pool).
        let first = child.as_mut().map(|c| c.wait());
        match (read, Reply::decode(&line)) {
            (_, Some(Reply::Ready { supervisor, init })) => Ok((Forked { supervisor, init }, ours)),
            (_, Some(Reply::Failed { errno, message })) => Err(LaunchError::StartFailed {
                id: id.to_string(),
                errno,
                message,
            }),
            (Err(e), None)
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                Err(LaunchError::Supervisor {
                    id: id.to_string(),
                    message: format!(
                        "no report within {:?} from {}",
                        self.cfg.startup_timeout,
                        path.display()
                    ),
                })
            }
            (r, None) => Err(LaunchError::Supervisor {
                id: id.to_string(),
                message: format!(
                    "{} ended without a report (read: {r:?}, got {line:?}, first process: {first:?})",
                    path.display()
                ),
            }),
        }
    }

    pub(crate) fn release(&self, id: &ContainerId) -> Result<(), LaunchError> {
        let _span = tracing::info_span!("launcher.release", container = %id).entered();
        let control = {
            let mut map = self.entries();
            let entry = map
                .get_mut(&id.to_string())
                .ok_or_else(|| LaunchError::UnknownContainer { id: id.to_string() })?;
            entry.control.take()
        };
        let Some(control) = control else {
            return Err(other(
                id,
                "was already released (or recovered: only a fork of this launcher can be released)",
            ));
        };
        // MSG_NOSIGNAL: a supervisor that died must not SIGPIPE the agent.
        // SAFETY: a valid socket and a one-byte buffer that outlives the call.
        let n = unsafe {
            libc::send(
                control.as_raw_fd(),
                [protocol::RELEASE].as_ptr().cast(),
                1,
                libc::MSG_NOSIGNAL,
            )
        };
        if n != 1 {
            let e = std::io::Error::last_os_error();
            // The supervisor is gone, so is the init: wait() tells how.
            if !matches!(e.raw_os_error(), Some(libc::EPIPE) | Some(libc::ECONNRESET)) {
                return Err(LaunchError::Sys {
                    id: id.to_string(),
                    op: "send release to the supervisor".into(),
                    source: nix::Error::from_raw(e.raw_os_error().unwrap_or(0)),
                });
            }
        }
        tracing::info!("released");
        Ok(())
    }

    /// The supervisor and init of `id`: remembered, or from the pid files.
    fn refs(&self, id: &ContainerId) -> Option<Forked> {
        if let Some(e) = self.entries().get(&id.to_string()) {
            return Some(e.forked.clone());
        }
        let dir = self.runtime.container_dir(id);
        let supervisor = read_ref(&dir.join(runtime::SUPERVISOR_PID))?;
        let init = read_ref(&dir.join(runtime::INIT_PID)).unwrap_or_default();
        Some(Forked { supervisor, init })
    }

    fn own_pid_ns(&self, id: &ContainerId) -> bool {
        self.entries()
            .get(&id.to_string())
            .is_some_and(|e| e.own_pid_ns)
    }

    fn known(&self, id: &ContainerId) -> bool {
        self.entries().contains_key(&id.to_string()) || self.runtime.container_dir(id).is_dir()
    }

    /// The supervisor's control socket of `id` (see [`Entry::exit_notice`]);
    /// `None` for a recovered container.
    fn exit_notice(&self, id: &ContainerId) -> Option<Arc<OwnedFd>> {
        self.entries()
            .get(&id.to_string())
            .and_then(|e| e.exit_notice.clone())
    }

    /// A pidfd on the live supervisor of `id`, or `None` when it is gone.
    pub(crate) fn supervisor_pidfd(&self, id: &ContainerId) -> Option<Arc<OwnedFd>> {
        if let Some(fd) = self
            .entries()
            .get(&id.to_string())
            .and_then(|e| e.pidfd.clone())
        {
            return Some(fd);
        }
        self.refs(id)
            .and_then(|f| open_pidfd(&f.supervisor))
            .map(Arc::new)
    }

    pub(crate) fn exit_status(&self, id: &ContainerId) -> Result<Option<ExitStatus>, LaunchError> {
        runtime::read_exit_status(&self.runtime.container_dir(id).join(runtime::EXIT_STATUS))
            .map_err(rt_err(id))
    }

    pub(crate) fn kill(&self, id: &ContainerId, signal: i32) -> Result<(), LaunchError> {
        let _span = tracing::info_span!("launcher.kill", container = %id, signal).entered();
        if let Kind::Oci(rt) = &self.kind {
            // runsc's init is its sandbox: only the runtime reaches the
            // command. A signal right after the launch may find the
            // supervisor's `start` still running.
            return rt
                .kill_once_started(&id.to_string(), signal, self.cfg.destroy_timeout)
                .map_err(|e| other(id, e.to_string()));
        }
        let Some(forked) = self.refs(id) else {
            return Err(LaunchError::UnknownContainer { id: id.to_string() });
        };
        if let Some(fd) = open_pidfd(&forked.init) {
            match sys::pidfd_send_signal(&fd, signal) {
                Ok(()) => {}
                // Exited meanwhile: nothing left to signal.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    return Err(LaunchError::Sys {
                        id: id.to_string(),
                        op: format!("signal {signal} to init {}", forked.init.pid),
                        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(0)),
                    })
                }
            }
        }
        Ok(())
    }

    /// Kills every process of the container and removes its kill cgroup.
    pub(crate) fn kill_all(&self, id: &ContainerId) -> Result<(), LaunchError> {
        let _span = tracing::info_span!("launcher.kill_all", container = %id).entered();
        // An unreleased init is killed by its supervisor once this closes.
        if let Some(e) = self.entries().get_mut(&id.to_string()) {
            // A shutdown, not a close: `exit_notice` holds the socket open.
            if let Some(c) = e.control.take() {
                let _ = c.shutdown(std::net::Shutdown::Write);
            }
        }
        let refs = self.refs(id);
        match &self.kind {
            Kind::Linux(freezer) => {
                if let Some(dir) = self.freezer_dir(id) {
                    freezer
                        .destroy(&dir, self.cfg.destroy_timeout)
                        .map_err(|e| other(id, format!("destroy cgroup: {e}")))?;
                }
                // An init that never reached its cgroup (it failed first).
                if let Some(fd) = refs.as_ref().and_then(|f| open_pidfd(&f.init)) {
                    let _ = sys::pidfd_send_signal(&fd, libc::SIGKILL);
                }
            }
            Kind::Oci(rt) => {
                match rt.kill(&id.to_string(), libc::SIGKILL, true) {
                    Ok(()) => {}
                    // runsc will not signal a container not yet started
                    // (its `start` may be racing this destroy): its init,
                    // the sandbox, is killed by pidfd below, and with it
                    // everything the sandbox runs.
                    Err(e) if crate::oci::runtime::not_started(&e.why) => {}
                    Err(e) => return Err(other(id, e.to_string())),
                }
                crate::failpoint::hit("oci:after-kill");
                // A runtime's init not yet started (or one the runtime
                // lost) is the supervisor's child: kill it by pidfd too.
                if let Some(fd) = refs.as_ref().and_then(|f| open_pidfd(&f.init)) {
                    let _ = sys::pidfd_send_signal(&fd, libc::SIGKILL);
                }
            }
            Kind::Posix => {
                if let Some(f) = refs.filter(|f| f.init.pid > 0) {
                    // The group id is the init's pid (it called setsid). A
                    // group id cannot be reused while the group exists, but
                    // once it is gone the number can: only trust it while
                    // the init or its supervisor is the one we started.
                    if f.init.is_alive() || f.supervisor.is_alive() {
                        kill_group(id, f.init.pid, self.cfg.destroy_timeout)?;
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn set_frozen(&self, id: &ContainerId, frozen: bool) -> Result<(), LaunchError> {
        let _span = tracing::info_span!("launcher.set_frozen", container = %id, frozen).entered();
        match (&self.kind, self.freezer_dir(id)) {
            (Kind::Linux(freezer), Some(dir)) if dir.is_dir() => freezer
                .set_frozen(&dir, frozen, self.cfg.destroy_timeout)
                .map_err(|e| {
                    other(
                        id,
                        format!("{}: {e}", if frozen { "freeze" } else { "thaw" }),
                    )
                }),
            (Kind::Linux(_), _) => Err(other(id, "has no freezer cgroup (not running?)")),
            (Kind::Oci(rt), _) => rt
                .set_frozen(&id.to_string(), frozen)
                .map_err(|e| other(id, e.to_string())),
            (Kind::Posix, _) => Err(other(id, "the posix launcher cannot pause or resume")),
        }
    }

    /// Dumps the container's processes with CRIU, frozen by its freezer
    /// cgroup meanwhile (left frozen unless `leave_running`).
    pub(crate) fn checkpoint(
        &self,
        id: &ContainerId,
        spec: crate::criu::DumpSpec,
    ) -> Result<crate::criu::Dumped, LaunchError> {
        let _span = tracing::info_span!("launcher.checkpoint", container = %id).entered();
        if let Kind::Oci(rt) = &self.kind {
            return crate::criu::dump_oci(rt, &id.to_string(), spec, CRIU_TIMEOUT)
                .map_err(|m| other(id, m));
        }
        let (Kind::Linux(freezer), Some(dir)) = (&self.kind, self.freezer_dir(id)) else {
            return Err(other(
                id,
                "checkpoint: the posix launcher cannot checkpoint a container",
            ));
        };
        let init = self
            .refs(id)
            .map(|f| f.init)
            .filter(|i| i.pid > 0 && i.is_alive())
            .ok_or_else(|| other(id, "checkpoint: its init is not running"))?;
        crate::criu::dump(freezer, &dir, init.pid, spec, CRIU_TIMEOUT).map_err(|m| other(id, m))
    }

    pub(crate) fn status(&self, id: &ContainerId) -> Result<ProcessStatus, LaunchError> {
        if let Some(s) = self.exit_status(id)? {
            return Ok(ProcessStatus::Exited(s));
        }
        match self.refs(id) {
            Some(f) if self.supervisor_alive(id, &f) => Ok(ProcessStatus::Running(f)),
            _ => {
                // It may have written the status just before exiting.
                Ok(match self.exit_status(id)? {
                    Some(s) => ProcessStatus::Exited(s),
                    None => ProcessStatus::Unknown,
                })
            }
        }
    }

    /// Whether the supervisor of `id` lives: asked of the pidfd held since
    /// fork or recovery (one poll, where reading /proc/PID/stat costs an
    /// open, a formatted read and a close, for each of thousands of
    /// containers at recovery), else by pid and start time.
    fn supervisor_alive(&self, id: &ContainerId, f: &Forked) -> bool {
        let held = self
            .entries()
            .get(&id.to_string())
            .map(|e| (e.exit_notice.clone(), e.pidfd.clone()));
        match held {
            // Its end of the control socket closes only with it (the init
            // closes its copy first thing).
            Some((Some(notice), _)) => !hung_up(&notice),
            Some((None, Some(fd))) => !pidfd_exited(&fd),
            _ => f.supervisor.is_alive(),
        }
    }

    /// Whether container `id`'s runtime dir says it runs under this
    /// launcher: its `runtime` file names this OCI runtime, or (berth's
    /// own launchers) there is none. Launchers share the runtime dir.
    fn runs_here(&self, id: &ContainerId) -> bool {
        let file = self
            .runtime
            .container_dir(id)
            .join(crate::oci::RUNTIME_FILE);
        let named = std::fs::read_to_string(file).ok();
        match &self.kind {
            Kind::Oci(rt) => named.is_some_and(|n| n.trim() == rt.name),
            _ => named.is_none(),
        }
    }

    /// Removes the container from its OCI runtime (state, cgroups it
    /// made); nothing for berth's own launchers. Idempotent. Only at
    /// `remove`, after the isolators' cleanup: runc's delete removes the
    /// cgroup dirs at cgroupsPath, berth's own, which the memory isolator
    /// still reads (its OOM count) when the termination is composed.
    pub(crate) fn delete_from_runtime(&self, id: &ContainerId) -> Result<(), LaunchError> {
        if let Kind::Oci(rt) = &self.kind {
            crate::failpoint::hit("oci:before-delete");
            rt.delete(&id.to_string())
                .map_err(|e| other(id, e.to_string()))?;
        }
        Ok(())
    }

    pub(crate) fn remove(&self, id: &ContainerId) -> Result<(), LaunchError> {
        let _span = tracing::info_span!("launcher.remove", container = %id).entered();
        self.delete_from_runtime(id)?;
        let entry = self.entries().remove(&id.to_string());
        // The container's mounts go off the destroy's path: its last
        // stage returns while another thread tears them down.
        if let Some(ns) = entry.and_then(|e| e.mount_ns) {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn_blocking(move || drop(ns))),
                Err(_) => drop(ns),
            }
        }
        self.runtime.remove_container_dir(id).map_err(rt_err(id))
    }

    pub(crate) fn recover(
        &self,
        records: Vec<ContainerRecord>,
    ) -> Result<Vec<ContainerId>, LaunchError> {
        self.recover_among(records, None, None)
    }

    /// [`recover`](Self::recover) beside other launchers on one runtime
    /// dir ([`Runtimes`](crate::Runtimes)): `recorded` names every
    /// container any of them has a record of (none is an orphan, and this
    /// launcher need not look at their dirs), `listing` is the runtime
    /// dir's list of containers, read once for all of them.
    pub(crate) fn recover_among(
        &self,
        records: Vec<ContainerRecord>,
        recorded: Option<&BTreeSet<String>>,
        listing: Option<&[ContainerId]>,
    ) -> Result<Vec<ContainerId>, LaunchError> {
        let _span = tracing::info_span!("launcher.recover").entered();
        let named: BTreeSet<String> = records
            .iter()
            .filter_map(|r| r.id.as_ref().map(|i| i.to_string()))
            .collect();
        // Thousands of containers come back at once: the re-attach (two
        // pid files and a pidfd each) is split over the cores, beside the
        // scan for what no record names.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = records.len().div_ceil(threads).max(512);
        let (attached, found) = std::thread::scope(|s| {
            let scan = s.spawn(|| self.unrecorded(recorded.unwrap_or(&named), listing));
            let parts: Vec<_> = records
                .chunks(per)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .filter_map(|r| r.id.clone().map(|id| (self.reattach(&id, r), id)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let attached: Vec<_> = parts
                .into_iter()
                .flat_map(|h| h.join().expect("re-attach thread panicked"))
                .collect();
            (attached, scan.join().expect("orphan scan thread panicked"))
        });
        let mut entries = self.entries();
        for (entry, id) in attached {
            match entry {
                Some(Some(e)) => {
                    tracing::info!(container = %id, supervisor = e.forked.supervisor.pid, "re-attached");
                    entries.insert(id.to_string(), e);
                }
                Some(None) => {
                    // Dead (or its pid now belongs to someone else): forget
                    // any stale memory; status/wait read the exit file.
                    entries.remove(&id.to_string());
                    tracing::info!(container = %id, "supervisor gone");
                }
                None => {}
            }
        }
        drop(entries);
        let orphans = found?
            .difference(&named)
            .filter_map(|s| ContainerId::parse(s).ok())
            .collect::<Vec<_>>();
        tracing::info!(orphans = orphans.len(), "recovered");
        Ok(orphans)
    }

    /// The entry of a recorded container whose supervisor lives
    /// (`Some(Some)`), or `Some(None)` when it is gone; `None` when no
    /// supervisor was ever known.
    fn reattach(&self, id: &ContainerId, r: &ContainerRecord) -> Option<Option<Entry>> {
        // The record's refs when it has both: they came from the
        // supervisor's ready message, sent right after it wrote the same
        // refs into its files (two opens fewer per container, for
        // thousands). A record checkpointed before the fork's reply lacks
        // them: the supervisor's own files then.
        let (supervisor, init) = match (r.supervisor, r.init) {
            (Some(s), Some(i)) => (s, i),
            _ => {
                let dir = self.runtime.container_dir(id);
                let supervisor = read_ref(&dir.join(runtime::SUPERVISOR_PID)).or(r.supervisor)?;
                let init = read_ref(&dir.join(runtime::INIT_PID))
                    .or(r.init)
                    .unwrap_or_default();
                (supervisor, init)
            }
        };
        Some(open_pidfd(&supervisor).map(|fd| Entry {
            forked: Forked { supervisor, init },
            control: None,
            exit_notice: None,
            pidfd: Some(Arc::new(fd)),
            own_pid_ns: !matches!(self.kind, Kind::Posix) && new_pid_ns(r.launch_info.as_ref()),
            // A recovered container's mounts go with its last process.
            mount_ns: None,
        }))
    }

    /// What this launcher finds on the host: its cgroups, its runtime's
    /// containers (those no record names are its orphans), and the live
    /// supervisors of unrecorded runtime dirs it launched.
    fn unrecorded(
        &self,
        named: &BTreeSet<String>,
        listing: Option<&[ContainerId]>,
    ) -> Result<BTreeSet<String>, LaunchError> {
        let mut found = BTreeSet::new();
        match &self.kind {
            Kind::Linux(freezer) => found.extend(
                freezer
                    .list(&self.cfg.cgroup_root)
                    .iter()
                    .map(|i| i.to_string()),
            ),
            // What the runtime still holds (state, cgroups, a sandbox)
            // for a container no record names is an orphan: destroyed,
            // so `delete --force`d.
            Kind::Oci(rt) => {
                let listed = rt.list().map_err(|e| LaunchError::Other {
                    id: String::new(),
                    message: e.to_string(),
                })?;
                let mut orphans = self
                    .runtime_orphans
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for id in listed {
                    if !named.contains(&id) {
                        orphans.insert(id.clone());
                    }
                    found.insert(id);
                }
            }
            Kind::Posix => {}
        }
        let listed;
        let listing = match listing {
            Some(l) => l,
            None => {
                listed = self.runtime.list().map_err(|source| LaunchError::Runtime {
                    id: String::new(),
                    source,
                })?;
                &listed
            }
        };
        for id in listing {
            // A recorded container is no orphan, alive or not.
            if named.contains(&id.to_string()) {
                continue;
            }
            // Which launcher's first: every launcher scans the whole
            // runtime dir, and an absent `runtime` file is one failed
            // open, where the pid file and liveness are two reads (the
            // OCI launchers skipped the other runtimes' containers only
            // after both: ~150 ms each over 5000 native containers).
            if !self.runs_here(id) {
                continue;
            }
            let sup = read_ref(&self.runtime.container_dir(id).join(runtime::SUPERVISOR_PID));
            if sup.is_some_and(|s| s.is_alive()) {
                found.insert(id.to_string());
            }
        }
        Ok(found)
    }
}

/// SIGKILLs process group `pgid` until it is empty.
fn kill_group(id: &ContainerId, pgid: i32, timeout: Duration) -> Result<(), LaunchError> {
    let deadline = Instant::now() + timeout;
    let group = nix::unistd::Pid::from_raw(-pgid);
    let mut pause = Duration::from_millis(1);
    loop {
        match nix::sys::signal::kill(group, nix::sys::signal::SIGKILL) {
            Err(nix::errno::Errno::ESRCH) => return Ok(()),
            Err(e) => {
                return Err(LaunchError::Sys {
                    id: id.to_string(),
                    op: format!("kill process group {pgid}"),
                    source: e,
                })
            }
            Ok(()) => {}
        }
        if Instant::now() >= deadline {
            return Err(other(id, format!("process group {pgid} survives SIGKILL")));
        }
        // Zombies keep the group until their parent reaps them.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Reads a pid file; a missing or malformed one is `None`.
fn read_ref(path: &std::path::Path) -> Option<ProcessRef> {
    runtime::read_pid_file(path).ok().flatten()
}

/// A pidfd on `p` if it is alive *and* still the same process (start
/// time checked after opening, so a reused pid never passes).
fn open_pidfd(p: &ProcessRef) -> Option<OwnedFd> {
    if p.pid <= 0 {
        return None;
    }
    let fd = sys::pidfd_open(p.pid).ok()?;
    p.is_alive().then_some(fd)
}

/// Whether the process behind `pidfd` has exited (a pidfd polls readable
/// once it has), without blocking.
fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
        Ok(n) => n > 0,
        // Cannot tell: say alive, as the caller's fallback reads the exit
        // status first anyway.
        Err(_) => false,
    }
}

/// Runs `f` on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    id: String,
    f: impl FnOnce() -> Result<T, LaunchError> + Send + 'static,
) -> Result<T, LaunchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LaunchError::Other {
            id,
            message: format!("launcher task failed: {e}"),
        })?
}

/// Whether the peer of the socket `s` has closed it (POLLHUP; data still
/// unread does not count).
fn hung_up(s: &OwnedFd) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        s.as_fd(),
        nix::poll::PollFlags::empty(),
    )];
    matches!(
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
        Ok(1)
    ) && fds[0]
        .revents()
        .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP))
}

/// The exit status in the supervisor's message on its control socket, if
/// it is there whole. Peeked, not read: every waiter finds it.
fn peek_exited(notice: &OwnedFd) -> Option<ExitStatus> {
    let mut buf = [0u8; 4096];
    // SAFETY: a valid socket and a live buffer of the given length.
    let n = unsafe {
        libc::recv(
            notice.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    let n = usize::try_from(n).ok()?;
    protocol::decode_exited(&buf[..n])
}

/// Resolves with the exit status of `id` once its supervisor has exited.
pub(crate) async fn wait(engine: Arc<Engine>, id: ContainerId) -> Result<ExitStatus, LaunchError> {
    let key = id.to_string();
    let (e, i) = (engine.clone(), id.clone());
    let (done, pidfd, notice) = blocking(key.clone(), move || {
        // The notice first: a status recorded after the check below makes
        // it readable, so no exit falls between the two.
        let notice = e.exit_notice(&i);
        if let Some(s) = e.exit_status(&i)? {
            return Ok((Some(s), None, None));
        }
        // With a notice, the pidfd is only wanted should the socket hang
        // up without the status (below).
        let fd = match notice {
            Some(_) => None,
            None => e.supervisor_pidfd(&i),
        };
        if fd.is_none() && notice.is_none() && !e.known(&i) {
            return Err(LaunchError::UnknownContainer { id: i.to_string() });
        }
        Ok((None, fd, notice))
    })
    .await?;
    if let Some(s) = done {
        return Ok(s);
    }
    let mut pidfd = pidfd;
    if let Some(notice) = &notice {
        // A supervisor this launcher started says when the status is
        // recorded (a byte on its control socket): a quarter of a
        // millisecond before its own exit would. The socket also reads as
        // ready once the supervisor is gone (nothing else holds its end:
        // the init closes its copy first thing, and what else it forks
        // execs or exits at once); should the status be missing then,
        // the waits below decide.
        let _ = watch::readable_shared(notice).await;
        // The status itself came along: no trip to the blocking pool.
        if let Some(s) = peek_exited(notice) {
            return Ok(s);
        }
        let (e, i) = (engine.clone(), id.clone());
        let (status, fd) = blocking(key.clone(), move || {
            Ok((e.exit_status(&i)?, e.supervisor_pidfd(&i)))
        })
        .await?;
        if let Some(s) = status {
            return Ok(s);
        }
        pidfd = fd;
    }
    let dir = engine.runtime.container_dir(&id);
    let own_pid_ns = engine.own_pid_ns(&id);
    let waited = match (&pidfd, own_pid_ns) {
        // In its own pid namespace the init's exit ends every process of
        // the container, and the supervisor then writes the exit status
        // and exits: its pidfd alone tells when the status is there. (An
        // inotify instance per container ran into the per-user limit of
        // 128 inotify instances with more running containers than that.)
        (Some(fd), true) => Some(watch::readable_shared(fd).await),
        // Without one, escaped processes keep the subreaper supervisor
        // alive after the init's exit: watch for the status file too.
        (Some(_), false) => {
            Some(watch::appeared_or_exited(&dir, runtime::EXIT_STATUS, pidfd.as_deref()).await)
        }
        (None, _) => None,
    };
    if let Some(r) = waited {
        r.map_err(|source| LaunchError::Io {
            id: key.clone(),
            op: "wait for the exit status in".into(),
            path: dir.clone(),
            source,
        })?;
    }
    blocking(key.clone(), move || {
        engine
            .exit_status(&id)?
            .ok_or(LaunchError::ExitStatusLost { id: id.to_string() })
    })
    .await
}

/// Kills everything of `id`, then waits until its supervisor has
/// recorded the exit (so `wait` and `remove` may follow at once): until it
/// says so on its control socket, or has exited.
pub(crate) async fn destroy(engine: Arc<Engine>, id: ContainerId) -> Result<(), LaunchError> {
    let key = id.to_string();
    let (e, i) = (engine.clone(), id.clone());
    let (pidfd, notice) = blocking(key.clone(), move || {
        e.kill_all(&i)?;
        // Only berth's own launcher has emptied the container's cgroup
        // above: with another, what escaped the init may still run, and
        // its supervisor (their subreaper) lives until they are gone.
        let notice = match e.kind {
            Kind::Linux(_) => e.exit_notice(&i),
            Kind::Posix | Kind::Oci(_) => None,
        };
        Ok((e.supervisor_pidfd(&i), notice))
    })
    .await?;
    if let Some(fd) = pidfd {
        let limit = engine.cfg.destroy_timeout;
        // The supervisor's message that the status is recorded is enough
        // (nothing of the container runs any more): what it does after it,
        // its own exit, need not hold the destroy.
        let recorded = async {
            if let Some(n) = &notice {
                if watch::readable(n).await.is_ok() && peek_exited(n).is_some() {
                    return;
                }
            }
            futures::future::pending::<()>().await
        };
        let done = async {
            tokio::select! {
                _ = recorded => {}
                _ = watch::exited(&fd) => {}
            }
        };
        match tokio::time::timeout(limit, done).await {
            Ok(_) => {}
            Err(_) => {
                return Err(LaunchError::Supervisor {
                    id: key,
                    message: format!(
                        "did not exit within {limit:?} after its container was killed"
                    ),
                })
            }
        }
    }
    let orphan = engine
        .runtime_orphans
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    if orphan {
        let (e, i) = (engine.clone(), id.clone());
        blocking(key, move || e.delete_from_runtime(&i)).await?;
    }
    tracing::info!(container = %id, "destroyed");
    Ok(())
}
