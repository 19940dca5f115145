//! The FETCHING stage's component: puts a config's URIs into the sandbox
//! before the command runs. The real fetcher (http, archives, cache) is
//! its own issue; until then [`NoFetcher`] backs no URIs, and configs with
//! URIs are refused at STARTING.

use berth_state::{ContainerId, FetchUri};
use futures::future::BoxFuture;
use std::path::Path;

/// Fetches URIs into a sandbox. Runs inside its own call chain; blocking
/// work must go to a blocking pool.
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
}

/// Fetches nothing; see the module docs.
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
