//! berth's shared foundation: the data model (protobuf, compiled by prost),
//! the checkpoint store over sled, and the runtime-dir layout that
//! per-container supervisors write into.
//!
//! Every other berth crate depends on this one and on nothing else of berth.

pub mod capabilities;
pub mod cgroupfs;
pub mod id;
pub mod process;
pub mod rlimits;
pub mod runtime;
pub mod safe_path;
pub mod store;
pub mod time;
pub mod trash;

/// The protobuf data model (`state/proto/berth/v1/model.proto`).
///
/// These types are the vocabulary of the plugin API and the checkpoint
/// format; their docs come from the `.proto` comments.
#[allow(clippy::all, missing_docs)]
pub mod model {
    include!(concat!(env!("OUT_DIR"), "/berth.v1.rs"));
}

pub use id::IdError;
pub use model::*;
pub use runtime::{ExitStatus, RuntimeDir, RuntimeError};
pub use store::{LoadedRecord, Store, StoreError};
