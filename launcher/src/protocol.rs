//! The launcher ↔ supervisor ↔ init protocol, both ends in one place.
//!
//! Control socket (a Unix stream socketpair, launcher ↔ supervisor):
//! 1. launcher → supervisor: the [`SupervisorRequest`] (u32 little-endian
//!    length, then protobuf bytes);
//!    With `stdio_passed`, one byte follows carrying the stdio fds
//!    (SCM_RIGHTS; see [`send_fds`]);
//! 2. supervisor → launcher: one [`Reply`] line, once the init is set up
//!    and blocked (or could not be);
//! 3. launcher → supervisor: [`RELEASE`]. EOF before it means the agent
//!    went away mid-launch: the supervisor kills the blocked init.
//!
//! Status pipe (init → supervisor, close-on-exec): [`READY`] after the
//! setup, or [`ERROR`] followed by `ERRNO MESSAGE` when a step or the exec
//! failed; EOF without an error means the exec succeeded.

use berth_state::{ProcessRef, SupervisorRequest};
use prost::Message;
use std::io::{self, Read, Write};

/// Release byte (launcher → supervisor → init).
pub const RELEASE: u8 = b'R';
/// Supervisor → launcher, on the control socket: the init's exit status
/// is recorded in the runtime dir; see [`exited`].
pub const EXITED: u8 = b'X';

/// The message that tells the launcher the init's exit status once it is
/// recorded: [`EXITED`], the status's length (u32, little endian) and the
/// status as the runtime dir's `exit_status` file holds it.
pub fn exited(status: &berth_state::ExitStatus) -> Vec<u8> {
    let text = status.encode();
    let mut msg = Vec::with_capacity(5 + text.len());
    msg.push(EXITED);
    msg.extend_from_slice(&(text.len() as u32).to_le_bytes());
    msg.extend_from_slice(text.as_bytes());
    msg
}

/// The status in an [`exited`] message, if `msg` holds one whole.
pub fn decode_exited(msg: &[u8]) -> Option<berth_state::ExitStatus> {
    let (&tag, rest) = msg.split_first()?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let text = std::str::from_utf8(rest.get(4..4 + len)?).ok()?;
    (tag == EXITED)
        .then(|| berth_state::ExitStatus::decode(text))
        .flatten()
}
/// Init → supervisor: set up and blocked.
pub const READY: u8 = b'R';
/// Init → supervisor: a step failed; `ERRNO MESSAGE` follows.
pub const ERROR: u8 = b'E';

/// The largest request accepted (a sanity bound, not a real limit).
const MAX_REQUEST: usize = 16 << 20;

/// Writes `req` framed by its length.
pub fn write_request(w: &mut impl Write, req: &SupervisorRequest) -> io::Result<()> {
    let body = req.encode_to_vec();
    w.write_all(&(body.len() as u32).to_le_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// Sends `fds` as one byte with SCM_RIGHTS (after a request whose
/// `stdio_passed` is set).
pub fn send_fds(s: &std::os::unix::net::UnixStream, fds: &[std::os::fd::RawFd]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let byte = [0u8];
    let iov = [io::IoSlice::new(&byte)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(s.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// Receives what [`send_fds`] sent: at most `max` fds, close-on-exec.
pub fn recv_fds(
    s: &std::os::unix::net::UnixStream,
    max: usize,
) -> io::Result<Vec<std::os::fd::OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 3]);
    let msg = recvmsg::<()>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut out = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: fresh fds the kernel installed for us.
            out.extend(
                fds.into_iter()
                    .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.bytes != 1 || out.len() > max || msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "expected one byte with at most {max} fds, got {} bytes and {} fds",
                msg.bytes,
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// Reads a request written by [`write_request`].
pub fn read_request(r: &mut impl Read) -> io::Result<SupervisorRequest> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("request of {len} bytes is too large"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    SupervisorRequest::decode(body.as_slice())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad request: {e}")))
}

/// The supervisor's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The init exists and is blocked.
    Ready {
        /// The supervisor and the blocked init.
        supervisor: ProcessRef,
        init: ProcessRef,
    },
    /// Setting up the init failed (the exit status says the same).
    /// The errno and the failed step, as text.
    Failed { errno: i32, message: String },
}

impl Reply {
    /// One line: `ready SUP START INIT START` or `failed ERRNO MESSAGE`.
    pub fn encode(&self) -> String {
        match self {
            Reply::Ready { supervisor, init } => format!(
                "ready {} {} {} {}\n",
                supervisor.pid, supervisor.start_time, init.pid, init.start_time
            ),
            Reply::Failed { errno, message } => {
                format!("failed {errno} {}\n", message.replace('\n', " "))
            }
        }
    }

    /// Parses a line made by [`encode`](Reply::encode).
    pub fn decode(line: &str) -> Option<Reply> {
        let line = line.strip_suffix('\n')?;
        let (kind, rest) = line.split_once(' ')?;
        match kind {
            "ready" => {
                let n: Vec<&str> = rest.split(' ').collect();
                if n.len() != 4 {
                    return None;
                }
                Some(Reply::Ready {
                    supervisor: ProcessRef {
                        pid: n[0].parse().ok()?,
                        start_time: n[1].parse().ok()?,
                    },
                    init: ProcessRef {
                        pid: n[2].parse().ok()?,
                        start_time: n[3].parse().ok()?,
                    },
                })
            }
            "failed" => {
                let (errno, message) = rest.split_once(' ').unwrap_or((rest, ""));
                Some(Reply::Failed {
                    errno: errno.parse().ok()?,
                    message: message.to_string(),
                })
            }
            _ => None,
        }
    }
}

/// Encodes an init's error report (after the [`ERROR`] byte).
pub fn encode_error(errno: i32, message: &str) -> Vec<u8> {
    let mut v = vec![ERROR];
    v.extend_from_slice(format!("{errno} {}", message.replace('\n', " ")).as_bytes());
    v
}

/// Decodes what the init wrote on its status pipe after [`READY`] (or
/// instead of it): `None` when it wrote nothing (the exec succeeded).
pub fn decode_error(bytes: &[u8]) -> Option<(i32, String)> {
    let rest = bytes.strip_prefix(&[ERROR])?;
    let text = String::from_utf8_lossy(rest);
    let (errno, msg) = text.split_once(' ').unwrap_or((&text, ""));
    Some((errno.parse().unwrap_or(0), msg.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        for r in [
            Reply::Ready {
                supervisor: ProcessRef {
                    pid: 10,
                    start_time: 11,
                },
                init: ProcessRef {
                    pid: 12,
                    start_time: 13,
                },
            },
            Reply::Failed {
                errno: 2,
                message: "mount proc on /x: No such file or directory (os error 2)".into(),
            },
        ] {
            assert_eq!(Reply::decode(&r.encode()), Some(r));
        }
        assert_eq!(Reply::decode("ready 1 2\n"), None);
        assert_eq!(Reply::decode("ready 1 2 3 4"), None);
    }

    #[test]
    fn requests_and_errors_round_trip() {
        let req = SupervisorRequest {
            container_id: "a/b".into(),
            argv: vec!["sh".into()],
            ..Default::default()
        };
        let mut buf = Vec::new();
        write_request(&mut buf, &req).unwrap();
        assert_eq!(read_request(&mut buf.as_slice()).unwrap(), req);
        let e = encode_error(13, "exec /x: Permission denied (os error 13)");
        assert_eq!(
            decode_error(&e),
            Some((13, "exec /x: Permission denied (os error 13)".into()))
        );
        assert_eq!(decode_error(b""), None);
    }

    #[test]
    fn an_exit_notice_round_trips_only_whole() {
        use berth_state::ExitStatus;
        for st in [
            ExitStatus::Exited {
                code: 3,
                at_unix_nanos: 7,
            },
            ExitStatus::Signaled {
                signal: 9,
                at_unix_nanos: 8,
            },
            ExitStatus::StartError {
                errno: 2,
                message: "exec /nope: No such file or directory".into(),
                at_unix_nanos: 9,
            },
        ] {
            let msg = exited(&st);
            assert_eq!(decode_exited(&msg), Some(st.clone()));
            // A message still arriving, or something else, is not one.
            for cut in 0..msg.len() {
                assert_eq!(decode_exited(&msg[..cut]), None, "cut at {cut}");
            }
            let mut other = msg.clone();
            other[0] = ERROR;
            assert_eq!(decode_exited(&other), None);
        }
    }
}
