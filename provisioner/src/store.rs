//! The image store under `<root>/images`:
//!
//! ```text
//! blobs/sha256/<hex>     content-addressed blobs, verified on entry
//! refs.json              name:tag / name@digest → manifest digest
//! index/<hex>.json       per image (manifest): config + layers' diff_ids
//! layers/<diff hex>/     unpacked layers (overlay form), see cache.rs
//! containers/<id>/       a container's rootfs, upper, work (backends)
//! unpack.log             one line per layer unpacked (observable cache)
//! ```
//!
//! Every blob is hashed while it is written to a temp file and renamed
//! into place only when digest and size match, so a blob in `blobs/` is
//! always what its name says.

use crate::digest::{self, HashingWriter};
use crate::error::{io, Error, Result};
use crate::reference::Reference;
use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One layer of an image, as the store's index keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The (possibly compressed) blob's digest.
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// The digest of the uncompressed tar (from the config's rootfs).
    pub diff_id: String,
}

/// The store's index entry of one image (keyed by manifest digest).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageRecord {
    pub manifest: String,
    pub config: String,
    pub layers: Vec<LayerRecord>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageRecord {
    /// Total size of the image's blobs (manifest not counted).
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// The image store. Cheap to share (`Arc`); mutations of `refs.json` are
/// serialised by an internal lock.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    refs_lock: Mutex<()>,
}

impl Store {
    /// Opens (creating) the store at `root` (berth uses `<--root>/images`).
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for d in ["blobs/sha256", "index", "layers", "containers", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io("create store dir", &p))?;
        }
        Ok(Store {
            root,
            refs_lock: Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where blob `digest` lives (whether or not it is there).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(digest::hex_of(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// A fresh temp path inside the store (same filesystem: renames are atomic).
    pub(crate) fn temp_path(&self, what: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Streams `r` into the store as blob `expected` (and `size`, when
    /// known), refusing content whose digest or size differ.
    pub fn put_blob(&self, mut r: impl Read, expected: &str, size: Option<u64>) -> Result<PathBuf> {
        let dest = self.blob_path(expected)?;
        if dest.is_file() {
            // Content addressed: what is there was verified on entry.
            return Ok(dest);
        }
        let tmp = self.temp_path("blob");
        let f = File::create(&tmp).map_err(io("create", &tmp))?;
        let mut w = HashingWriter::new(f);
        let copied = std::io::copy(&mut r, &mut w);
        let result = (|| {
            copied.map_err(io("write blob", &tmp))?;
            let got = w.digest();
            if got != expected {
                return Err(Error::Blob {
                    digest: expected.to_string(),
                    why: format!("content does not match its digest (it hashes to {got})"),
                });
            }
            if let Some(size) = size.filter(|&s| s != w.count) {
                return Err(Error::Blob {
                    digest: expected.to_string(),
                    why: format!("size is {} bytes, the descriptor says {size}", w.count),
                });
            }
            w.inner.sync_all().map_err(io("fsync", &tmp))?;
            fs::rename(&tmp, &dest).map_err(io("rename blob into", &dest))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|_| dest)
    }

    /// Stores `bytes` as a blob and returns its digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String> {
        let d = digest::of_bytes(bytes);
        self.put_blob(bytes, &d, Some(bytes.len() as u64))?;
        Ok(d)
    }

    /// Reads a (small, JSON) blob.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        fs::read(&p).map_err(io("read blob", &p))
    }

    pub fn open_blob(&self, digest: &str) -> Result<File> {
        let p = self.blob_path(digest)?;
        File::open(&p).map_err(io("open blob", &p))
    }

    /// Indexes the image whose manifest (and config and layers) are in the
    /// store: its layers with their diff_ids, and its run config.
    pub fn register(&self, manifest_digest: &str) -> Result<ImageRecord> {
        let bad = |why: String| Error::Image {
            image: manifest_digest.to_string(),
            why,
        };
        let manifest = ImageManifest::from_reader(&self.read_blob(manifest_digest)?[..])
            .map_err(|e| bad(format!("manifest: {e}")))?;
        let config_digest = manifest.config().digest().to_string();
        let config = ImageConfiguration::from_reader(&self.read_blob(&config_digest)?[..])
            .map_err(|e| bad(format!("config {config_digest}: {e}")))?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(bad(format!(
                "the manifest has {} layers but the config lists {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (l, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let digest = l.digest().to_string();
            digest::hex_of(diff_id)?;
            if !self.has_blob(&digest) {
                return Err(bad(format!(
                    "layer blob {digest} is missing from the store"
                )));
            }
            layers.push(LayerRecord {
                digest,
                media_type: l.media_type().to_string(),
                size: l.size(),
                diff_id: diff_id.clone(),
            });
        }
        let c = config.config().clone().unwrap_or_default();
        let rec = ImageRecord {
            manifest: manifest_digest.to_string(),
            config: config_digest,
            layers,
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
        };
        let p = self.index_path(manifest_digest)?;
        write_atomic(&p, &serde_json::to_vec_pretty(&rec).expect("serialisable"))?;
        Ok(rec)
    }

    fn index_path(&self, manifest_digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("index")
            .join(format!("{}.json", digest::hex_of(manifest_digest)?)))
    }

    /// The indexed image of manifest `digest`.
    pub fn record(&self, manifest_digest: &str) -> Result<ImageRecord> {
        let p = self.index_path(manifest_digest)?;
        let b = fs::read(&p).map_err(io("read image index", &p))?;
        serde_json::from_slice(&b).map_err(|e| Error::Image {
            image: manifest_digest.to_string(),
            why: format!("index {}: {e}", p.display()),
        })
    }

    /// Every indexed image's manifest digest.
    pub fn records(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("index");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io("list", &dir))? {
            let e = e.map_err(io("list", &dir))?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(hex) = name.strip_suffix(".json") {
                out.push(self.record(&format!("sha256:{hex}"))?);
            }
        }
        Ok(out)
    }

    /// All references, `name:tag`/`name@digest` → manifest digest.
    pub fn refs(&self) -> Result<BTreeMap<String, String>> {
        let p = self.root.join("refs.json");
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Import {
                path: p,
                why: format!("corrupt references file: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io("read", p)(e)),
        }
    }

    /// An flock on `<root>/<name>.lock`, held until the file is dropped:
    /// berth processes sharing a store (two `berth image` commands, a
    /// `berth run` and a prune) see each other's changes whole.
    pub(crate) fn flock(&self, name: &str, exclusive: bool) -> Result<File> {
        use std::os::fd::AsRawFd;
        let p = self.root.join(format!("{name}.lock"));
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io("open lock", &p))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            // SAFETY: f is an open file for the duration of the call.
            if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
                return Ok(f);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io("flock", &p)(e));
            }
        }
    }

    fn update_refs(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, String>) -> Result<()>,
    ) -> Result<()> {
        let _g = self.refs_lock.lock().unwrap_or_else(|e| e.into_inner());
        let _f = self.flock("refs", true)?;
        let mut refs = self.refs()?;
        f(&mut refs)?;
        write_atomic(
            &self.root.join("refs.json"),
            &serde_json::to_vec_pretty(&refs).expect("serialisable"),
        )
    }

    /// Points `reference` (canonicalised) at manifest `digest`.
    pub fn tag(&self, reference: &Reference, manifest_digest: &str) -> Result<()> {
        let key = reference.canonical();
        let d = manifest_digest.to_string();
        self.update_refs(|refs| {
            refs.insert(key, d);
            Ok(())
        })
    }

    /// Removes `reference`; an error when there is no such reference.
    pub fn untag(&self, reference: &str) -> Result<String> {
        let key = Reference::parse(reference)?.canonical();
        let mut removed = None;
        self.update_refs(|refs| {
            removed = refs.remove(&key);
            Ok(())
        })?;
        removed.ok_or_else(|| Error::Image {
            image: key,
            why: "no such image in the store".into(),
        })
    }

    /// The image `reference` names: a stored reference, or `name@digest` /
    /// a bare manifest digest of an indexed image.
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord> {
        if reference.starts_with("sha256:") {
            return self.record(reference);
        }
        let r = Reference::parse(reference)?;
        if let Some(d) = self.refs()?.get(&r.canonical()) {
            return self.record(d);
        }
        if let Some(d) = &r.digest {
            if let Ok(rec) = self.record(d) {
                return Ok(rec);
            }
        }
        Err(Error::Image {
            image: r.canonical(),
            why: "not in the store (import or pull it first)".into(),
        })
    }

    /// Appends to `unpack.log` (one line per layer unpacked).
    pub(crate) fn log_unpack(&self, diff_id: &str) {
        let p = self.root.join("unpack.log");
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(&p) {
            let _ = writeln!(f, "{diff_id}");
        }
    }
}

/// Writes `bytes` to `path` through a temp file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_replacing(path, bytes, true)
}

/// Writes `path` by rename, so a reader sees the old or the new content;
/// `sync` also makes it survive a power loss (fsync before the rename).
pub(crate) fn write_replacing(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    if sync {
        f.sync_all().map_err(io("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io("rename into", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_on_entry() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let d = s.put_bytes(b"hello").unwrap();
        assert!(s.has_blob(&d));
        let wrong = digest::of_bytes(b"other");
        let e = s
            .put_blob(&b"hello"[..], &wrong, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match its digest"), "{e}");
        assert!(!s.has_blob(&wrong));
        let e = s.put_blob(&b"hello"[..], &digest::of_bytes(b"hello"), Some(9));
        assert!(e.is_ok(), "present blobs are not rewritten");
        let d2 = digest::of_bytes(b"hello2");
        let e = s
            .put_blob(&b"hello2"[..], &d2, Some(9))
            .unwrap_err()
            .to_string();
        assert!(e.contains("size"), "{e}");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
