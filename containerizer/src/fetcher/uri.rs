//! [`UriFetcher`]: each URI of a config — `file://`, a plain absolute path,
//! `http://` or `https://` — lands in the sandbox under its last path
//! segment or `output_file`, directly or through the shared [`FetchCache`]
//! (`cache`); its sha256 is checked, then it is made executable or
//! extracted. All of it on the blocking pool.

use super::archive::extract;
use super::cache::{CacheOutcome, FetchCache};
use super::{source, Fetcher};
use berth_state::{ContainerId, FetchUri};
use futures::future::BoxFuture;
use std::fs;
use std::path::Path;

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

    fn fetch(
        &mut self,
        id: &ContainerId,
        uris: &[FetchUri],
        sandbox: &Path,
    ) -> BoxFuture<'static, Result<(), String>> {
        let (uris, sandbox, id) = (uris.to_vec(), sandbox.to_path_buf(), id.to_string());
        let cache = self.cache.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                for u in &uris {
                    let how = fetch_one(u, cache.as_ref(), &sandbox)
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

/// Fetches one URI; says how (for the log).
fn fetch_one(
    u: &FetchUri,
    cache: Option<&FetchCache>,
    sandbox: &Path,
) -> Result<&'static str, String> {
    let name = file_name(u)?;
    let dest = sandbox.join(&name);
    let how = if u.cache {
        let cache = cache.ok_or("`cache` asked for but this fetcher has no cache")?;
        match cache.fetch_into(&u.value, &u.sha256, &dest)? {
            CacheOutcome::Hit => "cache hit",
            CacheOutcome::Downloaded => "downloaded into the cache",
            CacheOutcome::TooLarge => "downloaded (too large for the cache)",
        }
    } else {
        source::download(&u.value, &dest, &u.sha256)?;
        "downloaded"
    };
    if u.executable {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", dest.display()))?;
    }
    if u.extract {
        extract(&dest, &name, sandbox)?;
    }
    Ok(how)
}
