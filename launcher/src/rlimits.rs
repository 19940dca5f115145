//! Resource limits (`setrlimit`) by their lower-case names.

use berth_state::Rlimit;

/// An rlimit name berth does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown rlimit {0:?} (expected e.g. \"nofile\", \"nproc\", \"core\")")]
pub struct UnknownRlimit(pub String);

/// The `RLIMIT_*` resource of `name` ("nofile", "RLIMIT_NOFILE", …).
pub fn resource(name: &str) -> Result<libc::__rlimit_resource_t, UnknownRlimit> {
    let lower = name.to_ascii_lowercase();
    let short = lower.strip_prefix("rlimit_").unwrap_or(&lower);
    Ok(match short {
        "as" => libc::RLIMIT_AS,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return Err(UnknownRlimit(name.to_string())),
    })
}

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
        assert_eq!(resource("nofile").unwrap(), libc::RLIMIT_NOFILE);
        assert_eq!(resource("RLIMIT_CORE").unwrap(), libc::RLIMIT_CORE);
        assert_eq!(resource("bogus"), Err(UnknownRlimit("bogus".into())));
        let bad = [Rlimit {
            name: "nofiles".into(),
            soft: 1,
            hard: 1,
        }];
        assert!(validate(&bad).is_err());
    }
}
