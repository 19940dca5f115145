//! `Logs`: the container's output read back from its sandbox log files
//! (written and rotated by its supervisor), rotated files included.
//!
//! The sandbox is the container's, so every name there may be a planted
//! link, FIFO, device or hard link: the sandbox is opened with no symlink
//! on the way and each file beneath its fd, refused unless it is a regular
//! file with one link (`safe_path::open_read_beneath`). Blocking file I/O:
//! the service runs a [`LogReader`] on the blocking pool.

use super::api::LogChunk;
use berth_state::safe_path;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The largest chunk sent in one message.
const CHUNK: usize = 64 * 1024;
/// Rotated files looked for beyond the ones the settings keep (the
/// settings may have been lowered since).
const MAX_ROTATED: u32 = 64;

/// What to read.
#[derive(Debug, Clone)]
pub struct LogQuery {
    pub tail: Option<u64>,
    pub since_unix_nanos: i64,
    pub stdout: bool,
    pub stderr: bool,
}

/// The reader of one container's logs, kept between polls when following.
pub struct LogReader {
    dir: OwnedFd,
    sandbox: PathBuf,
    cri: bool,
    query: LogQuery,
    /// Plain: stdout's and stderr's live files; CRI: `container.log`.
    followers: Vec<Follower>,
}

/// A live file read from where the last read stopped; it notices when the
/// supervisor rotated the name to a new file.
struct Follower {
    name: &'static str,
    stderr: bool,
    file: Option<File>,
    ino: u64,
    /// CRI: the start of a line not yet complete.
    partial: Vec<u8>,
}

/// A logs request that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("logs of {sandbox}: {source}")]
    Sandbox {
        sandbox: String,
        #[source]
        source: safe_path::SafePathError,
    },
    #[error("--since needs timestamps in the log: launch the container with --log-format cri")]
    SinceNeedsCri,
}

impl LogReader {
    /// Opens the sandbox of a container whose logs are in `format`.
    pub fn open(sandbox: &Path, format: &str, query: LogQuery) -> Result<LogReader, LogsError> {
        let cri = format == "cri";
        if !cri && query.since_unix_nanos != 0 {
            return Err(LogsError::SinceNeedsCri);
        }
        let dir = safe_path::open_dir(sandbox, None).map_err(|source| LogsError::Sandbox {
            sandbox: sandbox.display().to_string(),
            source,
        })?;
        let follower = |name, stderr| Follower {
            name,
            stderr,
            file: None,
            ino: 0,
            partial: Vec::new(),
        };
        let followers = if cri {
            vec![follower("container.log", false)]
        } else {
            let mut v = Vec::new();
            if query.stdout {
                v.push(follower("stdout", false));
            }
            if query.stderr {
                v.push(follower("stderr", true));
            }
            v
        };
        Ok(LogReader {
            dir,
            sandbox: sandbox.to_path_buf(),
            cri,
            query,
            followers,
        })
    }

    fn open_file(&self, name: &str) -> Option<File> {
        safe_path::open_read_beneath(self.dir.as_fd(), Path::new(name), &self.sandbox.join(name))
            .ok()
    }

    /// Everything in the files now (oldest rotated file first), `tail`
    /// and `since` applied; each live file stays open at its end.
    pub fn initial(&mut self) -> Vec<LogChunk> {
        let mut out = Vec::new();
        for i in 0..self.followers.len() {
            let name = self.followers[i].name;
            let ino =
                |f: &Option<File>| f.as_ref().and_then(|f| f.metadata().ok()).map(|m| m.ino());
            // The live file first, then the rotated ones; a rotation in
            // between (the live name is another file by then) would skip
            // a file: then again.
            let (mut live, mut rotated) = (None, Vec::new());
            for _ in 0..5 {
                live = self.open_file(name);
                rotated = (1..=MAX_ROTATED)
                    .rev()
                    .filter_map(|n| self.open_file(&format!("{name}.{n}")))
                    .collect();
                if ino(&self.open_file(name)) == ino(&live) {
                    break;
                }
            }
            let mut all = Vec::new();
            for mut f in rotated {
                let _ = f.read_to_end(&mut all);
            }
            if let Some(mut f) = live {
                let _ = f.read_to_end(&mut all);
                self.followers[i].ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
                self.followers[i].file = Some(f);
            }
            if self.cri {
                // A last line not yet complete waits for the rest.
                let cut = all
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map(|p| p + 1)
                    .unwrap_or(0);
                self.followers[i].partial = all.split_off(cut);
                let mut lines = parse_cri(&all, &self.query);
                if let Some(t) = self.query.tail {
                    let skip = lines.len().saturating_sub(t as usize);
                    lines.drain(..skip);
                }
                out.extend(merge(lines));
            } else {
                if let Some(t) = self.query.tail {
                    all = last_lines(&all, t);
                }
                let stderr = self.followers[i].stderr;
                out.extend(all.chunks(CHUNK).map(|c| LogChunk {
                    stderr,
                    data: c.to_vec(),
                    at_unix_nanos: 0,
                }));
            }
        }
        out
    }

    /// What was written since the last call (across a rotation).
    pub fn poll(&mut self) -> Vec<LogChunk> {
        let mut out = Vec::new();
        for i in 0..self.followers.len() {
            loop {
                let mut data = Vec::new();
                if let Some(f) = &mut self.followers[i].file {
                    let _ = f.read_to_end(&mut data);
                }
                self.emit(i, data, &mut out);
                // Rotated: the name is a new file now; the old one was read
                // to its end above.
                let name = self.followers[i].name;
                let Some(f) = self.open_file(name) else { break };
                let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
                if ino == self.followers[i].ino {
                    break;
                }
                self.followers[i].file = Some(f);
                self.followers[i].ino = ino;
            }
        }
        out
    }

    fn emit(&mut self, i: usize, data: Vec<u8>, out: &mut Vec<LogChunk>) {
        if data.is_empty() {
            return;
        }
        let fo = &mut self.followers[i];
        if self.cri {
            fo.partial.extend(data);
            let cut = fo.partial.iter().rposition(|b| *b == b'\n').map(|p| p + 1);
            if let Some(cut) = cut {
                let rest = fo.partial.split_off(cut);
                let whole = std::mem::replace(&mut fo.partial, rest);
                out.extend(merge(parse_cri(&whole, &self.query)));
            }
        } else {
            out.extend(data.chunks(CHUNK).map(|c| LogChunk {
                stderr: fo.stderr,
                data: c.to_vec(),
                at_unix_nanos: 0,
            }));
        }
    }
}

/// The last `n` lines of `data` (a last line without a newline counts).
fn last_lines(data: &[u8], n: u64) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return data[i + 1..].to_vec();
            }
        }
    }
    data.to_vec()
}

/// One CRI line: `TIMESTAMP STREAM F|P TEXT`.
#[derive(Debug, PartialEq)]
pub struct CriLine {
    pub at_unix_nanos: i64,
    pub stderr: bool,
    pub partial: bool,
    pub text: Vec<u8>,
}

/// Parses one CRI log line (without its newline).
pub fn parse_cri_line(line: &[u8]) -> Option<CriLine> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    Some(CriLine {
        at_unix_nanos: berth_state::time::parse_rfc3339(ts)?,
        stderr: match stream {
            b"stdout" => false,
            b"stderr" => true,
            _ => return None,
        },
        partial: match tag {
            b"F" => false,
            b"P" => true,
            _ => return None,
        },
        text: text.to_vec(),
    })
}

/// The lines of `data` that pass the query's stream and `since` filters.
fn parse_cri(data: &[u8], q: &LogQuery) -> Vec<CriLine> {
    data.split(|b| *b == b'\n')
        .filter_map(parse_cri_line)
        .filter(|l| if l.stderr { q.stderr } else { q.stdout })
        .filter(|l| l.at_unix_nanos >= q.since_unix_nanos)
        .collect()
}

/// Lines as chunks: a full line gets its newline back; consecutive lines
/// of one stream go in one chunk.
fn merge(lines: Vec<CriLine>) -> Vec<LogChunk> {
    let mut out: Vec<LogChunk> = Vec::new();
    for mut l in lines {
        if !l.partial {
            l.text.push(b'\n');
        }
        match out.last_mut() {
            Some(c) if c.stderr == l.stderr && c.data.len() + l.text.len() <= CHUNK => {
                c.data.extend(l.text)
            }
            _ => out.push(LogChunk {
                stderr: l.stderr,
                data: l.text,
                at_unix_nanos: l.at_unix_nanos,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_and_cri_lines() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\n", 5), b"a\n");
        assert_eq!(last_lines(b"a\n", 0), b"");
        let l = parse_cri_line(b"2016-10-06T00:17:09.669794202Z stderr P some text").unwrap();
        assert_eq!(
            l,
            CriLine {
                at_unix_nanos: 1_475_713_029_669_794_202,
                stderr: true,
                partial: true,
                text: b"some text".to_vec()
            }
        );
        assert!(parse_cri_line(b"2016-10-06T00:17:09Z stdin F x").is_none());
        assert!(parse_cri_line(b"garbage").is_none());
        let q = LogQuery {
            tail: None,
            since_unix_nanos: 0,
            stdout: true,
            stderr: true,
        };
        let lines = parse_cri(
            b"2016-10-06T00:17:09Z stdout P ab\n2016-10-06T00:17:09Z stdout F c\n2016-10-06T00:17:10Z stderr F e\n",
            &q,
        );
        let chunks = merge(lines);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].data, b"abc\n");
        assert!(chunks[1].stderr);
    }
}
