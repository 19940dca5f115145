//! `berth checkpoint` and `berth restore` (CRIU), through the agent.

use crate::agent::{client, parse_id, rpc_error};
use crate::Cli;
use anyhow::{Context as _, Result};
use berth::agent::api::{CheckpointRequest, RestoreRequest};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct CheckpointArgs {
    /// The running container's id.
    pub id: String,
    /// Where CRIU's images, its log, the rootfs changes and berth's
    /// manifest go (made if absent; must be empty).
    #[arg(long, value_name = "DIR")]
    pub image_dir: PathBuf,
    /// Keep the container running after the dump (default: destroy it).
    #[arg(long)]
    pub leave_running: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The new container's id.
    #[arg(long)]
    pub name: String,
    /// A `berth checkpoint` image dir.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The agent resolves paths itself: a relative one is made absolute here.
fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("image dir {}", p.display()))
}

pub async fn checkpoint(cli: &Cli, args: &CheckpointArgs) -> Result<i32> {
    let id = parse_id(&args.id)?;
    let dir = absolute(&args.image_dir)?;
    let mut c = client(cli).await?;
    let r = c
        .checkpoint(CheckpointRequest {
            id: Some(id.clone()),
            image_dir: dir.display().to_string(),
            leave_running: args.leave_running,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"id": id.to_string(), "image_dir": r.image_dir, "frozen_ms": r.frozen_ms})
        );
    } else {
        println!("{}", r.image_dir);
    }
    Ok(0)
}

pub async fn restore(cli: &Cli, args: &RestoreArgs) -> Result<i32> {
    let id = parse_id(&args.name)?;
    let dir = absolute(&args.from)?;
    let mut c = client(cli).await?;
    let r = c
        .restore(RestoreRequest {
            id: Some(id.clone()),
            image_dir: dir.display().to_string(),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"id": id.to_string(), "pid": r.pid})
        );
    } else {
        println!("{id}");
    }
    Ok(0)
}
