//! The Exec call: a command run inside a running container, as a DEBUG
//! container nested in it (it enters all the container's namespaces under
//! the container's security settings; see `pod.rs`). Its stdio: pipes the
//! agent holds and streams; with a terminal, a pty of the container's own
//! devpts that its supervisor relays over the attach socket (the command
//! is released only once the agent is attached, so nothing is missed).
//! The DEBUG container ends with the stream: when the command exits it is
//! destroyed and forgotten; when the client goes away first it is
//! destroyed.

use super::api::{exec_input, exec_output, ExecInput, ExecOutput, ExecRequest};
use crate::{Containerizer, ContainerizerError};
use berth_launcher::Stdio;
use berth_state::{ContainerClass, ContainerConfig, ContainerId};
use futures::Stream;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

pub(super) type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecOutput, Status>> + Send>>;

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

/// Starts the exec named by the stream's first message and returns the
/// output stream.
pub(super) async fn exec(
    c: Containerizer,
    mut input: Streaming<ExecInput>,
    to_status: fn(ContainerizerError) -> Status,
) -> Result<ExecStream, Status> {
    let first = input
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the exec stream ended before its start"))?;
    let Some(exec_input::Input::Start(start)) = first.input else {
        return Err(Status::invalid_argument(
            "an exec stream must begin with `start`",
        ));
    };
    let parent = super::server::id_of(start.id.clone())?;
    if start.command.is_empty() {
        return Err(Status::invalid_argument("exec: no command given"));
    }
    let id = exec_id(&parent);
    if start.tty {
        return exec_tty(c, input, start, id, to_status).await;
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin_r, stdin_w) = match start.stdin {
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
    // holds the only ones, and EOF on ours means it (and any child) closed
    // them.
    c.launch_with_stdio(id.clone(), debug_config(&start), stdio)
        .await
        .map_err(to_status)?;
    tracing::info!(container = %id, "exec started");

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
    tokio::spawn(finish(c, id, outputs, tx, to_status));
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
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
        _ = tx.closed() => {
            tracing::info!(container = %id, "exec client gone; destroying");
            let _ = c.destroy(id.clone()).await;
        }
    }
    let end = c.wait(id.clone()).await;
    let _ = c.remove(id.clone()).await;
    let msg = match end {
        Ok(t) => out(exec_output::Output::Exit(t)),
        Err(e) => Err(to_status(e)),
    };
    let _ = tx.send(msg).await;
}

/// `exec -t`: the DEBUG container gets a pty from its supervisor, which
/// waits for the agent to attach before it releases the command.
async fn exec_tty(
    c: Containerizer,
    mut input: Streaming<ExecInput>,
    start: ExecRequest,
    id: ContainerId,
    to_status: fn(ContainerizerError) -> Status,
) -> Result<ExecStream, Status> {
    use berth_launcher::attach::{self, Frame};
    let config = ContainerConfig {
        tty: true,
        stdin_open: start.stdin,
        ..debug_config(&start)
    };
    c.launch_with_stdio(id.clone(), config, Stdio::Attached)
        .await
        .map_err(to_status)?;
    tracing::info!(container = %id, "exec started with a terminal");
    let path = c.attach_socket(&id);
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
                "exec {id}: its supervisor's attach socket: {e}"
            )));
        }
    };
    let (mut rd, mut wr) = sock.into_split();
    tokio::spawn(async move {
        while let Ok(Some(m)) = input.message().await {
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
    });
    let (tx, rx) = mpsc::channel::<Result<ExecOutput, Status>>(64);
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
    tokio::spawn(finish(c, id, outputs, tx, to_status));
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// The client's stdin frames into the command's stdin, until
/// `stdin_close` or the stream ends.
async fn forward_stdin(mut input: Streaming<ExecInput>, w: OwnedFd) {
    let Ok(mut w) = tokio::net::unix::pipe::Sender::from_owned_fd(w) else {
        return;
    };
    while let Ok(Some(m)) = input.message().await {
        match m.input {
            Some(exec_input::Input::Stdin(b)) if w.write_all(&b).await.is_err() => return,
            Some(exec_input::Input::StdinClose(_)) => return,
            _ => {}
        }
    }
}
