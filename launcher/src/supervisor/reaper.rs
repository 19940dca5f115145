//! `--init`: the container's pid 1 is berth's small reaper, not the
//! command (as `docker run --init`, tini).
//!
//! A command that is pid 1 of its pid namespace gets no signal it has no
//! handler for (so `berth stop` waits the whole grace for it), and
//! orphans of its children become its zombies, which few programs reap.
//! With `--init` the init forks right before its exec: the child execs
//! the command as it would have; the parent stays, running the sealed
//! supervisor image, non-dumpable, under the container's user,
//! capabilities, no_new_privs and seccomp filter, and
//! - forwards every signal it can catch to the command,
//! - reaps every child it gets (pid 1, or a child subreaper without a pid
//!   namespace of its own),
//! - exits when the command ends, with its code, or 128+N when the command
//!   was killed by signal N.
//!
//! The reaper needs only rt_sigprocmask, rt_sigtimedwait, wait4, kill,
//! close_range and exit_group after its filter is loaded: Docker's and
//! berth's default profiles allow them all.

use crate::step::{StepError, StepResult};
use crate::sys;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

/// Signals the kernel raises for a fault of the thread itself: left
/// unblocked so a bug in the reaper kills it rather than looping.
const FAULTS: [libc::c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// The signals the reaper waits for: every one but the faults (SIGKILL
/// and SIGSTOP cannot be blocked; the kernel ignores them in the set).
fn waited() -> libc::sigset_t {
    // SAFETY: sigfillset/sigdelset initialise and edit a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for s in FAULTS {
            libc::sigdelset(&mut set, s);
        }
        set
    }
}

/// Forks the command off the init. Returns in the child (the command's
/// side: every signal unblocked, the caller loads the seccomp filter and
/// execs); the parent becomes the reaper, loads `seccomp_bpf` itself and
/// never returns, except with an error before it reaps.
pub(super) fn split(seccomp_bpf: &[u8]) -> StepResult {
    // Orphans come to us also where we are not pid 1 (no pid namespace
    // of our own, or a joined one). Not inherited by the command.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(StepError::io(
            "--init: become a child subreaper",
            std::io::Error::last_os_error(),
        ));
    }
    // Blocked before the fork: a signal sent to the init from now on is
    // queued for the reaper's wait, none is lost or acted on by default.
    // (Blocked signals are queued even for a pid 1 without handlers.)
    let set = waited();
    // SAFETY: a valid set; the old mask is not needed.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    // SAFETY: single-threaded (the supervisor's child), so fork is safe.
    let command = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: an empty set; SIG_SETMASK with it unblocks all, as
            // the command must start.
            unsafe {
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            }
            return Ok(());
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(StepError::nix("--init: fork the command", e)),
    };
    // Stays so for life (the command's exec makes only the command
    // dumpable): no ptrace, no /proc/1/{exe,fd,mem} for the container.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // What `ps` shows for pid 1 inside.
    // SAFETY: a NUL-terminated name; the kernel copies at most 15 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"berth-init".as_ptr(), 0, 0, 0) };
    if !seccomp_bpf.is_empty() {
        if let Err(e) = sys::load_seccomp(seccomp_bpf) {
            // The command may already run unfiltered by us: end it, and
            // report the error as the init's (a START_ERROR).
            let _ = nix::sys::signal::kill(command, nix::sys::signal::SIGKILL);
            let _ = waitpid(command, None);
            return Err(StepError::io("--init: load the seccomp filter", e));
        }
    }
    // Nothing of the supervisor's stays open here (the status pipe, the
    // sandbox's stdio files): only the command's stdio.
    let _ = sys::close_range(3, u32::MAX, 0);
    let code = reap(command, &set);
    // SAFETY: _exit skips the supervisor's atexit handlers; as pid 1 this
    // ends every process left in the namespace.
    unsafe { libc::_exit(code) }
}

/// A pod's init: no command, only the namespaces it holds for the pod's
/// members. Reaps whatever it gets (members sharing its pid namespace
/// leave their orphans to it) and exits 0 on SIGTERM, SIGINT or SIGHUP, as
/// Kubernetes's pause does. Never returns but with an error before it
/// starts waiting.
pub(super) fn hold(seccomp_bpf: &[u8]) -> StepResult {
    let set = waited();
    // SAFETY: a valid set; the old mask is not needed.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // SAFETY: a NUL-terminated name; the kernel copies at most 15 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"berth-pod".as_ptr(), 0, 0, 0) };
    if !seccomp_bpf.is_empty() {
        sys::load_seccomp(seccomp_bpf)
            .map_err(|e| StepError::io("pod: load the seccomp filter", e))?;
    }
    // The status pipe closes here: the supervisor takes it as a
    // successful start.
    let _ = sys::close_range(3, u32::MAX, 0);
    loop {
        // SAFETY: a valid set; no siginfo wanted.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        match sig {
            libc::SIGTERM | libc::SIGINT | libc::SIGHUP => {
                // SAFETY: _exit skips the supervisor's atexit handlers.
                unsafe { libc::_exit(0) }
            }
            libc::SIGCHLD => loop {
                let mut status = 0;
                // SAFETY: waitpid with a valid pointer to a local status.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
                if pid <= 0 {
                    break;
                }
            },
            _ => {}
        }
    }
}

/// Waits for signals until the command ends; returns the exit code.
fn reap(command: Pid, set: &libc::sigset_t) -> i32 {
    loop {
        // SAFETY: a valid set; no siginfo wanted.
        let sig = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        if sig < 0 {
            // EINTR (a stop and continue); nothing else can fail here.
            continue;
        }
        if sig != libc::SIGCHLD {
            // ESRCH: the command is gone, its SIGCHLD is on the way.
            // SAFETY: kill with a pid and a signal number.
            unsafe { libc::kill(command.as_raw(), sig) };
            continue;
        }
        // SIGCHLDs coalesce: reap every child that has ended. (libc's
        // waitpid: nix's cannot decode a real-time signal's death.)
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid pointer to a local status.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
            if pid == command.as_raw() {
                if libc::WIFEXITED(status) {
                    return libc::WEXITSTATUS(status);
                }
                if libc::WIFSIGNALED(status) {
                    return 128 + libc::WTERMSIG(status);
                }
            } else if pid == 0 {
                break;
            } else if pid < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
            {
                // ECHILD: no child left, so the command was reaped
                // already (cannot happen: we return when we reap it).
                return 255;
            }
        }
    }
}
