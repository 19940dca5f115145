//! The shared fetch cache (Mesos's fetcher cache): a URI fetched with
//! `cache` is downloaded once into `<dir>/entries/<sha256 of the URI>` and
//! copied into each sandbox from there.
//!
//! Several fetches of one URI — in one agent or in several `berth run`
//! processes on the same root — download it once: each entry has a lock
//! file (`flock`), and whoever holds it downloads while the others wait,
//! then find the entry. The cache's size is bounded: after a download the
//! least recently used entries (by the entry's mtime, touched on every
//! use) are evicted, skipping any whose lock is held. A file larger than
//! the whole cache is fetched but not kept.

use super::source::{self, hex};
use crate::metrics::CacheCounters;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

/// The default size limit: 2 GiB, as Mesos's `--fetcher_cache_size`.
pub const DEFAULT_CACHE_SIZE: u64 = 2 << 30;

/// A fetch cache in a directory, with a size limit in bytes.
#[derive(Debug, Clone)]
pub struct FetchCache {
    dir: PathBuf,
    limit: u64,
    /// Hits and misses of this cache and its clones.
    counters: Arc<CacheCounters>,
}

/// How a cached fetch went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The entry was there; nothing was downloaded.
    Hit,
    /// The URI was downloaded into the cache.
    Downloaded,
    /// The URI was downloaded but is larger than the whole cache, so it
    /// was not kept.
    TooLarge,
}

impl FetchCache {
    /// A cache in `dir` (made on first use) holding at most `limit` bytes.
    pub fn new(dir: impl Into<PathBuf>, limit: u64) -> Self {
        FetchCache {
            dir: dir.into(),
            limit,
            counters: Arc::default(),
        }
    }

    /// Its hits and misses (shared with its clones).
    pub fn counters(&self) -> Arc<CacheCounters> {
        self.counters.clone()
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entries(&self) -> PathBuf {
        self.dir.join("entries")
    }

    fn locks(&self) -> PathBuf {
        self.dir.join("locks")
    }

    /// Copies `uri`'s content to `dest`, from the cache when it holds it
    /// (and its sha256 is `expect`, when given), else downloading it into
    /// the cache first. Blocking.
    pub fn fetch_into(&self, uri: &str, expect: &str, dest: &Path) -> Result<CacheOutcome, String> {
        let mut out =
            fs::File::create(dest).map_err(|e| format!("create {}: {e}", dest.display()))?;
        self.fetch_to(uri, expect, &mut out, dest)
    }

    /// As [`FetchCache::fetch_into`], into the open file `out` (`dest`
    /// names it in messages).
    pub fn fetch_to(
        &self,
        uri: &str,
        expect: &str,
        out: &mut fs::File,
        dest: &Path,
    ) -> Result<CacheOutcome, String> {
        for d in [self.entries(), self.locks()] {
            fs::create_dir_all(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        let key = hex(&Sha256::digest(uri.as_bytes()));
        let _held = lock(
            &self.locks().join(format!("{key}.lock")),
            FlockArg::LockExclusive,
        )?
        .expect("a blocking lock is always taken");
        let blob = self.entries().join(&key);
        let sum_file = self.entries().join(format!("{key}.sha256"));
        let cached = fs::read_to_string(&sum_file)
            .ok()
            .filter(|_| blob.is_file());
        let outcome = match cached {
            Some(sum) if expect.is_empty() || expect.eq_ignore_ascii_case(sum.trim()) => {
                touch(&blob);
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                CacheOutcome::Hit
            }
            other => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                if other.is_some() {
                    // The source changed since it was cached (or the
                    // config's checksum is wrong): fetch it again, and
                    // the new content is checked.
                    tracing::info!(uri, "cached copy has another sha256; fetching again");
                }
                self.download(uri, expect, &key)?
            }
        };
        fs::File::open(&blob)
            .and_then(|mut b| std::io::copy(&mut b, out))
            .map_err(|e| format!("copy {} to {}: {e}", blob.display(), dest.display()))?;
        if outcome == CacheOutcome::TooLarge {
            remove_entry(&self.entries(), &key);
        }
        if outcome != CacheOutcome::Hit {
            self.evict(&key)?;
        }
        Ok(outcome)
    }

    /// Downloads into the entry `key` (its lock held).
    fn download(&self, uri: &str, expect: &str, key: &str) -> Result<CacheOutcome, String> {
        let entries = self.entries();
        remove_entry(&entries, key);
        // Only the lock holder writes an entry, so any temp file here was
        // left by a fetch that died.
        let tmp = entries.join(format!("{key}.tmp"));
        let w = source::download(uri, &tmp, expect)?;
        let sum_tmp = entries.join(format!("{key}.sha256.tmp"));
        fs::write(&sum_tmp, &w.sha256).map_err(|e| format!("write {}: {e}", sum_tmp.display()))?;
        // The blob first, its checksum last: an entry is complete only
        // when both are there.
        rename(&tmp, &entries.join(key))?;
        rename(&sum_tmp, &entries.join(format!("{key}.sha256")))?;
        tracing::info!(uri, size = w.size, "downloaded into the fetch cache");
        Ok(if w.size > self.limit {
            tracing::warn!(
                uri,
                size = w.size,
                limit = self.limit,
                "larger than the whole fetch cache; not kept"
            );
            CacheOutcome::TooLarge
        } else {
            CacheOutcome::Downloaded
        })
    }

    /// Evicts least recently used entries until the cache fits its limit.
    /// `keep` (the entry just fetched) and entries in use stay.
    fn evict(&self, keep: &str) -> Result<(), String> {
        // One evictor at a time, so two never count each other's removals.
        let _evicting = lock(&self.dir.join("evict.lock"), FlockArg::LockExclusive)?;
        let entries = self.entries();
        let mut all = list(&entries)?;
        let mut total: u64 = all.iter().map(|e| e.size).sum();
        all.sort_by_key(|e| e.used);
        for e in all {
            if total <= self.limit {
                break;
            }
            if e.key == keep {
                continue;
            }
            let lock_path = self.locks().join(format!("{}.lock", e.key));
            // A fetch waiting on or holding this entry keeps it.
            let Some(_held) = lock(&lock_path, FlockArg::LockExclusiveNonblock)? else {
                continue;
            };
            remove_entry(&entries, &e.key);
            total = total.saturating_sub(e.size);
            tracing::info!(key = %e.key, size = e.size, "evicted from the fetch cache");
        }
        Ok(())
    }
}

struct Entry {
    key: String,
    size: u64,
    used: SystemTime,
}

/// The complete entries (a blob and its checksum) in `entries`.
fn list(entries: &Path) -> Result<Vec<Entry>, String> {
    let rd = fs::read_dir(entries).map_err(|e| format!("read {}: {e}", entries.display()))?;
    let mut out = Vec::new();
    for d in rd.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let Ok(md) = d.metadata() else { continue };
        if !entries.join(format!("{name}.sha256")).exists() {
            continue;
        }
        out.push(Entry {
            key: name,
            size: md.len(),
            used: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    Ok(out)
}

fn remove_entry(entries: &Path, key: &str) {
    for suffix in [".sha256", "", ".tmp", ".sha256.tmp"] {
        let _ = fs::remove_file(entries.join(format!("{key}{suffix}")));
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    fs::rename(from, to).map_err(|e| format!("rename {} to {}: {e}", from.display(), to.display()))
}

/// Marks an entry used now (the LRU order).
fn touch(blob: &Path) {
    if let Ok(f) = fs::File::options().write(true).open(blob) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Takes `how` on the lock file `path`; None when a non-blocking lock is
/// held by someone else.
fn lock(path: &Path, how: FlockArg) -> Result<Option<Flock<fs::File>>, String> {
    let f = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    match Flock::lock(f, how) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(format!("flock {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(limit: u64) -> (tempfile::TempDir, FetchCache, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let c = FetchCache::new(t.path().join("cache"), limit);
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        (t, c, src)
    }

    fn file(dir: &Path, name: &str, len: usize) -> String {
        let p = dir.join(name);
        fs::write(&p, vec![b'x'; len]).unwrap();
        p.display().to_string()
    }

    #[test]
    fn a_second_fetch_is_a_hit_and_lru_entries_are_evicted_over_the_limit() {
        let (t, c, src) = cache(250);
        let dest = t.path().join("out");
        let (a, b, d) = (
            file(&src, "a", 100),
            file(&src, "b", 100),
            file(&src, "d", 100),
        );
        assert_eq!(
            c.fetch_into(&a, "", &dest).unwrap(),
            CacheOutcome::Downloaded
        );
        assert_eq!(c.fetch_into(&a, "", &dest).unwrap(), CacheOutcome::Hit);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            c.fetch_into(&b, "", &dest).unwrap(),
            CacheOutcome::Downloaded
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        // a is used again, so b is now the least recently used.
        assert_eq!(c.fetch_into(&a, "", &dest).unwrap(), CacheOutcome::Hit);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            c.fetch_into(&d, "", &dest).unwrap(),
            CacheOutcome::Downloaded
        );
        assert_eq!(c.fetch_into(&a, "", &dest).unwrap(), CacheOutcome::Hit);
        assert_eq!(c.fetch_into(&d, "", &dest).unwrap(), CacheOutcome::Hit);
        // The metrics' counters, shared with clones of the cache.
        let n = c.clone().counters();
        assert_eq!(n.hits.load(Ordering::Relaxed), 4);
        assert_eq!(n.misses.load(Ordering::Relaxed), 3);
        let kept = list(&c.entries()).unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(
            c.fetch_into(&b, "", &dest).unwrap(),
            CacheOutcome::Downloaded
        );
    }

    #[test]
    fn a_file_larger_than_the_cache_is_fetched_but_not_kept() {
        let (t, c, src) = cache(50);
        let dest = t.path().join("out");
        let big = file(&src, "big", 100);
        assert_eq!(
            c.fetch_into(&big, "", &dest).unwrap(),
            CacheOutcome::TooLarge
        );
        assert_eq!(fs::read(&dest).unwrap().len(), 100);
        assert!(list(&c.entries()).unwrap().is_empty());
    }

    #[test]
    fn a_changed_checksum_fetches_again_and_a_mismatch_keeps_nothing() {
        let (t, c, src) = cache(1000);
        let dest = t.path().join("out");
        let a = file(&src, "a", 10);
        let sum = hex(&Sha256::digest([b'x'; 10]));
        assert_eq!(
            c.fetch_into(&a, &sum, &dest).unwrap(),
            CacheOutcome::Downloaded
        );
        assert_eq!(c.fetch_into(&a, &sum, &dest).unwrap(), CacheOutcome::Hit);
        fs::write(src.join("a"), b"changed").unwrap();
        let err = c.fetch_into(&a, &"0".repeat(64), &dest).unwrap_err();
        assert!(err.contains("sha256 mismatch"), "{err}");
        assert!(list(&c.entries()).unwrap().is_empty());
        let left: Vec<_> = fs::read_dir(c.entries()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn concurrent_fetches_of_one_uri_download_once() {
        let (t, c, src) = cache(1 << 20);
        let a = file(&src, "a", 1 << 16);
        let outcomes: Vec<CacheOutcome> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let (c, a, dest) = (&c, &a, t.path().join(format!("out{i}")));
                    s.spawn(move || c.fetch_into(a, "", &dest).unwrap())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let downloads = outcomes
            .iter()
            .filter(|o| **o == CacheOutcome::Downloaded)
            .count();
        assert_eq!(downloads, 1, "{outcomes:?}");
    }
}
