//! `disk/du`: the disk usage of a container's sandbox (and of its rootfs
//! upper dir, when the provisioner says where it is), measured every
//! `interval` as `du` does — allocated blocks, hard links counted once, no
//! crossing into other filesystems. Usage goes to `usage()`; exceeding
//! `resources.disk_bytes` resolves `watch` with a disk limitation (as
//! Mesos's `disk/du` isolator with `--enforce_container_disk_quota`).

use crate::{Isolator, IsolatorFuture, Limitation, PrepareRequest};
use berth_state::safe_path;
use berth_state::{
    ContainerId, ContainerRecord, LaunchInfo, ResourceStatistics, Resources, TerminationReason,
};
use futures::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The default time between two measurements.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// An overlay rootfs is laid out as `…/<id>/{upper,work,merged}`: its
/// writable layer is `<rootfs>/../upper`, counted when it exists.
const UPPER_DIR: &str = "upper";

#[derive(Debug, Clone)]
struct Watched {
    dirs: Vec<PathBuf>,
    limit: u64,
}

/// The `disk/du` isolator.
#[derive(Debug, Clone)]
pub struct DiskDu {
    interval: Duration,
    containers: Arc<Mutex<HashMap<String, Watched>>>,
}

impl Default for DiskDu {
    fn default() -> Self {
        DiskDu::new(DEFAULT_INTERVAL)
    }
}

impl DiskDu {
    /// An isolator that measures every `interval`.
    pub fn new(interval: Duration) -> Self {
        DiskDu {
            interval,
            containers: Arc::default(),
        }
    }

    fn watched(&self, id: &ContainerId) -> Option<Watched> {
        lock(&self.containers).get(&id.to_string()).cloned()
    }
}

fn watched(sandbox: &Path, rootfs: Option<&Path>, limit: u64) -> Watched {
    let mut dirs = vec![sandbox.to_path_buf()];
    // Not looked for here (a stat per container, thousands at a recovery,
    // on the actor's thread): a rootfs with no overlay upper dir (a copy,
    // the host's) has none to open, and `usage_of` skips it.
    dirs.extend(rootfs.and_then(|r| r.parent()).map(|p| p.join(UPPER_DIR)));
    Watched { dirs, limit }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Isolator for DiskDu {
    fn name(&self) -> &str {
        "disk/du"
    }

    fn isolates(&self) -> bool {
        false
    }

    fn supports_nesting(&self) -> bool {
        true
    }
    fn recover(
        &mut self,
        states: &[ContainerRecord],
        _orphans: &[ContainerId],
    ) -> IsolatorFuture<()> {
        // Nothing on the host to release: only re-adopt the live ones.
        let mut c = lock(&self.containers);
        for r in states {
            let Some(id) = r.id.clone() else { continue };
            let rootfs = (!r.rootfs.is_empty()).then(|| PathBuf::from(&r.rootfs));
            let limit = r
                .config
                .as_ref()
                .and_then(|c| c.resources)
                .map(|r| r.disk_bytes);
            c.insert(
                id.to_string(),
                watched(
                    Path::new(&r.sandbox_dir),
                    rootfs.as_deref(),
                    limit.unwrap_or(0),
                ),
            );
        }
        Box::pin(async { Ok(()) })
    }

    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        let limit = req.config.resources.map(|r| r.disk_bytes).unwrap_or(0);
        let w = watched(&req.sandbox_dir, req.rootfs.as_deref(), limit);
        lock(&self.containers).insert(req.id.to_string(), w);
        Box::pin(async { Ok(None) })
    }

    fn watch(&mut self, id: &ContainerId) -> BoxFuture<'static, Limitation> {
        let containers = self.containers.clone();
        let interval = self.interval;
        let id = id.clone();
        Box::pin(async move {
            loop {
                tokio::time::sleep(interval).await;
                // Gone (cleaned up): this watch never fires.
                let Some(w) = lock(&containers).get(&id.to_string()).cloned() else {
                    return futures::future::pending().await;
                };
                if w.limit == 0 {
                    continue;
                }
                let dirs = w.dirs.clone();
                let used = crate::blocking(move || usage_of(&dirs)).await;
                if used > w.limit {
                    tracing::info!(container = %id, used, limit = w.limit, "disk limit exceeded");
                    return Limitation {
                        reason: TerminationReason::Limitation,
                        resource: "disk".into(),
                        message: format!(
                            "disk usage {used} bytes exceeds the limit of {} bytes",
                            w.limit
                        ),
                    };
                }
            }
        })
    }

    fn update(&mut self, id: &ContainerId, resources: &Resources) -> IsolatorFuture<()> {
        if let Some(w) = lock(&self.containers).get_mut(&id.to_string()) {
            w.limit = resources.disk_bytes;
        }
        Box::pin(async { Ok(()) })
    }

    fn usage(&mut self, id: &ContainerId) -> IsolatorFuture<ResourceStatistics> {
        let w = self.watched(id);
        Box::pin(async move {
            // Not measured (e.g. a container this isolator never prepared).
            let Some(w) = w else {
                return Ok(ResourceStatistics::default());
            };
            let dirs = w.dirs.clone();
            let used = crate::blocking(move || usage_of(&dirs)).await;
            Ok(ResourceStatistics {
                disk_used_bytes: used,
                disk_limit_bytes: w.limit,
                ..Default::default()
            })
        })
    }

    fn cleanup(&mut self, id: &ContainerId) -> IsolatorFuture<()> {
        lock(&self.containers).remove(&id.to_string());
        Box::pin(async { Ok(()) })
    }
}

/// Bytes allocated under `dirs` (as `du -s -x`): st_blocks × 512, each
/// inode once, symlinks not followed, other filesystems not entered.
/// Entries that vanish while walking are skipped. The dirs are written by
/// the container (a nested sandbox by its parent too), so the walk is
/// [`berth_state::safe_path::walk`], fd by fd, and each dir is opened with
/// no symlink on its path.
pub fn usage_of(dirs: &[PathBuf]) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    for (i, d) in dirs.iter().enumerate() {
        // The sandbox (first) has a canonical path; the upper dir's path
        // is the provisioner's own, opened as given (its last component
        // not followed).
        let fd = if i == 0 {
            safe_path::open_dir(d, None).ok()
        } else {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(d)
                .ok()
                .map(std::os::fd::OwnedFd::from)
        };
        let Some(fd) = fd else {
            continue;
        };
        let _ = safe_path::walk(fd, d, &mut |e| {
            if seen.insert((e.stat.st_dev, e.stat.st_ino)) {
                total += e.stat.st_blocks as u64 * 512;
            }
            Ok(true)
        });
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_blocks_once_per_inode() {
        let t = tempfile::tempdir().unwrap();
        let base = usage_of(&[t.path().to_path_buf()]);
        std::fs::write(t.path().join("a"), vec![1u8; 1 << 20]).unwrap();
        std::fs::hard_link(t.path().join("a"), t.path().join("b")).unwrap();
        std::os::unix::fs::symlink("/usr", t.path().join("l")).unwrap();
        let used = usage_of(&[t.path().to_path_buf()]) - base;
        assert!((1 << 20..(1 << 20) + 64 * 1024).contains(&used), "{used}");
    }
}
