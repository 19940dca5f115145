//! The container's log files in its sandbox, written by the supervisor
//! from the command's pipes (or tty), rotated by size.
//!
//! `plain`: stdout goes to `stdout`, stderr to `stderr`. `cri`: both go to
//! `container.log`, one line per output line, as kubelet and containerd
//! write it: `RFC3339Nano-timestamp stdout|stderr F|P text` (`P` for a
//! part of a line longer than [`CRI_MAX_LINE`]).
//!
//! Rotation: past `max_bytes`, `NAME` becomes `NAME.1` (`NAME.1` becomes
//! `NAME.2`, …; at most `max_files` files, the live one included, so the
//! oldest is replaced). The sandbox is the container's: every name there
//! may be a planted symlink, directory or FIFO. Renames are `renameat` on
//! the sandbox's dir fd (a planted link is moved or replaced, never
//! followed), and the new live file is created `O_EXCL` after whatever is
//! at its name was removed.

use berth_state::safe_path;
use berth_state::LogSettings;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The live file names.
pub const STDOUT: &str = "stdout";
pub const STDERR: &str = "stderr";
pub const CRI_LOG: &str = "container.log";

/// A CRI line longer than this is written in parts tagged `P`
/// (containerd's buffer size).
pub const CRI_MAX_LINE: usize = 16 * 1024;

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The sandbox's log files.
pub struct Logs {
    dir: OwnedFd,
    sandbox: PathBuf,
    max_bytes: u64,
    max_files: u32,
    kind: Kind,
}

enum Kind {
    Plain {
        out: Rotating,
        err: Rotating,
    },
    Cri {
        file: Rotating,
        partial: [Vec<u8>; 2],
    },
}

/// One live file and its size.
struct Rotating {
    name: &'static str,
    /// `None` once it could not be made again (the output is dropped).
    file: Option<File>,
    size: u64,
}

impl Logs {
    /// Opens (creates or appends to) the live files in the sandbox `dir`.
    pub fn open(
        dir: OwnedFd,
        sandbox: &Path,
        settings: &LogSettings,
    ) -> Result<Logs, safe_path::SafePathError> {
        let open = |name: &'static str| {
            let f = safe_path::create_file(&dir, Path::new(name), 0o644, &sandbox.join(name))?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            Ok::<_, safe_path::SafePathError>(Rotating {
                name,
                file: Some(f),
                size,
            })
        };
        let kind = match settings.format.as_str() {
            "cri" => Kind::Cri {
                file: open(CRI_LOG)?,
                partial: [Vec::new(), Vec::new()],
            },
            _ => Kind::Plain {
                out: open(STDOUT)?,
                err: open(STDERR)?,
            },
        };
        Ok(Logs {
            dir,
            sandbox: sandbox.to_path_buf(),
            max_bytes: settings.max_bytes,
            max_files: settings.max_files.max(1),
            kind,
        })
    }

    /// Writes output of `stream`. Errors are dropped: a full disk must
    /// not stop the copy (nor the container).
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let (dir, sandbox, max, files) = (&self.dir, &self.sandbox, self.max_bytes, self.max_files);
        match &mut self.kind {
            Kind::Plain { out, err } => {
                let f = match stream {
                    Stream::Stdout => out,
                    Stream::Stderr => err,
                };
                let mut rest = data;
                while !rest.is_empty() {
                    let room = match max {
                        0 => rest.len(),
                        m => (m.saturating_sub(f.size) as usize).min(rest.len()),
                    };
                    if room == 0 {
                        f.rotate(dir, sandbox, files);
                        continue;
                    }
                    f.write(&rest[..room]);
                    rest = &rest[room..];
                }
            }
            Kind::Cri { file, partial } => {
                let buf = &mut partial[stream as usize];
                buf.extend_from_slice(data);
                let mut start = 0;
                while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
                    // A long line that came in one read is split as one
                    // that came in pieces: whatever the reads' sizes.
                    let mut text = &buf[start..start + nl];
                    while text.len() > CRI_MAX_LINE {
                        let line = cri_line(stream, b'P', &text[..CRI_MAX_LINE]);
                        file.write_rotating(dir, sandbox, max, files, &line);
                        text = &text[CRI_MAX_LINE..];
                    }
                    let line = cri_line(stream, b'F', text);
                    file.write_rotating(dir, sandbox, max, files, &line);
                    start += nl + 1;
                }
                while buf.len() - start >= CRI_MAX_LINE {
                    let line = cri_line(stream, b'P', &buf[start..start + CRI_MAX_LINE]);
                    file.write_rotating(dir, sandbox, max, files, &line);
                    start += CRI_MAX_LINE;
                }
                buf.drain(..start);
            }
        }
    }

    /// The end of `stream`: a last line without a newline is written.
    pub fn finish(&mut self, stream: Stream) {
        let (dir, sandbox, max, files) = (&self.dir, &self.sandbox, self.max_bytes, self.max_files);
        if let Kind::Cri { file, partial } = &mut self.kind {
            let buf = std::mem::take(&mut partial[stream as usize]);
            if !buf.is_empty() {
                let line = cri_line(stream, b'F', &buf);
                file.write_rotating(dir, sandbox, max, files, &line);
            }
        }
    }
}

/// One CRI log line: `TIMESTAMP STREAM TAG TEXT\n`.
fn cri_line(stream: Stream, tag: u8, text: &[u8]) -> Vec<u8> {
    let ts = berth_state::time::rfc3339_nanos(berth_state::time::now_unix_nanos());
    let name = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    };
    let mut l = Vec::with_capacity(ts.len() + text.len() + 12);
    l.extend_from_slice(ts.as_bytes());
    l.push(b' ');
    l.extend_from_slice(name.as_bytes());
    l.push(b' ');
    l.push(tag);
    l.push(b' ');
    l.extend_from_slice(text);
    l.push(b'\n');
    l
}

impl Rotating {
    fn write(&mut self, data: &[u8]) {
        if let Some(f) = &mut self.file {
            if f.write_all(data).is_ok() {
                self.size += data.len() as u64;
            }
        }
    }

    /// Writes `data` whole, rotating first if it would pass `max`.
    fn write_rotating(&mut self, dir: &OwnedFd, sandbox: &Path, max: u64, files: u32, data: &[u8]) {
        if max > 0 && self.size > 0 && self.size + data.len() as u64 > max {
            self.rotate(dir, sandbox, files);
        }
        self.write(data);
    }

    /// `NAME.{files-2}` → `NAME.{files-1}`, …, `NAME` → `NAME.1`, then a
    /// new `NAME`. With one file the live one is simply replaced.
    fn rotate(&mut self, dir: &OwnedFd, sandbox: &Path, files: u32) {
        self.file = None;
        let name = |i: u32| match i {
            0 => PathBuf::from(self.name),
            i => PathBuf::from(format!("{}.{i}", self.name)),
        };
        for i in (0..files.saturating_sub(1)).rev() {
            let (from, to) = (name(i), name(i + 1));
            let shown = sandbox.join(&to);
            match safe_path::rename_at(dir, &from, &to, &shown) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                // Something the container made at the target that a file
                // cannot replace (a directory): removed, fd by fd.
                Err(_) => {
                    let _ = safe_path::remove_at(dir, to.as_os_str(), &shown);
                    let _ = safe_path::rename_at(dir, &from, &to, &shown);
                }
            }
        }
        let live = name(0);
        self.file = safe_path::create_new_file(dir, &live, 0o644, &sandbox.join(&live)).ok();
        self.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRI lines of `chunks` written to stdout as separate reads.
    fn cri_tags(chunks: &[&[u8]]) -> Vec<(String, usize)> {
        let dir = tempfile::tempdir().unwrap();
        let fd: OwnedFd = File::open(dir.path()).unwrap().into();
        let settings = LogSettings {
            format: "cri".into(),
            max_bytes: 0,
            max_files: 1,
        };
        let mut logs = Logs::open(fd, dir.path(), &settings).unwrap();
        for c in chunks {
            logs.write(Stream::Stdout, c);
        }
        logs.finish(Stream::Stdout);
        let text = std::fs::read_to_string(dir.path().join(CRI_LOG)).unwrap();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                (f[2].to_string(), f.get(3).map_or(0, |t| t.len()))
            })
            .collect()
    }

    #[test]
    fn a_long_line_is_split_the_same_whatever_the_reads() {
        let mut line = vec![b'b'; 20000];
        line.push(b'\n');
        let want = vec![
            ("P".to_string(), CRI_MAX_LINE),
            ("F".to_string(), 20000 - CRI_MAX_LINE),
        ];
        assert_eq!(cri_tags(&[&line]), want, "one read");
        assert_eq!(
            cri_tags(&[&line[..10000], &line[10000..]]),
            want,
            "two reads"
        );
        assert_eq!(
            cri_tags(&[&line[..CRI_MAX_LINE], &line[CRI_MAX_LINE..]]),
            want
        );
    }
}
