//! `berth agent`: the containerizer served over gRPC on a Unix socket (and
//! its metrics over HTTP, when asked), and the client the CLI's `launch`,
//! `ps`, `wait`, … use.

/// The generated API (state/proto/berth/api/v1/api.proto).
// ExecInput's `run` (a whole config) is far larger than its stdin bytes;
// it comes once per stream, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
pub mod api {
    tonic::include_proto!("berth.api.v1");
}

mod client;
pub(crate) mod exec;
mod images;
pub mod logs;
mod metrics_http;
pub(crate) mod server;

pub use client::{connect, ClientError};
pub use metrics_http::serve_metrics;
pub use server::serve;
