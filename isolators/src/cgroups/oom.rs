//! Learning that the kernel's OOM killer ran in a container's memory
//! cgroup, without polling and without a thread per container (cgroups-rs
//! spawns one per registration, and its v2 path opens a v1-only file):
//! - v1: an eventfd registered through `cgroup.event_control` against
//!   `memory.oom_control`;
//! - v2: inotify on `memory.events`, whose `oom_kill` counter rises.
//!
//! Both fds wait on tokio's reactor. The counter is read after the fd is
//! armed, so an OOM that happened before (during launch, or while the
//! agent was down) is not missed. A cgroup being removed also wakes the
//! fd; then the counter is still 0 and the wait goes on, forever.

use super::{keyed, CgroupDir, Version};
use crate::blocking;
use berth_state::ContainerId;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How many processes the OOM killer killed in the cgroup (v1
/// `memory.oom_control` `oom_kill`, kernel ≥ 4.13; v2 `memory.events`).
pub(crate) fn oom_kills(d: &CgroupDir) -> u64 {
    let (file, key) = match d.version {
        Version::V1 => ("memory.oom_control", "oom_kill"),
        Version::V2 => ("memory.events", "oom_kill"),
    };
    fs::read_to_string(d.path.join(file))
        .ok()
        .and_then(|t| keyed(&t, key))
        .unwrap_or(0)
}

/// Resolves once the OOM killer has run in `d`. Never resolves if the
/// notification cannot be set up (logged) or the cgroup goes away.
pub(crate) async fn wait_for_oom(id: &ContainerId, d: &CgroupDir) {
    let d2 = d.clone();
    let armed = blocking(move || arm(&d2)).await;
    // SAFETY: the OwnedFd is moved into the AsyncFd: it stays open and
    // refers to the same file until the AsyncFd drops it.
    let registered = armed
        .and_then(|fd| Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?));
    let fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(container = %id, cgroup = %d.path.display(), error = %e,
                "cannot watch for OOM kills; OOMs will show as plain kills");
            return futures::future::pending().await;
        }
    };
    loop {
        let d2 = d.clone();
        let (kills, alive) = blocking(move || (oom_kills(&d2), d2.path.exists())).await;
        if kills > 0 {
            return;
        }
        if !alive {
            return futures::future::pending().await;
        }
        let Ok(mut guard) = fd.readable().await else {
            return futures::future::pending().await;
        };
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a live buffer of the given length.
        let n = unsafe { libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
            guard.clear_ready();
        }
    }
}

/// The armed notification fd (non-blocking, close-on-exec).
fn arm(d: &CgroupDir) -> io::Result<OwnedFd> {
    match d.version {
        Version::V1 => {
            // SAFETY: eventfd has no memory-safety preconditions.
            let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if efd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: efd is a fresh fd that nothing else owns.
            let efd = unsafe { OwnedFd::from_raw_fd(efd) };
            let ctl = fs::File::open(d.path.join("memory.oom_control"))?;
            // The kernel keeps the eventfd, not the control file: `ctl`
            // may be closed once registered.
            fs::write(
                d.path.join("cgroup.event_control"),
                format!("{} {}", efd.as_raw_fd(), ctl.as_raw_fd()),
            )?;
            Ok(efd)
        }
        Version::V2 => {
            // SAFETY: inotify_init1 has no memory-safety preconditions.
            let ifd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
            if ifd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: ifd is a fresh fd that nothing else owns.
            let ifd = unsafe { OwnedFd::from_raw_fd(ifd) };
            let path =
                std::ffi::CString::new(d.path.join("memory.events").as_os_str().as_encoded_bytes())
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidInput, "NUL in cgroup path")
                    })?;
            // SAFETY: path is a valid NUL-terminated string.
            let wd =
                unsafe { libc::inotify_add_watch(ifd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) };
            if wd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(ifd)
        }
    }
}
