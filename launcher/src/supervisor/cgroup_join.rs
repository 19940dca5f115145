//! Putting the supervisor and the init into their cgroups without waiting
//! on the kernel's global threadgroup lock.
//!
//! A write to `cgroup.procs` (its own pid or "0") moves a whole thread
//! group, so the kernel takes `cgroup_threadgroup_rwsem` for writing, and
//! the first writer after a quiet spell waits an RCU grace period for it:
//! 5–20 ms on this project's VM, at every launch not right behind another
//! migration, unless the host mounted a hierarchy with `favordynmods`.
//! Three ways around it, each measured at 0.02–0.05 ms:
//! - v1: a hierarchy's `tasks` file with "0" moves only the calling thread,
//!   and the kernel skips that lock (the thread cannot exit or exec under
//!   it). The supervisor and the init before its exec are single-threaded,
//!   so their one thread is the whole process.
//! - v2, the init: `clone3(CLONE_INTO_CGROUP)` starts it in its cgroup;
//!   nothing migrates ([`fork_into`]).
//! - v2, the supervisor (leaving the agent's cgroup for `.supervisors`):
//!   it forks into it once it has its request, and goes on in the child
//!   ([`move_supervisor`]). v2 has no `tasks` (its `cgroup.threads` moves
//!   a thread only within one threaded domain), and a helper writing the
//!   supervisor's pid would not do: the writer waits for the lock holding
//!   `cgroup_mutex`, which every other cgroup operation (the init's
//!   joins and `CLONE_INTO_CGROUP` included) then waits for.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `CLONE_INTO_CGROUP` (Linux 5.7), not in the libc crate for every target.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// `CGROUP2_SUPER_MAGIC`.
const CGROUP2_MAGIC: i64 = 0x6367_7270;

/// Moves the calling, single-threaded process into the cgroup `dir`:
/// v1's `tasks` when the hierarchy has one, else `cgroup.procs`.
///
/// On error, returns the file it wrote to with the error.
pub(crate) fn join_self(dir: &Path) -> Result<(), (PathBuf, io::Error)> {
    match open_tasks(dir) {
        Ok(Some((path, f))) => write_zero(path, f),
        Ok(None) => {
            let procs = dir.join("cgroup.procs");
            match OpenOptions::new().write(true).open(&procs) {
                Ok(f) => write_zero(procs, f),
                Err(e) => Err((procs, e)),
            }
        }
        Err(e) => Err(e),
    }
}

/// `dir`'s `tasks` file open for writing, or None where the hierarchy
/// has none (v2).
fn open_tasks(dir: &Path) -> Result<Option<(PathBuf, std::fs::File)>, (PathBuf, io::Error)> {
    let tasks = dir.join("tasks");
    match OpenOptions::new().write(true).open(&tasks) {
        Ok(f) => Ok(Some((tasks, f))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err((tasks, e)),
    }
}

fn write_zero(path: PathBuf, file: std::fs::File) -> Result<(), (PathBuf, io::Error)> {
    // "0" is the writer itself (its thread, for `tasks`).
    (&file).write_all(b"0").map_err(|e| (path, e))
}

/// The supervisor's move out of the agent's cgroups into `.supervisors`
/// (`dirs`, one per hierarchy). A v2 one by a fork that starts there: the
/// caller goes on in the child, in a session of its own as before, and
/// the parent exits (it was already detached, so nobody in the agent has
/// a child to reap; the launcher learns the new pid from the reply). v1
/// ones by `tasks`. Best effort, as before: a hierarchy that refuses
/// keeps the supervisor where the agent was.
///
/// # Safety
/// As `fork`: the caller is single-threaded.
pub(crate) unsafe fn move_supervisor(dirs: &[String]) {
    let mut placed = None;
    if let Some((dir, fd)) = open_v2(dirs) {
        // SAFETY: the caller is single-threaded.
        match unsafe { fork_into(Some(fd.as_fd())) } {
            // SAFETY: _exit is always safe; the child carries on.
            Ok(Forked::Parent(_)) => unsafe { libc::_exit(0) },
            Ok(Forked::Child { placed: p }) => {
                let _ = nix::unistd::setsid();
                placed = p.then_some(dir);
            }
            Err(_) => {}
        }
    }
    for dir in dirs.iter().filter(|d| Some(*d) != placed.as_ref()) {
        let _ = join_self(Path::new(dir));
    }
}

/// A placed pool member's detach (see the launcher's pool): the fork
/// that leaves the launcher's child starts in the v2 cgroup among `dirs`
/// (where there is one) and joins the v1 ones; the parent exits, and the
/// launcher reaps it. An error is the fork's (a join that fails leaves
/// the supervisor where it was, as at a claim).
///
/// # Safety
/// As `fork`: the caller is single-threaded.
pub(crate) unsafe fn detach_into(dirs: &[String]) -> nix::Result<()> {
    let v2 = open_v2(dirs);
    // SAFETY: the caller is single-threaded.
    match unsafe { fork_into(v2.as_ref().map(|(_, fd)| fd.as_fd())) }? {
        // SAFETY: _exit is always safe; the child carries on.
        Forked::Parent(_) => unsafe { libc::_exit(0) },
        Forked::Child { placed } => {
            let placed = v2.filter(|_| placed).map(|(dir, _)| dir);
            for dir in dirs.iter().filter(|d| Some(*d) != placed.as_ref()) {
                let _ = join_self(Path::new(dir));
            }
            Ok(())
        }
    }
}

/// The one v2 cgroup among `dirs`, open: what [`fork_into`] starts a
/// child in. None when every dir is v1 (or cannot be opened: the child
/// then joins it by writing, and reports that error).
pub(crate) fn open_v2(dirs: &[String]) -> Option<(String, OwnedFd)> {
    for dir in dirs {
        let Ok(f) = std::fs::File::open(dir) else {
            continue;
        };
        // SAFETY: an all-zero statfs is a valid buffer for fstatfs.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd and buffer.
        if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } == 0
            && st.f_type as i64 == CGROUP2_MAGIC
        {
            return Some((dir.clone(), f.into()));
        }
    }
    None
}

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What [`fork_into`] did.
pub(crate) enum Forked {
    /// In the child; `placed` is whether it started in the cgroup.
    Child {
        placed: bool,
    },
    Parent(nix::unistd::Pid),
}

/// Forks, the child starting in the v2 cgroup `cgroup` when given (no
/// migration, no lock); a kernel without `CLONE_INTO_CGROUP` (before 5.7)
/// gets a plain fork, and the child joins by writing. Unlike glibc's
/// fork, the raw `clone3` runs no atfork handlers and leaves the child's
/// thread descriptor with the parent's tid: the supervisor registers no
/// handlers, and its child goes on to exec or exit without threads or
/// pthread calls that would read that tid.
///
/// # Safety
/// As `fork`: the caller is single-threaded.
pub(crate) unsafe fn fork_into(cgroup: Option<BorrowedFd>) -> nix::Result<Forked> {
    if let Some(fd) = cgroup {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd.as_raw_fd() as u64,
            ..Default::default()
        };
        // SAFETY: a valid clone_args of the size given; without CLONE_VM
        // or a stack the child runs on a copy of this memory, as after
        // fork (the caller is single-threaded).
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match r {
            0 => return Ok(Forked::Child { placed: true }),
            r if r > 0 => return Ok(Forked::Parent(nix::unistd::Pid::from_raw(r as i32))),
            _ => {
                let e = nix::errno::Errno::last();
                // No clone3 (ENOSYS) or no cgroup field (E2BIG): fork.
                if !matches!(e, nix::errno::Errno::ENOSYS | nix::errno::Errno::E2BIG) {
                    return Err(e);
                }
            }
        }
    }
    // SAFETY: the caller is single-threaded.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => Ok(Forked::Child { placed: false }),
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}
