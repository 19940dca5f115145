//! The CRI ImageService on berth's image store: an image's CRI id is its
//! manifest digest; its tags and digests are the store's references to
//! it. Pulls use the request's credentials and the agent's registry
//! mirrors. The store's work is blocking: it runs on the blocking pool.

use super::api::{self, image_service_server::ImageService};
use super::Service;
use berth_provisioner::store::ImageRecord;
use berth_provisioner::Error;
use tonic::{Request, Response, Status};

fn image_status(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::Registry { .. } => Status::unavailable(msg),
        Error::Reference { .. } => Status::invalid_argument(msg),
        _ => Status::internal(msg),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("image task: {e}")))?
        .map_err(image_status)
}

/// The image config's user as the CRI reports it: a numeric user is the
/// uid, a name the username (the group is not reported).
fn user_of(user: &str) -> (Option<api::Int64Value>, String) {
    let u = user.split(':').next().unwrap_or_default();
    match u.parse::<i64>() {
        Ok(uid) => (Some(api::Int64Value { value: uid }), String::new()),
        Err(_) => (None, u.to_string()),
    }
}

/// `user:password` from the CRI's `auth` (base64, as Docker's config).
fn decode_auth(auth: &str) -> Option<(String, String)> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for b in auth.trim().bytes().filter(|&b| b != b'=') {
        let v = T.iter().position(|&t| t == b)? as u32;
        bits = bits << 6 | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The CRI image of `rec` with the references `refs` (ref → manifest).
fn cri_image(rec: &ImageRecord, refs: &std::collections::BTreeMap<String, String>) -> api::Image {
    let mut repo_tags = Vec::new();
    let mut repo_digests = Vec::new();
    for (r, m) in refs {
        if m != &rec.manifest {
            continue;
        }
        let name = match r.split_once('@') {
            Some((name, _)) => name.to_string(),
            None => {
                repo_tags.push(r.clone());
                let slash = r.rfind('/').map(|i| i + 1).unwrap_or(0);
                match r[slash..].rfind(':') {
                    Some(i) => r[..slash + i].to_string(),
                    None => r.clone(),
                }
            }
        };
        let d = format!("{name}@{}", rec.manifest);
        if !repo_digests.contains(&d) {
            repo_digests.push(d);
        }
    }
    let (uid, username) = user_of(&rec.user);
    api::Image {
        id: rec.manifest.clone(),
        repo_tags,
        repo_digests,
        size: rec.size(),
        uid,
        username,
        spec: None,
        pinned: false,
    }
}

impl Service {
    /// The stored image `reference` names (a reference, `name@digest`, or
    /// an id, in full or as an unambiguous prefix); `None` when absent.
    pub(crate) async fn resolve_image(
        &self,
        reference: &str,
    ) -> Result<Option<ImageRecord>, Status> {
        let store = self.images.store().clone();
        let reference = reference.to_string();
        blocking(move || {
            if let Ok(rec) = store.resolve(&reference) {
                return Ok(Some(rec));
            }
            // A bare hex id or a prefix of one (as crictl shortens ids).
            let hex = reference.strip_prefix("sha256:").unwrap_or(&reference);
            if hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                let found: Vec<_> = store
                    .records()?
                    .into_iter()
                    .filter(|r| r.manifest["sha256:".len()..].starts_with(hex))
                    .collect();
                if found.len() == 1 {
                    return Ok(found.into_iter().next());
                }
            }
            Ok(None)
        })
        .await
    }
}

#[tonic::async_trait]
impl ImageService for Service {
    async fn list_images(
        &self,
        r: Request<api::ListImagesRequest>,
    ) -> Result<Response<api::ListImagesResponse>, Status> {
        let want = r
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let only = match &want {
            Some(w) => match self.resolve_image(w).await? {
                Some(rec) => Some(rec.manifest),
                None => return Ok(Response::new(api::ListImagesResponse { images: vec![] })),
            },
            None => None,
        };
        let store = self.images.store().clone();
        let images = blocking(move || {
            let refs = store.refs()?;
            let mut out = Vec::new();
            for rec in store.records()? {
                if only.as_ref().is_some_and(|m| m != &rec.manifest) {
                    continue;
                }
                // An image no reference names is content awaiting prune.
                if !refs.values().any(|m| m == &rec.manifest) {
                    continue;
                }
                out.push(cri_image(&rec, &refs));
            }
            Ok(out)
        })
        .await?;
        Ok(Response::new(api::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        r: Request<api::ImageStatusRequest>,
    ) -> Result<Response<api::ImageStatusResponse>, Status> {
        let r = r.into_inner();
        let spec = r.image.unwrap_or_default();
        if spec.image.is_empty() {
            return Err(Status::invalid_argument("ImageStatus: no image named"));
        }
        // Absent: no image and no error, as the CRI asks.
        let Some(rec) = self.resolve_image(&spec.image).await? else {
            return Ok(Response::new(api::ImageStatusResponse::default()));
        };
        let store = self.images.store().clone();
        let refs = blocking(move || store.refs()).await?;
        let mut info = std::collections::HashMap::new();
        if r.verbose {
            info.insert(
                "info".to_string(),
                serde_json::json!({
                    "manifest": rec.manifest,
                    "config": rec.config,
                    "entrypoint": rec.entrypoint,
                    "cmd": rec.cmd,
                    "env": rec.env,
                    "working_dir": rec.working_dir,
                    "user": rec.user,
                })
                .to_string(),
            );
        }
        Ok(Response::new(api::ImageStatusResponse {
            image: Some(cri_image(&rec, &refs)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        r: Request<api::PullImageRequest>,
    ) -> Result<Response<api::PullImageResponse>, Status> {
        let r = r.into_inner();
        let reference = r.image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(Status::invalid_argument("PullImage: no image named"));
        }
        let credentials = match r.auth {
            Some(a) if !a.username.is_empty() => Some((a.username, a.password)),
            Some(a) if !a.auth.is_empty() => Some(decode_auth(&a.auth).ok_or_else(|| {
                Status::invalid_argument("PullImage: auth is not base64 of user:password")
            })?),
            Some(a) if !a.identity_token.is_empty() || !a.registry_token.is_empty() => {
                return Err(Status::unimplemented(
                    "PullImage: identity and registry tokens are not supported; give username and password",
                ))
            }
            _ => None,
        };
        let opts = berth_provisioner::pull::PullOptions {
            credentials,
            mirrors: self.opts.mirrors.clone(),
            downloaded: Some(self.c.metrics().image_pulled_bytes.clone()),
            ..Default::default()
        };
        let store = self.images.store().clone();
        let pulled =
            blocking(move || berth_provisioner::pull::pull(&store, &reference, &opts)).await?;
        Ok(Response::new(api::PullImageResponse {
            image_ref: pulled.manifest,
        }))
    }

    async fn remove_image(
        &self,
        r: Request<api::RemoveImageRequest>,
    ) -> Result<Response<api::RemoveImageResponse>, Status> {
        let reference = r.into_inner().image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(Status::invalid_argument("RemoveImage: no image named"));
        }
        // Idempotent: an absent image is removed already.
        let Some(rec) = self.resolve_image(&reference).await? else {
            return Ok(Response::new(api::RemoveImageResponse {}));
        };
        // The image goes with every reference to it, as containerd's.
        let store = self.images.store().clone();
        blocking(move || {
            for (r, m) in store.refs()? {
                if m == rec.manifest {
                    store.untag(&r)?;
                }
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(api::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<api::ImageFsInfoRequest>,
    ) -> Result<Response<api::ImageFsInfoResponse>, Status> {
        let root = self.images.store().root().to_path_buf();
        let (bytes, inodes) = tokio::task::spawn_blocking({
            let root = root.clone();
            move || usage(&root)
        })
        .await
        .map_err(|e| Status::internal(format!("image fs usage: {e}")))?;
        let fs = api::FilesystemUsage {
            timestamp: super::now_nanos(),
            fs_id: Some(api::FilesystemIdentifier {
                mountpoint: root.display().to_string(),
            }),
            used_bytes: Some(api::UInt64Value { value: bytes }),
            inodes_used: Some(api::UInt64Value { value: inodes }),
        };
        Ok(Response::new(api::ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        }))
    }
}

/// Bytes and inodes under `dir` (berth's own store: no link followed).
fn usage(dir: &std::path::Path) -> (u64, u64) {
    let (mut bytes, mut inodes) = (0, 0);
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            inodes += 1;
            if m.is_dir() {
                todo.push(e.path());
            } else {
                bytes += m.len();
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_is_base64_of_user_and_password() {
        assert_eq!(
            decode_auth("dXNlcjpwYXNz"),
            Some(("user".to_string(), "pass".to_string()))
        );
        assert_eq!(decode_auth("!!"), None);
    }

    #[test]
    fn an_image_user_is_a_uid_or_a_name() {
        assert_eq!(user_of("1002").0.map(|v| v.value), Some(1002));
        assert_eq!(user_of("1003:1003").0.map(|v| v.value), Some(1003));
        assert_eq!(user_of("www-data:www-data"), (None, "www-data".to_string()));
        assert_eq!(user_of(""), (None, String::new()));
    }
}
