//! The layer cache: each layer unpacked once, into `layers/<diff_id hex>`,
//! in overlay form. The uncompressed stream is hashed while it is unpacked
//! and must equal the config's diff_id, or the unpack is thrown away.

use crate::digest::{self, HashingReader};
use crate::error::{io, Error, Result};
use crate::store::{LayerRecord, Store};
use crate::unpack::{self, Whiteouts};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Serialises unpacks in this process (two containers of one image do
/// not unpack the same layer twice); across processes the rename into
/// place decides and the loser's copy is discarded.
static UNPACK_LOCK: Mutex<()> = Mutex::new(());

/// The layer blob `digest`, decompressed (gzip, zstd or plain tar, told
/// apart by their magic bytes rather than trusted from the media type).
pub fn open_layer(store: &Store, digest: &str) -> Result<Box<dyn Read + Send>> {
    let f = store.open_blob(digest)?;
    let mut r = BufReader::new(f);
    let head = r
        .fill_buf()
        .map_err(io("read layer", store.blob_path(digest)?))?
        .to_vec();
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(r).map_err(|e| Error::Layer {
                layer: digest.to_string(),
                why: format!("zstd: {e}"),
            })?,
        )
    } else {
        Box::new(r)
    })
}

/// Unpacks layer blob `layer` into `dest` and checks its diff_id.
pub fn unpack_checked(
    store: &Store,
    layer: &LayerRecord,
    dest: &Path,
    w: Whiteouts,
) -> Result<unpack::Stats> {
    let r = HashingReader::new(open_layer(store, &layer.digest)?);
    let (stats, r) = unpack::unpack(r, dest, w, &layer.digest)?;
    let (got, _) = r.finish().map_err(|e| Error::Layer {
        layer: layer.digest.clone(),
        why: format!("reading the rest of the stream: {e}"),
    })?;
    if got != layer.diff_id {
        return Err(Error::Layer {
            layer: layer.digest.clone(),
            why: format!(
                "uncompressed content hashes to {got}, the image config says {}",
                layer.diff_id
            ),
        });
    }
    Ok(stats)
}

/// Where layer `diff_id` is (or would be) cached.
pub fn layer_dir(store: &Store, diff_id: &str) -> Result<PathBuf> {
    Ok(store.root().join("layers").join(digest::hex_of(diff_id)?))
}

/// The cached, unpacked layer; unpacks it first if needed. Returns the
/// dir and whether this call unpacked it.
pub fn ensure_layer(store: &Store, layer: &LayerRecord) -> Result<(PathBuf, bool)> {
    let dir = layer_dir(store, &layer.diff_id)?;
    if dir.is_dir() {
        return Ok((dir, false));
    }
    let _g = UNPACK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if dir.is_dir() {
        return Ok((dir, false));
    }
    let tmp = store.temp_path("layer");
    std::fs::create_dir(&tmp).map_err(io("create", &tmp))?;
    let done = unpack_checked(store, layer, &tmp, Whiteouts::Overlay).and_then(|_| {
        std::fs::rename(&tmp, &dir).or_else(|e| {
            if dir.is_dir() {
                Ok(()) // another process won the race
            } else {
                Err(io("rename layer into", &dir)(e))
            }
        })
    });
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    done?;
    store.log_unpack(&layer.diff_id);
    tracing::info!(diff_id = %layer.diff_id, "layer unpacked");
    Ok((dir, true))
}
