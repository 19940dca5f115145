//! The per-container supervisor (`berth-supervisor`): the parent of the
//! container's init, so that the container does not belong to the agent.
//!
//! Started by the launcher with its control socket as an fd, it detaches
//! (fork + setsid: its first process exits at once and the launcher reaps
//! it), reads the request, writes `supervisor.pid`, forks the init (after
//! joining or creating its pid namespace), reports the init ready or
//! failed, forwards the release, reaps the init and writes the exit status
//! atomically into the container's runtime dir. As a child subreaper it
//! also reaps every process that escapes the init's tree, and exits when
//! none is left. The agent learns of the exit status from an inotify
//! event on the runtime dir (or the supervisor's pidfd, should it die).
//!
//! Single-threaded, std/nix/libc only, so it stays small and may allocate
//! freely after fork.

mod cgroup_join;
mod child;
mod criu;
mod logs;
mod oci;
mod reaper;
mod relay;

use crate::namespaces::{self, Plan};
use crate::protocol::{self, Reply};
use crate::sys;
use berth_state::runtime::{self, ExitStatus};
use berth_state::safe_path;
use berth_state::{ProcessRef, SupervisorRequest};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The command's stdio, opened by the supervisor on the host's filesystem
/// (the init may pivot away from it).
pub(crate) struct Stdio {
    /// `/dev/null`, or the read end of the pipe the supervisor feeds.
    stdin: OwnedFd,
    /// The write ends of the pipes the supervisor copies into the logs;
    /// `None` = keep fds 1 and 2 (inherited).
    files: Option<(OwnedFd, OwnedFd)>,
    /// With a tty: the init's end of the socket the pty's master goes to
    /// the supervisor over; the init replaces stdin/files by the slave.
    tty: Option<OwnedFd>,
    /// The stdio is a tty to make the controlling terminal.
    ctty: bool,
}

/// The supervisor binary's `main`: `berth-supervisor --control-fd N
/// [--id ID]` (the id only makes `ps` readable).
pub fn main() -> ! {
    // Non-dumpable from the start, and so is every process forked from
    // us until its exec: a container's processes (or, without a pid
    // namespace, the host's) get no ptrace access to us, so no
    // `/proc/<pid>/{exe,fd,mem,environ}` of the supervisor, the init
    // before its exec, or the `--init` reaper. The exec of the command
    // makes it dumpable again, as any process.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let args: Vec<String> = std::env::args().collect();
    // A pooled member placed as it starts (see the launcher's pool).
    let placed_in: Vec<String> = args
        .iter()
        .zip(args.iter().skip(1))
        .filter(|(flag, _)| *flag == "--placed-in")
        .map(|(_, dir)| dir.clone())
        .collect();
    // Pooled: wait for a claim on CPU nobody else wants (see the pool in
    // the launcher); the claim lifts us back to SCHED_OTHER. A placed
    // member first moves (below): at SCHED_IDLE it could be preempted
    // for long holding the kernel's cgroup mutex, which every launch
    // needs.
    let idle = || {
        if args.iter().any(|a| a == "--pooled-idle") {
            // SAFETY: a plain syscall with a valid param.
            unsafe {
                libc::sched_setscheduler(
                    0,
                    libc::SCHED_IDLE,
                    &libc::sched_param { sched_priority: 0 },
                )
            };
        }
    };
    if placed_in.is_empty() {
        idle();
    }
    // Exec'd from the sealed copy by its fd, the kernel named us after
    // the fd's number: `ps` and `top` show the name.
    // SAFETY: a NUL-terminated name; the kernel copies at most 15 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"berth-supervisor".as_ptr(), 0, 0, 0) };
    let fd = args
        .iter()
        .position(|a| a == "--control-fd")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<i32>().ok());
    let Some(fd) = fd.filter(|fd| *fd > 2) else {
        eprintln!(
            "usage: berth-supervisor --control-fd FD [--id ID | --pooled | --pooled-idle] [--placed-in DIR]... (started by berth's launcher)"
        );
        std::process::exit(2);
    };
    // Nothing else the launcher's process had open may stay with us.
    let _ = sys::close_range(3, (fd - 1) as u32, 0);
    let _ = sys::close_range(fd as u32 + 1, u32::MAX, 0);
    // SAFETY: the launcher passed this fd to us and nothing else uses it.
    let control = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let _ = nix::fcntl::fcntl(
        control.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );

    // Detach: the launcher reaps this first process at once; the second
    // is nobody's child in the agent and outlives it.
    if placed_in.is_empty() {
        // SAFETY: single-threaded here, so fork is safe.
        match unsafe { fork() } {
            Ok(ForkResult::Parent { .. }) => std::process::exit(0),
            Ok(ForkResult::Child) => {}
            Err(e) => fail_early(control, e as i32, &format!("supervisor fork: {e}")),
        }
    } else {
        // SAFETY: single-threaded here.
        if let Err(e) = unsafe { cgroup_join::detach_into(&placed_in) } {
            fail_early(control, e as i32, &format!("supervisor fork: {e}"));
        }
        idle();
    }
    let _ = nix::unistd::setsid();
    // Do not pin the agent's working directory (or its mount).
    let _ = nix::unistd::chdir("/");
    // A pooled one tells the pool its pid (the launcher's child was the
    // first process): a claim lifts it out of SCHED_IDLE before writing
    // the request, so a busy node does not leave it starved of CPU.
    if std::env::args().any(|a| a == "--pooled" || a == "--pooled-idle") {
        let mut c = &control;
        let _ = c.write_all(&std::process::id().to_le_bytes());
    }
    std::process::exit(supervise(control, &placed_in))
}

/// Reports a failure before the request was read, then exits.
fn fail_early(mut control: UnixStream, errno: i32, message: &str) -> ! {
    let _ = control.write_all(
        Reply::Failed {
            errno,
            message: message.to_string(),
        }
        .encode()
        .as_bytes(),
    );
    std::process::exit(1)
}

/// `placed_in`: the supervisors' cgroups this process joined as it
/// started (a placed pool member), not joined again.
fn supervise(mut control: UnixStream, placed_in: &[String]) -> i32 {
    let req = match protocol::read_request(&mut control) {
        Ok(r) => r,
        Err(e) => fail_early(control, 0, &format!("read request: {e}")),
    };
    // A pooled supervisor was started at SCHED_IDLE by the pool's thread
    // (`--pooled-idle`): claimed, it is a container's like any other.
    if std::env::args().any(|a| a == "--pooled-idle") {
        // SAFETY: a plain syscall with a valid param.
        unsafe {
            libc::sched_setscheduler(
                0,
                libc::SCHED_OTHER,
                &libc::sched_param { sched_priority: 0 },
            )
        };
    }
    // A pooled supervisor started with /dev/null: the container's stdio
    // comes now, before anything could use 0, 1 or 2.
    if req.stdio_passed {
        let targets: &[i32] = match req.stdin_inherited {
            true => &[0, 1, 2],
            false => &[1, 2],
        };
        let placed = protocol::recv_fds(&control, targets.len()).and_then(|fds| {
            if fds.len() != targets.len() {
                return Err(std::io::Error::other(format!(
                    "{} stdio fds passed, {} expected",
                    fds.len(),
                    targets.len()
                )));
            }
            for (fd, to) in fds.iter().zip(targets) {
                nix::unistd::dup2(fd.as_raw_fd(), *to)?;
            }
            Ok(())
        });
        if let Err(e) = placed {
            fail_early(control, 0, &format!("receive the stdio fds: {e}"));
        }
    }
    // Out of the agent's cgroups (its service's, under a service manager),
    // before the init is forked (it starts here too, then joins the
    // container's own cgroups) and before our pid is written anywhere: on
    // v2 this process goes on as a child of itself (see `cgroup_join`).
    let to_join: Vec<String> = req
        .supervisor_cgroups
        .iter()
        .filter(|d| !placed_in.contains(d))
        .cloned()
        .collect();
    // SAFETY: single-threaded.
    unsafe { cgroup_join::move_supervisor(&to_join) };
    let rt = PathBuf::from(&req.runtime_dir);
    let me = std::process::id() as i32;
    let sup_ref = match ProcessRef::of(me)
        .map_err(|e| e.to_string())
        .and_then(|p| p.ok_or_else(|| "no /proc entry for myself".to_string()))
        .and_then(|p| {
            runtime::write_pid_file(&rt.join(runtime::SUPERVISOR_PID), &p)
                .map(|()| p)
                .map_err(|e| e.to_string())
        }) {
        Ok(p) => p,
        Err(e) => fail_early(control, 0, &format!("write supervisor.pid: {e}")),
    };

    // Orphans of the container come to us (and are reaped at once), and
    // SIGCHLD arrives as a readable fd next to the control socket.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let sigchld = match mask
        .thread_block()
        .and_then(|_| SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC))
    {
        Ok(fd) => fd,
        Err(e) => fail_early(control, e as i32, &format!("signalfd for SIGCHLD: {e}")),
    };

    // Bound before the init exists, so a client may attach as soon as
    // the launch returns. Inherited stdio (`berth run`) has nothing to serve.
    let listener = match req.stdio_inherited {
        true => None,
        false => match crate::attach::listen(&rt.join(crate::attach::SOCKET)) {
            Ok(l) => Some(l),
            Err(e) => fail_early(
                control,
                e.raw_os_error().unwrap_or(0),
                &format!("attach socket in {}: {e}", rt.display()),
            ),
        },
    };

    let oci = !req.oci_runtime.is_empty();
    let restored = !req.criu_image_dir.is_empty();
    let started = match (oci, restored) {
        (false, true) => start_criu(&req),
        (true, true) => start_oci_restore(&req),
        (false, false) => start_init(&req, control.as_raw_fd())
            .map(|(i, s, r, e, l)| (i, s, Release::Pipe(r), e, l)),
        (true, false) => start_oci(&req),
    };
    let (init, status_r, release, ends, logs) = match started {
        Ok(v) => v,
        Err((errno, message)) => {
            record(&rt, start_error(errno, message.clone()));
            let _ = control.write_all(Reply::Failed { errno, message }.encode().as_bytes());
            return 1;
        }
    };
    let mut status_r = fs::File::from(status_r);
    // While the init sets itself up: its start time (which tells it from
    // a later process with its pid) and its pid file.
    let init_ref = ProcessRef::of(init.as_raw()).ok().flatten();
    if let Some(r) = &init_ref {
        let _ = runtime::write_pid_file(&rt.join(runtime::INIT_PID), r);
    }

    // The init reports READY, or an error, or dies.
    let mut first = [0u8; 1];
    // A runtime's init is ready once `create` returned, a restored one
    // once CRIU did.
    let ready = oci
        || restored
        || matches!(status_r.read(&mut first), Ok(1) if first[0] == protocol::READY);
    if !ready {
        let mut rest = Vec::new();
        let _ = status_r.read_to_end(&mut rest);
        let mut all = first.to_vec();
        all.extend(rest);
        let ws = waitpid(init, None);
        let (errno, message) = protocol::decode_error(&all).unwrap_or_else(|| {
            (
                0,
                format!("the container's init died during setup ({ws:?})"),
            )
        });
        record(&rt, start_error(errno, message.clone()));
        let _ = control.write_all(Reply::Failed { errno, message }.encode().as_bytes());
        return 1;
    }

    let mut ends = ends;
    if let Some(sock) = ends.tty_socket.take() {
        // Sent before READY, so this does not block.
        let master = crate::sys::recv_fd(sock.as_fd()).and_then(|m| {
            let (a, b) = (m.try_clone()?, m.try_clone()?);
            Ok((m, a, b))
        });
        match master {
            Ok((m, a, b)) => {
                ends.out = Some(m);
                ends.stdin = Some(a);
                ends.tty = Some(b);
            }
            Err(e) => {
                let _ = nix::sys::signal::kill(init, nix::sys::signal::SIGKILL);
                let _ = waitpid(init, None);
                let message = format!("receive the pty's master from the init: {e}");
                record(&rt, start_error(0, message.clone()));
                let _ = control.write_all(Reply::Failed { errno: 0, message }.encode().as_bytes());
                return 1;
            }
        }
    }
    let Some(init_ref) = init_ref else {
        let _ = nix::sys::signal::kill(init, nix::sys::signal::SIGKILL);
        let _ = waitpid(init, None);
        let message = "the container's init vanished before it was released".to_string();
        record(&rt, start_error(0, message.clone()));
        let _ = control.write_all(Reply::Failed { errno: 0, message }.encode().as_bytes());
        return 1;
    };
    let _ = control.write_all(
        Reply::Ready {
            supervisor: sup_ref,
            init: init_ref,
        }
        .encode()
        .as_bytes(),
    );

    let mut relay = relay::Relay::new(ends, logs, listener);
    let await_attach = req.await_attach;
    let start_failed = std::cell::RefCell::new(None);
    watch(
        init,
        control,
        release,
        await_attach,
        sigchld,
        &mut relay,
        &start_failed,
        |ws| {
            let st = match start_failed.borrow_mut().take() {
                Some(message) => start_error(0, message),
                None => exit_status_of(ws, &mut status_r),
            };
            record(&rt, st.clone());
            st
        },
    );
    0
}

/// The init's exit status: its error report if it wrote one (its exec
/// failed), else how it ended.
fn exit_status_of(ws: WaitStatus, status_r: &mut fs::File) -> ExitStatus {
    // The init is gone, so its end of the pipe is closed: this cannot block.
    let mut report = Vec::new();
    let _ = status_r.read_to_end(&mut report);
    match protocol::decode_error(&report) {
        Some((errno, message)) => start_error(errno, message),
        None => match ws {
            WaitStatus::Exited(_, code) => ExitStatus::Exited {
                code,
                at_unix_nanos: berth_state::time::now_unix_nanos(),
            },
            WaitStatus::Signaled(_, sig, _) => ExitStatus::Signaled {
                signal: sig as i32,
                at_unix_nanos: berth_state::time::now_unix_nanos(),
            },
            // waitpid without WUNTRACED/WCONTINUED returns only those two.
            _ => ExitStatus::Exited {
                code: 255,
                at_unix_nanos: berth_state::time::now_unix_nanos(),
            },
        },
    }
}

fn start_error(errno: i32, message: String) -> ExitStatus {
    ExitStatus::StartError {
        errno,
        message,
        at_unix_nanos: berth_state::time::now_unix_nanos(),
    }
}

fn record(rt: &Path, status: ExitStatus) {
    // Nobody to tell if this fails; the agent then reports the status lost.
    let _ = runtime::write_exit_status(&rt.join(runtime::EXIT_STATUS), &status);
}

/// What [`start_init`] returns: the init's pid, the read end of its status
/// pipe, the write end of its release pipe, the supervisor's ends of the
/// command's stdio and the log files.
type Started = (Pid, OwnedFd, OwnedFd, relay::Ends, Option<logs::Logs>);

/// How the init is let go: a byte on berth's init's release pipe, or the
/// runtime's `start`.
enum Release {
    Pipe(OwnedFd),
    Oci(oci::Starter),
    /// A restored init runs from the moment CRIU returns.
    Restored,
}

impl Release {
    fn fire(self) -> Result<(), String> {
        match self {
            Release::Pipe(w) => {
                // A failed write: the init is gone, its exit tells the rest.
                let _ = fs::File::from(w).write_all(&[protocol::RELEASE]);
                Ok(())
            }
            Release::Oci(s) => s.start(),
            Release::Restored => Ok(()),
        }
    }
}

/// As [`Started`], with the runtime's `start` as the release.
type StartedOci = (Pid, OwnedFd, Release, relay::Ends, Option<logs::Logs>);

/// Opens the stdio and has the OCI runtime create the init.
fn start_oci(req: &SupervisorRequest) -> Result<StartedOci, (i32, String)> {
    let (stdio, ends, logs) = open_stdio(req)?;
    let (init, starter) = oci::create(req, stdio)?;
    Ok((
        init,
        oci::no_status_pipe()?,
        Release::Oci(starter),
        ends,
        logs,
    ))
}

/// Opens the stdio and has the runtime restore the container (`restore
/// --detach`, the stdio as the runtime's own as for `create`).
fn start_oci_restore(req: &SupervisorRequest) -> Result<StartedOci, (i32, String)> {
    let (stdio, ends, logs) = open_stdio(req)?;
    let init = oci::restore(req, stdio)?;
    Ok((init, oci::no_status_pipe()?, Release::Restored, ends, logs))
}

/// Opens the stdio and has CRIU restore the init.
fn start_criu(req: &SupervisorRequest) -> Result<StartedOci, (i32, String)> {
    let (stdio, ends, logs) = open_stdio(req)?;
    let init = criu::restore(req, stdio)?;
    Ok((init, oci::no_status_pipe()?, Release::Restored, ends, logs))
}

/// Opens the stdio, enters the pid namespace and forks the init, which
/// first closes its copy of `control` (the launcher takes the socket's
/// hang-up for the supervisor's end).
fn start_init(req: &SupervisorRequest, control: i32) -> Result<Started, (i32, String)> {
    let errno = |e: &std::io::Error| e.raw_os_error().unwrap_or(0);
    if req.argv.is_empty() && !req.init {
        return Err((libc::EINVAL, "empty argv".into()));
    }
    let plan = if req.posix {
        Plan::default()
    } else {
        let info = req.launch_info.clone().unwrap_or_default();
        namespaces::plan(&info).map_err(|e| (libc::EINVAL, e.to_string()))?
    };
    let (stdio, ends, logs) = open_stdio(req)?;
    let (release_r, release_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| (e as i32, format!("pipe: {e}")))?;
    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| (e as i32, format!("pipe: {e}")))?;

    // Before the pid namespace: the helper that holds the user namespace
    // for a moment must not become that namespace's pid 1.
    let userns = match (plan.new_user, &plan.join_user) {
        (true, _) => Some(make_userns(&req.launch_info.clone().unwrap_or_default())?),
        (false, Some(t)) => Some(
            t.open()
                .map_err(|e| (errno(&e), format!("open namespace {t}: {e}")))?,
        ),
        (false, None) => None,
    };
    // A pid namespace applies to the children of whoever enters it, so
    // the supervisor enters it (only its one child lives there).
    if let Some(t) = &plan.join_pid {
        let f = t
            .open()
            .map_err(|e| (errno(&e), format!("open namespace {t}: {e}")))?;
        nix::sched::setns(f, CloneFlags::CLONE_NEWPID)
            .map_err(|e| (e as i32, format!("setns {t}: {e}")))?;
    }
    if plan.new_pid {
        nix::sched::unshare(CloneFlags::CLONE_NEWPID)
            .map_err(|e| (e as i32, format!("unshare CLONE_NEWPID: {e}")))?;
    }
    // The init starts in its v2 cgroup (if it has one), not moved there.
    let v2 = cgroup_join::open_v2(&req.cgroups);
    // SAFETY: single-threaded, so the child may do anything after fork.
    match unsafe { cgroup_join::fork_into(v2.as_ref().map(|(_, fd)| fd.as_fd())) } {
        Ok(cgroup_join::Forked::Child { placed }) => {
            // SAFETY: the supervisor's fd, which this process never uses.
            unsafe { libc::close(control) };
            drop(release_w);
            drop(status_r);
            drop((ends, logs));
            let placed = v2.and_then(|(dir, _)| placed.then_some(dir));
            child::run(req, &plan, stdio, userns, release_r, status_w, placed)
        }
        // Our copies of the command's ends close as `stdio` drops here, so
        // the pipes end when the command's side does.
        Ok(cgroup_join::Forked::Parent(child)) => Ok((child, status_r, release_w, ends, logs)),
        Err(e) => Err((e as i32, format!("fork the container's init: {e}"))),
    }
}

/// A user namespace with the launch info's mappings, as an fd on it: a
/// short-lived child unshares it, the supervisor (root on the host)
/// writes its maps and opens it, and the child exits. The init joins it
/// later by this fd; idmapped mounts are made with it too.
fn make_userns(info: &berth_state::LaunchInfo) -> Result<OwnedFd, (i32, String)> {
    let nix_err = |what: &str| {
        let what = what.to_string();
        move |e: nix::Error| (e as i32, format!("{what}: {e}"))
    };
    let io_err = |what: String| {
        move |e: std::io::Error| (e.raw_os_error().unwrap_or(0), format!("{what}: {e}"))
    };
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(nix_err("pipe"))?;
    let (hold_r, hold_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(nix_err("pipe"))?;
    // SAFETY: single-threaded, so the child may do anything after fork.
    let child = match unsafe { fork() }.map_err(nix_err("fork for the user namespace"))? {
        ForkResult::Child => {
            drop((ready_r, hold_w));
            let ok = nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = fs::File::from(ready_w).write_all(&[ok as u8]);
            // Held until the supervisor has opened the namespace (EOF).
            let _ = fs::File::from(hold_r).read(&mut [0u8; 1]);
            // SAFETY: _exit skips the supervisor's atexit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    drop((ready_w, hold_r));
    let made = (|| {
        let mut b = [0u8; 1];
        fs::File::from(ready_r)
            .read_exact(&mut b)
            .map_err(io_err("wait for the user namespace helper".into()))?;
        if b[0] != 1 {
            return Err((
                libc::EPERM,
                "unshare(CLONE_NEWUSER) failed in the helper".into(),
            ));
        }
        let proc = PathBuf::from(format!("/proc/{child}"));
        for (file, maps) in [
            ("uid_map", &info.uid_mappings),
            ("gid_map", &info.gid_mappings),
        ] {
            let text: String = maps
                .iter()
                .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
                .collect();
            // One write: the kernel takes a map only whole, and only once.
            fs::write(proc.join(file), text.as_bytes()).map_err(io_err(format!(
                "write {file} ({})",
                text.trim().replace('\n', ", ")
            )))?;
        }
        let ns = proc.join("ns/user");
        fs::File::open(&ns)
            .map(OwnedFd::from)
            .map_err(io_err(format!("open {}", ns.display())))
    })();
    drop(hold_w);
    let _ = waitpid(child, None);
    made
}

/// The sandbox's identity as the containerizer made it, if it said.
pub(crate) fn sandbox_identity(req: &SupervisorRequest) -> Option<safe_path::Identity> {
    (req.sandbox_ino != 0).then_some(safe_path::Identity {
        dev: req.sandbox_dev,
        ino: req.sandbox_ino,
    })
}

/// The command's stdio: stdin is `/dev/null`, the launcher's fd 0
/// (`stdin_inherited`) or (`stdin_open`) a pipe the supervisor feeds; unless inherited, stdout and stderr are pipes the
/// supervisor copies into the sandbox's log files. A nested sandbox lies in
/// its parent container's, so the log files are opened on the sandbox's
/// fd (no symlink on the way, still the directory berth made), never
/// followed, never a FIFO or a file with other hard links.
fn open_stdio(
    req: &SupervisorRequest,
) -> Result<(Stdio, relay::Ends, Option<logs::Logs>), (i32, String)> {
    let refused = |e: safe_path::SafePathError| {
        (
            e.errno().unwrap_or(libc::EPERM),
            format!("sandbox stdio: {e}"),
        )
    };
    let pipe = || {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| (e as i32, format!("pipe for the command's stdio: {e}")))?;
        if let Some(u) = &req.user {
            // The command may reopen /dev/stdout (/proc/self/fd/1) as its
            // own user: the pipe's inode must be its.
            let _ = std::os::unix::fs::fchown(&w, Some(u.uid), Some(u.gid));
        }
        Ok::<_, (i32, String)>((r, w))
    };
    let mut ends = relay::Ends::default();
    let stdin: OwnedFd = if req.stdin_inherited {
        // The launcher gave us the command's stdin as fd 0 (an exec's pipe).
        nix::unistd::dup(0)
            .map(|fd| {
                // SAFETY: dup just returned this fd; nothing else owns it.
                unsafe { OwnedFd::from_raw_fd(fd) }
            })
            .map_err(|e| (e as i32, format!("dup stdin: {e}")))?
    } else if req.stdin_open && !req.stdio_inherited && !req.tty {
        let (r, w) = pipe()?;
        ends.stdin = Some(w);
        r
    } else {
        fs::File::open("/dev/null")
            .map_err(|e| {
                (
                    e.raw_os_error().unwrap_or(0),
                    format!("open /dev/null: {e}"),
                )
            })?
            .into()
    };
    if req.stdio_inherited {
        return Ok((
            Stdio {
                stdin,
                files: None,
                tty: None,
                ctty: false,
            },
            ends,
            None,
        ));
    }
    let sandbox = Path::new(&req.sandbox_dir);
    let dir = safe_path::open_dir(sandbox, sandbox_identity(req)).map_err(refused)?;
    let logs =
        logs::Logs::open(dir, sandbox, &req.logs.clone().unwrap_or_default()).map_err(refused)?;
    if req.tty {
        // The pty is made by the init in the container's devpts; its
        // master comes back over this socket.
        let (ours, theirs) = UnixStream::pair().map_err(|e| {
            (
                e.raw_os_error().unwrap_or(0),
                format!("socketpair for the tty: {e}"),
            )
        })?;
        ends.tty_socket = Some(ours.into());
        return Ok((
            Stdio {
                stdin,
                files: None,
                tty: Some(theirs.into()),
                ctty: false,
            },
            ends,
            Some(logs),
        ));
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    ends.out = Some(out_r);
    ends.err = Some(err_r);
    Ok((
        Stdio {
            stdin,
            files: Some((out_w, err_w)),
            tty: None,
            ctty: false,
        },
        ends,
        Some(logs),
    ))
}

/// Forwards the release, reaps every child (the supervisor is a child
/// subreaper, so processes that escape the init's tree without a pid
/// namespace land here instead of on the host's init, which may reap
/// them late), relays the command's stdio, records the init's exit status
/// as soon as the init is reaped and its output drained, and returns once
/// no child is left. If the control socket closes before the release (the
/// agent died mid-launch), the blocked init is killed: nobody will release
/// it.
#[allow(clippy::too_many_arguments)]
fn watch(
    init: Pid,
    control: UnixStream,
    release: Release,
    await_attach: bool,
    sigchld: SignalFd,
    relay: &mut relay::Relay,
    start_failed: &std::cell::RefCell<Option<String>>,
    mut on_init_exit: impl FnMut(WaitStatus) -> ExitStatus,
) {
    use nix::sys::wait::WaitPidFlag;
    let mut control = Some(control);
    // The control socket once the release came: not read any more; told
    // when the exit status is recorded (see `protocol::EXITED`), as the
    // control socket is when the init ends before its release.
    let mut notice: Option<UnixStream> = None;
    let mut release_w = Some(release);
    // A runtime's `start` that fails leaves its init waiting: it is killed,
    // and its exit is recorded as the start error.
    let fire = |r: Release| {
        if let Err(message) = r.fire() {
            *start_failed.borrow_mut() = Some(message);
            let _ = nix::sys::signal::kill(init, nix::sys::signal::SIGKILL);
        }
    };
    // Released by the launcher, held until a client attached.
    let mut held = false;
    let mut init_done = false;
    let mut init_ended = |ws: WaitStatus, relay: &mut relay::Relay| {
        // Output written just before the exit is in the pipes: into the
        // logs first, so a reader that sees the exit sees all of it.
        relay.drain();
        let st = on_init_exit(ws);
        relay.exited(attach_exit(&st));
        st
    };
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut tags: Vec<Option<relay::Tag>> = Vec::new();
    let mut relay_tags = Vec::new();
    loop {
        // Reap whatever has exited; SIGCHLDs coalesce, so drain fully.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(ws) => {
                    if ws.pid() == Some(init) {
                        init_done = true;
                        let st = init_ended(ws, relay);
                        // Nothing more comes over the control socket: it
                        // tells the launcher the status is recorded.
                        tell_exited(control.take().or(notice.take()), &st);
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                // ECHILD: no child left at all.
                Err(_) => {
                    if !init_done {
                        let st = init_ended(WaitStatus::Exited(init, 255), relay);
                        tell_exited(control.take().or(notice.take()), &st);
                    }
                    relay.drain();
                    relay.finish();
                    return;
                }
            }
        }
        fds.clear();
        tags.clear();
        relay_tags.clear();
        let pollin = |fd: i32| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        fds.push(pollin(sigchld.as_raw_fd()));
        tags.push(None);
        let control_at = control.as_ref().map(|c| {
            fds.push(pollin(c.as_raw_fd()));
            tags.push(None);
            fds.len() - 1
        });
        let base = fds.len();
        relay.poll_fds(&mut fds, &mut relay_tags);
        tags.extend(relay_tags.iter().copied().map(Some));
        // SAFETY: `fds` is a valid array of pollfd of that length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 && nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Consume the pending SIGCHLD notifications (non-blocking).
        while let Ok(Some(_)) = sigchld.read_signal() {}
        for (i, tag) in tags.iter().enumerate().skip(base) {
            if fds[i].revents != 0 {
                if let Some(t) = tag {
                    relay.handle(*t);
                }
            }
        }
        if held && relay.has_clients() {
            if let Some(w) = release_w.take() {
                fire(w);
            }
            held = false;
        }
        relay.sweep();
        let control_ready = control_at.map(|i| fds[i].revents != 0).unwrap_or(false);
        if control_ready {
            let mut b = [0u8; 1];
            let n = control.as_mut().map(|c| c.read(&mut b));
            match n {
                Some(Ok(1)) if b[0] == protocol::RELEASE => {
                    if await_attach && !relay.has_clients() {
                        held = true;
                    } else if let Some(w) = release_w.take() {
                        fire(w);
                    }
                    notice = control.take();
                }
                Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => {
                    // EOF or garbage before release: the launch is abandoned.
                    if release_w.is_some() {
                        let _ = nix::sys::signal::kill(init, nix::sys::signal::SIGKILL);
                    }
                    control = None;
                }
            }
        }
    }
}

/// Tells the launcher that started the init that its exit status is
/// recorded, and what it is (see [`protocol::exited`]); a launcher that
/// is gone (restarted) is no error.
fn tell_exited(notice: Option<UnixStream>, status: &ExitStatus) {
    if let Some(n) = notice {
        let msg = protocol::exited(status);
        // SAFETY: a valid socket and a buffer that outlives the call.
        unsafe {
            libc::send(
                n.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        // The launcher's thread, just woken, may wait on this CPU while
        // this process exits (a few hundred microseconds): it goes first.
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
    }
}

/// The exit as the attach protocol carries it.
fn attach_exit(st: &ExitStatus) -> crate::attach::Exit {
    crate::attach::Exit {
        code: st.code(),
        signal: match st {
            ExitStatus::Signaled { signal, .. } => Some(*signal),
            _ => None,
        },
    }
}
