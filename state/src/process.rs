//! Identifying processes robustly: a pid plus its start time.

use crate::model::ProcessRef;
use std::io;

/// The start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` when no such process exists.
pub fn start_time(pid: i32) -> io::Result<Option<u64>> {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ESRCH when the process vanished between open and read.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    parse_start_time(&stat).map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat has no start time: {stat:?}"),
        )
    })
}

/// Parses field 22 of a `/proc/PID/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after the
/// last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")" come fields 3.. ; start time is field 22 → index 19.
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl ProcessRef {
    /// A reference to the live process `pid`, with its current start time.
    pub fn of(pid: i32) -> io::Result<Option<ProcessRef>> {
        Ok(start_time(pid)?.map(|start_time| ProcessRef { pid, start_time }))
    }

    /// True when `pid` exists and is the same process (same start time).
    /// A zombie still counts as alive: it has not been reaped yet.
    pub fn is_alive(&self) -> bool {
        self.pid > 0 && matches!(start_time(self.pid), Ok(Some(t)) if t == self.start_time)
    }

    /// Opens one of this process's namespaces (`ns` as named under
    /// `/proc/PID/ns`: "net", "ipc", "uts", "pid", "mnt", "cgroup", "user").
    ///
    /// Race-free against pid reuse: the process's /proc directory is
    /// opened first and everything after is read through that fd, which
    /// keeps naming the same task (once it is reaped, lookups beneath it
    /// fail), and its start time must be this reference's.
    pub fn open_namespace(&self, ns: &str) -> io::Result<std::os::fd::OwnedFd> {
        use nix::fcntl::{openat, OFlag};
        use nix::sys::stat::Mode;
        use std::io::Read;
        let gone = || {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "process {} (start time {}) is gone",
                    self.pid, self.start_time
                ),
            )
        };
        if self.pid <= 0 || ns.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no namespace {ns:?} of pid {}", self.pid),
            ));
        }
        let dir = match std::fs::File::open(format!("/proc/{}", self.pid)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone()),
            Err(e) => return Err(e),
        };
        let at = |name: &str| {
            use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
            let fd = openat(
                Some(dir.as_raw_fd()),
                name,
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                nix::errno::Errno::ENOENT | nix::errno::Errno::ESRCH => gone(),
                e => io::Error::from(e),
            })?;
            // SAFETY: openat just returned this fd and nothing else owns it.
            Ok::<OwnedFd, io::Error>(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let mut stat = String::new();
        std::fs::File::from(at("stat")?).read_to_string(&mut stat)?;
        if parse_start_time(&stat) != Some(self.start_time) {
            return Err(gone());
        }
        at(&format!("ns/{ns}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_of_a_live_process_only() {
        let me = ProcessRef::of(std::process::id() as i32).unwrap().unwrap();
        let ns = me.open_namespace("net").unwrap();
        let mine = std::fs::metadata("/proc/self/ns/net").unwrap();
        let got = std::fs::File::from(ns).metadata().unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((got.dev(), got.ino()), (mine.dev(), mine.ino()));
        let stale = ProcessRef {
            start_time: me.start_time + 1,
            ..me
        };
        let e = stale.open_namespace("net").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(me.open_namespace("../../etc").is_err());
    }

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "123 (a b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 20";
        assert_eq!(parse_start_time(line), Some(4242));
    }

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessRef::of(std::process::id() as i32).unwrap().unwrap();
        assert!(me.is_alive());
        let other = ProcessRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
    }
}
