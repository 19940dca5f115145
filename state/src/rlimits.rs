//! Resource-limit (`setrlimit`) names, shared by the `posix/rlimits`
//! isolator (which validates a config) and the launcher (which applies it).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_resources() {
        assert_eq!(resource("nofile").unwrap(), libc::RLIMIT_NOFILE);
        assert_eq!(resource("RLIMIT_CORE").unwrap(), libc::RLIMIT_CORE);
        assert_eq!(resource("bogus"), Err(UnknownRlimit("bogus".into())));
    }
}
