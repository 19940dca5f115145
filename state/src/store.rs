//! The checkpoint store: container records in sled, durable before every
//! call returns.
//!
//! Each value is `[format byte][crc32 of payload, LE][prost payload]`, so a
//! damaged record is detected (not decoded into garbage) and reported with
//! its container id while the others still load.
//!
//! One process owns a store at a time: `<dir>/LOCK` is held with `flock`
//! for the store's lifetime, and a second opener gets
//! [`StoreError::Locked`] naming the directory and the holder's pid.

use crate::model::{ContainerId, ContainerRecord};
use crate::runtime::{self, RuntimeDir};
use nix::fcntl::{Flock, FlockArg};
use prost::Message;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The schema this build writes and understands.
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";
const FORMAT_V1: u8 = 1;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("another berth agent holds the store at {dir} (pid {holder}); stop it or use another --root")]
    Locked { dir: PathBuf, holder: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sled {op} in {dir}: {source}")]
    Sled {
        op: &'static str,
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(
        "store at {dir} has schema version {found}; this berth understands up to {SCHEMA_VERSION}"
    )]
    Schema { dir: PathBuf, found: String },
    #[error("record of container {id} is corrupt: {why}")]
    Corrupt { id: String, why: String },
    #[error("runtime dir: {0}")]
    Runtime(#[from] runtime::RuntimeError),
}

/// One entry of [`Store::list`]: the record, or why it could not be read.
pub type LoadedRecord = Result<ContainerRecord, StoreError>;

/// The sled-backed checkpoint store. See the module docs.
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    mirror: Option<RuntimeDir>,
    // Held for the store's lifetime; released on drop (or process death).
    _lock: Flock<File>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let lock = lock(&dir)?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(8 << 20)
            // We flush at every checkpoint ourselves.
            .flush_every_ms(None)
            .open()
            .map_err(|source| StoreError::Sled {
                op: "open",
                dir: dir.clone(),
                source,
            })?;
        let store = Store {
            records: db
                .open_tree("containers")
                .map_err(|source| StoreError::Sled {
                    op: "open tree",
                    dir: dir.clone(),
                    source,
                })?,
            db,
            dir,
            mirror: None,
            _lock: lock,
        };
        store.check_schema()?;
        Ok(store)
    }

    /// Opens the store and mirrors every record into the runtime dir
    /// (`record.pb` of each container). If the sled database cannot be
    /// opened (damaged after an abrupt kill), it is moved aside to
    /// `db.broken-<nanos>` and rebuilt from those mirrors, as Mesos
    /// recovers from its checkpoint files.
    pub fn open_with_mirror(
        dir: impl Into<PathBuf>,
        mirror: RuntimeDir,
    ) -> Result<Store, StoreError> {
        let dir = dir.into();
        let mut store = match Store::open(&dir) {
            Ok(s) => s,
            Err(StoreError::Sled { source, .. }) => {
                let aside = dir.join(format!("db.broken-{}", crate::time::now_unix_nanos()));
                tracing::error!(dir = %dir.display(), error = %source, aside = %aside.display(),
                    "checkpoint store cannot be opened; rebuilding it from the runtime dir");
                fs::rename(dir.join("db"), &aside).map_err(|source| StoreError::Io {
                    op: "move aside",
                    path: dir.join("db"),
                    source,
                })?;
                let s = Store::open(&dir)?;
                s.rebuild_from(&mirror)?;
                s
            }
            Err(e) => return Err(e),
        };
        store.mirror = Some(mirror);
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sled_err(&self, op: &'static str) -> impl FnOnce(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Sled {
            op,
            dir: self.dir.clone(),
            source,
        }
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        match self
            .db
            .get(SCHEMA_KEY)
            .map_err(self.sled_err("read schema"))?
        {
            None => {
                self.db
                    .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_le_bytes())
                    .map_err(self.sled_err("write schema"))?;
                self.flush()
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref()).map(u32::from_le_bytes);
                match found {
                    Ok(n) if n <= SCHEMA_VERSION => Ok(()),
                    Ok(n) => Err(StoreError::Schema {
                        dir: self.dir.clone(),
                        found: n.to_string(),
                    }),
                    Err(_) => Err(StoreError::Schema {
                        dir: self.dir.clone(),
                        found: format!("{:?} (unreadable)", v.as_ref()),
                    }),
                }
            }
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(self.sled_err("flush"))?;
        Ok(())
    }

    /// Writes `record` (replacing any earlier one of the same id); durable
    /// when this returns.
    pub fn put(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        let id = record_id(record)?;
        let key = id.to_string();
        let value = encode(record);
        if let Some(m) = &self.mirror {
            let dir = m.create_container_dir(&id)?;
            runtime::write_atomic(&dir.join(runtime::RECORD), &value)?;
        }
        self.records
            .insert(key.as_bytes(), value)
            .map_err(self.sled_err("insert"))?;
        self.flush()
    }

    /// The record of `id`, if any.
    pub fn get(&self, id: &ContainerId) -> Result<Option<ContainerRecord>, StoreError> {
        let key = id.to_string();
        match self
            .records
            .get(key.as_bytes())
            .map_err(self.sled_err("get"))?
        {
            None => Ok(None),
            Some(v) => decode(&key, &v).map(Some),
        }
    }

    /// Removes the record of `id`; durable when this returns. Removing an
    /// absent record is fine.
    pub fn delete(&self, id: &ContainerId) -> Result<(), StoreError> {
        self.records
            .remove(id.to_string().as_bytes())
            .map_err(self.sled_err("remove"))?;
        self.flush()?;
        if let Some(m) = &self.mirror {
            let f = m.container_dir(id).join(runtime::RECORD);
            match fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        op: "remove",
                        path: f,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Every record, in id order. A record that cannot be decoded is an
    /// `Err` naming its container id; the others still load.
    pub fn list(&self) -> Result<Vec<LoadedRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.records.iter() {
            let (k, v) = kv.map_err(self.sled_err("iterate"))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            out.push(decode(&key, &v));
        }
        Ok(out)
    }

    /// Overwrites the raw bytes of a record: for tests that need a damaged
    /// record, and for tools that salvage one.
    #[doc(hidden)]
    pub fn put_raw(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.records
            .insert(key.as_bytes(), value)
            .map_err(self.sled_err("insert"))?;
        self.flush()
    }

    fn rebuild_from(&self, mirror: &RuntimeDir) -> Result<(), StoreError> {
        for id in mirror.list()? {
            let f = mirror.container_dir(&id).join(runtime::RECORD);
            let bytes = match fs::read(&f) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(StoreError::Io {
                        op: "read",
                        path: f,
                        source,
                    })
                }
            };
            // A damaged mirror is copied as is, so list() reports it.
            self.records
                .insert(id.to_string().as_bytes(), bytes)
                .map_err(self.sled_err("insert"))?;
        }
        self.flush()
    }
}

fn record_id(record: &ContainerRecord) -> Result<ContainerId, StoreError> {
    let id = record.id.clone().ok_or_else(|| StoreError::Corrupt {
        id: "<none>".into(),
        why: "record has no container id".into(),
    })?;
    id.validate().map_err(|e| StoreError::Corrupt {
        id: id.to_string(),
        why: e.to_string(),
    })?;
    Ok(id)
}

fn encode(record: &ContainerRecord) -> Vec<u8> {
    let payload = record.encode_to_vec();
    let mut v = Vec::with_capacity(payload.len() + 5);
    v.push(FORMAT_V1);
    v.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    v.extend_from_slice(&payload);
    v
}

fn decode(key: &str, v: &[u8]) -> Result<ContainerRecord, StoreError> {
    let corrupt = |why: String| StoreError::Corrupt {
        id: key.to_string(),
        why,
    };
    if v.len() < 5 {
        return Err(corrupt(format!(
            "{} bytes, shorter than the header",
            v.len()
        )));
    }
    if v[0] != FORMAT_V1 {
        return Err(corrupt(format!("unknown format byte {}", v[0])));
    }
    let crc = u32::from_le_bytes([v[1], v[2], v[3], v[4]]);
    let payload = &v[5..];
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let rec = ContainerRecord::decode(payload).map_err(|e| corrupt(e.to_string()))?;
    match &rec.id {
        Some(id) if id.to_string() == key => Ok(rec),
        other => Err(corrupt(format!(
            "stored under {key:?} but names {:?}",
            other.as_ref().map(|i| i.to_string())
        ))),
    }
}

fn lock(dir: &Path) -> Result<Flock<File>, StoreError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StoreError::Io {
            op: "open",
            path: path.clone(),
            source,
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut f) => {
            // Record who holds it, for the next opener's error message.
            let _ = f.set_len(0);
            let _ = f.rewind();
            let _ = writeln!(f, "{}", std::process::id());
            Ok(f)
        }
        Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim();
            Err(StoreError::Locked {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder.into()
                },
            })
        }
        Err((_, errno)) => Err(StoreError::Io {
            op: "flock",
            path,
            source: errno.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn rec(name: &str) -> ContainerRecord {
        ContainerRecord {
            id: Some(ContainerId::new(name)),
            state: ContainerState::Running as i32,
            ..Default::default()
        }
    }

    #[test]
    fn checksum_catches_a_flipped_byte() {
        let mut v = encode(&rec("a"));
        let last = v.len() - 1;
        v[last] ^= 0x40;
        let e = decode("a", &v).unwrap_err().to_string();
        assert!(e.contains("container a") && e.contains("checksum"), "{e}");
    }

    #[test]
    fn record_under_wrong_key_is_corrupt() {
        let v = encode(&rec("a"));
        assert!(decode("b", &v).is_err());
    }
}
