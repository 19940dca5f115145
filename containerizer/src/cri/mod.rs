//! The Kubernetes Container Runtime Interface (`runtime.v1`) on a second
//! Unix socket of `berth agent` (`--cri-socket`): RuntimeService and
//! ImageService over berth's containerizer and image store.
//!
//! A pod sandbox is a berth pod (`ContainerConfig.pod`: berth's init
//! holding the namespaces) whose id is the CRI id; a CRI container is a
//! nested container of its pod, `POD/CONTAINER`, launched at
//! StartContainer from the config made at CreateContainer. What berth's
//! record lacks (names, labels, annotations, the CRI config, the log path)
//! is checkpointed by [`store`]. One file per area: [`sandbox`],
//! [`container`], [`exec_sync`], [`logs`], [`stats`], [`image`],
//! [`runtime`] (the service and the calls about the runtime itself).

/// The generated CRI (state/proto/k8s/cri/v1/api.proto, from
/// k8s.io/cri-api v0.29 as vendored by cri-tools 1.29.0).
#[allow(clippy::all, clippy::large_enum_variant)]
pub mod api {
    tonic::include_proto!("runtime.v1");
}

/// The CRI server's checkpoint records (state/proto/berth/cri/v1).
pub mod records {
    tonic::include_proto!("berth.cri.v1");
}

mod authority;
mod container;
mod exec_sync;
mod filter;
mod image;
mod logs;
mod runtime;
mod sandbox;
mod security;
mod stats;
pub mod store;
mod streaming;

use crate::Containerizer;
use berth_provisioner::ImageProvisioner;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::Status;

/// How the agent serves the CRI.
#[derive(Debug, Clone)]
pub struct CriOptions {
    /// The socket (mode 0600).
    pub socket: PathBuf,
    /// Where the streaming server (Exec, Attach, PortForward URLs) listens.
    pub stream_addr: SocketAddr,
    /// Upstream registry host → the mirror's base URL
    /// (`gcr.io` → `http://127.0.0.1:5000`).
    pub mirrors: BTreeMap<String, String>,
    /// The CNI network pods join (a config name in the agent's CNI config
    /// dir); `None`: pods get a network namespace with only `lo`.
    pub network: Option<String>,
}

/// Everything the CRI calls share.
pub(crate) struct Cri {
    pub c: Containerizer,
    pub images: ImageProvisioner,
    pub store: store::Store,
    pub opts: CriOptions,
    pub logs: logs::Relays,
    /// Hands out the Exec, Attach and PortForward URLs, and serves them.
    pub streaming: crate::streaming::StreamingServer,
    /// Serialises the calls that change one pod's set of containers
    /// (create, remove, stop and remove of the pod).
    pub changes: tokio::sync::Mutex<()>,
}

/// The CRI's service object (both services).
#[derive(Clone)]
pub(crate) struct Service(Arc<Cri>);

impl std::ops::Deref for Service {
    type Target = Cri;
    fn deref(&self) -> &Cri {
        &self.0
    }
}

impl Service {
    /// Opens the CRI checkpoint under `root` (`<root>/cri`) and resumes
    /// the log copies of the containers it names.
    pub(crate) async fn open(
        c: Containerizer,
        images: ImageProvisioner,
        root: &Path,
        opts: CriOptions,
        streaming: crate::streaming::StreamingServer,
    ) -> Result<Service, store::StoreError> {
        let store = store::Store::open(&root.join("cri"))?;
        let s = Service(Arc::new(Cri {
            c,
            images,
            store,
            opts,
            logs: logs::Relays::default(),
            streaming,
            changes: tokio::sync::Mutex::new(()),
        }));
        for r in s.store.containers() {
            if r.started && !r.log_path.is_empty() {
                s.start_log(&r, true);
            }
        }
        Ok(s)
    }
}

/// Serves the CRI on `opts.socket` until `shutdown` resolves.
pub async fn serve(
    c: Containerizer,
    images: ImageProvisioner,
    root: &Path,
    opts: CriOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let socket = opts.socket.clone();
    let streaming = crate::streaming::StreamingServer::start(opts.stream_addr, c.clone())
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("CRI streaming server on {}: {e}", opts.stream_addr),
            )
        })?;
    eprintln!(
        "berth agent: CRI streaming (exec, attach, port-forward) on http://{}",
        streaming.addr()
    );
    let service = Service::open(c, images, root, opts, streaming)
        .await
        .map_err(std::io::Error::other)?;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(&socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // Bound under a 0077 umask: no other user may connect, even before
    // the chmod.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let bound = tokio::net::UnixListener::bind(&socket);
    nix::sys::stat::umask(old);
    let listener = bound?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    // Each connection through the relay that makes grpc-go's authority
    // acceptable (see authority.rs).
    let incoming = futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| authority::relay(s));
        Some((next, l))
    });
    let r = tonic::transport::Server::builder()
        .add_service(api::runtime_service_server::RuntimeServiceServer::new(
            service.clone(),
        ))
        .add_service(api::image_service_server::ImageServiceServer::new(
            service.clone(),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(std::io::Error::other);
    service.logs.stop_all();
    let _ = std::fs::remove_file(&socket);
    r
}

/// The gRPC code for a containerizer error: the berth API's mapping.
pub(crate) use crate::agent::server::status;

pub(crate) fn store_status(e: store::StoreError) -> Status {
    Status::internal(e.to_string())
}

/// A fresh CRI id: 32 hex digits (a berth container name, and short
/// enough for the runtime dir's socket paths).
pub(crate) fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub(crate) fn now_nanos() -> i64 {
    berth_state::time::now_unix_nanos()
}
