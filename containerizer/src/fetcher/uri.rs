//! [`UriFetcher`]: each URI of a config — `file://`, a plain absolute path,
//! `http://` or `https://` — lands in the sandbox under its last path
//! segment or `output_file`, directly or through the shared [`FetchCache`]
//! (`cache`); its sha256 is checked, then it is made executable or
//! extracted. All of it on the blocking pool.

use super::archive::extract;
use super::cache::{CacheOutcome, FetchCache};
use super::{source, Fetcher};
use berth_state::safe_path;
use berth_state::{ContainerId, FetchUri};
use futures::future::BoxFuture;
use std::io::{Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The fetcher `berth run` and `berth agent` use.
///
/// ```
/// use berth::{FetchCache, UriFetcher, DEFAULT_CACHE_SIZE};
/// let fetcher = UriFetcher::new(Some(FetchCache::new(
///     "/var/lib/berth/fetch-cache",
///     DEFAULT_CACHE_SIZE,
/// )));
/// # let _ = berth::Containerizer::builder("/tmp/x", "/tmp/y").fetcher(fetcher);
/// ```
#[derive(Debug, Default, Clone)]
pub struct UriFetcher {
    cache: Option<FetchCache>,
}

impl UriFetcher {
    /// A fetcher; URIs asking for `cache` are refused without one.
    pub fn new(cache: Option<FetchCache>) -> Self {
        UriFetcher { cache }
    }
}

impl Fetcher for UriFetcher {
    fn supported(&self) -> bool {
        true
    }

    fn cache_counters(&self) -> Option<std::sync::Arc<crate::metrics::CacheCounters>> {
        self.cache.as_ref().map(FetchCache::counters)
    }

    fn fetch(
        &mut self,
        id: &ContainerId,
        uris: &[FetchUri],
        sandbox: &Path,
    ) -> BoxFuture<'static, Result<(), String>> {
        if uris.is_empty() {
            // Nothing to fetch: no trip through the blocking pool (a launch
            // waits on this step).
            return Box::pin(async { Ok(()) });
        }
        let (uris, sandbox, id) = (uris.to_vec(), sandbox.to_path_buf(), id.to_string());
        let cache = self.cache.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                // The sandbox may lie in a parent container's: it is opened
                // with no symlink on the way, and written through its fd.
                let dir = safe_path::open_dir(&sandbox, None).map_err(|e| e.to_string())?;
                for u in &uris {
                    let how = fetch_one(u, cache.as_ref(), &dir, &sandbox)
                        .map_err(|e| format!("fetch {}: {e}", u.value))?;
                    tracing::info!(container = %id, uri = %u.value, how, "fetched");
                }
                Ok(())
            })
            .await
            .map_err(|e| format!("fetch task failed: {e}"))?
        })
    }
}

/// The file name in the sandbox: `output_file`, or the URI's last segment.
fn file_name(u: &FetchUri) -> Result<String, String> {
    let name = if u.output_file.is_empty() {
        let path = u.value.split(['?', '#']).next().unwrap_or_default();
        path.rsplit('/').next().unwrap_or_default().to_string()
    } else {
        u.output_file.clone()
    };
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(format!(
            "{name:?} is not a file name for the sandbox (give output_file=NAME)"
        ));
    }
    Ok(name)
}

/// Fetches one URI; says how (for the log). The content goes to a new
/// temp file in the sandbox, then is renamed over the name: a link a
/// container put at that name is replaced, never written through.
fn fetch_one(
    u: &FetchUri,
    cache: Option<&FetchCache>,
    dir: &OwnedFd,
    sandbox: &Path,
) -> Result<&'static str, String> {
    let name = file_name(u)?;
    let dest = sandbox.join(&name);
    let tmp_name = PathBuf::from(format!(".berth-fetch-{name}"));
    let tmp_shown = sandbox.join(&tmp_name);
    let _ = safe_path::remove_at(dir, tmp_name.as_os_str(), &tmp_shown);
    let mode = if u.executable { 0o755 } else { 0o644 };
    let mut out =
        safe_path::create_file_rw(dir, &tmp_name, mode, &tmp_shown).map_err(|e| e.to_string())?;
    let fetched = (|| {
        let how = if u.cache {
            let cache = cache.ok_or("`cache` asked for but this fetcher has no cache")?;
            match cache.fetch_to(&u.value, &u.sha256, &mut out, &dest)? {
                CacheOutcome::Hit => "cache hit",
                CacheOutcome::Downloaded => "downloaded into the cache",
                CacheOutcome::TooLarge => "downloaded (too large for the cache)",
            }
        } else {
            let w = source::copy_hashing_to(&u.value, &mut out, &dest)?;
            if !u.sha256.is_empty() && !u.sha256.eq_ignore_ascii_case(&w.sha256) {
                return Err(format!(
                    "sha256 mismatch: expected {}, got {}",
                    u.sha256.to_ascii_lowercase(),
                    w.sha256
                ));
            }
            "downloaded"
        };
        // The umask may have narrowed the create mode.
        out.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", dest.display()))?;
        safe_path::rename_at(dir, &tmp_name, Path::new(&name), &dest).map_err(|e| e.to_string())?;
        Ok(how)
    })();
    let how = match fetched {
        Ok(how) => how,
        Err(e) => {
            let _ = safe_path::remove_at(dir, tmp_name.as_os_str(), &tmp_shown);
            return Err(e);
        }
    };
    if u.extract {
        out.seek(SeekFrom::Start(0))
            .map_err(|e| format!("rewind {}: {e}", dest.display()))?;
        let root = dir
            .try_clone()
            .map_err(|e| format!("dup the sandbox fd: {e}"))?;
        extract(out, &name, root, sandbox)?;
    }
    Ok(how)
}
