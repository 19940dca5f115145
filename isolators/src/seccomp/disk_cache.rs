//! Compiled programs kept on disk, so that a cold start (`berth run`, a
//! fresh agent) skips libseccomp's compile (about 15 ms of CPU for the
//! built-in profile). Files live in a dir of berth's own (the runtime dir,
//! a tmpfs that a reboot — and so a kernel change — empties), named by
//! the SHA-256 of everything the program depends on: berth's version, the
//! kernel release, the capabilities and the profile. Written to a unique
//! temp file and renamed, so a reader never sees half a program; anything
//! that does not look like one is ignored and compiled again.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;

/// `struct sock_filter` is 8 bytes; a program has at most 4096 of them.
const INSN: usize = 8;
const MAX_INSNS: usize = 4096;

/// The cache's dir; created on first write.
#[derive(Debug, Clone)]
pub(crate) struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> DiskCache {
        DiskCache { dir: dir.into() }
    }

    /// The file name for a program of `profile` (its text, or a name for
    /// the built-in one) under capabilities `caps`.
    pub(crate) fn key(profile: &str, caps: &[String]) -> String {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut h = Sha256::new();
        for part in [env!("CARGO_PKG_VERSION"), std::env::consts::ARCH, &release] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(caps.join(",").as_bytes());
        h.update([0]);
        h.update(profile.as_bytes());
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}.bpf")
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The program stored under `key`, if one that looks whole is there.
    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        let b = std::fs::read(self.path(key)).ok()?;
        (!b.is_empty() && b.len().is_multiple_of(INSN) && b.len() / INSN <= MAX_INSNS).then_some(b)
    }

    /// Stores `bpf` under `key`; a failure only costs the next start a
    /// compile, so it is logged and dropped.
    pub(crate) fn put(&self, key: &str, bpf: &[u8]) {
        if let Err(e) = self.write(key, bpf) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "seccomp program not cached");
        }
    }

    fn write(&self, key: &str, bpf: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let tmp = self.dir.join(format!(
            ".{key}.{}.{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        let done = f
            .write_all(bpf)
            .and_then(|()| std::fs::rename(&tmp, self.path(key)));
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_round_trips_and_junk_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::new(dir.path().join("seccomp"));
        let caps = vec!["CAP_CHOWN".to_string()];
        let k = DiskCache::key("builtin", &caps);
        assert_ne!(k, DiskCache::key("builtin", &[]));
        assert_eq!(c.get(&k), None);
        let bpf = vec![6u8, 0, 0, 0, 0, 0, 0xff, 0x7f];
        c.put(&k, &bpf);
        assert_eq!(c.get(&k), Some(bpf));
        std::fs::write(c.path(&k), b"half").unwrap();
        assert_eq!(c.get(&k), None);
    }
}
