//! A no-op isolator plugin served in-process over berth's plugin protocol
//! (a Unix socket, tonic on both sides), to measure what a remote plugin's
//! calls cost a launch: Handshake once, then Prepare, Isolate, Watch and
//! Cleanup per container.

use anyhow::{Context, Result};
use berth_isolators::remote::proto::isolator_server::{Isolator, IsolatorServer};
use berth_isolators::remote::proto::*;
use futures::Stream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tonic::{Request, Response, Status};

struct Noop;

type WatchEvents = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Isolator for Noop {
    async fn handshake(
        &self,
        r: Request<HandshakeRequest>,
    ) -> Result<Response<HandshakeResponse>, Status> {
        Ok(Response::new(HandshakeResponse {
            protocol_version: r.into_inner().protocol_version,
            supports_nesting: true,
            supports_standalone: true,
            instance_id: "noop".into(),
        }))
    }
    async fn recover(
        &self,
        _: Request<RecoverRequest>,
    ) -> Result<Response<RecoverResponse>, Status> {
        Ok(Response::new(RecoverResponse {}))
    }
    async fn prepare(
        &self,
        _: Request<PrepareRequest>,
    ) -> Result<Response<PrepareResponse>, Status> {
        Ok(Response::new(PrepareResponse::default()))
    }
    async fn isolate(
        &self,
        _: Request<IsolateRequest>,
    ) -> Result<Response<IsolateResponse>, Status> {
        Ok(Response::new(IsolateResponse {}))
    }
    type WatchStream = WatchEvents;
    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<WatchEvents>, Status> {
        Ok(Response::new(Box::pin(futures::stream::pending())))
    }
    async fn update(&self, _: Request<UpdateRequest>) -> Result<Response<UpdateResponse>, Status> {
        Ok(Response::new(UpdateResponse {}))
    }
    async fn usage(&self, _: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        Ok(Response::new(UsageResponse::default()))
    }
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse::default()))
    }
    async fn cleanup(
        &self,
        _: Request<CleanupRequest>,
    ) -> Result<Response<CleanupResponse>, Status> {
        Ok(Response::new(CleanupResponse {}))
    }
}

/// The no-op plugin, serving on its own thread; stops when dropped.
pub struct Served {
    /// A `--plugin-dir` naming it.
    pub dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Serves the no-op plugin on `<base>/noop.sock`, with its plugin file in
/// `<base>/plugins`.
pub fn serve(base: &Path) -> Result<Served> {
    let dir = base.join("plugins");
    std::fs::create_dir_all(&dir)?;
    let socket = base.join("noop.sock");
    let _ = std::fs::remove_file(&socket);
    let file = serde_json::json!({"name": "noop", "socket": socket, "timeout_ms": 5000});
    std::fs::write(dir.join("noop.json"), file.to_string())?;
    let listener = std::os::unix::net::UnixListener::bind(&socket)
        .with_context(|| format!("bind {}", socket.display()))?;
    listener.set_nonblocking(true)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async move {
            let listener = tokio::net::UnixListener::from_std(listener).expect("listener");
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let server = tonic::transport::Server::builder()
                .add_service(IsolatorServer::new(Noop))
                .serve_with_incoming(incoming);
            // Abrupt: berth's watch streams never end by themselves, so a
            // graceful stop would wait for them.
            tokio::select! {
                _ = server => {}
                _ = rx => {}
            }
        });
    });
    Ok(Served {
        dir,
        stop: Some(tx),
        thread: Some(thread),
    })
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
