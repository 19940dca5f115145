//! A client of `berth agent` over its Unix socket.

use super::api::containerizer_client::ContainerizerClient;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint};

/// Why the agent could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the berth agent at {path}: {source} (is `berth agent --socket {path}` running?)")]
    Connect {
        path: String,
        source: tonic::transport::Error,
    },
}

/// Connects to the agent serving on `socket`.
pub async fn connect(socket: &Path) -> Result<ContainerizerClient<Channel>, ClientError> {
    let path: PathBuf = socket.to_path_buf();
    let p = path.clone();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://berth.agent")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = p.clone();
            async move {
                let s = tokio::net::UnixStream::connect(p).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    Ok(ContainerizerClient::new(channel))
}
