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
}

#[cfg(test)]
mod tests {
    use super::*;

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
