//! `posix/rlimits`: the config's resource limits (nofile, nproc, core, …)
//! checked at prepare and handed to the launcher, which sets them on the
//! container's init before exec (as Mesos's posix/rlimits isolator).
//!
//! ```
//! use berth_isolators::rlimits::PosixRlimits;
//! let isolator = PosixRlimits; // Containerizer::builder(..).isolator(isolator)
//! # let _ = isolator;
//! ```

use crate::{Isolator, IsolatorError, IsolatorFuture, PrepareRequest};
use berth_state::{LaunchInfo, Rlimit};

/// The isolator's name, as `berth run --rlimit` needs it.
pub const NAME: &str = "posix/rlimits";

/// The `posix/rlimits` isolator.
#[derive(Debug, Default, Clone, Copy)]
pub struct PosixRlimits;

/// Why `limits` cannot be applied, naming the offending entry.
pub fn check(limits: &[Rlimit]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for l in limits {
        let res = berth_state::rlimits::resource(&l.name).map_err(|e| e.to_string())?;
        if l.soft > l.hard {
            return Err(format!(
                "rlimit {}: soft limit {} is above the hard limit {}",
                l.name,
                show(l.soft),
                show(l.hard)
            ));
        }
        if !seen.insert(res) {
            return Err(format!("rlimit {} is given twice", l.name));
        }
    }
    Ok(())
}

fn show(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

impl Isolator for PosixRlimits {
    fn name(&self) -> &str {
        NAME
    }

    fn watches(&self) -> bool {
        false
    }

    fn isolates(&self) -> bool {
        false
    }

    fn supports_nesting(&self) -> bool {
        true
    }

    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        let limits = req.config.rlimits.clone();
        let id = req.id.clone();
        Box::pin(async move {
            if limits.is_empty() {
                return Ok(None);
            }
            check(&limits).map_err(|why| IsolatorError::invalid(&id, "rlimits", why))?;
            Ok(Some(LaunchInfo {
                rlimits: limits,
                ..Default::default()
            }))
        })
    }

    fn cleanup(&mut self, _id: &berth_state::ContainerId) -> IsolatorFuture<()> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, soft: u64, hard: u64) -> Rlimit {
        Rlimit {
            name: name.into(),
            soft,
            hard,
        }
    }

    #[test]
    fn limits_are_checked() {
        assert!(check(&[r("nofile", 1024, 2048), r("core", 0, u64::MAX)]).is_ok());
        assert!(check(&[r("nofiles", 1, 1)])
            .unwrap_err()
            .contains("nofiles"));
        let e = check(&[r("nofile", 10, 5)]).unwrap_err();
        assert!(e.contains("soft limit 10 is above the hard limit 5"), "{e}");
        assert!(check(&[r("nofile", 1, 1), r("RLIMIT_NOFILE", 2, 2)])
            .unwrap_err()
            .contains("twice"));
    }
}
