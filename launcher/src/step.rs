//! The error of one setup step of the container's init: what it was
//! doing, on which path, and the errno. The init sends it to its
//! supervisor, which records it as `ExitStatus::StartError`.

use std::fmt;

/// A failed setup step: `"<what>: <strerror> (os error N)"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// The step and its path, e.g. `mount proc on /proc`.
    pub what: String,
    /// The errno (0 when the failure was not a syscall's).
    pub errno: i32,
    /// The cause as text (`strerror` style, or a reason).
    pub cause: String,
}

impl StepError {
    /// A failed syscall with the errno in `e`.
    pub fn io(what: impl Into<String>, e: std::io::Error) -> Self {
        StepError {
            what: what.into(),
            errno: e.raw_os_error().unwrap_or(0),
            cause: e.to_string(),
        }
    }

    /// A failed syscall reported by nix.
    pub fn nix(what: impl Into<String>, e: nix::Error) -> Self {
        Self::io(what, std::io::Error::from_raw_os_error(e as i32))
    }

    /// A failure that is not a syscall's (bad input).
    pub fn invalid(what: impl Into<String>, cause: impl Into<String>) -> Self {
        StepError {
            what: what.into(),
            errno: libc::EINVAL,
            cause: cause.into(),
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.cause)
    }
}

impl std::error::Error for StepError {}

/// Result of a setup step.
pub type StepResult<T = ()> = Result<T, StepError>;
