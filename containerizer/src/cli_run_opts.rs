//! `berth` flags for the volume, disk and network isolators: the operator's
//! node options (global) and the per-run options, kept out of main.rs.

use berth::NodeOptions;
use clap::Args;
use std::path::PathBuf;

/// Global flags: the operator's node options.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// Host directory that `--volume …:ro` may mount (repeatable).
    #[arg(long = "volume-allow-ro", global = true, value_name = "DIR")]
    pub volume_allow_ro: Vec<PathBuf>,
    /// Host directory that `--volume` may mount read-write (repeatable).
    #[arg(long = "volume-allow-rw", global = true, value_name = "DIR")]
    pub volume_allow_rw: Vec<PathBuf>,
}

impl NodeArgs {
    pub fn options(&self) -> NodeOptions {
        NodeOptions {
            volume_allow_ro: self.volume_allow_ro.clone(),
            volume_allow_rw: self.volume_allow_rw.clone(),
        }
    }
}
