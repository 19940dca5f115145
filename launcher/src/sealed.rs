//! The supervisor binary as a sealed in-memory copy (the runc
//! CVE-2019-5736 lesson).
//!
//! A process that runs the supervisor's image inside a container (the
//! init before its exec, the `--init` reaper for the container's whole
//! life) has `/proc/<pid>/exe` pointing at that image. Were it the host's
//! `berth-supervisor`, a container's root could open it through that link
//! (bypassing any read-only mount) and overwrite the binary every later
//! container runs as root. So the launcher copies the binary once into a
//! memfd, seals it against any change, and execs supervisors from the
//! memfd only: the link then names `/memfd:berth-supervisor (deleted)`, a
//! file nobody can write, and nothing leads from it to the host's file.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every seal: no write, no resize, no further change of the seals.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// `MFD_EXEC` (Linux 6.3): asks for an executable memfd even where
/// `vm.memfd_noexec` makes memfds non-executable by default.
const MFD_EXEC: libc::c_uint = 0x0010;

/// A sealed, executable copy of a binary.
#[derive(Debug)]
pub struct SealedExe {
    fd: OwnedFd,
    /// The file it was copied from (for messages).
    pub source: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// How long the copy and sealing took.
    pub took: Duration,
}

/// Why a sealed copy could not be made.
#[derive(Debug, thiserror::Error)]
#[error("sealed copy of {path}: {op}: {source}")]
pub struct SealError {
    pub path: PathBuf,
    pub op: &'static str,
    #[source]
    pub source: io::Error,
}

impl SealedExe {
    /// Copies `path` into a new memfd (close-on-exec) and seals it.
    pub fn copy_of(path: &Path) -> Result<SealedExe, SealError> {
        let err = |op: &'static str| {
            move |source: io::Error| SealError {
                path: path.to_path_buf(),
                op,
                source,
            }
        };
        let start = Instant::now();
        let mut src = File::open(path).map_err(err("open"))?;
        let size = src.metadata().map_err(err("stat"))?.len();
        let fd = memfd(c"berth-supervisor").map_err(err("memfd_create"))?;
        let mut dst = File::from(fd);
        let copied = io::copy(&mut src, &mut dst).map_err(err("copy"))?;
        if copied != size {
            // Changed under us (a build or an upgrade mid-copy): refuse a
            // torn binary rather than exec it.
            return Err(err("copy")(io::Error::other(format!(
                "copied {copied} bytes of {size}"
            ))));
        }
        // SAFETY: fcntl on an fd we own, with an integer argument.
        if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
            return Err(err("seal")(io::Error::last_os_error()));
        }
        Ok(SealedExe {
            fd: dst.into(),
            source: path.to_path_buf(),
            size,
            took: start.elapsed(),
        })
    }

    /// A path that execs the copy from this process (or from a child
    /// forked before the exec: the fd is close-on-exec, and the kernel
    /// opens the file before it closes those).
    pub fn exec_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The seals the kernel reports on the copy.
    pub fn seals(&self) -> io::Result<libc::c_int> {
        // SAFETY: fcntl on an fd we own.
        let r = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_GET_SEALS) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r)
    }
}

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC)`,
/// without `MFD_EXEC` on kernels older than 6.3 (which refuse the flag
/// and make every memfd executable).
fn memfd(name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    for flags in [base | MFD_EXEC, base] {
        // SAFETY: a NUL-terminated name and integer flags.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: a new fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EINVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_is_sealed_and_identical() {
        let me = std::env::current_exe().unwrap();
        let s = SealedExe::copy_of(&me).unwrap();
        assert_eq!(s.seals().unwrap() & SEALS, SEALS);
        let copy = std::fs::read(s.exec_path()).unwrap();
        assert_eq!(copy, std::fs::read(&me).unwrap());
        // No way to write it, even by a path that reopens it.
        let w = std::fs::OpenOptions::new().write(true).open(s.exec_path());
        match w {
            Err(_) => {}
            Ok(mut f) => {
                use std::io::Write;
                assert!(f.write_all(b"x").is_err(), "a sealed memfd took a write");
            }
        }
    }

    #[test]
    fn missing_source_is_an_error_naming_it() {
        let e = SealedExe::copy_of(Path::new("/nonexistent/berth-supervisor")).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/berth-supervisor"),
            "{e}"
        );
    }
}
