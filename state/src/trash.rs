//! Deferred removal of a finished container's trees (its sandbox, its
//! rootfs dir).
//!
//! Removing a tree costs a syscall per entry, and on disk an unlink is
//! slow (about 0.1 ms each on this project's test VM; a busybox
//! container's rootfs dir and sandbox came to 2–3 ms of every
//! destroy-and-remove). Nobody waits for the blocks, only for the name: so
//! [`Trash::discard`] takes the tree out of its place with one `renameat`
//! (from its parent's fd into the trash dir's fd, on the same filesystem)
//! and a background thread removes it with [`safe_path::remove_tree`],
//! fd by fd, never following a link. Whatever a crash leaves in a trash
//! dir, the next [`Trash::sweep`] (at recovery) removes; [`flush`] waits
//! for the queue to empty (a process about to exit).
//!
//! ```
//! use berth_state::trash::{self, Trash};
//! let t = tempfile::tempdir().unwrap();
//! let base = std::fs::canonicalize(t.path()).unwrap();
//! std::fs::create_dir_all(base.join("sandboxes/c1/sub")).unwrap();
//! let bin = Trash::new(base.join("trash"));
//! bin.discard(&base.join("sandboxes/c1")).unwrap();
//! assert!(!base.join("sandboxes/c1").exists());
//! trash::flush();
//! assert_eq!(std::fs::read_dir(base.join("trash")).unwrap().count(), 0);
//! ```

use crate::safe_path::{self, SafePathError};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

/// A trash dir: where discarded trees wait for the background removal.
#[derive(Debug, Clone)]
pub struct Trash {
    dir: PathBuf,
}

#[derive(Default)]
struct Queue {
    paths: VecDeque<PathBuf>,
    /// Queued or being removed.
    pending: usize,
}

struct Worker {
    queue: Mutex<Queue>,
    /// Signalled when a path is queued (the worker) and when the queue
    /// empties (`flush`).
    changed: Condvar,
}

static W: OnceLock<&'static Worker> = OnceLock::new();

fn worker() -> &'static Worker {
    W.get_or_init(|| {
        let w: &'static Worker = Box::leak(Box::new(Worker {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("berth-trash".into())
            .spawn(move || w.run());
        if let Err(e) = spawned {
            // Without the thread every discard removes at once (`push`).
            tracing::warn!(error = %e, "no trash thread; trees are removed in place");
        }
        w
    })
}

impl Worker {
    fn run(&self) {
        loop {
            let path = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    match q.paths.pop_front() {
                        Some(p) => break p,
                        None => q = self.changed.wait(q).unwrap_or_else(|p| p.into_inner()),
                    }
                }
            };
            if let Err(e) = safe_path::remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e,
                    "cannot remove a discarded tree; the next sweep tries again");
            }
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.pending -= 1;
            if q.pending == 0 {
                self.changed.notify_all();
            }
        }
    }

    fn push(&self, path: PathBuf) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.paths.push_back(path);
        q.pending += 1;
        self.changed.notify_all();
    }
}

/// Waits until every tree discarded so far (in this process) is removed.
pub fn flush() {
    let Some(w) = W.get() else {
        return;
    };
    let mut q = w.queue.lock().unwrap_or_else(|p| p.into_inner());
    while q.pending > 0 {
        q = w.changed.wait(q).unwrap_or_else(|p| p.into_inner());
    }
}

impl Trash {
    /// The trash at `dir` (made on first use). Keep it on the filesystem
    /// of what goes into it, and out of any dir berth lists for ids.
    pub fn new(dir: impl Into<PathBuf>) -> Trash {
        Trash { dir: dir.into() }
    }

    /// The trash dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the absolute `path` out of its place (a missing one is not an
    /// error) and queues its removal. Its parent is opened with no symlink
    /// on the way; `path` itself moves as what it is (a link moves as the
    /// link). Where it cannot move into the trash (another filesystem, no
    /// trash dir), it is removed here and now.
    pub fn discard(&self, path: &Path) -> Result<(), SafePathError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return safe_path::remove_tree(path);
        };
        let from = match safe_path::open_dir(parent, None) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let to = std::fs::create_dir_all(&self.dir)
            .map_err(|_| ())
            .and_then(|()| safe_path::open_dir(&self.dir, None).map_err(|_| ()));
        let Ok(to) = to else {
            return safe_path::remove_tree(path);
        };
        let mut unique = name.to_os_string();
        unique.push(format!(
            ".{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match nix::fcntl::renameat(
            Some(from.as_raw_fd()),
            name,
            Some(to.as_raw_fd()),
            unique.as_os_str(),
        ) {
            Ok(()) => {
                worker().push(self.dir.join(unique));
                Ok(())
            }
            Err(nix::Error::ENOENT) => Ok(()),
            // EXDEV (another filesystem), EBUSY (a mount point): in place.
            Err(_) => safe_path::remove_tree(path),
        }
    }

    /// Queues the removal of everything in the trash dir: what a process
    /// that ended before its removals were done left there.
    pub fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let w = worker();
        for e in entries.flatten() {
            w.push(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safe_path::tests::base;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_discarded_tree_leaves_its_name_at_once_and_is_removed_by_flush() {
        let (_t, b) = base();
        std::fs::create_dir_all(b.join("sandboxes/x/a/b")).unwrap();
        std::fs::write(b.join("sandboxes/x/a/b/f"), "data").unwrap();
        let bin = Trash::new(b.join("trash"));
        bin.discard(&b.join("sandboxes/x")).unwrap();
        assert!(!b.join("sandboxes/x").exists());
        assert_eq!(std::fs::read_dir(b.join("sandboxes")).unwrap().count(), 0);
        // The same name again, discarded again: no clash in the trash.
        std::fs::create_dir_all(b.join("sandboxes/x")).unwrap();
        bin.discard(&b.join("sandboxes/x")).unwrap();
        flush();
        assert_eq!(std::fs::read_dir(b.join("trash")).unwrap().count(), 0);
        // Missing: not an error.
        bin.discard(&b.join("sandboxes/x")).unwrap();
        bin.discard(&b.join("nothing/here")).unwrap();
    }

    #[test]
    fn links_in_a_discarded_tree_are_removed_never_followed() {
        let (_t, b) = base();
        let outside = b.join("host");
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("dir/keep"), "host file").unwrap();
        std::fs::create_dir_all(b.join("sandboxes/x")).unwrap();
        symlink(&outside, b.join("sandboxes/x/link")).unwrap();
        symlink(outside.join("dir"), b.join("sandboxes/y")).unwrap();
        std::fs::hard_link(outside.join("dir/keep"), b.join("sandboxes/x/hard")).unwrap();
        let bin = Trash::new(b.join("trash"));
        bin.discard(&b.join("sandboxes/x")).unwrap();
        // A discarded name that is itself a link moves (and goes) as the link.
        bin.discard(&b.join("sandboxes/y")).unwrap();
        flush();
        assert_eq!(
            std::fs::read_to_string(outside.join("dir/keep")).unwrap(),
            "host file"
        );
        assert_eq!(std::fs::read_dir(b.join("sandboxes")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(b.join("trash")).unwrap().count(), 0);
    }

    #[test]
    fn a_parent_reached_through_a_link_is_refused() {
        let (_t, b) = base();
        std::fs::create_dir_all(b.join("real/x")).unwrap();
        symlink(b.join("real"), b.join("planted")).unwrap();
        let bin = Trash::new(b.join("trash"));
        let e = bin.discard(&b.join("planted/x")).unwrap_err();
        // O_NOFOLLOW on a link where a directory is wanted: ENOTDIR.
        assert!(
            matches!(e.errno(), Some(libc::ELOOP) | Some(libc::ENOTDIR)),
            "{e}"
        );
        assert!(b.join("real/x").exists());
    }

    #[test]
    fn sweep_removes_what_an_earlier_process_left() {
        let (_t, b) = base();
        std::fs::create_dir_all(b.join("trash/left.1.0/deep/er")).unwrap();
        std::fs::write(b.join("trash/left.1.1"), "f").unwrap();
        Trash::new(b.join("trash")).sweep();
        flush();
        assert_eq!(std::fs::read_dir(b.join("trash")).unwrap().count(), 0);
        // No trash dir yet: nothing to do.
        Trash::new(b.join("none")).sweep();
    }
}
