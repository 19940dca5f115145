//! The attach protocol: a supervisor serves its container's stdio on a
//! Unix socket (`attach.sock` in the container's runtime dir, mode 0600,
//! berth's own directory), and any number of clients attach to it.
//!
//! Frames, both ways: `[kind u8][len u32 big-endian][payload]`.
//! - supervisor → client: [`STDOUT`], [`STDERR`] (output bytes, also
//!   written to the logs), [`EXIT`] (the exit status, sent once the init
//!   is reaped and its output drained; the last frame).
//! - client → supervisor: [`STDIN`] (bytes for the command's stdin, when
//!   it was launched with `stdin_open` or a tty), [`STDIN_CLOSE`] (the
//!   command reads EOF), [`RESIZE`] (rows u16, cols u16, big-endian: the
//!   tty's window size).
//!
//! A client that does not read is dropped once its buffer in the
//! supervisor is full; it never blocks the container.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The socket's name in the container's runtime dir.
pub const SOCKET: &str = "attach.sock";

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const EXIT: u8 = 3;
pub const STDIN: u8 = 4;
pub const STDIN_CLOSE: u8 = 5;
pub const RESIZE: u8 = 6;

/// The largest payload accepted (a sanity bound on a peer's header).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// How the process ended, as an [`EXIT`] frame carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Shell style: the code, 128+N for signal N, 128 for a start error.
    pub code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
}

/// One frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(Exit),
    Stdin(Vec<u8>),
    StdinClose,
    Resize { rows: u16, cols: u16 },
}

fn bad(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl Frame {
    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Stdout(b) => (STDOUT, b.clone()),
            Frame::Stderr(b) => (STDERR, b.clone()),
            Frame::Stdin(b) => (STDIN, b.clone()),
            Frame::StdinClose => (STDIN_CLOSE, Vec::new()),
            Frame::Exit(e) => {
                let mut p = e.code.to_be_bytes().to_vec();
                p.push(e.signal.is_some() as u8);
                p.extend(e.signal.unwrap_or(0).to_be_bytes());
                (EXIT, p)
            }
            Frame::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend(cols.to_be_bytes());
                (RESIZE, p)
            }
        };
        encode_raw(kind, &payload)
    }

    /// A frame from its kind and payload.
    pub fn decode(kind: u8, payload: Vec<u8>) -> io::Result<Frame> {
        Ok(match kind {
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            STDIN => Frame::Stdin(payload),
            STDIN_CLOSE => Frame::StdinClose,
            EXIT if payload.len() == 9 => {
                let code = i32::from_be_bytes(payload[0..4].try_into().unwrap_or_default());
                let sig = i32::from_be_bytes(payload[5..9].try_into().unwrap_or_default());
                Frame::Exit(Exit {
                    code,
                    signal: (payload[4] == 1).then_some(sig),
                })
            }
            RESIZE if payload.len() == 4 => Frame::Resize {
                rows: u16::from_be_bytes([payload[0], payload[1]]),
                cols: u16::from_be_bytes([payload[2], payload[3]]),
            },
            k => {
                return Err(bad(format!(
                    "attach frame of kind {k} with {} bytes",
                    payload.len()
                )))
            }
        })
    }
}

/// A header and payload, as [`Frame::encode`] writes them.
pub fn encode_raw(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(kind);
    v.extend((payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Reads one frame; `None` at a clean end of stream (between frames).
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(bad(format!("attach frame of {len} bytes is too large")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Frame::decode(head[0], payload).map(Some)
}

/// Frames out of a byte stream read piecemeal (non-blocking readers).
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(bad(format!("attach frame of {len} bytes is too large")));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Frame::decode(kind, payload).map(Some)
    }
}

/// A path for `bind`/`connect` that fits `sun_path` (108 bytes): long
/// ones go through `/proc/self/fd/N/` of their directory, held by the
/// returned fd until the call is made.
fn short_path(path: &Path) -> io::Result<(PathBuf, Option<OwnedFd>)> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() < 100 {
        return Ok((path.to_path_buf(), None));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(bad(format!(
            "socket path {} has no directory",
            path.display()
        )));
    };
    let fd: OwnedFd = std::fs::File::open(dir)?.into();
    let short = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name);
    Ok((short, Some(fd)))
}

/// Binds the attach socket at `path` (a stale one is replaced), mode
/// 0600, non-blocking.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let (short, _hold) = short_path(path)?;
    // Bound under a 0077 umask, so nobody else can connect before the chmod.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let bound = UnixListener::bind(&short);
    nix::sys::stat::umask(old);
    let l = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// A client of an attach socket.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
}

/// Connects to the attach socket at `path`.
pub fn connect(path: &Path) -> io::Result<Client> {
    let (short, _hold) = short_path(path)?;
    Ok(Client {
        stream: UnixStream::connect(short)?,
    })
}

impl Client {
    /// The next frame from the supervisor; `None` when it closed the
    /// connection (after [`EXIT`], or it died).
    pub fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        read_frame(&mut self.stream)
    }

    pub fn write_stdin(&mut self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_PAYLOAD) {
            self.stream.write_all(&encode_raw(STDIN, chunk))?;
        }
        Ok(())
    }

    pub fn close_stdin(&mut self) -> io::Result<()> {
        self.stream.write_all(&Frame::StdinClose.encode())
    }

    pub fn resize(&mut self, rows: u16, cols: u16) -> io::Result<()> {
        self.stream
            .write_all(&Frame::Resize { rows, cols }.encode())
    }

    /// A second handle on the same connection (one thread reads, one writes).
    pub fn try_clone(&self) -> io::Result<Client> {
        Ok(Client {
            stream: self.stream.try_clone()?,
        })
    }

    /// The underlying stream (e.g. for an async runtime).
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Stdout(b"out".to_vec()),
            Frame::Stderr(Vec::new()),
            Frame::Exit(Exit {
                code: 137,
                signal: Some(9),
            }),
            Frame::Exit(Exit {
                code: 3,
                signal: None,
            }),
            Frame::Stdin(b"in\n".to_vec()),
            Frame::StdinClose,
            Frame::Resize { rows: 24, cols: 80 },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(f.encode());
        }
        let mut r = wire.as_slice();
        for f in &frames {
            assert_eq!(read_frame(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut r).unwrap(), None);
        // Piecemeal, a byte at a time.
        let mut fb = FrameBuf::default();
        let mut got = Vec::new();
        for b in &wire {
            fb.push(&[*b]);
            while let Some(f) = fb.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert!(Frame::decode(99, Vec::new()).is_err());
        assert!(Frame::decode(RESIZE, vec![1]).is_err());
    }
}
