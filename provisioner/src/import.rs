//! `berth image import PATH [--name NAME]`: tells an OCI layout dir, an
//! OCI archive (a tar of a layout) and a docker-archive apart and hands
//! them to their importer.

use crate::error::{io, Error, Result};
use crate::reference::Reference;
use crate::store::Store;
use crate::unpack::{self, Whiteouts};
use std::path::Path;

/// One reference made by an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub reference: String,
    pub manifest: String,
}

/// Imports the image(s) at `path`; `name` replaces the repository name
/// (the layout's ref names / the archive's tags stay the tags).
pub fn import(store: &Store, path: &Path, name: Option<&str>) -> Result<Vec<Imported>> {
    if let Some(n) = name {
        Reference::parse(n)?;
    }
    // Blobs are stored before the reference that keeps them: a prune must
    // not run in between.
    let _lock = store.flock("content", false)?;
    let meta = std::fs::metadata(path).map_err(io("import", path))?;
    let default_name = default_name(path);
    if meta.is_dir() {
        return import_dir(store, path, path, name, &default_name);
    }
    // An archive: unpacked (safely, like a layer) into the store's tmp, then
    // read as a directory.
    let tmp = store.temp_path("archive");
    std::fs::create_dir(&tmp).map_err(io("create", &tmp))?;
    let result = (|| {
        let f = std::fs::File::open(path).map_err(io("open", path))?;
        unpack::unpack(f, &tmp, Whiteouts::Keep, &path.display().to_string()).map_err(|e| {
            Error::Import {
                path: path.to_path_buf(),
                why: format!("not a readable tar archive: {e}"),
            }
        })?;
        import_dir(store, &tmp, path, name, &default_name)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn import_dir(
    store: &Store,
    dir: &Path,
    shown: &Path,
    name: Option<&str>,
    default: &str,
) -> Result<Vec<Imported>> {
    if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
        crate::import_layout::import(store, dir, shown, name, default)
    } else if dir.join("manifest.json").is_file() {
        crate::import_docker::import(store, dir, shown, name)
    } else {
        Err(Error::Import {
            path: shown.to_path_buf(),
            why: "neither an OCI image layout (oci-layout, index.json) nor a docker-archive (manifest.json)".into(),
        })
    }
}

/// `dir/rel` resolved, refused unless it stays inside `dir`: an archive's
/// symlink must not make berth read a host file into the store.
pub(crate) fn inside(dir: &Path, shown: &Path, rel: &Path) -> Result<std::path::PathBuf> {
    let root = dir.canonicalize().map_err(io("resolve", dir))?;
    let p = dir.join(rel);
    let real = p.canonicalize().map_err(io("resolve", &p))?;
    if !real.starts_with(&root) {
        return Err(Error::Import {
            path: shown.to_path_buf(),
            why: format!(
                "{} leads outside the image (to {})",
                rel.display(),
                real.display()
            ),
        });
    }
    Ok(real)
}

/// The file or dir name, made a valid repository name.
fn default_name(path: &Path) -> String {
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = stem
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_start_matches(['-', '_']).to_string();
    if clean.is_empty() {
        "image".into()
    } else {
        clean
    }
}

/// The reference for an image tagged `tag_text` in a layout/archive:
/// `NAME:tag` when a name was given, else the text itself when it is a
/// full reference, else `default:tag`.
pub(crate) fn reference_for(
    name: Option<&str>,
    default: &str,
    tag_text: &str,
) -> Result<Reference> {
    let full = Reference::parse(tag_text)
        .ok()
        .filter(|_| tag_text.contains([':', '/']));
    let tag = match &full {
        Some(r) => r.tag.clone().unwrap_or_else(|| "latest".into()),
        None => tag_text.to_string(),
    };
    match (name, full) {
        (Some(n), _) => Reference::parse(&format!("{n}:{tag}")),
        (None, Some(r)) => Ok(r),
        (None, None) => Reference::parse(&format!("{default}:{tag}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        let r = |n, t| reference_for(n, "dir", t).unwrap().canonical();
        assert_eq!(r(Some("layered"), "base"), "layered:base");
        assert_eq!(r(None, "base"), "dir:base");
        assert_eq!(r(None, "quay.io/x/y:1"), "quay.io/x/y:1");
        assert_eq!(r(Some("n"), "busybox:1.0"), "n:1.0");
        assert_eq!(default_name(Path::new("/a/My Image.tar")), "my-image");
    }
}
