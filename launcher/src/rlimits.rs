//! Resource limits (`setrlimit`) by their lower-case names.

use berth_state::Rlimit;

pub use berth_state::rlimits::{resource, UnknownRlimit};

/// Checks every name of `limits` (the launcher does this before it starts
/// anything, so a typo is an error at launch, not a failed exec).
pub fn validate(limits: &[Rlimit]) -> Result<(), UnknownRlimit> {
    limits
        .iter()
        .try_for_each(|l| resource(&l.name).map(|_| ()))
}

/// Applies `limits` to the calling process. `u64::MAX` is unlimited.
pub fn apply(limits: &[Rlimit]) -> Result<(), (String, std::io::Error)> {
    for l in limits {
        let res = resource(&l.name)
            .map_err(|e| (l.name.clone(), std::io::Error::other(e.to_string())))?;
        let lim = libc::rlimit {
            rlim_cur: to_rlim(l.soft),
            rlim_max: to_rlim(l.hard),
        };
        // SAFETY: a valid resource and a pointer to a live rlimit struct.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            return Err((l.name.clone(), std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn to_rlim(v: u64) -> libc::rlim_t {
    if v == u64::MAX {
        libc::RLIM_INFINITY
    } else {
        v as libc::rlim_t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_resources() {
        let bad = [Rlimit {
            name: "nofiles".into(),
            soft: 1,
            hard: 1,
        }];
        assert!(validate(&bad).is_err());
    }
}
