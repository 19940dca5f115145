//! The fetcher's actor: fetches are started inside it (a plugin's
//! `&mut self` needs no lock) and their downloads run on the blocking pool,
//! so the containerizer's mailbox never waits on the network.

use super::Fetcher;
use actix::prelude::*;
use berth_state::{ContainerId, FetchUri};
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use tracing::Instrument;

struct FetcherActor {
    inner: Box<dyn Fetcher>,
}

impl Actor for FetcherActor {
    type Context = Context<Self>;
}

struct Fetch {
    id: ContainerId,
    uris: Vec<FetchUri>,
    sandbox: PathBuf,
}

impl Message for Fetch {
    type Result = Result<(), String>;
}

impl Handler<Fetch> for FetcherActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, m: Fetch, _ctx: &mut Self::Context) -> Self::Result {
        let span = tracing::info_span!("fetch", container = %m.id);
        let fut = span.in_scope(|| self.inner.fetch(&m.id, &m.uris, &m.sandbox));
        Box::pin(fut.instrument(span))
    }
}

/// The containerizer's handle to the fetcher's actor.
#[derive(Clone)]
pub(crate) struct FetcherHandle {
    supported: bool,
    addr: Addr<FetcherActor>,
}

impl FetcherHandle {
    /// Starts `fetcher` in its own actor.
    pub(crate) fn spawn(fetcher: Box<dyn Fetcher>) -> Self {
        let supported = fetcher.supported();
        FetcherHandle {
            supported,
            addr: FetcherActor { inner: fetcher }.start(),
        }
    }

    pub(crate) fn supported(&self) -> bool {
        self.supported
    }

    pub(crate) fn fetch(
        &self,
        id: &ContainerId,
        uris: &[FetchUri],
        sandbox: &Path,
    ) -> BoxFuture<'static, Result<(), String>> {
        // Called even without URIs: a plugin may hold or prepare the
        // FETCHING stage regardless (the tests' slow fetcher does).
        let sent = self.addr.send(Fetch {
            id: id.clone(),
            uris: uris.to_vec(),
            sandbox: sandbox.to_path_buf(),
        });
        Box::pin(async move {
            sent.await
                .map_err(|e| format!("the fetcher's actor is gone: {e}"))?
        })
    }
}
