//! Learning of a container's exit without polling: the supervisor's
//! message on its control socket (see `protocol::exited`) makes the socket
//! readable, its atomic rename of `exit_status` into the runtime dir is an
//! inotify event, and its pidfd becomes readable should it die without
//! writing one. The fds wait on tokio's reactor.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Resolves once the process behind `pidfd` has exited. Works for
/// processes that are not our children (the supervisor never is).
pub async fn exited(pidfd: &OwnedFd) -> io::Result<()> {
    readable(pidfd).await
}

/// Resolves once `fd` reads as ready (data, end of file, or an error on a
/// socket). Nothing is read: every waiter sees the same readiness.
pub async fn readable(fd: &OwnedFd) -> io::Result<()> {
    let fd = register(fd.try_clone()?)?;
    let _ready = fd.readable().await?;
    Ok(())
}

/// As [`readable`], without a copy of the fd where it can: the fd itself is
/// registered (the registration keeps it open), so a container's one
/// long-lived waiter costs the agent no second fd. A second waiter at the
/// same time gets a copy (the reactor refuses one fd twice).
pub async fn readable_shared(fd: &Arc<OwnedFd>) -> io::Result<()> {
    // SAFETY: `Shared` holds the fd's `Arc`: it stays open and refers to
    // the same file while registered.
    let own =
        match unsafe { AsyncFd::register_with_interest(Shared(fd.clone()), Interest::READABLE) } {
            Ok(a) => a,
            Err(e) => {
                let (_, e) = e.into_parts();
                if e.kind() == io::ErrorKind::AlreadyExists {
                    return readable(fd).await;
                }
                return Err(e);
            }
        };
    let _ready = own.readable().await?;
    Ok(())
}

/// An fd held by an `Arc`, registered as it is.
struct Shared(Arc<OwnedFd>);

impl AsRawFd for Shared {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// Resolves once file `name` appears in `dir` (created or renamed into
/// it), or once the process behind `pidfd` (if any) has exited.
pub async fn appeared_or_exited(dir: &Path, name: &str, pidfd: Option<&OwnedFd>) -> io::Result<()> {
    let inotify = inotify_watch(dir)?;
    // Watching first, checking second: a rename in between is not lost.
    if dir.join(name).exists() {
        return Ok(());
    }
    let inotify = register(inotify)?;
    let appeared = async {
        loop {
            let mut guard = inotify.readable().await?;
            let mut buf = [0u8; 4096];
            // SAFETY: reading into a live buffer of the given length.
            let n = unsafe {
                libc::read(
                    inotify.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                return Err(e);
            }
            // The dir itself going away (remove) also ends the wait.
            if events(&buf[..n as usize]).any(|(mask, n)| {
                n == name.as_bytes() || mask & (libc::IN_DELETE_SELF | libc::IN_IGNORED) != 0
            }) {
                return Ok(());
            }
        }
    };
    match pidfd {
        Some(p) => {
            tokio::select! {
                r = appeared => r,
                r = exited(p) => r,
            }
        }
        None => appeared.await,
    }
}

/// Each waiter registers its own fd: the reactor refuses one fd twice.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is moved into the AsyncFd: it stays open and
    // refers to the same file until the AsyncFd drops it.
    Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?)
}

fn inotify_watch(dir: &Path) -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes flags and returns a new fd or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: a valid inotify fd and a NUL-terminated path.
    let wd = unsafe {
        libc::inotify_add_watch(
            fd.as_raw_fd(),
            path.as_ptr(),
            libc::IN_MOVED_TO | libc::IN_CREATE | libc::IN_DELETE_SELF,
        )
    };
    if wd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The (mask, name) pairs in a buffer of `struct inotify_event`s.
fn events(mut buf: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    const HDR: usize = std::mem::size_of::<libc::inotify_event>();
    std::iter::from_fn(move || {
        if buf.len() < HDR {
            return None;
        }
        let mask = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let len = u32::from_ne_bytes([buf[12], buf[13], buf[14], buf[15]]) as usize;
        let end = (HDR + len).min(buf.len());
        let name = &buf[HDR..end];
        buf = &buf[end..];
        // The name is NUL-padded.
        let trimmed = name.split(|b| *b == 0).next().unwrap_or(&[]);
        Some((mask, trimmed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_renamed_file_is_seen_without_polling() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let writer = tokio::task::spawn_blocking(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            berth_state::runtime::write_atomic(&d.join("exit_status"), b"exit 0 1\n").unwrap();
        });
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            appeared_or_exited(dir.path(), "exit_status", None),
        )
        .await
        .unwrap()
        .unwrap();
        writer.await.unwrap();
        // Already there: resolves at once.
        appeared_or_exited(dir.path(), "exit_status", None)
            .await
            .unwrap();
    }
}
