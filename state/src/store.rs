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
        let lock = create_and_lock(&dir)?;
        // A store this process just dropped may hold sled's own lock a
        // moment longer (CI saw a reopen fail so).
        let (db, records) = open_db_waiting_for_lock(&dir)?;
        Ok(Store {
            dir,
            db,
            records,
            mirror: None,
            _lock: lock,
        })
    }

    /// Opens the store and mirrors every record into the runtime dir
    /// (`record.pb` of each container), as Mesos recovers from its
    /// checkpoint files:
    /// - if the sled database cannot be opened (damaged after an abrupt
    ///   kill), it is moved aside to `db.broken-<nanos>` and rebuilt from
    ///   the mirrors;
    /// - sled 0.34 also opens a damaged log *without error* and silently
    ///   drops what it cannot read (a truncated or overwritten log, a lost
    ///   file), so every open reconciles: a readable mirror that differs
    ///   from sled's copy wins. That is safe because `put` writes the
    ///   mirror before sled and `delete` removes it before sled, so the
    ///   mirror is never older than sled. Records only in sled are kept
    ///   and mirrored (the runtime dir is a tmpfs that a reboot empties);
    ///   so a delete that sled's damage undid comes back, as a record of a
    ///   dead container, which recovery destroys again (idempotent).
    pub fn open_with_mirror(
        dir: impl Into<PathBuf>,
        mirror: RuntimeDir,
    ) -> Result<Store, StoreError> {
        let dir = dir.into();
        let lock = create_and_lock(&dir)?;
        let (db, records) = match open_db_waiting_for_lock(&dir) {
            Ok(opened) => opened,
            Err(StoreError::Sled { source, .. }) => {
                let db_dir = dir.join("db");
                let aside = dir.join(format!("db.broken-{}", crate::time::now_unix_nanos()));
                tracing::error!(dir = %dir.display(), error = %source, aside = %aside.display(),
                    "checkpoint store cannot be opened; rebuilding it from the runtime dir");
                fs::rename(&db_dir, &aside).map_err(|source| StoreError::Io {
                    op: "move aside",
                    path: db_dir,
                    source,
                })?;
                open_db(&dir)?
            }
            Err(e) => return Err(e),
        };
        let store = Store {
            dir,
            db,
            records,
            mirror: None,
            _lock: lock,
        };
        store.reconcile_with(&mirror)?;
        Ok(Store {
            mirror: Some(mirror),
            ..store
        })
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
            // In place: the record's checksum covers the whole file, so a
            // crash mid-update reads as damaged and sled's (older, as the
            // mirror goes first) copy wins at the next open. The dir is
            // made only when missing (its first write): a mkdir that finds
            // it cost each of a launch's eight writes a path walk.
            let file = m.container_dir(&id).join(runtime::RECORD);
            match runtime::overwrite(&file, &value) {
                Err(runtime::RuntimeError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    m.create_container_dir(&id)?;
                    runtime::overwrite(&file, &value)?;
                }
                r => r?,
            }
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
        // The mirror goes first, so it is never older than sled (see
        // `open_with_mirror`).
        if let Some(m) = &self.mirror {
            let dir = m.container_dir(id);
            let f = dir.join(runtime::RECORD);
            match fs::remove_file(&f) {
                Ok(()) => {
                    // The dir goes too once nothing else (the supervisor's
                    // files, nested containers) is in it.
                    let _ = fs::remove_dir(&dir);
                }
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
        self.records
            .remove(id.to_string().as_bytes())
            .map_err(self.sled_err("remove"))?;
        self.flush()
    }

    /// Every record, in id order. A record that cannot be decoded is an
    /// `Err` naming its container id; the others still load.
    pub fn list(&self) -> Result<Vec<LoadedRecord>, StoreError> {
        let mut raw = Vec::new();
        for kv in self.records.iter() {
            let (k, v) = kv.map_err(self.sled_err("iterate"))?;
            raw.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        // A recovery decodes thousands of records: over the cores, in order.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = raw.len().div_ceil(threads).max(512);
        Ok(std::thread::scope(|s| {
            let parts: Vec<_> = raw
                .chunks(per)
                .map(|part| {
                    s.spawn(move || part.iter().map(|(k, v)| decode(k, v)).collect::<Vec<_>>())
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().expect("record decode thread panicked"))
                .collect()
        }))
    }

    /// The raw stored bytes of a record: for tests that damage one, and
    /// for tools that salvage one.
    #[doc(hidden)]
    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .records
            .get(key.as_bytes())
            .map_err(self.sled_err("get"))?
            .map(|v| v.to_vec()))
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

    /// Writes `version` as the store's schema version: for tests of the
    /// refusal of a store written by a newer berth.
    #[doc(hidden)]
    pub fn write_schema_version(&self, version: u32) -> Result<(), StoreError> {
        self.db
            .insert(SCHEMA_KEY, &version.to_le_bytes())
            .map_err(self.sled_err("write schema"))?;
        self.flush()
    }

    /// Brings sled and the mirror together (see `open_with_mirror`):
    /// every readable mirror that sled lacks or holds differently is
    /// copied into sled; every sled record without a mirror is mirrored,
    /// so that after a reboot emptied the runtime dir the mirror is whole
    /// again.
    fn reconcile_with(&self, mirror: &RuntimeDir) -> Result<(), StoreError> {
        let ids = mirror.list()?;
        // Thousands of records at an agent's start: a file read and a sled
        // lookup each, split over the cores (one part, in place, for the
        // few records of a `berth run`).
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = ids.len().div_ceil(threads).max(512);
        let parts: Vec<Result<(Vec<String>, usize), StoreError>> = if ids.len() <= per {
            vec![self.reconcile_part(mirror, &ids)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = ids
                    .chunks(per)
                    .map(|part| s.spawn(move || self.reconcile_part(mirror, part)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("reconcile thread panicked"))
                    .collect()
            })
        };
        let mut mirrored_keys = std::collections::HashSet::new();
        let mut restored = 0;
        for part in parts {
            let (keys, n) = part?;
            mirrored_keys.extend(keys);
            restored += n;
        }
        if restored > 0 {
            tracing::warn!(dir = %self.dir.display(), restored,
                "checkpoint store was missing or behind on records; restored them from the runtime dir");
            self.flush()?;
        }
        let mut mirrored = 0;
        for kv in self.records.iter() {
            let (k, v) = kv.map_err(self.sled_err("iterate"))?;
            let key = String::from_utf8_lossy(&k);
            if mirrored_keys.contains(key.as_ref()) {
                continue;
            }
            let Ok(id) = ContainerId::parse(&key) else {
                tracing::warn!(dir = %self.dir.display(), key = %key,
                    "checkpoint store holds a key that is no container id; not mirrored");
                continue;
            };
            let dir = mirror.create_container_dir(&id)?;
            runtime::write_atomic(&dir.join(runtime::RECORD), &v)?;
            mirrored += 1;
        }
        if mirrored > 0 {
            tracing::info!(dir = %self.dir.display(), mirrored,
                "mirrored checkpoint records missing from the runtime dir");
        }
        Ok(())
    }

    /// [`reconcile_with`](Self::reconcile_with)'s first half for `ids`:
    /// the mirrors sled lacks or holds differently go into sled; returns
    /// the keys that have a mirror and how many were restored.
    fn reconcile_part(
        &self,
        mirror: &RuntimeDir,
        ids: &[ContainerId],
    ) -> Result<(Vec<String>, usize), StoreError> {
        let mut mirrored_keys = Vec::with_capacity(ids.len());
        let mut restored = 0;
        for id in ids {
            let dir = mirror.container_dir(id);
            let f = dir.join(runtime::RECORD);
            let bytes = match fs::read(&f) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // A write cut short by a crash leaves its temp file; the
                    // container dir it alone kept is gone with it. (Beside
                    // a record, one goes with the container's dir: not
                    // looked for, as that is a dir read per container.)
                    let prefix = format!(".{}.tmp.", runtime::RECORD);
                    if let Ok(entries) = fs::read_dir(&dir) {
                        for e in entries.flatten() {
                            if e.file_name().to_string_lossy().starts_with(&prefix) {
                                let _ = fs::remove_file(e.path());
                            }
                        }
                    }
                    // Only removed when empty: the supervisor's files stay.
                    let _ = fs::remove_dir(&dir);
                    continue;
                }
                Err(source) => {
                    return Err(StoreError::Io {
                        op: "read",
                        path: f,
                        source,
                    })
                }
            };
            let key = id.to_string();
            let current = self
                .records
                .get(key.as_bytes())
                .map_err(self.sled_err("get"))?;
            let take = match &current {
                Some(v) if v.as_ref() == bytes.as_slice() => false,
                // A damaged mirror only fills a gap, so list() reports it;
                // it never replaces what sled has.
                Some(_) => decode(&key, &bytes).is_ok(),
                None => true,
            };
            if take {
                self.records
                    .insert(key.as_bytes(), bytes)
                    .map_err(self.sled_err("insert"))?;
                restored += 1;
            }
            mirrored_keys.push(key);
        }
        Ok((mirrored_keys, restored))
    }
}

fn create_and_lock(dir: &Path) -> Result<Flock<File>, StoreError> {
    fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        op: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    lock(dir)
}

/// [`open_db`], waiting out sled's own file lock. With berth's lock held,
/// its holder can only be the threads of a store this process just
/// dropped, which let go a moment later: a lock is not damage, and must
/// never send a good database aside.
fn open_db_waiting_for_lock(dir: &Path) -> Result<(sled::Db, sled::Tree), StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open_db(dir) {
            Err(StoreError::Sled { ref source, .. })
                if source.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// Opens sled in `<dir>/db` and checks the schema. Every failure of sled
/// itself (a panic included) is a `StoreError::Sled`, which
/// `open_with_mirror` answers with a rebuild.
fn open_db(dir: &Path) -> Result<(sled::Db, sled::Tree), StoreError> {
    let sled_err = |op: &'static str| {
        move |source| StoreError::Sled {
            op,
            dir: dir.to_path_buf(),
            source,
        }
    };
    let db_dir = dir.join("db");
    let existed = db_dir.join("conf").exists();
    let config = sled::Config::new()
        .path(&db_dir)
        // sled's default cache is 1 GiB; records are small and few.
        .cache_capacity(8 << 20)
        // We flush at every checkpoint ourselves.
        .flush_every_ms(None);
    // sled may panic on a damaged log instead of returning an error.
    let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(sled::Error::ReportableBug(format!(
                "sled panicked while opening: {why}"
            )))
        })
        .map_err(sled_err("open"))?;
    let records = db.open_tree("containers").map_err(sled_err("open tree"))?;
    match db.get(SCHEMA_KEY).map_err(sled_err("read schema"))? {
        None => {
            if existed {
                // The schema key is the first thing written; sled lost it,
                // and so maybe records, without an error.
                tracing::error!(dir = %dir.display(),
                    "checkpoint store lost its schema key: sled's log was damaged and records may be lost");
            }
            db.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_le_bytes())
                .map_err(sled_err("write schema"))?;
            db.flush().map_err(sled_err("flush"))?;
        }
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_ref()).map(u32::from_le_bytes);
            match found {
                Ok(n) if n <= SCHEMA_VERSION => {}
                Ok(n) => {
                    return Err(StoreError::Schema {
                        dir: dir.to_path_buf(),
                        found: n.to_string(),
                    })
                }
                Err(_) => {
                    return Err(StoreError::Schema {
                        dir: dir.to_path_buf(),
                        found: format!("{:?} (unreadable)", v.as_ref()),
                    })
                }
            }
        }
    }
    Ok((db, records))
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
    // A holder that died (an agent killed while it was forking) can leave
    // the lock with a child between fork and exec for a moment: wait that
    // out; a live holder is refused at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut file = file;
    let locked = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Err((f, nix::errno::Errno::EWOULDBLOCK))
                if std::time::Instant::now() < deadline && holder_is_dead(&f) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
                file = f;
            }
            other => break other,
        }
    };
    match locked {
        Ok(mut f) => {
            // Record who holds it, for the next opener's error message.
            let _ = f.set_len(0);
            let _ = f.rewind();
            let _ = writeln!(f, "{}", std::process::id());
            Ok(f)
        }
        Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = f.rewind();
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

/// Whether the pid written in the lock file names no live process.
fn holder_is_dead(f: &File) -> bool {
    let mut text = String::new();
    let mut r = f;
    let _ = r.rewind();
    let _ = r.read_to_string(&mut text);
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        ),
        _ => false,
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
