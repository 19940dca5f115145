//! berth's provisioner: images → root filesystems.
//!
//! The [`Provisioner`] trait is what the containerizer calls in
//! PROVISIONING and in destroy; the OCI image store, registry pull, layer
//! unpack and rootfs backends implement it: [`ImageProvisioner`].
//!
//! One module per mechanism: [`store`] (blobs, references, image index),
//! [`reference`](mod@reference), [`import`] with [`import_layout`] and [`import_docker`],
//! [`pull`],
//! [`unpack`] (safe layer unpack), [`cache`] (layers unpacked
//! once), the rootfs backends [`overlay`], [`copy`], [`bind`], and
//! [`prune`].

pub mod bind;
pub mod cache;
pub mod copy;
pub mod digest;
pub mod error;
pub mod import;
pub mod import_docker;
pub mod import_layout;
pub mod overlay;
mod pool;
pub mod provisioner;
pub mod prune;
pub mod pull;
pub mod reference;
pub mod store;
pub mod unpack;

pub use error::Error;
pub use provisioner::{Backend, ImageProvisioner};
pub use store::Store;

use berth_state::ContainerId;
use futures::future::BoxFuture;
use std::path::PathBuf;

/// What provisioning a container's image produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provisioned {
    /// The container's root filesystem (writable, its own).
    pub rootfs: PathBuf,
    /// The image's entrypoint (replaced by the config's, if any).
    pub entrypoint: Vec<String>,
    /// The image's cmd (replaced by the config's command, if any).
    pub cmd: Vec<String>,
    /// The image's environment, `K=V` (the config's env overrides it).
    pub env: Vec<String>,
    /// The image's working dir.
    pub working_dir: String,
    /// The image's user.
    pub user: String,
}

/// A provisioner failure, naming the container or image.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("container {id}: image {image}: {message}")]
    Image {
        id: String,
        image: String,
        message: String,
    },
    #[error("container {id}: {message}")]
    Other { id: String, message: String },
}

/// Makes and removes containers' root filesystems. Calls must not block
/// the caller's thread; blocking work goes to a blocking pool.
pub trait Provisioner: Send + Sync + 'static {
    /// Builds the root filesystem of container `id` from `image`, with
    /// the rootfs `backend` the container asked for (`None`: the
    /// provisioner's default). A provisioner that cannot honour the
    /// backend fails (it never silently uses another).
    fn provision(
        &self,
        id: ContainerId,
        image: String,
        backend: Option<Backend>,
    ) -> BoxFuture<'static, Result<Provisioned, ProvisionError>>;

    /// Whether a container may ask for `backend` (checked at STARTING, so
    /// that an unavailable one is refused before anything is made).
    /// Default: no backend can be chosen.
    fn check_backend(&self, backend: Backend) -> Result<(), String> {
        Err(format!(
            "this provisioner does not let a container choose its rootfs backend ({backend})"
        ))
    }

    /// Removes the container's root filesystem (unmount, delete).
    /// Idempotent: destroying what does not exist is `Ok`.
    fn destroy(&self, id: ContainerId) -> BoxFuture<'static, Result<(), ProvisionError>>;

    /// After an agent restart: destroys the root filesystems of every
    /// container not in `known`.
    fn recover(&self, known: Vec<ContainerId>) -> BoxFuture<'static, Result<(), ProvisionError>>;

    /// Removes every image except the `excluded` references and those of
    /// live containers, then the blobs and cached layers no kept image
    /// uses (Mesos's `pruneImages`). Provisioners without a store: no-op.
    fn prune(&self, excluded: Vec<String>) -> BoxFuture<'static, Result<(), ProvisionError>> {
        let _ = excluded;
        Box::pin(async { Ok(()) })
    }
}
