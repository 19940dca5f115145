//! The gRPC service: each call is a call on the [`Containerizer`] handle.

use super::api::containerizer_server::{Containerizer as Api, ContainerizerServer};
use super::api::{
    attach_input, attach_output, AttachExit, AttachInput, AttachOutput, CheckpointRequest,
    CheckpointResponse, ContainerRef, ContainerStatus, DebugResponse, Empty, Event, EventsRequest,
    ImageRef, ImagesResponse, ImportImageRequest, InFlightCall, KillRequest, LaunchRequest,
    LaunchResponse, ListRequest, ListResponse, LogChunk, LogsRequest, PullImageRequest,
    RestoreRequest, StopRequest, UpdateRequest,
};
use super::images;
use super::logs::{LogQuery, LogReader};
use crate::{Containerizer, ContainerizerError};
use berth_launcher::attach::{self, Frame};
use berth_provisioner::ImageProvisioner;
use berth_state::{ContainerId, ContainerTermination, ResourceStatistics};
use futures::Stream;
use std::path::Path;
use std::pin::Pin;
use tonic::{Request, Response, Status, Streaming};

/// Serves `containerizer` (and the image store `images`, when given) on
/// the Unix socket `socket` until `shutdown` resolves. The socket is created with mode 0600 (only root may drive
/// the agent); a stale socket file from a dead agent is replaced — the
/// caller holds the store lock, so no live agent owns it.
pub async fn serve(
    containerizer: Containerizer,
    images: Option<ImageProvisioner>,
    socket: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // Bound under a 0077 umask, so no other user can connect even for the
    // moment before the chmod.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let bound = tokio::net::UnixListener::bind(socket);
    nix::sys::stat::umask(old);
    let listener = bound?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stopped = stop_rx.clone();
    let server = tonic::transport::Server::builder()
        .add_service(ContainerizerServer::new(Service {
            c: containerizer,
            images,
            stop: stop_rx,
        }))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.map_err(std::io::Error::other),
        _ = shutdown => {
            // Stop accepting, end the event streams, and give the calls in
            // flight a moment; a `wait` may block for as long as its
            // container runs, and must not keep the agent from stopping.
            let _ = stop_tx.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r.map_err(std::io::Error::other),
                Err(_) => Ok(()),
            }
        }
    }
}

/// A stop's grace when the caller names none (as `docker stop`).
pub const DEFAULT_STOP_GRACE_MS: u64 = 10_000;

/// How long calls in flight may take once the agent is told to stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

struct Service {
    c: Containerizer,
    images: Option<ImageProvisioner>,
    /// Becomes true when the agent stops.
    stop: tokio::sync::watch::Receiver<bool>,
}

/// The gRPC code for a containerizer error; the message is the error's.
pub(crate) fn status(e: ContainerizerError) -> Status {
    use ContainerizerError as E;
    let msg = e.to_string();
    match e {
        E::UnknownContainer(_) => Status::not_found(msg),
        E::AlreadyExists(_) => Status::already_exists(msg),
        E::InvalidConfig { .. } => Status::invalid_argument(msg),
        E::Unsupported { .. } => Status::unimplemented(msg),
        E::NotRunning { .. } | E::NotTerminated { .. } => Status::failed_precondition(msg),
        E::Gone => Status::unavailable(msg),
        _ => Status::internal(msg),
    }
}

pub(super) fn id_of(id: Option<ContainerId>) -> Result<ContainerId, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument("the request names no container id"))?;
    // Re-validate: a client may send any string.
    ContainerId::parse(&id.to_string())
        .map_err(|e| Status::invalid_argument(format!("container id {id}: {e}")))
}

fn to_api(s: crate::ContainerStatus) -> ContainerStatus {
    ContainerStatus {
        id: Some(s.id),
        state: s.state as i32,
        supervisor: s.supervisor,
        init: s.init,
        sandbox_dir: s.sandbox_dir.display().to_string(),
        transitions: s.transitions,
        termination: s.termination,
        config: Some(s.config),
        isolator_fields: s.isolator_fields,
        restored_from: s.restored_from,
    }
}

impl Service {
    fn images(&self) -> Result<ImageProvisioner, Status> {
        self.images
            .clone()
            .ok_or_else(|| Status::unimplemented("this agent serves no image store"))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;
type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;
type AttachOutStream = Pin<Box<dyn Stream<Item = Result<AttachOutput, Status>> + Send>>;

/// How often `logs -f` looks for new output.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

fn exit_output(code: i32, signal: Option<i32>) -> AttachOutput {
    AttachOutput {
        kind: Some(attach_output::Kind::Exit(AttachExit {
            exit_code: code,
            signal,
        })),
    }
}

/// The exit of a termination, as `berth wait` reports it.
fn termination_exit(t: &ContainerTermination) -> AttachOutput {
    let code = if t.no_exit_status { 255 } else { t.exit_code };
    exit_output(code, t.signal)
}

/// One input message as the frame the supervisor takes.
fn input_frame(m: AttachInput) -> Option<Frame> {
    match m.kind? {
        attach_input::Kind::Stdin(b) => Some(Frame::Stdin(b)),
        attach_input::Kind::StdinClose(true) => Some(Frame::StdinClose),
        attach_input::Kind::StdinClose(false) => None,
        attach_input::Kind::Resize(r) => Some(Frame::Resize {
            rows: r.rows.min(u16::MAX as u32) as u16,
            cols: r.cols.min(u16::MAX as u32) as u16,
        }),
    }
}

/// Reads one frame from the supervisor; `None` at its end.
pub(crate) async fn read_frame_async(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<Option<Frame>> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > attach::MAX_PAYLOAD {
        return Err(std::io::Error::other(format!(
            "attach frame of {len} bytes"
        )));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Frame::decode(head[0], payload).map(Some)
}

#[tonic::async_trait]
impl Api for Service {
    async fn launch(&self, r: Request<LaunchRequest>) -> Result<Response<LaunchResponse>, Status> {
        let r = r.into_inner();
        let id = id_of(r.id)?;
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("the launch request has no config"))?;
        self.c.launch(id.clone(), config).await.map_err(status)?;
        let st = self.c.status(id.clone()).await.map_err(status)?;
        Ok(Response::new(LaunchResponse {
            id: Some(id),
            pid: st.init.map(|p| p.pid).unwrap_or(0),
        }))
    }

    async fn wait(
        &self,
        r: Request<ContainerRef>,
    ) -> Result<Response<ContainerTermination>, Status> {
        let id = id_of(r.into_inner().id)?;
        Ok(Response::new(self.c.wait(id).await.map_err(status)?))
    }

    async fn kill(&self, r: Request<KillRequest>) -> Result<Response<Empty>, Status> {
        let r = r.into_inner();
        let id = id_of(r.id)?;
        if r.signal <= 0 || r.signal > 64 {
            return Err(Status::invalid_argument(format!(
                "signal {} is not a signal number (1-64)",
                r.signal
            )));
        }
        self.c.kill(id, r.signal).await.map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn destroy(
        &self,
        r: Request<ContainerRef>,
    ) -> Result<Response<ContainerTermination>, Status> {
        let id = id_of(r.into_inner().id)?;
        Ok(Response::new(self.c.destroy(id).await.map_err(status)?))
    }

    async fn stop(
        &self,
        r: Request<StopRequest>,
    ) -> Result<Response<ContainerTermination>, Status> {
        let r = r.into_inner();
        let id = id_of(r.id)?;
        let grace = std::time::Duration::from_millis(r.grace_ms.unwrap_or(DEFAULT_STOP_GRACE_MS));
        Ok(Response::new(self.c.stop(id, grace).await.map_err(status)?))
    }

    async fn checkpoint(
        &self,
        r: Request<CheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        let r = r.into_inner();
        let id = id_of(r.id)?;
        let done = self
            .c
            .checkpoint(id, r.image_dir.into(), r.leave_running)
            .await
            .map_err(status)?;
        Ok(Response::new(CheckpointResponse {
            image_dir: done.image_dir.display().to_string(),
            frozen_ms: done.frozen.as_millis() as u64,
        }))
    }

    async fn restore(
        &self,
        r: Request<RestoreRequest>,
    ) -> Result<Response<LaunchResponse>, Status> {
        let r = r.into_inner();
        let id = id_of(r.id)?;
        self.c
            .restore(id.clone(), r.image_dir.into())
            .await
            .map_err(status)?;
        let pid = self
            .c
            .status(id.clone())
            .await
            .ok()
            .and_then(|s| s.init)
            .map(|p| p.pid)
            .unwrap_or(0);
        Ok(Response::new(LaunchResponse { id: Some(id), pid }))
    }

    async fn pause(&self, r: Request<ContainerRef>) -> Result<Response<Empty>, Status> {
        let id = id_of(r.into_inner().id)?;
        self.c.pause(id).await.map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn resume(&self, r: Request<ContainerRef>) -> Result<Response<Empty>, Status> {
        let id = id_of(r.into_inner().id)?;
        self.c.resume(id).await.map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn remove(&self, r: Request<ContainerRef>) -> Result<Response<Empty>, Status> {
        let id = id_of(r.into_inner().id)?;
        self.c.remove(id).await.map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn update(&self, r: Request<UpdateRequest>) -> Result<Response<Empty>, Status> {
        let r = r.into_inner();
        let id = id_of(r.id)?;
        let res = r
            .resources
            .ok_or_else(|| Status::invalid_argument("the update request has no resources"))?;
        self.c.update(id, res).await.map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn usage(
        &self,
        r: Request<ContainerRef>,
    ) -> Result<Response<ResourceStatistics>, Status> {
        let id = id_of(r.into_inner().id)?;
        Ok(Response::new(self.c.usage(id).await.map_err(status)?))
    }

    async fn status(&self, r: Request<ContainerRef>) -> Result<Response<ContainerStatus>, Status> {
        let id = id_of(r.into_inner().id)?;
        Ok(Response::new(to_api(
            self.c.status(id).await.map_err(status)?,
        )))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let ids = self.c.containers().await.map_err(status)?;
        let mut containers = Vec::with_capacity(ids.len());
        for id in ids {
            match self.c.status(id).await {
                Ok(s) => containers.push(to_api(s)),
                // Removed between the two calls.
                Err(ContainerizerError::UnknownContainer(_)) => {}
                Err(e) => return Err(status(e)),
            }
        }
        Ok(Response::new(ListResponse { containers }))
    }

    type EventsStream = EventStream;
    type ExecStream = super::exec::ExecStream;

    async fn exec(
        &self,
        r: Request<tonic::Streaming<super::api::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let s = super::exec::exec(self.c.clone(), r.into_inner(), status).await?;
        Ok(Response::new(s))
    }

    type RunStream = super::exec::ExecStream;

    async fn run(
        &self,
        r: Request<tonic::Streaming<super::api::ExecInput>>,
    ) -> Result<Response<Self::RunStream>, Status> {
        let s = super::exec::run(self.c.clone(), r.into_inner(), status).await?;
        Ok(Response::new(s))
    }

    async fn events(
        &self,
        _: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let rx = self.c.events();
        let stop = self.stop.clone();
        let stream = futures::stream::unfold((rx, stop), |(mut rx, mut stop)| async move {
            use tokio::sync::broadcast::error::RecvError;
            let next = tokio::select! {
                e = rx.recv() => e,
                _ = stop.wait_for(|s| *s) => return None,
            };
            match next {
                Ok(e) => Some((Ok(e), (rx, stop))),
                Err(RecvError::Lagged(n)) => Some((
                    Err(Status::data_loss(format!(
                        "this client fell {n} events behind; subscribe again"
                    ))),
                    (rx, stop),
                )),
                Err(RecvError::Closed) => None,
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn import_image(
        &self,
        r: Request<ImportImageRequest>,
    ) -> Result<Response<ImagesResponse>, Status> {
        let r = r.into_inner();
        Ok(Response::new(
            images::import(self.images()?, r.path, r.name).await?,
        ))
    }

    async fn pull_image(
        &self,
        r: Request<PullImageRequest>,
    ) -> Result<Response<ImagesResponse>, Status> {
        let r = r.into_inner();
        Ok(Response::new(
            images::pull(self.images()?, r.reference, r.insecure, self.c.metrics()).await?,
        ))
    }

    async fn list_images(&self, _: Request<Empty>) -> Result<Response<ImagesResponse>, Status> {
        Ok(Response::new(images::list(self.images()?).await?))
    }

    async fn remove_image(&self, r: Request<ImageRef>) -> Result<Response<Empty>, Status> {
        images::remove(self.images()?, r.into_inner().reference).await?;
        Ok(Response::new(Empty {}))
    }

    type LogsStream = LogStream;

    async fn logs(&self, r: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let r = r.into_inner();
        let id = id_of(r.id)?;
        let st = self.c.status(id.clone()).await.map_err(status)?;
        let query = LogQuery {
            tail: r.tail,
            since_unix_nanos: r.since_unix_nanos,
            stdout: !r.no_stdout,
            stderr: !r.no_stderr,
        };
        let (sandbox, format) = (st.sandbox_dir.clone(), st.config.log_format.clone());
        let (mut reader, initial) = tokio::task::spawn_blocking(move || {
            LogReader::open(&sandbox, &format, query).map(|mut r| {
                let first = r.initial();
                (r, first)
            })
        })
        .await
        .map_err(|e| Status::internal(format!("logs of {id}: {e}")))?
        .map_err(|e| Status::failed_precondition(format!("container {id}: {e}")))?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (c, mut stop, follow) = (self.c.clone(), self.stop.clone(), r.follow);
        tokio::spawn(async move {
            for chunk in initial {
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                // Checked before the read: the supervisor drains the output
                // into the files before it records the exit, so once the
                // container is known to have ended, this read gets the rest.
                let ended = match c.status(id.clone()).await {
                    Ok(s) => s.state == berth_state::ContainerState::Terminated,
                    Err(_) => true,
                };
                let polled = tokio::task::spawn_blocking(move || {
                    let chunks = reader.poll();
                    (reader, chunks)
                })
                .await;
                let Ok((r, chunks)) = polled else { return };
                reader = r;
                for chunk in chunks {
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                if ended {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type AttachStream = AttachOutStream;

    async fn attach(
        &self,
        r: Request<Streaming<AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut input = r.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the attach stream sent nothing"))?;
        let id = id_of(first.id.clone())?;
        let st = self.c.status(id.clone()).await.map_err(status)?;
        let path = self.c.attach_socket(&id);
        // Blocking connect (a long path goes through /proc/self/fd): on the
        // blocking pool, then async I/O on the stream.
        let connected = tokio::task::spawn_blocking(move || {
            let s = attach::connect(&path)?.into_stream();
            s.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(s)
        })
        .await
        .map_err(|e| Status::internal(format!("attach to {id}: {e}")))?;
        let sock = match connected.and_then(tokio::net::UnixStream::from_std) {
            Ok(s) => s,
            Err(e) => {
                // The supervisor is gone once the container ended: only
                // its exit is left to tell. It may have ended since the
                // status above, its destroy still under way: the
                // termination then comes with the wait.
                let ended = match st.termination {
                    Some(_) => true,
                    None => self.c.status(id.clone()).await.is_ok_and(|now| {
                        now.termination.is_some()
                            || now.state == berth_state::ContainerState::Destroying
                    }),
                };
                if ended {
                    let t = self.c.wait(id.clone()).await.map_err(status)?;
                    let out = termination_exit(&t);
                    return Ok(Response::new(Box::pin(futures::stream::iter([Ok(out)]))));
                }
                return Err(Status::unavailable(format!(
                    "container {id}: its supervisor's attach socket: {e}"
                )));
            }
        };
        let (mut rd, mut wr) = sock.into_split();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut next = Some(first);
            loop {
                if let Some(f) = next.take().and_then(input_frame) {
                    if wr.write_all(&f.encode()).await.is_err() {
                        return;
                    }
                }
                match input.message().await {
                    Ok(Some(m)) => next = Some(m),
                    // The client went away; the container's stdin stays
                    // open for others (it asks STDIN_CLOSE to close it).
                    _ => return,
                }
            }
        });
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let c = self.c.clone();
        tokio::spawn(async move {
            loop {
                let out = match read_frame_async(&mut rd).await {
                    Ok(Some(Frame::Stdout(b))) => AttachOutput {
                        kind: Some(attach_output::Kind::Stdout(b)),
                    },
                    Ok(Some(Frame::Stderr(b))) => AttachOutput {
                        kind: Some(attach_output::Kind::Stderr(b)),
                    },
                    Ok(Some(Frame::Exit(e))) => {
                        let _ = tx.send(Ok(exit_output(e.code, e.signal))).await;
                        return;
                    }
                    Ok(Some(_)) => continue,
                    // The supervisor went away without an EXIT (killed):
                    // the container's termination says how it ended.
                    Ok(None) | Err(_) => {
                        let out = match c.wait(id.clone()).await {
                            Ok(t) => Ok(termination_exit(&t)),
                            Err(e) => Err(status(e)),
                        };
                        let _ = tx.send(out).await;
                        return;
                    }
                };
                if tx.send(Ok(out)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn debug(&self, _: Request<Empty>) -> Result<Response<DebugResponse>, Status> {
        let t = self.c.timeouts();
        let calls = self
            .c
            .in_flight()
            .into_iter()
            .map(|c| InFlightCall {
                container_id: c.container,
                call: c.kind.name().to_string(),
                component: c.component,
                age_ms: c.started.elapsed().as_millis() as u64,
                timeout_ms: t.get(c.kind).as_millis() as u64,
            })
            .collect();
        Ok(Response::new(DebugResponse { calls }))
    }
}
