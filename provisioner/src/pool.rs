//! A warm pool of overlay rootfs (`ImageProvisioner::with_rootfs_pool`).
//!
//! An overlay rootfs costs a launch its directories (`l/` with a link per
//! layer, `upper`, `work`, `rootfs`: inodes on disk) and the overlay
//! mount, whose setup makes and removes more inodes in the work dir
//! (its `work/`, a whiteout and xattr probe, `incompat/volatile`): about
//! 1–2 ms of every launch on this project's test VM. None of it depends
//! on the container, only on its image's layers. A pooled entry is that
//! rootfs made ahead of time in `<store>/pool/<pid>-<start time>-<n>`,
//! for the lower layers of an image launched recently; a provision of
//! the same layers renames an entry to the container's dir (one
//! `rename`, the mount follows its directory) and a thread makes the
//! replacement off the launch's path.
//!
//! An unclaimed entry holds no container: [`RootfsPool::close`] (the
//! agent's stop) unmounts and discards every entry, and a process that
//! died leaves entries that the next recovery sweeps
//! ([`sweep`]). A prune takes the store's content lock exclusively and
//! empties the pool first, so no entry holds a layer it removes.
//!
//! A process that launches one container (`berth run`) keeps a pool of
//! one made *once*: its thread resolves the image given up front and makes
//! one entry while the process opens its store and recovers; the launch
//! takes it and nothing is made after ([`RootfsPool::start_once`]).

use crate::overlay;
use crate::provisioner::ContainerImage;
use crate::store::Store;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// How many images' layer lists the pool keeps entries for (the most
/// recently launched).
const KEYS: usize = 2;

/// What an entry is for: an image's lower dirs, bottom first, and the
/// `container.json` its entries carry (a prune, in this process or
/// another, reads it and keeps their image and layers; a launch that
/// takes one keeps it).
#[derive(Clone, PartialEq)]
struct Key {
    lowers: Vec<PathBuf>,
    meta: Vec<u8>,
}

impl Key {
    fn of(lowers: &[PathBuf], meta: &ContainerImage) -> Key {
        Key {
            lowers: lowers.to_vec(),
            meta: serde_json::to_vec_pretty(meta).expect("serialisable"),
        }
    }
}

#[derive(Default)]
struct State {
    /// Mounted entries and the layers they were made of.
    ready: Vec<(Key, PathBuf)>,
    /// The images launched most recently, newest last.
    recent: VecDeque<Key>,
    /// A pool made once was taken from: it makes nothing more.
    taken: bool,
    closed: bool,
}

/// Entry names are unique in the process, across pools (a bench or an
/// embedder may open more than one provisioner on a store).
static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Shared {
    dir: PathBuf,
    size: usize,
    /// One entry for the image resolved first, none after a take.
    once: bool,
    store: Arc<Store>,
    state: Mutex<State>,
    wake: Condvar,
}

/// The pool and its refill thread.
pub(crate) struct RootfsPool {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for RootfsPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootfsPool")
            .field("dir", &self.shared.dir)
            .field("size", &self.shared.size)
            .finish()
    }
}

/// Where the entries live: beside `containers`, on the same filesystem
/// (a claim is a rename).
pub(crate) fn dir(store: &Store) -> PathBuf {
    store.root().join("pool")
}

/// Where the store's removed dirs wait for the trash thread (beside
/// `containers`, whose names are ids).
pub(crate) fn store_trash(store: &Store) -> berth_state::trash::Trash {
    berth_state::trash::Trash::new(store.root().join("trash"))
}

/// The names of this process's entries begin with its pid and start time
/// (`<pid>-<start>-`): a dead process's entries are never taken for this
/// one's when this one got its pid.
fn own_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let pid = std::process::id() as i32;
        let start = berth_state::ProcessRef::of(pid)
            .ok()
            .flatten()
            .map(|p| p.start_time)
            .unwrap_or_default();
        format!("{pid}-{start}-")
    })
}

/// Unmounts and discards every entry under `<store>/pool` but this
/// process's own (blocking): a dead process's, at recovery. Its own may be
/// in the making while it recovers (`berth run`'s, made ahead).
pub(crate) fn sweep(store: &Store, trash: &berth_state::trash::Trash) {
    let Ok(entries) = std::fs::read_dir(dir(store)) else {
        return;
    };
    let own = own_prefix();
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(own) {
            continue;
        }
        discard(trash, &e.path());
    }
}

/// What a pool made once is for: the image's lower dirs and the
/// `container.json` template of its entries, resolved on the pool's
/// thread (`None`: nothing to make, e.g. the image is not in the store).
pub(crate) type Resolve = Box<dyn FnOnce() -> Option<(Vec<PathBuf>, ContainerImage)> + Send>;

/// The images and layers the entries under `<store>/pool` hold (their
/// `container.json`), for a prune.
pub(crate) fn in_use(store: &Store) -> Vec<ContainerImage> {
    let Ok(entries) = std::fs::read_dir(dir(store)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("container.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

fn discard(trash: &berth_state::trash::Trash, entry: &Path) {
    if let Err(e) = overlay::unmount(&entry.join("rootfs")) {
        tracing::warn!(entry = %entry.display(), error = %e, "pooled rootfs: unmount failed");
        return;
    }
    if let Err(e) = trash.discard(entry) {
        tracing::warn!(entry = %entry.display(), error = %e, "pooled rootfs: discard failed");
    }
}

impl RootfsPool {
    /// `size` entries per recently launched image (the refill thread
    /// starts now and makes nothing until a first provision).
    pub(crate) fn start(store: Arc<Store>, size: usize) -> std::io::Result<RootfsPool> {
        Self::spawn(store, size, None)
    }

    /// One entry, of what `resolve` names, made now on the pool's thread;
    /// the first take (of any image) ends the pool's making.
    pub(crate) fn start_once(store: Arc<Store>, resolve: Resolve) -> std::io::Result<RootfsPool> {
        Self::spawn(store, 1, Some(resolve))
    }

    fn spawn(
        store: Arc<Store>,
        size: usize,
        first: Option<Resolve>,
    ) -> std::io::Result<RootfsPool> {
        let shared = Arc::new(Shared {
            dir: dir(&store),
            size,
            once: first.is_some(),
            store,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("berth-rootfs-pool".into())
            .spawn(move || {
                if let Some(resolve) = first {
                    if let Some((lowers, meta)) = resolve() {
                        let key = Key::of(&lowers, &meta);
                        let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
                        // A launch may have come first: then it made its own.
                        if !st.taken {
                            st.recent.push_back(key);
                        }
                    }
                }
                refill(&s)
            })?;
        Ok(RootfsPool {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A mounted entry of `lowers` whose `container.json` is `meta`, if
    /// one is ready; either way that image is now the most recent one and
    /// the thread tops it up (a pool made once makes nothing more).
    pub(crate) fn take(&self, lowers: &[PathBuf], meta: &ContainerImage) -> Option<PathBuf> {
        let key = Key::of(lowers, meta);
        let mut st = self.state();
        if st.closed {
            return None;
        }
        st.recent.retain(|k| *k != key);
        if self.shared.once {
            // Nothing more to make: an entry still in the making (or of
            // another image) is discarded by the thread as unwanted.
            st.taken = true;
            st.recent.clear();
        } else {
            st.recent.push_back(key.clone());
        }
        while st.recent.len() > KEYS {
            st.recent.pop_front();
        }
        let taken = st
            .ready
            .iter()
            .position(|(k, _)| *k == key)
            .map(|i| st.ready.swap_remove(i).1);
        drop(st);
        self.shared.wake.notify_one();
        taken
    }

    /// Unmounts and discards the ready entries (blocking); the pool goes
    /// on (a prune, which holds the content lock meanwhile).
    pub(crate) fn drain(&self, trash: &berth_state::trash::Trash) {
        let ready = std::mem::take(&mut self.state().ready);
        for (_, entry) in ready {
            discard(trash, &entry);
        }
    }

    /// Stops the refill thread and empties the pool (blocking). Later
    /// provisions build their rootfs themselves.
    pub(crate) fn close(&self, trash: &berth_state::trash::Trash) {
        self.state().closed = true;
        self.shared.wake.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        self.drain(trash);
    }
}

impl Drop for RootfsPool {
    /// The last provisioner holding the pool is gone: nothing may stay
    /// mounted for it.
    fn drop(&mut self) {
        self.close(&store_trash(&self.shared.store));
    }
}

/// The refill thread: makes an entry for the newest layer list short of
/// `size`, one at a time, until closed.
fn refill(s: &Shared) {
    let trash = store_trash(&s.store);
    loop {
        let (key, entry) = {
            let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if st.closed {
                    return;
                }
                // Entries of an image no longer among the recent ones.
                let (keep, stale): (Vec<_>, Vec<_>) = std::mem::take(&mut st.ready)
                    .into_iter()
                    .partition(|(k, _)| st.recent.contains(k));
                st.ready = keep;
                if !stale.is_empty() {
                    drop(st);
                    for (_, entry) in stale {
                        discard(&trash, &entry);
                    }
                    st = s.state.lock().unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                let short = st
                    .recent
                    .iter()
                    .rev()
                    .find(|r| st.ready.iter().filter(|(k, _)| k == *r).count() < s.size);
                if let Some(k) = short.cloned() {
                    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    let entry = s.dir.join(format!("{}{n}", own_prefix()));
                    break (k, entry);
                }
                st = s.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        // Shared with provisions, exclusive with a prune: no entry is made
        // of layers a prune is removing.
        // Made under another name, renamed once it is ready to be taken:
        // an entry by its final name is one a provision can find.
        let making = entry.with_extension("making");
        let made = s.store.flock("content", false).and_then(|_lock| {
            std::fs::create_dir_all(&making).map_err(crate::error::io("create", &making))?;
            // First, as for a container: a prune reads it.
            crate::store::write_replacing(&making.join("container.json"), &key.meta, false)?;
            overlay::mount_rootfs(&making, &key.lowers)
        });
        let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = st.recent.contains(&key);
        match made {
            Ok(()) if !st.closed && wanted => match std::fs::rename(&making, &entry) {
                Ok(()) => st.ready.push((key, entry)),
                Err(e) => {
                    drop(st);
                    tracing::warn!(entry = %making.display(), error = %e, "pooled rootfs not made");
                    discard(&trash, &making);
                }
            },
            Ok(()) => {
                drop(st);
                discard(&trash, &making);
            }
            Err(e) => {
                // Not retried until that image is launched again (its
                // layers pruned, the disk full): the launch makes its own.
                tracing::warn!(entry = %making.display(), error = %e, "pooled rootfs not made");
                st.recent.retain(|k| *k != key);
                drop(st);
                discard(&trash, &making);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_keeps_only_this_process_s_entries() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let pool = dir(&store);
        let pid = std::process::id();
        let ours = pool.join(format!("{}7", own_prefix()));
        // Another process that had this pid (another start time), and one
        // named as berth named entries before the start time was in it.
        let reused = pool.join(format!("{pid}-1-7"));
        let older = pool.join(format!("{pid}-7"));
        for d in [&ours, &reused, &older] {
            std::fs::create_dir_all(d.join("rootfs")).unwrap();
        }
        let trash = store_trash(&store);
        sweep(&store, &trash);
        berth_state::trash::flush();
        assert!(ours.is_dir());
        assert!(!reused.exists() && !older.exists());
    }
}
