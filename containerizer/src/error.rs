//! The containerizer's errors. They are `Clone` because one failure may be
//! delivered to several waiters (concurrent destroys share one attempt);
//! causes from other crates are kept as their messages.

use berth_state::ContainerState;

/// Why a containerizer call failed; every variant names the container.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ContainerizerError {
    #[error("container {0} is unknown")]
    UnknownContainer(String),
    #[error("container {0} already exists")]
    AlreadyExists(String),
    #[error("container {id}: invalid config: {why}")]
    InvalidConfig { id: String, why: String },
    #[error("container {id}: {option} needs {backing}, which this containerizer does not run")]
    Unsupported {
        id: String,
        option: String,
        backing: String,
    },
    #[error("container {id}: isolators' launch infos conflict: {why}")]
    Conflict { id: String, why: String },
    #[error("container {id} was destroyed during launch (in {state})")]
    DestroyedDuringLaunch { id: String, state: String },
    #[error("container {id}: {stage} failed: {message}")]
    Stage {
        id: String,
        stage: String,
        message: String,
    },
    #[error("container {id}: checkpoint failed: {message}")]
    Checkpoint { id: String, message: String },
    #[error("container {id} is {state}, not running")]
    NotRunning { id: String, state: String },
    #[error("container {id} has not terminated yet (it is {state})")]
    NotTerminated { id: String, state: String },
    #[error("the containerizer actor is gone")]
    Gone,
    #[error("{0}")]
    Setup(String),
}

pub(crate) fn state_name(state: i32) -> String {
    ContainerState::try_from(state)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("state {state}"))
}

pub(crate) fn stage(id: &impl ToString, stage: &str, e: impl ToString) -> ContainerizerError {
    let id = id.to_string();
    // Errors of the parts name the container too: said once is enough.
    let m = e.to_string();
    let message = m
        .strip_prefix(&format!("container {id}: "))
        .map(str::to_string)
        .unwrap_or(m);
    ContainerizerError::Stage {
        id,
        stage: stage.to_string(),
        message,
    }
}
