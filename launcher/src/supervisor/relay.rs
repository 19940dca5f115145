//! The supervisor's side of the command's stdio: it reads the command's
//! stdout/stderr pipes (or its tty's master), writes the logs and fans the
//! output out to attached clients; it feeds the command's stdin from the
//! clients' STDIN frames. All non-blocking, driven by the supervisor's one
//! poll loop (see [`crate::attach`] for the clients' protocol).

use super::logs::{Logs, Stream};
use crate::attach::{self, Exit, Frame, FrameBuf};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// Output a client may have queued before it is dropped: a client that
/// does not read must not hold up the container or the others.
const CLIENT_BUFFER: usize = 4 << 20;
/// stdin bytes queued for the command before clients are read no more
/// (backpressure: the command is not reading its stdin).
const STDIN_BUFFER: usize = 1 << 20;
/// How long the last output and the EXIT frame may take to reach the
/// clients when the supervisor exits.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// The supervisor's ends of the command's stdio.
#[derive(Default)]
pub(crate) struct Ends {
    /// stdout's read end, or the tty's master.
    pub out: Option<OwnedFd>,
    /// stderr's read end (none with a tty).
    pub err: Option<OwnedFd>,
    /// stdin's write end, or a duplicate of the tty's master.
    pub stdin: Option<OwnedFd>,
    /// The tty's master, for window sizes.
    pub tty: Option<OwnedFd>,
    /// Until the init sent the tty's master: the socket it comes over.
    pub tty_socket: Option<OwnedFd>,
}

/// What a poll entry is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tag {
    Out,
    Err,
    Stdin,
    Listener,
    Client(usize),
}

struct Client {
    stream: UnixStream,
    /// Encoded frames not yet written.
    out: Vec<u8>,
    inbuf: FrameBuf,
    gone: bool,
}

pub(crate) struct Relay {
    ends: Ends,
    stdin_buf: Vec<u8>,
    stdin_closing: bool,
    logs: Option<Logs>,
    listener: Option<UnixListener>,
    clients: Vec<Client>,
    exit: Option<Exit>,
}

fn set_nonblocking(fd: &OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(fl) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(fl));
    }
}

impl Relay {
    pub fn new(ends: Ends, logs: Option<Logs>, listener: Option<UnixListener>) -> Relay {
        let mut r = Relay {
            ends: Ends::default(),
            stdin_buf: Vec::new(),
            stdin_closing: false,
            logs,
            listener,
            clients: Vec::new(),
            exit: None,
        };
        r.set_ends(ends);
        r
    }

    /// Installs the ends (a tty's master arrives after the init's setup).
    pub fn set_ends(&mut self, ends: Ends) {
        for fd in [&ends.out, &ends.err, &ends.stdin].into_iter().flatten() {
            set_nonblocking(fd);
        }
        self.ends = ends;
    }

    /// The fds to poll and what each is for.
    pub fn poll_fds(&self, fds: &mut Vec<libc::pollfd>, tags: &mut Vec<Tag>) {
        let mut add = |fd: i32, events: libc::c_short, tag: Tag| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            tags.push(tag);
        };
        if let Some(fd) = &self.ends.out {
            add(fd.as_raw_fd(), libc::POLLIN, Tag::Out);
        }
        if let Some(fd) = &self.ends.err {
            add(fd.as_raw_fd(), libc::POLLIN, Tag::Err);
        }
        if let Some(fd) = &self.ends.stdin {
            if !self.stdin_buf.is_empty() || self.stdin_closing {
                add(fd.as_raw_fd(), libc::POLLOUT, Tag::Stdin);
            }
        }
        if let Some(l) = &self.listener {
            add(l.as_raw_fd(), libc::POLLIN, Tag::Listener);
        }
        let read_clients = self.stdin_buf.len() < STDIN_BUFFER;
        for (i, c) in self.clients.iter().enumerate() {
            let mut ev = 0;
            if read_clients {
                ev |= libc::POLLIN;
            }
            if !c.out.is_empty() {
                ev |= libc::POLLOUT;
            }
            add(c.stream.as_raw_fd(), ev, Tag::Client(i));
        }
    }

    /// Acts on one ready fd.
    pub fn handle(&mut self, tag: Tag) {
        match tag {
            Tag::Out => self.read_output(Stream::Stdout, false),
            Tag::Err => self.read_output(Stream::Stderr, false),
            Tag::Stdin => self.write_stdin(),
            Tag::Listener => self.accept(),
            Tag::Client(i) => self.serve_client(i),
        }
    }

    /// Whether a client has attached (and is still there).
    pub fn has_clients(&self) -> bool {
        self.clients.iter().any(|c| !c.gone)
    }

    /// Drops the clients that went away (after a round of [`handle`]).
    pub fn sweep(&mut self) {
        self.clients.retain(|c| !c.gone);
    }

    /// Reads whatever output is there now, to the end if the writers are
    /// gone: called when the init was reaped, before its exit is recorded.
    pub fn drain(&mut self) {
        self.read_output(Stream::Stdout, true);
        self.read_output(Stream::Stderr, true);
    }

    /// The init ended: every client (and every later one) gets `exit`.
    pub fn exited(&mut self, exit: Exit) {
        self.exit = Some(exit);
        let frame = Frame::Exit(exit).encode();
        for i in 0..self.clients.len() {
            self.queue(i, &frame);
        }
    }

    /// The supervisor is about to exit: the queued frames get a moment to
    /// reach their clients.
    pub fn finish(&mut self) {
        let deadline = Instant::now() + FINAL_FLUSH;
        for c in self.clients.iter_mut().filter(|c| !c.gone) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_write_timeout(Some(left));
            let _ = c.stream.write_all(&c.out);
        }
        self.clients.clear();
    }

    fn read_output(&mut self, stream: Stream, drain: bool) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let fd = match stream {
                Stream::Stdout => &self.ends.out,
                Stream::Stderr => &self.ends.err,
            };
            let Some(fd) = fd else { return };
            // SAFETY: a valid fd and a buffer of that length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                let data = &buf[..n as usize];
                if let Some(l) = &mut self.logs {
                    l.write(stream, data);
                }
                let kind = match stream {
                    Stream::Stdout => attach::STDOUT,
                    Stream::Stderr => attach::STDERR,
                };
                let frame = attach::encode_raw(kind, data);
                for i in 0..self.clients.len() {
                    self.queue(i, &frame);
                }
                if !drain {
                    // One read per wakeup: the other fds get their turn.
                    return;
                }
                continue;
            }
            let e = std::io::Error::last_os_error();
            if n < 0 && e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n < 0 && e.kind() == std::io::ErrorKind::WouldBlock {
                return;
            }
            // EOF, or EIO from a tty's master once its slave is closed.
            match stream {
                Stream::Stdout => self.ends.out = None,
                Stream::Stderr => self.ends.err = None,
            }
            if let Some(l) = &mut self.logs {
                l.finish(stream);
            }
            return;
        }
    }

    fn write_stdin(&mut self) {
        let Some(fd) = &self.ends.stdin else {
            self.stdin_buf.clear();
            return;
        };
        while !self.stdin_buf.is_empty() {
            // SAFETY: a valid fd and buffer.
            let n = unsafe {
                libc::write(
                    fd.as_raw_fd(),
                    self.stdin_buf.as_ptr().cast(),
                    self.stdin_buf.len(),
                )
            };
            if n > 0 {
                self.stdin_buf.drain(..n as usize);
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => return,
                // EPIPE: the command closed its stdin.
                _ => {
                    self.stdin_buf.clear();
                    self.ends.stdin = None;
                    return;
                }
            }
        }
        if self.stdin_closing {
            if self.ends.tty.is_some() {
                // A tty has no end of input but its EOF character.
                // SAFETY: a valid fd and a one-byte buffer.
                unsafe { libc::write(fd.as_raw_fd(), [4u8].as_ptr().cast(), 1) };
            }
            self.ends.stdin = None;
            self.stdin_closing = false;
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(Ok((stream, _))) = self.listener.as_ref().map(|l| l.accept()) else {
                return;
            };
            let _ = stream.set_nonblocking(true);
            self.clients.push(Client {
                stream,
                out: Vec::new(),
                inbuf: FrameBuf::default(),
                gone: false,
            });
            if let Some(exit) = self.exit {
                let i = self.clients.len() - 1;
                self.queue(i, &Frame::Exit(exit).encode());
            }
        }
    }

    fn serve_client(&mut self, i: usize) {
        self.flush_client(i);
        let mut buf = [0u8; 16 * 1024];
        loop {
            let c = &mut self.clients[i];
            if c.gone || self.stdin_buf.len() >= STDIN_BUFFER {
                return;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    c.gone = true;
                    return;
                }
                Ok(n) => {
                    c.inbuf.push(&buf[..n]);
                    loop {
                        match self.clients[i].inbuf.next_frame() {
                            Ok(Some(f)) => self.on_frame(f),
                            Ok(None) => break,
                            Err(_) => {
                                self.clients[i].gone = true;
                                return;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    c.gone = true;
                    return;
                }
            }
        }
    }

    fn on_frame(&mut self, f: Frame) {
        match f {
            Frame::Stdin(data) => {
                if self.ends.stdin.is_some() && !self.stdin_closing {
                    self.stdin_buf.extend_from_slice(&data);
                    self.write_stdin();
                }
            }
            Frame::StdinClose => {
                if self.ends.stdin.is_some() {
                    self.stdin_closing = true;
                    self.write_stdin();
                }
            }
            Frame::Resize { rows, cols } => {
                if let Some(tty) = &self.ends.tty {
                    let ws = libc::winsize {
                        ws_row: rows,
                        ws_col: cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
                    unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                }
            }
            // Output frames are not the client's to send.
            Frame::Stdout(_) | Frame::Stderr(_) | Frame::Exit(_) => {}
        }
    }

    /// Queues `frame` for client `i` and writes what it can now; a client
    /// whose queue is full is dropped.
    fn queue(&mut self, i: usize, frame: &[u8]) {
        let c = &mut self.clients[i];
        if c.gone {
            return;
        }
        if c.out.len() + frame.len() > CLIENT_BUFFER {
            c.gone = true;
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        c.out.extend_from_slice(frame);
        self.flush_client(i);
    }

    fn flush_client(&mut self, i: usize) {
        let c = &mut self.clients[i];
        while !c.out.is_empty() && !c.gone {
            match c.stream.write(&c.out) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => c.gone = true,
            }
        }
    }
}
