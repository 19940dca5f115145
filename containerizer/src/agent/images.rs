//! The API's image calls: the image store the agent provisions from, so
//! a cluster agent can import, pull, list and remove images over the
//! socket. The store's work is blocking, so it runs on the blocking pool.

use super::api::{Image, ImagesResponse};
use berth_provisioner::{Error, ImageProvisioner};
use std::path::PathBuf;
use tonic::Status;

/// The gRPC code for a store error; the message is the error's (it names
/// the path, reference or registry).
fn status(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::Image { why, .. } if why.contains("no such image") => Status::not_found(msg),
        Error::Registry { .. } => Status::unavailable(msg),
        Error::Io { .. } | Error::Sys { .. } => Status::internal(msg),
        _ => Status::invalid_argument(msg),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("image task: {e}")))?
        .map_err(status)
}

fn listed(i: berth_provisioner::import::Imported) -> Image {
    Image {
        reference: i.reference,
        manifest: i.manifest,
        ..Default::default()
    }
}

pub(super) async fn import(
    p: ImageProvisioner,
    path: String,
    name: String,
) -> Result<ImagesResponse, Status> {
    if !path.starts_with('/') {
        return Err(Status::invalid_argument(format!(
            "image path {path:?} must be absolute (it is read on the agent's host)"
        )));
    }
    let path = PathBuf::from(path);
    if !path.exists() {
        return Err(Status::not_found(format!(
            "{}: no such file or directory",
            path.display()
        )));
    }
    let name = (!name.is_empty()).then_some(name);
    let images =
        blocking(move || berth_provisioner::import::import(p.store(), &path, name.as_deref()))
            .await?;
    Ok(ImagesResponse {
        images: images.into_iter().map(listed).collect(),
    })
}

/// Pulls `reference` into the store, counted in `metrics` (the pull, or
/// its failure, and the bytes downloaded as they arrive).
pub(super) async fn pull(
    p: ImageProvisioner,
    reference: String,
    insecure: bool,
    metrics: &crate::Metrics,
) -> Result<ImagesResponse, Status> {
    let opts = berth_provisioner::pull::PullOptions {
        insecure,
        progress: false,
        downloaded: Some(metrics.image_pulled_bytes.clone()),
        ..Default::default()
    };
    let pulled =
        blocking(move || berth_provisioner::pull::pull(p.store(), &reference, &opts)).await;
    let counter = match pulled {
        Ok(_) => &metrics.image_pulls,
        Err(_) => &metrics.image_pull_errors,
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let image = pulled?;
    Ok(ImagesResponse {
        images: vec![listed(image)],
    })
}

pub(super) async fn list(p: ImageProvisioner) -> Result<ImagesResponse, Status> {
    let images = blocking(move || {
        let store = p.store();
        let mut out = Vec::new();
        for (reference, manifest) in store.refs()? {
            let rec = store.record(&manifest)?;
            out.push(Image {
                reference,
                manifest,
                size: rec.size(),
                layers: rec.layers.len() as u32,
            });
        }
        Ok(out)
    })
    .await?;
    Ok(ImagesResponse { images })
}

pub(super) async fn remove(p: ImageProvisioner, reference: String) -> Result<(), Status> {
    blocking(move || p.store().untag(&reference).map(drop)).await
}
