//! The CRI server's checkpoint: one protobuf file per pod sandbox and per
//! container under `<root>/cri/{pods,containers}/ID.pb`, written whole
//! (temp file, fsync, rename, fsync of the dir) before a call answers, and
//! read back at agent start. The berth containers hold the rest (state,
//! times, exit); see `records.proto`.

use super::records::{ContainerRecord, PodRecord};
use prost::Message;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("CRI store: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CRI store: {path}: unreadable record: {source}")]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

#[derive(Default)]
struct Maps {
    pods: BTreeMap<String, PodRecord>,
    containers: BTreeMap<String, ContainerRecord>,
}

/// The records, in memory and on disk. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    maps: Arc<Mutex<Maps>>,
}

const PODS: &str = "pods";
const CONTAINERS: &str = "containers";

impl Store {
    /// Opens (creating) `root` and reads every record in it.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let mut maps = Maps::default();
        for kind in [PODS, CONTAINERS] {
            let dir = root.join(kind);
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
            for e in std::fs::read_dir(&dir).map_err(io("list", &dir))? {
                let path = e.map_err(io("list", &dir))?.path();
                if path.extension().and_then(|x| x.to_str()) != Some("pb") {
                    // A temp file of a write cut short by a crash.
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                let bytes = std::fs::read(&path).map_err(io("read", &path))?;
                let decode = |source| StoreError::Decode {
                    path: path.clone(),
                    source,
                };
                if kind == PODS {
                    let r = PodRecord::decode(&bytes[..]).map_err(decode)?;
                    maps.pods.insert(r.id.clone(), r);
                } else {
                    let r = ContainerRecord::decode(&bytes[..]).map_err(decode)?;
                    maps.containers.insert(r.id.clone(), r);
                }
            }
        }
        Ok(Store {
            root: root.to_path_buf(),
            maps: Arc::new(Mutex::new(maps)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The CRI server's own directory of pod `id` (its resolv.conf,
    /// hostname and hosts files).
    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.root.join("pod-files").join(id)
    }

    pub fn pod(&self, id: &str) -> Option<PodRecord> {
        self.lock().pods.get(id).cloned()
    }

    pub fn pods(&self) -> Vec<PodRecord> {
        self.lock().pods.values().cloned().collect()
    }

    pub fn container(&self, id: &str) -> Option<ContainerRecord> {
        self.lock().containers.get(id).cloned()
    }

    pub fn containers(&self) -> Vec<ContainerRecord> {
        self.lock().containers.values().cloned().collect()
    }

    /// The one id among `ids` equal to `key` or, failing that, the only one
    /// starting with it (as crictl lets users shorten ids).
    fn resolve<'a>(ids: impl Iterator<Item = &'a String>, key: &str) -> Option<String> {
        if key.is_empty() {
            return None;
        }
        let mut found = None;
        for id in ids {
            if id == key {
                return Some(id.clone());
            }
            if id.starts_with(key) {
                if found.is_some() {
                    return None;
                }
                found = Some(id.clone());
            }
        }
        found
    }

    pub fn find_pod(&self, key: &str) -> Option<PodRecord> {
        let m = self.lock();
        let id = Self::resolve(m.pods.keys(), key)?;
        m.pods.get(&id).cloned()
    }

    pub fn find_container(&self, key: &str) -> Option<ContainerRecord> {
        let m = self.lock();
        let id = Self::resolve(m.containers.keys(), key)?;
        m.containers.get(&id).cloned()
    }

    pub async fn put_pod(&self, r: PodRecord) -> Result<(), StoreError> {
        let path = self.root.join(PODS).join(format!("{}.pb", r.id));
        write(path, r.encode_to_vec()).await?;
        self.lock().pods.insert(r.id.clone(), r);
        Ok(())
    }

    pub async fn put_container(&self, r: ContainerRecord) -> Result<(), StoreError> {
        let path = self.root.join(CONTAINERS).join(format!("{}.pb", r.id));
        write(path, r.encode_to_vec()).await?;
        self.lock().containers.insert(r.id.clone(), r);
        Ok(())
    }

    pub async fn delete_pod(&self, id: &str) -> Result<(), StoreError> {
        let path = self.root.join(PODS).join(format!("{id}.pb"));
        let files = self.pod_dir(id);
        blocking(move || {
            match std::fs::remove_dir_all(&files) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("remove", &files)(e))
                }
                _ => {}
            }
            remove(&path)
        })
        .await?;
        self.lock().pods.remove(id);
        Ok(())
    }

    pub async fn delete_container(&self, id: &str) -> Result<(), StoreError> {
        let path = self.root.join(CONTAINERS).join(format!("{id}.pb"));
        blocking(move || remove(&path)).await?;
        self.lock().containers.remove(id);
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Io {
            op: "run",
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Replaces `path` with `bytes` whole: a crash leaves the old or the new.
async fn write(path: PathBuf, bytes: Vec<u8>) -> Result<(), StoreError> {
    blocking(move || {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", dir))
    })
    .await
}
