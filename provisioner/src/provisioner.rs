//! [`ImageProvisioner`]: the [`Provisioner`] over the image store. Every
//! call runs on tokio's blocking pool (unpack, mount and file I/O never
//! run on an actor thread); a container's rootfs lives in
//! `<store>/containers/<id>/` with a `container.json` written before
//! anything else, so recover and prune know what the dir holds.

use crate::error::{io, Error, Result};
use crate::store::{ImageRecord, Store};
use crate::{bind, cache, copy, overlay, ProvisionError, Provisioned, Provisioner};
use berth_state::ContainerId;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a container's rootfs is made from the cached layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// overlayfs over the cached layers, an upper dir per container.
    Overlay,
    /// The layers unpacked into a dir of the container's own.
    Copy,
    /// A single-layer image's cached layer bound read-only.
    Bind,
}

impl Backend {
    /// overlay when the kernel has it, else copy.
    pub fn detect() -> Backend {
        if overlay::available() {
            Backend::Overlay
        } else {
            Backend::Copy
        }
    }

    /// The backend's name, as `--rootfs-backend` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Overlay => "overlay",
            Backend::Copy => "copy",
            Backend::Bind => "bind",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "overlay" => Ok(Backend::Overlay),
            "copy" => Ok(Backend::Copy),
            "bind" => Ok(Backend::Bind),
            _ => Err(format!(
                "rootfs backend {s:?}: expected overlay, copy or bind"
            )),
        }
    }
}

/// What a container's dir holds (`containers/<id>/container.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerImage {
    /// The container's id; empty in a rootfs made ahead of its launch
    /// (the pool's), which a launch takes with this file as it is: the
    /// dir's name is the id.
    pub id: String,
    pub image: String,
    pub manifest: String,
    pub backend: Backend,
    /// The cached layers it uses (prune keeps them).
    pub diff_ids: Vec<String>,
}

/// The OCI image provisioner.
#[derive(Clone, Debug)]
pub struct ImageProvisioner {
    store: Arc<Store>,
    /// The default backend (a container may choose another).
    backend: Backend,
    /// Whether the kernel has overlayfs (read once, at open).
    overlay: bool,
    /// Overlay rootfs made ahead of their launch (see [`crate::pool`]).
    pool: Option<Arc<crate::pool::RootfsPool>>,
}

/// A container id as one directory name (`/` of nested ids → `+`, which
/// ids never contain).
fn dir_name(id: &ContainerId) -> String {
    id.to_string().replace('/', "+")
}

impl ImageProvisioner {
    /// Opens the store at `root` (berth: `<--root>/images`); the backend is
    /// detected (overlay where available).
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageProvisioner> {
        let overlay = overlay::available();
        Ok(ImageProvisioner {
            store: Arc::new(Store::open(root)?),
            backend: if overlay {
                Backend::Overlay
            } else {
                Backend::Copy
            },
            overlay,
            pool: None,
        })
    }

    /// Keeps `size` overlay rootfs mounted ahead of their launch for each
    /// of the last two images launched (see [`crate::pool`]); 0: none. A
    /// launch of such an image takes one (a rename instead of its
    /// directories and mount) and a thread makes the next. The process
    /// must [`close_pool`](Self::close_pool) before it ends (what a killed
    /// one leaves, the next recovery removes).
    ///
    /// ```no_run
    /// # fn main() -> berth_provisioner::error::Result<()> {
    /// let images = berth_provisioner::ImageProvisioner::open("/var/lib/berth/images")?
    ///     .with_rootfs_pool(1)?;
    /// // … launches …
    /// images.close_pool();
    /// # Ok(()) }
    /// ```
    pub fn with_rootfs_pool(mut self, size: usize) -> Result<Self> {
        if let Some(p) = self.pool.take() {
            p.close(&self.trash());
        }
        if size > 0 && self.overlay {
            let pool = crate::pool::RootfsPool::start(self.store.clone(), size)
                .map_err(io("start the rootfs pool thread", self.store.root()))?;
            self.pool = Some(Arc::new(pool));
        }
        Ok(self)
    }

    /// Starts making one overlay rootfs of `image` now, on a thread, for a
    /// process that launches one container of it soon (`berth run`: the
    /// rootfs is made while the process opens its state and recovers). The
    /// first provision takes it when its image and layers are the same,
    /// else makes its own as without; nothing is made after that. Nothing
    /// is made for an image not in the store or where the default backend
    /// is not overlay. As with [`with_rootfs_pool`](Self::with_rootfs_pool),
    /// [`close_pool`](Self::close_pool) (or dropping the last clone)
    /// unmounts an entry not taken.
    ///
    /// ```no_run
    /// # fn main() -> berth_provisioner::error::Result<()> {
    /// let images = berth_provisioner::ImageProvisioner::open("/var/lib/berth/images")?
    ///     .with_rootfs_ahead("busybox:latest")?;
    /// // … open the state, recover, launch one container of busybox:latest …
    /// images.close_pool();
    /// # Ok(()) }
    /// ```
    pub fn with_rootfs_ahead(mut self, image: &str) -> Result<Self> {
        if let Some(p) = self.pool.take() {
            p.close(&self.trash());
        }
        if !self.overlay || self.backend != Backend::Overlay {
            return Ok(self);
        }
        let store = self.store.clone();
        let image = image.to_string();
        let resolve: crate::pool::Resolve = Box::new(move || {
            let resolved = store.flock("content", false).and_then(|_lock| {
                let rec = store.resolve(&image)?;
                let lowers = overlay_lowers(&store, &rec)?;
                Ok((lowers, rec))
            });
            match resolved {
                Ok((lowers, rec)) => Some((
                    lowers,
                    ContainerImage {
                        id: String::new(),
                        image,
                        manifest: rec.manifest.clone(),
                        backend: Backend::Overlay,
                        diff_ids: rec.layers.iter().map(|l| l.diff_id.clone()).collect(),
                    },
                )),
                Err(e) => {
                    // The launch finds the same and says so.
                    tracing::debug!(%image, error = %e, "no rootfs made ahead");
                    None
                }
            }
        });
        let pool = crate::pool::RootfsPool::start_once(self.store.clone(), resolve)
            .map_err(io("start the rootfs pool thread", self.store.root()))?;
        self.pool = Some(Arc::new(pool));
        Ok(self)
    }

    /// Unmounts and removes the pooled rootfs a process that died left
    /// under the store (blocking; recovery does it too). Not for a store
    /// whose pool runs in this process: [`close_pool`](Self::close_pool).
    pub fn sweep_pool(&self) {
        crate::pool::sweep(&self.store, &self.trash());
    }

    /// Unmounts and removes the pool's rootfs and stops making them
    /// (blocking; idempotent). Provisions go on without a pool.
    pub fn close_pool(&self) {
        if let Some(p) = &self.pool {
            p.close(&self.trash());
        }
    }

    /// Overrides the detected default backend (a container's own choice,
    /// [`provision_blocking_with`](Self::provision_blocking_with), still
    /// wins).
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn container_dir(&self, id: &ContainerId) -> PathBuf {
        self.store.root().join("containers").join(dir_name(id))
    }

    /// Whether `backend` can make rootfs here: overlay needs the kernel's
    /// overlayfs; copy and bind always can (bind checks its image's layer
    /// count when it provisions).
    pub fn check_backend(&self, backend: Backend) -> std::result::Result<(), String> {
        match backend {
            Backend::Overlay if !self.overlay => {
                Err("this kernel has no overlayfs (not in /proc/filesystems)".into())
            }
            _ => Ok(()),
        }
    }

    /// Builds container `id`'s rootfs with the default backend (blocking).
    pub fn provision_blocking(&self, id: &ContainerId, image: &str) -> Result<Provisioned> {
        self.provision_blocking_with(id, image, self.backend)
    }

    /// Builds container `id`'s rootfs with `backend` (blocking).
    pub fn provision_blocking_with(
        &self,
        id: &ContainerId,
        image: &str,
        backend: Backend,
    ) -> Result<Provisioned> {
        self.check_backend(backend).map_err(|why| Error::Image {
            image: image.to_string(),
            why: format!("rootfs backend {backend}: {why}"),
        })?;
        // Shared with other provisions, exclusive with a prune: a prune
        // never sees a half-made container that uses layers it would remove.
        let _lock = self.store.flock("content", false)?;
        let rec = self.store.resolve(image)?;
        let cdir = self.container_dir(id);
        if cdir.exists() {
            // Left by an earlier life of this id: start clean.
            self.destroy_blocking(id)?;
        }
        let meta = ContainerImage {
            id: id.to_string(),
            image: image.to_string(),
            manifest: rec.manifest.clone(),
            backend,
            diff_ids: rec.layers.iter().map(|l| l.diff_id.clone()).collect(),
        };
        let pooled = match (backend, &self.pool) {
            (Backend::Overlay, Some(pool)) => {
                let lowers = self.overlay_lowers(&rec)?;
                let template = ContainerImage {
                    id: String::new(),
                    ..meta.clone()
                };
                pool.take(&lowers, &template).and_then(|entry| {
                    match std::fs::rename(&entry, &cdir) {
                        Ok(()) => Some(()),
                        Err(e) => {
                            tracing::warn!(entry = %entry.display(), error = %e,
                                "pooled rootfs not taken; making one");
                            let _ = overlay::unmount(&entry.join("rootfs"));
                            let _ = self.discard(&entry);
                            None
                        }
                    }
                })
            }
            _ => None,
        };
        if pooled.is_none() {
            std::fs::create_dir_all(&cdir).map_err(io("create", &cdir))?;
        }
        // No fsync: it guards only against a power loss, after which the
        // rootfs mount and the container's processes are gone anyway and
        // recovery destroys the dir (an unreadable container.json makes it
        // an orphan). It cost ~0.7 ms of each provision.
        // A pooled rootfs has its own already (the same but for the id).
        let built = match pooled {
            Some(()) => Ok(()),
            None => crate::store::write_replacing(
                &cdir.join("container.json"),
                &serde_json::to_vec_pretty(&meta).expect("serialisable"),
                false,
            )
            .and_then(|_| self.build(&cdir, &rec, image, backend)),
        };
        if let Err(e) = built {
            let _ = self.destroy_blocking(id);
            return Err(e);
        }
        Ok(Provisioned {
            rootfs: cdir.join("rootfs"),
            entrypoint: rec.entrypoint,
            cmd: rec.cmd,
            env: rec.env,
            working_dir: rec.working_dir,
            user: rec.user,
        })
    }

    fn build(
        &self,
        cdir: &std::path::Path,
        rec: &ImageRecord,
        image: &str,
        backend: Backend,
    ) -> Result<()> {
        match backend {
            Backend::Overlay => overlay::mount_rootfs(cdir, &self.overlay_lowers(rec)?),
            Backend::Copy => copy::build_rootfs(&self.store, cdir, &rec.layers),
            Backend::Bind => {
                let [layer] = rec.layers.as_slice() else {
                    return Err(Error::Image {
                        image: image.to_string(),
                        why: format!(
                            "the bind backend needs a single-layer image; this one has {}",
                            rec.layers.len()
                        ),
                    });
                };
                let (dir, _) = cache::ensure_layer(&self.store, layer)?;
                bind::mount_rootfs(cdir, &dir)
            }
        }
    }

    /// An overlay rootfs's lower dirs, bottom first: the base layer (so
    /// never empty, as overlay needs one), then the image's layers,
    /// unpacked into the cache if they are not yet.
    fn overlay_lowers(&self, rec: &ImageRecord) -> Result<Vec<PathBuf>> {
        overlay_lowers(&self.store, rec)
    }

    /// Unmounts and removes container `id`'s rootfs (blocking, idempotent).
    pub fn destroy_blocking(&self, id: &ContainerId) -> Result<()> {
        let cdir = self.container_dir(id);
        if !cdir.exists() {
            return Ok(());
        }
        overlay::unmount(&cdir.join("rootfs"))?;
        self.discard(&cdir)
    }

    /// Where destroyed rootfs dirs wait for their removal (beside
    /// `containers`, whose names are ids).
    fn trash(&self) -> berth_state::trash::Trash {
        crate::pool::store_trash(&self.store)
    }

    /// Takes an unmounted container dir out of `containers` at once; its
    /// files go on the trash thread (an unlink per file on disk was most
    /// of a busybox container's destroy).
    fn discard(&self, cdir: &Path) -> Result<()> {
        self.trash()
            .discard(cdir)
            .map_err(|e| io("remove", cdir)(std::io::Error::other(e.to_string())))
    }

    /// The ids of containers that have a rootfs dir.
    pub fn containers(&self) -> Result<Vec<ContainerImage>> {
        let dir = self.store.root().join("containers");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io("list", &dir))? {
            let e = e.map_err(io("list", &dir))?;
            let p = e.path().join("container.json");
            let meta = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<ContainerImage>(&b).ok());
            out.push(meta.unwrap_or_else(|| ContainerImage {
                // A dir whose provision crashed before its record: an orphan.
                id: e.file_name().to_string_lossy().replace('+', "/"),
                image: String::new(),
                manifest: String::new(),
                backend: Backend::Overlay,
                diff_ids: Vec::new(),
            }));
        }
        Ok(out)
    }

    /// Destroys every rootfs whose container is not in `known` (blocking).
    pub fn recover_blocking(&self, known: &[ContainerId]) -> Result<Vec<String>> {
        let known: std::collections::HashSet<String> =
            known.iter().map(|k| k.to_string()).collect();
        let mut destroyed = Vec::new();
        // What the last process discarded and did not get to remove, and
        // the rootfs it had made ahead.
        self.trash().sweep();
        crate::pool::sweep(&self.store, &self.trash());
        let dir = self.store.root().join("containers");
        // The dir's name is the id ('/' as '+', which no id holds): no
        // container.json is read for the thousands that are known.
        for e in std::fs::read_dir(&dir).map_err(io("list", &dir))? {
            let e = e.map_err(io("list", &dir))?;
            let id = e.file_name().to_string_lossy().replace('+', "/");
            if known.contains(&id) {
                continue;
            }
            let cdir = e.path();
            overlay::unmount(&cdir.join("rootfs"))?;
            self.discard(&cdir)?;
            tracing::info!(container = %id, "orphan rootfs destroyed");
            destroyed.push(id);
        }
        Ok(destroyed)
    }

    /// Removes unused images, blobs and layers (see [`crate::prune`]).
    pub fn prune_blocking(&self, keep: crate::prune::Keep) -> Result<crate::prune::PruneReport> {
        let _lock = self.store.flock("content", true)?;
        // Pooled rootfs hold layers no container.json names.
        if let Some(p) = &self.pool {
            p.drain(&self.trash());
        }
        let mut in_use = self.containers()?;
        // Another process's pool (an agent's, for this prune's CLI).
        in_use.extend(crate::pool::in_use(&self.store));
        crate::prune::prune(&self.store, keep, &in_use)
    }
}

fn blocking<T: Send + 'static>(
    id: &ContainerId,
    image: Option<&str>,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> BoxFuture<'static, std::result::Result<T, ProvisionError>> {
    let id = id.to_string();
    let image = image.map(str::to_string);
    Box::pin(async move {
        let r = tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::Image {
                image: image.clone().unwrap_or_default(),
                why: format!("the provisioner task failed: {e}"),
            })
            .and_then(|r| r);
        r.map_err(|e| match image {
            Some(image) => {
                // The store's own errors name the image already.
                let m = e.to_string();
                let message = m
                    .strip_prefix(&format!("image {image}: "))
                    .map(str::to_string)
                    .unwrap_or(m);
                ProvisionError::Image { id, image, message }
            }
            None => ProvisionError::Other {
                id,
                message: e.to_string(),
            },
        })
    })
}

/// An overlay rootfs's lower dirs, bottom first: the base layer, then the
/// image's layers (unpacked into the cache if they are not yet).
fn overlay_lowers(store: &Store, rec: &ImageRecord) -> Result<Vec<PathBuf>> {
    let mut dirs = vec![base_layer(store)?];
    for l in &rec.layers {
        dirs.push(cache::ensure_layer(store, l)?.0);
    }
    Ok(dirs)
}

/// The bottom layer of every overlay rootfs: the empty mount points
/// the init mounts on in every container (`/proc`, `/dev`, `/sys`, and
/// `/mnt/sandbox` for the sandbox). An image that lacks them (a
/// busybox made by umoci has none) had them made in each container's
/// upper dir at every launch, five inodes on disk made and later
/// freed; an image that has them (or a whiteout, or a file there)
/// covers them, as any upper layer covers a lower one.
fn base_layer(store: &Store) -> Result<PathBuf> {
    let base = store.root().join("base");
    for d in ["proc", "dev", "sys", "mnt/sandbox"] {
        let p = base.join(d);
        std::fs::create_dir_all(&p).map_err(io("create", &p))?;
    }
    Ok(base)
}

impl Provisioner for ImageProvisioner {
    fn provision(
        &self,
        id: ContainerId,
        image: String,
        backend: Option<Backend>,
    ) -> BoxFuture<'static, std::result::Result<Provisioned, ProvisionError>> {
        let me = self.clone();
        let (id2, image2) = (id.clone(), image.clone());
        let backend = backend.unwrap_or(self.backend);
        let span = tracing::info_span!("provision", container = %id, image = %image, %backend);
        blocking(&id, Some(&image), move || {
            let _e = span.enter();
            me.provision_blocking_with(&id2, &image2, backend)
        })
    }

    fn check_backend(&self, backend: Backend) -> std::result::Result<(), String> {
        ImageProvisioner::check_backend(self, backend)
    }

    fn destroy(
        &self,
        id: ContainerId,
    ) -> BoxFuture<'static, std::result::Result<(), ProvisionError>> {
        let me = self.clone();
        let id2 = id.clone();
        blocking(&id, None, move || me.destroy_blocking(&id2))
    }

    fn recover(
        &self,
        known: Vec<ContainerId>,
    ) -> BoxFuture<'static, std::result::Result<(), ProvisionError>> {
        let me = self.clone();
        let id = ContainerId::new("recover");
        blocking(&id, None, move || me.recover_blocking(&known).map(|_| ()))
    }

    fn prune(
        &self,
        excluded: Vec<String>,
    ) -> BoxFuture<'static, std::result::Result<(), ProvisionError>> {
        let me = self.clone();
        let id = ContainerId::new("prune");
        blocking(&id, None, move || {
            let report = me.prune_blocking(crate::prune::Keep::Only(excluded))?;
            tracing::info!(?report, "images pruned");
            Ok(())
        })
    }
}
