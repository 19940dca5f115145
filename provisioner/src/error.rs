//! The provisioner's errors: each names the image, blob, layer entry or
//! path that failed and why.

use std::path::PathBuf;

/// A failure inside the image store, an importer, the puller, the layer
/// unpacker or a rootfs backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {digest}: {why}")]
    Blob { digest: String, why: String },
    #[error("image reference {reference:?}: {why}")]
    Reference { reference: String, why: String },
    #[error("image {image}: {why}")]
    Image { image: String, why: String },
    #[error("{}: {why}", path.display())]
    Import { path: PathBuf, why: String },
    #[error("layer {layer}: entry {entry:?} refused: {why}")]
    UnsafeEntry {
        layer: String,
        entry: String,
        why: String,
    },
    #[error("layer {layer}: {why}")]
    Layer { layer: String, why: String },
    #[error("registry {registry}: {why}")]
    Registry { registry: String, why: String },
    #[error("{op} {}: {source}", path.display())]
    Sys {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// `map_err` helper: an io error about `path`.
pub(crate) fn io(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}
