//! Import of an OCI image layout (as umoci and skopeo write): every
//! manifest in `index.json` with its ref-name annotation as the tag;
//! nested image indexes resolved to this host's platform.

use crate::error::{io, Error, Result};
use crate::import::{reference_for, Imported};
use crate::store::Store;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use std::path::Path;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// This host's platform in OCI (Go) words.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// From an index's manifests, the one for `linux/<host arch>`; a single
/// platform-less manifest is taken as it is.
pub fn pick_platform<'a>(manifests: &'a [Descriptor], what: &str) -> Result<&'a Descriptor> {
    let ours = manifests.iter().find(|d| {
        d.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == "linux" && p.architecture().to_string() == host_arch()
        })
    });
    match ours {
        Some(d) => Ok(d),
        None if manifests.len() == 1 && manifests[0].platform().is_none() => Ok(&manifests[0]),
        None => Err(Error::Image {
            image: what.to_string(),
            why: format!("the index has no manifest for linux/{}", host_arch()),
        }),
    }
}

struct Layout<'a> {
    dir: &'a Path,
    shown: &'a Path,
    store: &'a Store,
}

impl Layout<'_> {
    /// Copies blob `d` from the layout into the store (digest and size checked).
    fn copy(&self, d: &Descriptor) -> Result<()> {
        let digest = d.digest().to_string();
        let hex = crate::digest::hex_of(&digest)?;
        let src =
            crate::import::inside(self.dir, self.shown, &Path::new("blobs/sha256").join(hex))?;
        let f = std::fs::File::open(&src).map_err(io("open layout blob", &src))?;
        self.store.put_blob(f, &digest, Some(d.size()))?;
        Ok(())
    }

    /// Stores the image `d` points at; returns its manifest digest.
    fn image(&self, d: &Descriptor, what: &str, depth: u32) -> Result<String> {
        if depth > 4 {
            return Err(Error::Image {
                image: what.to_string(),
                why: "image indexes nested more than 4 deep".into(),
            });
        }
        self.copy(d)?;
        let digest = d.digest().to_string();
        if *d.media_type() == MediaType::ImageIndex {
            let index =
                ImageIndex::from_reader(&self.store.read_blob(&digest)?[..]).map_err(|e| {
                    Error::Image {
                        image: what.to_string(),
                        why: format!("index {digest}: {e}"),
                    }
                })?;
            let m = pick_platform(index.manifests(), what)?;
            return self.image(m, what, depth + 1);
        }
        let manifest =
            ImageManifest::from_reader(&self.store.read_blob(&digest)?[..]).map_err(|e| {
                Error::Image {
                    image: what.to_string(),
                    why: format!("manifest {digest}: {e}"),
                }
            })?;
        self.copy(manifest.config())?;
        for l in manifest.layers() {
            self.copy(l)?;
        }
        self.store.register(&digest)?;
        Ok(digest)
    }
}

/// Imports layout `dir` (`shown` names it in errors).
pub fn import(
    store: &Store,
    dir: &Path,
    shown: &Path,
    name: Option<&str>,
    default: &str,
) -> Result<Vec<Imported>> {
    let index_path = dir.join("index.json");
    let index = ImageIndex::from_file(&index_path).map_err(|e| Error::Import {
        path: shown.to_path_buf(),
        why: format!("index.json: {e}"),
    })?;
    let layout = Layout { dir, shown, store };
    let mut out = Vec::new();
    let only = index.manifests().len() == 1;
    for d in index.manifests() {
        let annotations = d.annotations().clone().unwrap_or_default();
        // `docker save` (25+) writes the full name beside the bare tag.
        let tag = annotations
            .get(CONTAINERD_NAME)
            .filter(|_| name.is_none())
            .or(annotations.get(REF_NAME))
            .cloned();
        let tag = match tag {
            Some(t) => t,
            None if only => "latest".to_string(),
            None => continue, // an untagged extra manifest: nothing names it
        };
        let reference = reference_for(name, default, &tag)?;
        let manifest = layout.image(d, &reference.canonical(), 0)?;
        store.tag(&reference, &manifest)?;
        out.push(Imported {
            reference: reference.canonical(),
            manifest,
        });
    }
    if out.is_empty() {
        return Err(Error::Import {
            path: shown.to_path_buf(),
            why: "the layout's index.json names no image".into(),
        });
    }
    Ok(out)
}
