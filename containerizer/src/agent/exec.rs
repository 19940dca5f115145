//! The Exec call: a command run inside a running container, as a DEBUG
//! container nested in it (it enters all the container's namespaces under
//! the container's security settings; see `pod.rs`). Its stdio: pipes the
//! agent holds and streams; with a terminal, a pty of the container's own
//! devpts that its supervisor relays over the attach socket (the command
//! is released only once the agent is attached, so nothing is missed).
//! The DEBUG container ends with the stream: when the command exits it is
//! destroyed and forgotten; when the client goes away first it is
//! destroyed.
//!
//! The Run call (`berth run` through an agent) streams a container of
//! its own the same way: its stdio is the stream, it is removed once it
//! has ended and destroyed if the client goes away first.

use super::api::{exec_input, exec_output, ExecInput, ExecOutput, ExecRequest};
use crate::{Containerizer, ContainerizerError};
use berth_launcher::Stdio;
use berth_state::{ContainerClass, ContainerConfig, ContainerId};
use futures::{Stream, StreamExt};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

pub(crate) type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecOutput, Status>> + Send>>;

/// The client's side of a stream: a gRPC stream, or the CRI streaming
/// server's SPDY streams turned into the same messages.
pub(crate) type ExecInputs = Pin<Box<dyn Stream<Item = Result<ExecInput, Status>> + Send>>;

/// The DEBUG container's config for `r`.
fn debug_config(r: &ExecRequest) -> ContainerConfig {
    ContainerConfig {
        command: r.command.clone(),
        env: r.env.clone(),
        user: r.user.clone(),
        working_dir: r.working_dir.clone(),
        container_class: ContainerClass::Debug as i32,
        ..Default::default()
    }
}

/// A fresh DEBUG container id under `parent`.
fn exec_id(parent: &ContainerId) -> ContainerId {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    parent.child(format!(
        "exec-{:x}{:x}",
        t,
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Status> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Status::internal(format!("pipe for an exec: {e}")))
}

/// The stream's first message.
async fn first(input: &mut ExecInputs, what: &str) -> Result<exec_input::Input, Status> {
    input
        .next()
        .await
        .transpose()?
        .and_then(|m| m.input)
        .ok_or_else(|| {
            Status::invalid_argument(format!("the {what} stream ended before its start"))
        })
}

/// Starts the exec named by the stream's first message and returns the
/// output stream.
pub(super) async fn exec(
    c: Containerizer,
    input: Streaming<ExecInput>,
    to_status: fn(ContainerizerError) -> Status,
) -> Result<ExecStream, Status> {
    let mut input: ExecInputs = Box::pin(input);
    let exec_input::Input::Start(start) = first(&mut input, "exec").await? else {
        return Err(Status::invalid_argument(
            "an exec stream must begin with `start`",
        ));
    };
    exec_started(c, start, input, to_status).await
}

/// The exec `start` asks for, its stdin, terminal resizes and
/// `stdin_close` coming from `input`.
pub(crate) async fn exec_started(
    c: Containerizer,
    start: ExecRequest,
    input: ExecInputs,
    to_status: fn(ContainerizerError) -> Status,
) -> Result<ExecStream, Status> {
    let parent = super::server::id_of(start.id.clone())?;
    if start.command.is_empty() {
        return Err(Status::invalid_argument("exec: no command given"));
    }
    let s = Session {
        c,
        id: exec_id(&parent),
        run: false,
        to_status,
    };
    if start.tty {
        let config = ContainerConfig {
            tty: true,
            stdin_open: start.stdin,
            ..debug_config(&start)
        };
        return s.attached(input, config).await;
    }
    s.piped(input, debug_config(&start), start.stdin).await
}

/// `berth run` through the agent: launches the container the stream's
/// first message names, with the stream as its stdio. With a terminal or
/// stdin, the supervisor owns the stdio and the agent attaches (as an
/// in-process `berth run -t/-i` does); else the command writes into
/// pipes the agent streams.
pub(super) async fn run(
    c: Containerizer,
    input: Streaming<ExecInput>,
    to_status: fn(ContainerizerError) -> Status,
) -> Result<ExecStream, Status> {
    let mut input: ExecInputs = Box::pin(input);
    let exec_input::Input::Run(req) = first(&mut input, "run").await? else {
        return Err(Status::invalid_argument(
            "a run stream must begin with `run`",
        ));
    };
    let id = super::server::id_of(req.id)?;
    let config = req
        .config
        .ok_or_else(|| Status::invalid_argument("the run request has no config"))?;
    let s = Session {
        c,
        id,
        run: true,
        to_status,
    };
    if config.tty || config.stdin_open {
        return s.attached(input, config).await;
    }
    s.piped(input, config, false).await
}

/// One streamed container: an exec's DEBUG container or a run's own.
struct Session {
    c: Containerizer,
    id: ContainerId,
    /// A run reports a failure after admission (the command could not
    /// start) as the container's exit, START_ERROR, as an in-process
    /// `berth run` does; an exec fails the call.
    run: bool,
    to_status: fn(ContainerizerError) -> Status,
}

impl Session {
    /// Launches; false when the launch failed after admission and the
    /// container (being destroyed) is left for `finish` to report.
    async fn launch(&self, config: ContainerConfig, stdio: Stdio) -> Result<bool, Status> {
        match self
            .c
            .launch_with_stdio(self.id.clone(), config, stdio)
            .await
        {
            Ok(()) => Ok(true),
            Err(_) if self.run && self.c.status(self.id.clone()).await.is_ok() => Ok(false),
            Err(e) => Err((self.to_status)(e)),
        }
    }

    /// The command's stdio: pipes the agent holds and streams.
    async fn piped(
        self,
        input: ExecInputs,
        config: ContainerConfig,
        stdin: bool,
    ) -> Result<ExecStream, Status> {
        let id = self.id.clone();
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin_r, stdin_w) = match stdin {
            true => {
                let (r, w) = pipe()?;
                (Some(r), Some(w))
            }
            false => (None, None),
        };
        let stdio = Stdio::Fds {
            stdin: stdin_r,
            stdout: out_w,
            stderr: err_w,
        };
        // The launch consumes the write ends: once it returns, the command
        // holds the only ones, and EOF on ours means it (and any child)
        // closed them.
        let launched = self.launch(config, stdio).await?;
        tracing::info!(container = %id, launched, "streamed container started");

        let (tx, rx) = mpsc::channel::<Result<ExecOutput, Status>>(64);
        let _ = tx.send(out(exec_output::Output::Started(id.clone()))).await;

        if let Some(w) = stdin_w {
            tokio::spawn(forward_stdin(input, w));
        }
        let pump = |fd: OwnedFd, stderr: bool| {
            let tx = tx.clone();
            async move {
                let Ok(mut r) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
                    return;
                };
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let b = buf[..n].to_vec();
                            let o = match stderr {
                                true => exec_output::Output::Stderr(b),
                                false => exec_output::Output::Stdout(b),
                            };
                            if tx.send(out(o)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        };
        let outputs = futures::future::join(pump(out_r, false), pump(err_r, true));
        tokio::spawn(finish(self.c, id, outputs, tx, self.to_status));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

fn out(o: exec_output::Output) -> Result<ExecOutput, Status> {
    Ok(ExecOutput { output: Some(o) })
}

/// Until the command's output ends (or the client goes away, which
/// destroys it), then its termination as the last message; the DEBUG
/// container is forgotten.
async fn finish(
    c: Containerizer,
    id: ContainerId,
    outputs: impl std::future::Future,
    tx: mpsc::Sender<Result<ExecOutput, Status>>,
    to_status: fn(ContainerizerError) -> Status,
) {
    tokio::select! {
        _ = outputs => {}
        _ = tx.closed() => {}
    }
    // Checked after either: output that meets a closed stream also ends
    // `outputs`, and a command still writing would otherwise outlive
    // its client.
    if tx.is_closed() {
        tracing::info!(container = %id, "streaming client gone; destroying");
        let _ = c.destroy(id.clone()).await;
    }
    let end = c.wait(id.clone()).await;
    let _ = c.remove(id.clone()).await;
    let msg = match end {
        Ok(t) => out(exec_output::Output::Exit(t)),
        Err(e) => Err(to_status(e)),
    };
    let _ = tx.send(msg).await;
}

/// The supervisor owns the stdio (a pty of the container's own devpts
/// with a terminal, pipes without), and waits for the agent to attach to
/// it before it releases the command, so nothing is missed.
impl Session {
    async fn attached(
        self,
        mut input: ExecInputs,
        config: ContainerConfig,
    ) -> Result<ExecStream, Status> {
        use berth_launcher::attach::{self, Frame};
        let Session { c, id, .. } = &self;
        let (tx, rx) = mpsc::channel::<Result<ExecOutput, Status>>(64);
        if !self.launch(config, Stdio::Attached).await? {
            let _ = tx.send(out(exec_output::Output::Started(id.clone()))).await;
            tokio::spawn(finish(self.c, self.id, async {}, tx, self.to_status));
            return Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)));
        }
        tracing::info!(container = %id, "streamed container started, attaching");
        let path = c.attach_socket(id);
        let connected = tokio::task::spawn_blocking(move || {
            let s = attach::connect(&path)?.into_stream();
            s.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(s)
        })
        .await
        .map_err(|e| Status::internal(format!("attach to {id}: {e}")))?;
        let sock = match connected {
            Ok(s) => s,
            Err(e) => {
                let _ = c.destroy(id.clone()).await;
                let _ = c.remove(id.clone()).await;
                return Err(Status::unavailable(format!(
                    "{id}: its supervisor's attach socket: {e}"
                )));
            }
        };
        let (mut rd, mut wr) = sock.into_split();
        tokio::spawn(async move {
            while let Some(Ok(m)) = input.next().await {
                let f = match m.input {
                    Some(exec_input::Input::Stdin(b)) => Frame::Stdin(b),
                    Some(exec_input::Input::StdinClose(true)) => Frame::StdinClose,
                    Some(exec_input::Input::Resize(r)) => Frame::Resize {
                        rows: r.rows.min(u16::MAX as u32) as u16,
                        cols: r.cols.min(u16::MAX as u32) as u16,
                    },
                    _ => continue,
                };
                if wr.write_all(&f.encode()).await.is_err() {
                    return;
                }
            }
            // Not shut down: the supervisor takes a client's EOF for its
            // going away, and the command's output is still to come.
            wr.forget();
        });
        let _ = tx.send(out(exec_output::Output::Started(id.clone()))).await;
        let tx2 = tx.clone();
        let outputs = async move {
            // Until the supervisor's EXIT frame (or its end).
            while let Ok(Some(f)) = super::server::read_frame_async(&mut rd).await {
                let o = match f {
                    Frame::Stdout(b) => exec_output::Output::Stdout(b),
                    Frame::Stderr(b) => exec_output::Output::Stderr(b),
                    Frame::Exit(_) => return,
                    _ => continue,
                };
                if tx2.send(out(o)).await.is_err() {
                    return;
                }
            }
        };
        tokio::spawn(finish(self.c, self.id, outputs, tx, self.to_status));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// The client's stdin frames into the command's stdin, until
/// `stdin_close` or the stream ends.
async fn forward_stdin(mut input: ExecInputs, w: OwnedFd) {
    let Ok(mut w) = tokio::net::unix::pipe::Sender::from_owned_fd(w) else {
        return;
    };
    while let Some(Ok(m)) = input.next().await {
        match m.input {
            Some(exec_input::Input::Stdin(b)) if w.write_all(&b).await.is_err() => return,
            Some(exec_input::Input::StdinClose(_)) => return,
            _ => {}
        }
    }
}
