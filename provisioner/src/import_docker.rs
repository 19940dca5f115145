//! Import of a docker-archive (`docker save`, skopeo `docker-archive:`):
//! `manifest.json` lists each image's config file, tags and layer tars.
//! An OCI manifest is written for it; the docker config is OCI-compatible.

use crate::error::{io, Error, Result};
use crate::import::{reference_for, Imported};
use crate::store::Store;
use oci_spec::image::{DescriptorBuilder, Digest, ImageManifestBuilder, MediaType};
use serde::Deserialize;
use std::path::Path;
use std::str::FromStr;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A file of the archive, by its name in manifest.json (checked: no escape).
fn member(dir: &Path, shown: &Path, name: &str) -> Result<std::path::PathBuf> {
    let comps = crate::unpack::sanitize(name.as_bytes()).map_err(|why| Error::Import {
        path: shown.to_path_buf(),
        why: format!("manifest.json names {name:?}: {why}"),
    })?;
    crate::import::inside(dir, shown, &comps.iter().collect::<std::path::PathBuf>())
}

/// Streams a file into the store (hashing it first) and describes it.
fn put_file(store: &Store, path: &Path) -> Result<(String, u64, [u8; 4])> {
    let mut f = std::fs::File::open(path).map_err(io("open", path))?;
    let mut h = crate::digest::HashingReader::new(&mut f);
    let mut head = [0u8; 4];
    let _ = std::io::Read::read(&mut h, &mut head).map_err(io("read", path))?;
    let (digest, size) = h.finish().map_err(io("read", path))?;
    let f = std::fs::File::open(path).map_err(io("open", path))?;
    store.put_blob(f, &digest, Some(size))?;
    Ok((digest, size, head))
}

fn descriptor(mt: MediaType, digest: &str, size: u64) -> Result<oci_spec::image::Descriptor> {
    let d = Digest::from_str(digest).map_err(|e| Error::Blob {
        digest: digest.to_string(),
        why: e.to_string(),
    })?;
    DescriptorBuilder::default()
        .media_type(mt)
        .digest(d)
        .size(size)
        .build()
        .map_err(|e| Error::Blob {
            digest: digest.to_string(),
            why: e.to_string(),
        })
}

pub fn import(
    store: &Store,
    dir: &Path,
    shown: &Path,
    name: Option<&str>,
) -> Result<Vec<Imported>> {
    let mpath = dir.join("manifest.json");
    let bytes = std::fs::read(&mpath).map_err(io("read", &mpath))?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|e| Error::Import {
        path: shown.to_path_buf(),
        why: format!("manifest.json: {e}"),
    })?;
    let mut out = Vec::new();
    for e in entries {
        let (config, csize, _) = put_file(store, &member(dir, shown, &e.config)?)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (digest, size, head) = put_file(store, &member(dir, shown, l)?)?;
            let mt = if head.starts_with(&[0x1f, 0x8b]) {
                MediaType::ImageLayerGzip
            } else if head == [0x28, 0xb5, 0x2f, 0xfd] {
                MediaType::ImageLayerZstd
            } else {
                MediaType::ImageLayer
            };
            layers.push(descriptor(mt, &digest, size)?);
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, &config, csize)?)
            .layers(layers)
            .build()
            .map_err(|e| Error::Import {
                path: shown.to_path_buf(),
                why: format!("building a manifest: {e}"),
            })?;
        let mbytes = manifest.to_string().map_err(|e| Error::Import {
            path: shown.to_path_buf(),
            why: format!("writing a manifest: {e}"),
        })?;
        let digest = store.put_bytes(mbytes.as_bytes())?;
        store.register(&digest)?;
        let tags = e.repo_tags.unwrap_or_default();
        if tags.is_empty() && name.is_none() {
            return Err(Error::Import {
                path: shown.to_path_buf(),
                why: "an image in the archive has no tag: give --name".into(),
            });
        }
        let tags = if tags.is_empty() {
            vec!["latest".to_string()]
        } else {
            tags
        };
        for t in tags {
            let reference = reference_for(name, "image", &t)?;
            store.tag(&reference, &digest)?;
            out.push(Imported {
                reference: reference.canonical(),
                manifest: digest.clone(),
            });
        }
    }
    Ok(out)
}
