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
use std::os::unix::fs::FileExt;
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
    /// The bytes copied: the part of the file exec loads (all of it
    /// unless it is ELF64).
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
    ///
    /// Sealing against writes fails with EBUSY while some page of the
    /// memfd has an extra reference the kernel waited ~75 ms for (page
    /// migration or reclaim scanning; CI saw it once on a busy VM): the
    /// copy is made again in a new memfd, twice at most.
    pub fn copy_of(path: &Path) -> Result<SealedExe, SealError> {
        let mut tries = 0;
        loop {
            match Self::copy_once(path) {
                Err(e)
                    if e.op == "seal"
                        && e.source.raw_os_error() == Some(libc::EBUSY)
                        && tries < 2 =>
                {
                    tries += 1;
                    tracing::warn!(path = %path.display(), tries, "sealing the supervisor's copy: EBUSY; copying again");
                }
                r => return r,
            }
        }
    }

    fn copy_once(path: &Path) -> Result<SealedExe, SealError> {
        let err = |op: &'static str| {
            move |source: io::Error| SealError {
                path: path.to_path_buf(),
                op,
                source,
            }
        };
        let start = Instant::now();
        let mut src = File::open(path).map_err(err("open"))?;
        let file_size = src.metadata().map_err(err("stat"))?.len();
        let image = elf_image(&src, file_size).map_err(err("read the ELF headers"))?;
        let size = image.map_or(file_size, |i| i.len);
        let fd = memfd(c"berth-supervisor").map_err(err("memfd_create"))?;
        let mut dst = File::from(fd);
        let copied =
            io::copy(&mut io::Read::take(&mut src, size), &mut dst).map_err(err("copy"))?;
        if copied != size {
            // Changed under us (a build or an upgrade mid-copy): refuse a
            // torn binary rather than exec it.
            return Err(err("copy")(io::Error::other(format!(
                "copied {copied} bytes of {size}"
            ))));
        }
        if let Some(i) = image {
            // The section headers were left behind: say there are none.
            dst.write_all_at(&[0u8; 8], i.shoff_at)
                .and_then(|_| dst.write_all_at(&[0u8; 2], i.shnum_at))
                .and_then(|_| dst.write_all_at(&[0u8; 2], i.shstrndx_at))
                .map_err(err("clear the section headers' place"))?;
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

/// Where the bytes the kernel loads end in an ELF64 little-endian file,
/// and where its header names the section headers.
#[derive(Debug, Clone, Copy)]
struct ElfImage {
    /// The end of the ELF header, the program headers and every segment's
    /// file contents: all that exec reads.
    len: u64,
    shoff_at: u64,
    shnum_at: u64,
    shstrndx_at: u64,
}

/// The loaded part of `f` if it is an ELF64 little-endian file whose
/// segments lie within its `size` bytes; `None` (copy it whole) otherwise.
///
/// Only that part is copied: the rest (debug info, symbols, section
/// headers: 95% of a release supervisor) is never mapped, and copying it
/// made each launcher's first launch 15–30 ms slower and its memfd 15 MiB
/// larger. The price: a panicking supervisor's backtrace has no symbols.
fn elf_image(f: &File, size: u64) -> io::Result<Option<ElfImage>> {
    let mut h = [0u8; 64];
    if size < 64 {
        return Ok(None);
    }
    f.read_exact_at(&mut h, 0)?;
    // ELFCLASS64, ELFDATA2LSB.
    if h[..4] != *b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return Ok(None);
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u64_at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let (phoff, phentsize, phnum) = (u64_at(&h, 0x20), u16_at(&h, 0x36), u16_at(&h, 0x38));
    let table_end = phentsize
        .checked_mul(phnum)
        .and_then(|n| n.checked_add(phoff));
    let Some(table_end) = table_end.filter(|e| *e <= size && phentsize >= 56) else {
        return Ok(None);
    };
    let mut table = vec![0u8; (table_end - phoff) as usize];
    f.read_exact_at(&mut table, phoff)?;
    let mut len = table_end.max(64);
    for ph in table.chunks_exact(phentsize as usize) {
        // p_offset at 0x08, p_filesz at 0x20.
        let Some(end) = u64_at(ph, 0x08).checked_add(u64_at(ph, 0x20)) else {
            return Ok(None);
        };
        len = len.max(end);
    }
    if len > size {
        return Ok(None);
    }
    Ok(Some(ElfImage {
        len,
        shoff_at: 0x28,
        shnum_at: 0x3c,
        shstrndx_at: 0x3e,
    }))
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
    fn copy_is_sealed_loaded_part_only_and_runs() {
        let me = std::env::current_exe().unwrap();
        let s = SealedExe::copy_of(&me).unwrap();
        assert_eq!(s.seals().unwrap() & SEALS, SEALS);
        let (copy, orig) = (
            std::fs::read(s.exec_path()).unwrap(),
            std::fs::read(&me).unwrap(),
        );
        // A test binary has debug info: left behind.
        assert!(copy.len() < orig.len(), "{} of {}", copy.len(), orig.len());
        assert_eq!(copy[..0x28], orig[..0x28]);
        assert_eq!(copy[0x40..], orig[0x40..copy.len()]);
        // No way to write it, even by a path that reopens it.
        let w = std::fs::OpenOptions::new().write(true).open(s.exec_path());
        if let Ok(mut f) = w {
            use std::io::Write;
            assert!(f.write_all(b"x").is_err(), "a sealed memfd took a write");
        }
        // And it runs: this test binary lists this very test.
        let out = std::process::Command::new(s.exec_path())
            .args([
                "--list",
                "--exact",
                "sealed::tests::copy_is_sealed_loaded_part_only_and_runs",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("copy_is_sealed"),
            "{out:?}"
        );
    }

    #[test]
    fn a_file_that_is_not_elf64_is_copied_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("script");
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        let s = SealedExe::copy_of(&p).unwrap();
        assert_eq!(
            std::fs::read(s.exec_path()).unwrap(),
            std::fs::read(&p).unwrap()
        );
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
