//! The Exec call: a command run inside a running container, as a DEBUG
//! container nested in it (it enters all the container's namespaces under
//! the container's security settings; see `pod.rs`), with its stdio on
//! pipes the agent holds and streams. The DEBUG container ends with the
//! stream: when the command exits it is destroyed and forgotten; when the
//! client goes away first it is destroyed.

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
    if start.tty {
        return Err(Status::unimplemented(
            "exec: a terminal (-t) is not supported yet",
        ));
    }
    let id = exec_id(&parent);
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
    let out = |o: exec_output::Output| Ok(ExecOutput { output: Some(o) });
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
    tokio::spawn(async move {
        // Until the command's output ends, or the client goes away.
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
    });
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
