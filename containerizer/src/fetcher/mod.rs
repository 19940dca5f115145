//! The FETCHING stage: puts a config's URIs into the sandbox before the
//! command runs (Mesos's fetcher). One file per mechanism:
//!
//! - `actor`: the fetcher runs in its own actor, so a slow download never
//!   holds the containerizer's mailbox;
//! - `uri`: [`UriFetcher`], the fetcher `berth run` and `berth agent` use;
//! - `source`: opening `file://`, plain paths, `http://` and `https://`;
//! - `cache`: [`FetchCache`], the shared cache (size limit, LRU eviction,
//!   one download per URI however many fetch it at once);
//! - `archive`: extraction with the image layers' no-escape unpacker.
//!
//! A fetcher is pluggable: implement [`Fetcher`] and hand it to
//! [`crate::ContainerizerBuilder::fetcher`].

mod actor;
mod archive;
mod cache;
mod source;
mod uri;

pub(crate) use actor::FetcherHandle;
pub use cache::{CacheOutcome, FetchCache, DEFAULT_CACHE_SIZE};
pub use uri::UriFetcher;

use crate::metrics::CacheCounters;
use berth_state::{ContainerId, FetchUri};
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;

/// Fetches URIs into a sandbox. Runs inside the fetcher's actor; blocking
/// work must go to a blocking pool.
///
/// ```
/// use berth::{state::FetchUri, ContainerId, Fetcher};
/// use futures::future::BoxFuture;
/// use std::path::Path;
///
/// /// Writes each URI's text into the sandbox as `uri-N`.
/// struct Echo;
///
/// impl Fetcher for Echo {
///     fn supported(&self) -> bool {
///         true
///     }
///     fn fetch(
///         &mut self,
///         _id: &ContainerId,
///         uris: &[FetchUri],
///         sandbox: &Path,
///     ) -> BoxFuture<'static, Result<(), String>> {
///         let (uris, sandbox) = (uris.to_vec(), sandbox.to_path_buf());
///         Box::pin(async move {
///             tokio::task::spawn_blocking(move || {
///                 for (n, u) in uris.iter().enumerate() {
///                     std::fs::write(sandbox.join(format!("uri-{n}")), &u.value)
///                         .map_err(|e| format!("write uri-{n}: {e}"))?;
///                 }
///                 Ok(())
///             })
///             .await
///             .map_err(|e| e.to_string())?
///         })
///     }
/// }
/// # let _ = berth::Containerizer::builder("/tmp/x", "/tmp/y").fetcher(Echo);
/// ```
pub trait Fetcher: Send + 'static {
    /// Whether this fetcher can fetch anything (configs with URIs are
    /// refused when it cannot).
    fn supported(&self) -> bool;

    /// Fetches `uris` into `sandbox`; the error message fails the launch
    /// (reason START_ERROR).
    fn fetch(
        &mut self,
        id: &ContainerId,
        uris: &[FetchUri],
        sandbox: &Path,
    ) -> BoxFuture<'static, Result<(), String>>;

    /// The hit and miss counters of this fetcher's cache, if it has one
    /// (the agent's `berth_fetch_cache_*` metrics).
    fn cache_counters(&self) -> Option<Arc<CacheCounters>> {
        None
    }
}

/// Fetches nothing: configs with URIs are refused at STARTING. The default
/// of an embedded containerizer.
#[derive(Debug, Default)]
pub struct NoFetcher;

impl Fetcher for NoFetcher {
    fn supported(&self) -> bool {
        false
    }
    fn fetch(
        &mut self,
        _id: &ContainerId,
        uris: &[FetchUri],
        _sandbox: &Path,
    ) -> BoxFuture<'static, Result<(), String>> {
        let n = uris.len();
        Box::pin(async move {
            if n == 0 {
                Ok(())
            } else {
                Err(format!("{n} URIs given but no fetcher is configured"))
            }
        })
    }
}
