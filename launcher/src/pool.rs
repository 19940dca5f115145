//! A warm pool of supervisors.
//!
//! Starting a supervisor is a `posix_spawn` of the sealed copy, the
//! dynamic loader, Rust's runtime start and the detaching fork: about
//! 1.1–1.4 ms of every launch on this project's test VM, before the
//! supervisor reads its request. A pooled supervisor has done all of that
//! ahead of time and waits in its first `read` of the control socket, at
//! `SCHED_IDLE`; a launch takes one, lifts it to `SCHED_OTHER` by the pid
//! it wrote, and writes it the request (a container's stdio fds follow
//! by `SCM_RIGHTS`), and a thread spawns the replacement off the
//! launch's path.
//!
//! An unclaimed member holds nothing: no container, no record, no cgroup
//! of berth's. By default it leaves the agent's cgroups only once it has
//! its request; a pool given a placement (see [`SupervisorPool::new`])
//! starts each with the supervisors' cgroups (`.supervisors`)
//! to move into as it detaches, so a claim finds it there already. It
//! ends when its control socket closes: when the launcher is dropped, or
//! when the agent dies (a crash leaves nothing to recover).

use crate::sealed::SealedExe;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};

/// Supervisors waiting for a request.
#[derive(Debug, Clone)]
pub(crate) struct SupervisorPool {
    inner: Arc<Inner>,
}

/// A supervisor waiting for its request.
#[derive(Debug)]
struct Member {
    control: UnixStream,
    /// The detached supervisor's pid (it wrote it first thing).
    pid: i32,
}

#[derive(Debug)]
struct Inner {
    size: usize,
    /// Filled once, never topped up (see `SupervisorPool::once`).
    once: bool,
    members: Mutex<Vec<Member>>,
    /// The supervisors' cgroups a member moves into as it starts (none:
    /// it moves at its claim).
    placement: Vec<PathBuf>,
    /// Wakes the refill thread (started with the first claim, when the
    /// sealed copy exists); its end closing stops the thread.
    refill: Mutex<Option<mpsc::Sender<()>>>,
}

/// `placement`: the supervisors' cgroups (each `<hierarchy>/<cgroup
/// root>/.supervisors`) a member moves into as it starts, at the priority
/// of the launch path (a `tasks` write takes the kernel's cgroup mutex,
/// which a member at `SCHED_IDLE` must not hold), so that its claim moves
/// nothing; empty: it moves at its claim.
impl SupervisorPool {
    pub(crate) fn new(size: usize, placement: Vec<PathBuf>) -> SupervisorPool {
        Self::with(size, false, placement)
    }

    /// `size` supervisors started by [`start`](Self::start) and not
    /// replaced once taken: a process that launches one container starts
    /// its supervisor beside its own start (store, recovery, provisioning)
    /// and leaves none behind unused.
    pub(crate) fn once(size: usize, placement: Vec<PathBuf>) -> SupervisorPool {
        Self::with(size, true, placement)
    }

    fn with(size: usize, once: bool, placement: Vec<PathBuf>) -> SupervisorPool {
        SupervisorPool {
            inner: Arc::new(Inner {
                size,
                once,
                members: Mutex::new(Vec::new()),
                placement,
                refill: Mutex::new(None),
            }),
        }
    }

    /// Starts filling a one-shot pool (nothing for a topped-up one, which
    /// fills after its first claim).
    pub(crate) fn start(&self, exe: &Arc<SealedExe>) {
        if self.inner.once && self.inner.size > 0 {
            self.wake(exe);
        }
    }

    /// The control socket of a live member, if there is one; either way
    /// the pool is topped up in the background.
    pub(crate) fn take(&self, exe: &Arc<SealedExe>) -> Option<UnixStream> {
        if self.inner.size == 0 {
            return None;
        }
        let got = {
            // Never waits on the refill thread (which runs at SCHED_IDLE
            // and may sit preempted holding the lock): busy counts as empty.
            let mut m = match self.inner.members.try_lock() {
                Ok(m) => m,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    self.wake(exe);
                    return None;
                }
            };
            let mut got = None;
            while let Some(s) = m.pop() {
                // Still blocked in its read (so still alive, and its pid
                // still its own): lifted to SCHED_OTHER now, before the
                // request, or on a busy node it would wait for idle CPU.
                if waiting(&s.control)
                    // SAFETY: a plain syscall with a valid param.
                    && unsafe {
                        libc::sched_setscheduler(
                            s.pid,
                            libc::SCHED_OTHER,
                            &libc::sched_param { sched_priority: 0 },
                        )
                    } == 0
                {
                    got = Some(s.control);
                    break;
                }
                // Ended (killed by someone): its socket goes with it.
            }
            got
        };
        if !self.inner.once {
            self.wake(exe);
        }
        got
    }

    fn wake(&self, exe: &Arc<SealedExe>) {
        let mut slot = self.inner.refill.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = slot.as_ref() {
            if tx.send(()).is_ok() {
                return;
            }
        }
        let (tx, rx) = mpsc::channel();
        let weak = Arc::downgrade(&self.inner);
        let exe = exe.clone();
        let started = std::thread::Builder::new()
            .name("berth-sup-pool".into())
            .spawn(move || refill(weak, exe, rx));
        match started {
            Ok(_) => {
                let _ = tx.send(());
                *slot = Some(tx);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no supervisor pool thread; launches spawn their own")
            }
        }
    }
}

impl Drop for Inner {
    /// Unclaimed members end as their sockets close; lifted out of
    /// SCHED_IDLE first, so that on a busy node a placed one does not sit
    /// in berth's cgroup long after its launcher is gone.
    fn drop(&mut self) {
        let members = self.members.get_mut().unwrap_or_else(|p| p.into_inner());
        for m in members.drain(..) {
            // Still blocked in its read: alive, its pid still its own.
            if waiting(&m.control) {
                // SAFETY: a plain syscall with a valid param.
                unsafe {
                    libc::sched_setscheduler(
                        m.pid,
                        libc::SCHED_OTHER,
                        &libc::sched_param { sched_priority: 0 },
                    )
                };
            }
        }
    }
}

/// A member still blocked in its read: nothing to read and no hangup
/// (POLLHUP is always reported).
fn waiting(s: &UnixStream) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        s.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
        Ok(0)
    )
}

/// Tops the pool up after each wake, until the pool is dropped.
fn refill(pool: Weak<Inner>, exe: Arc<SealedExe>, wakes: mpsc::Receiver<()>) {
    // The member moves itself to SCHED_IDLE first thing after its exec
    // (`--pooled-idle`), so its start runs on CPU nobody else wants and a
    // saturated node's launches spawn their own as without a pool. Not
    // this thread, nor the spawn: until its exec the spawned child holds
    // a copy of the agent's fd table (its listening socket included),
    // and at SCHED_IDLE on a busy node it can hold it past the agent's
    // own death (in CI a restarted agent's client reached the dead one's
    // listening socket, then was refused).
    // SAFETY: a plain syscall.
    let idle = unsafe { libc::sched_getscheduler(0) } == libc::SCHED_OTHER;
    // A one-shot pool's member is wanted within milliseconds by the
    // launch it was started for: at the caller's priority.
    let idle = idle && !pool.upgrade().is_some_and(|p| p.once);
    loop {
        loop {
            let Some(inner) = pool.upgrade() else {
                return;
            };
            let len = inner
                .members
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len();
            if len >= inner.size {
                break;
            }
            let placement = inner.placement.clone();
            drop(inner);
            match spawn_member(&exe, idle, &placement) {
                Ok(s) => {
                    let Some(inner) = pool.upgrade() else {
                        return;
                    };
                    inner
                        .members
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(s);
                }
                Err(e) => {
                    // The next claim tries again; launches meanwhile spawn
                    // their own supervisor as without a pool.
                    tracing::warn!(error = %e, "cannot start a pooled supervisor");
                    break;
                }
            }
        }
        if pool.upgrade().is_none_or(|p| p.once) || wakes.recv().is_err() {
            return;
        }
        // Claims that came while we filled need no wake of their own.
        while wakes.try_recv().is_ok() {}
    }
}

/// Spawns a supervisor with no request yet and reaps its first process
/// (which only detaches, into `placement` where there is one).
fn spawn_member(exe: &SealedExe, idle: bool, placement: &[PathBuf]) -> std::io::Result<Member> {
    let (ours, theirs) = UnixStream::pair()?;
    let fd = theirs.as_raw_fd().to_string();
    // `--pooled-idle`: it goes to SCHED_IDLE itself; a claim lifts it back.
    let mut argv: Vec<&std::ffi::OsStr> = vec![
        crate::config::SUPERVISOR_BIN.as_ref(),
        "--control-fd".as_ref(),
        fd.as_ref(),
        if idle { "--pooled-idle" } else { "--pooled" }.as_ref(),
    ];
    // Made on first use, as a launch makes them (and again after a
    // `berth retire`); one that cannot be made is left out.
    let placed: Vec<&PathBuf> = placement
        .iter()
        .filter(|d| d.is_dir() || std::fs::create_dir_all(d).is_ok())
        .collect();
    for d in &placed {
        argv.push("--placed-in".as_ref());
        argv.push(d.as_os_str());
    }
    let mut child = crate::spawn::spawn(
        &exe.exec_path(),
        &argv,
        [None, None, None],
        theirs.as_raw_fd(),
    )?;
    drop(theirs);
    let status = child.wait()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "the supervisor's first process ended with {status}"
        )));
    }
    // Its detached child's pid, written first thing (a bounded wait: it
    // runs at SCHED_IDLE on a node that may be busy).
    let mut pid = [0u8; 4];
    ours.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    std::io::Read::read_exact(&mut &ours, &mut pid)?;
    ours.set_read_timeout(None)?;
    Ok(Member {
        control: ours,
        pid: i32::from_le_bytes(pid),
    })
}
