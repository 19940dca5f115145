//! The client's terminal for `berth attach` and `berth run -t/-i`: raw mode
//! while attached to a container's tty (restored on drop), its window
//! size at the start and on every SIGWINCH, and stdin forwarded from a
//! thread (a blocking read has no place on the runtime).

use anyhow::{Context as _, Result};
use nix::sys::termios::{self, SetArg, Termios};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};

/// The terminal on stdin in raw mode; the saved mode is restored on drop.
pub struct RawMode {
    saved: Termios,
}

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

impl RawMode {
    /// Raw mode when stdin is a terminal; `None` when it is not (a pipe).
    pub fn enter() -> Result<Option<RawMode>> {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Ok(None);
        }
        let saved = termios::tcgetattr(stdin_fd()).context("read the terminal's mode")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin_fd(), SetArg::TCSANOW, &raw)
            .context("put the terminal in raw mode")?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(stdin_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The window size (rows, cols) of the terminal on stdin, if any.
pub fn window_size() -> Option<(u16, u16)> {
    use std::os::fd::AsRawFd;
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize to the pointer.
    let r = unsafe { libc::ioctl(stdin_fd().as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Sends the window size now and after every SIGWINCH.
pub fn forward_resizes<T: Send + 'static>(
    tx: tokio::sync::mpsc::Sender<T>,
    make: impl Fn(u16, u16) -> T + Send + 'static,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut winch =
        signal(SignalKind::window_change()).context("installing the SIGWINCH handler")?;
    if let Some((rows, cols)) = window_size() {
        let _ = tx.try_send(make(rows, cols));
    }
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            if let Some((rows, cols)) = window_size() {
                if tx.send(make(rows, cols)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(())
}

/// Forwards stdin, chunk by chunk, then `None` at its end.
pub fn forward_stdin<T: Send + 'static>(
    tx: tokio::sync::mpsc::Sender<T>,
    make: impl Fn(Option<Vec<u8>>) -> T + Send + 'static,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(make(None));
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(make(Some(buf[..n].to_vec()))).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = tx.blocking_send(make(None));
                    return;
                }
            }
        }
    });
}

/// `berth run -t/-i`: this process attached to its container's supervisor
/// (no agent in between).
pub struct LocalRelay {
    output: std::thread::JoinHandle<()>,
    _raw: Option<RawMode>,
}

enum Input {
    Stdin(Option<Vec<u8>>),
    Resize(u16, u16),
}

/// Attaches to the supervisor's socket at `sock`: output printed by a
/// thread, stdin (when `stdin`) and window sizes (when `tty`) forwarded.
pub fn relay_local(sock: &std::path::Path, tty: bool, stdin: bool) -> Result<LocalRelay> {
    use berth::launcher::attach::{self, Frame};
    use std::io::Write;
    let client = attach::connect(sock)
        .with_context(|| format!("attach to the container at {}", sock.display()))?;
    let mut reader = client.try_clone().context("attach socket")?;
    let raw = match tty {
        true => RawMode::enter()?,
        false => None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Input>(16);
    if tty {
        forward_resizes(tx.clone(), Input::Resize)?;
    }
    if stdin {
        forward_stdin(tx.clone(), Input::Stdin);
    }
    drop(tx);
    let mut writer = client;
    std::thread::spawn(move || {
        while let Some(m) = rx.blocking_recv() {
            let sent = match m {
                Input::Stdin(Some(b)) => writer.write_stdin(&b),
                Input::Stdin(None) => writer.close_stdin(),
                Input::Resize(rows, cols) => writer.resize(rows, cols),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    let output = std::thread::spawn(move || {
        while let Ok(Some(f)) = reader.read_frame() {
            let _ = match f {
                Frame::Stdout(b) => {
                    let mut o = std::io::stdout().lock();
                    o.write_all(&b).and_then(|_| o.flush())
                }
                Frame::Stderr(b) => {
                    let mut e = std::io::stderr().lock();
                    e.write_all(&b).and_then(|_| e.flush())
                }
                Frame::Exit(_) => return,
                _ => Ok(()),
            };
        }
    });
    Ok(LocalRelay { output, _raw: raw })
}

impl LocalRelay {
    /// Waits (briefly) for the last output, then restores the terminal.
    pub async fn finish(self) {
        let out = self.output;
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::task::spawn_blocking(move || out.join()),
        )
        .await;
    }
}
