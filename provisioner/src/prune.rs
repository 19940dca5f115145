//! Pruning: images that nothing keeps are dropped, then every blob and
//! cached layer that no kept image and no live container uses is removed.
//! A container's `container.json` names its image's manifest and layers,
//! so a running container's image is never pruned, tagged or not.

use crate::error::{io, Result};
use crate::provisioner::ContainerImage;
use crate::store::Store;
use std::collections::HashSet;

/// Which references survive a prune.
#[derive(Debug, Clone)]
pub enum Keep {
    /// Every tagged image (only untagged content goes).
    AllTagged,
    /// Only these references (Mesos's `excludedImages`); other references
    /// are removed unless a live container uses their image.
    Only(Vec<String>),
}

/// What a prune removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub references: Vec<String>,
    pub images: Vec<String>,
    pub blobs: Vec<String>,
    pub layers: Vec<String>,
}

pub fn prune(store: &Store, keep: Keep, in_use: &[ContainerImage]) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let used_manifests: HashSet<&str> = in_use.iter().map(|c| c.manifest.as_str()).collect();
    if let Keep::Only(keep) = &keep {
        let keep: HashSet<String> = keep
            .iter()
            .filter_map(|k| crate::reference::Reference::parse(k).ok())
            .map(|r| r.canonical())
            .collect();
        for (r, m) in store.refs()? {
            if !keep.contains(&r) && !used_manifests.contains(m.as_str()) {
                store.untag(&r)?;
                report.references.push(r);
            }
        }
    }
    let refs = store.refs()?;
    let live: HashSet<&str> = refs
        .values()
        .map(String::as_str)
        .chain(used_manifests.iter().copied())
        .collect();
    let mut keep_blobs = HashSet::new();
    let mut keep_layers: HashSet<String> = in_use.iter().flat_map(|c| c.diff_ids.clone()).collect();
    for rec in store.records()? {
        if live.contains(rec.manifest.as_str()) {
            keep_blobs.insert(rec.manifest.clone());
            keep_blobs.insert(rec.config.clone());
            for l in &rec.layers {
                keep_blobs.insert(l.digest.clone());
                keep_layers.insert(l.diff_id.clone());
            }
        } else {
            let hex = crate::digest::hex_of(&rec.manifest)?;
            let p = store.root().join("index").join(format!("{hex}.json"));
            std::fs::remove_file(&p).map_err(io("remove", &p))?;
            report.images.push(rec.manifest.clone());
        }
    }
    let blobs = store.root().join("blobs/sha256");
    for e in std::fs::read_dir(&blobs).map_err(io("list", &blobs))? {
        let e = e.map_err(io("list", &blobs))?;
        let d = format!("sha256:{}", e.file_name().to_string_lossy());
        if !keep_blobs.contains(&d) {
            std::fs::remove_file(e.path()).map_err(io("remove", e.path()))?;
            report.blobs.push(d);
        }
    }
    let layers = store.root().join("layers");
    for e in std::fs::read_dir(&layers).map_err(io("list", &layers))? {
        let e = e.map_err(io("list", &layers))?;
        let d = format!("sha256:{}", e.file_name().to_string_lossy());
        if !keep_layers.contains(&d) {
            std::fs::remove_dir_all(e.path()).map_err(io("remove", e.path()))?;
            report.layers.push(d);
        }
    }
    // Temp files of imports/unpacks whose process is gone (a crash).
    let tmp = store.root().join("tmp");
    for e in std::fs::read_dir(&tmp).map_err(io("list", &tmp))? {
        let e = e.map_err(io("list", &tmp))?;
        let name = e.file_name().to_string_lossy().to_string();
        let pid: Option<i32> = name.split('-').nth(1).and_then(|p| p.parse().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let p = e.path();
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(io("remove", &p))?;
        }
    }
    Ok(report)
}
