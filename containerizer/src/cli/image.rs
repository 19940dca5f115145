//! `berth image import|pull|ls|rm|prune`, and the provisioner `berth run`
//! uses (the image store at `<--root>/images`). Kept apart from main.rs so
//! that the run flags and the image commands grow without touching.

use anyhow::{Context as _, Result};
use berth::provisioner::prune::Keep;
use berth::provisioner::ImageProvisioner;
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Imports an OCI image layout dir, an OCI archive or a docker-archive;
    /// the layout's ref names (the archive's tags) become the tags.
    Import {
        path: PathBuf,
        /// The repository name to tag the images with (default: the file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Pulls an image from a registry (Docker Registry HTTP API v2 / OCI
    /// distribution); it is named by its full reference.
    Pull {
        reference: String,
        /// Allow plain http to a registry that is not on loopback.
        #[arg(long)]
        insecure: bool,
    },
    /// Lists the images in the store.
    Ls {
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Removes an image reference (its content goes at the next prune).
    Rm { reference: String },
    /// Removes blobs and cached layers that no image reference and no
    /// container uses.
    Prune {
        /// Also remove every image reference that no container uses
        /// (except those given with --keep).
        #[arg(long)]
        all: bool,
        /// A reference to keep with --all (repeatable).
        #[arg(long)]
        keep: Vec<String>,
    },
}

/// The store's dir under berth's root.
pub fn store_dir(root: &Path) -> PathBuf {
    root.join("images")
}

/// The provisioner over `<root>/images` (its default backend detected).
pub fn provisioner(root: &Path) -> Result<ImageProvisioner> {
    ImageProvisioner::open(store_dir(root))
        .with_context(|| format!("opening the image store in {}", store_dir(root).display()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.context("image task")?
}

pub async fn dispatch(root: &Path, cmd: ImageCommand) -> Result<i32> {
    let p = provisioner(root)?;
    match cmd {
        ImageCommand::Import { path, name } => {
            let imported = blocking(move || {
                Ok(berth::provisioner::import::import(
                    p.store(),
                    &path,
                    name.as_deref(),
                )?)
            })
            .await?;
            for i in imported {
                println!("{}\t{}", i.reference, i.manifest);
            }
        }
        ImageCommand::Pull {
            reference,
            insecure,
        } => {
            use std::io::IsTerminal;
            let opts = berth::provisioner::pull::PullOptions {
                insecure,
                progress: std::io::stderr().is_terminal(),
                downloaded: None,
                ..Default::default()
            };
            let i = blocking(move || {
                Ok(berth::provisioner::pull::pull(
                    p.store(),
                    &reference,
                    &opts,
                )?)
            })
            .await?;
            println!("{}\t{}", i.reference, i.manifest);
        }
        ImageCommand::Ls { json } => {
            let rows = blocking(move || {
                let store = p.store();
                let mut rows = Vec::new();
                for (r, m) in store.refs()? {
                    let rec = store.record(&m)?;
                    rows.push((r, m, rec.size(), rec.layers.len()));
                }
                Ok(rows)
            })
            .await?;
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(r, m, size, layers)| {
                        serde_json::json!({"reference": r, "manifest": m, "size": size, "layers": layers})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!(
                    "{:<48} {:<19} {:>12} {:>6}",
                    "REFERENCE", "MANIFEST", "SIZE", "LAYERS"
                );
                for (r, m, size, layers) in rows {
                    let short: String = m.chars().take(19).collect();
                    println!("{r:<48} {short:<19} {size:>12} {layers:>6}");
                }
            }
        }
        ImageCommand::Rm { reference } => {
            let r2 = reference.clone();
            blocking(move || Ok(p.store().untag(&r2)?)).await?;
            println!("removed {reference}");
        }
        ImageCommand::Prune { all, keep } => {
            let keep = if all {
                Keep::Only(keep)
            } else {
                Keep::AllTagged
            };
            let report = blocking(move || Ok(p.prune_blocking(keep)?)).await?;
            println!(
                "removed {} references, {} images, {} blobs, {} layers",
                report.references.len(),
                report.images.len(),
                report.blobs.len(),
                report.layers.len()
            );
        }
    }
    Ok(0)
}
