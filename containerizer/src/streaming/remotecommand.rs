//! remotecommand (Exec and Attach), as kubelet serves it: the client opens
//! one SPDY stream per channel, typed by its `streamType` header (`error`,
//! `stdin`, `stdout`, `stderr`, and with a terminal from v3 on `resize`,
//! which carries JSON `{"Width":…,"Height":…}` objects). The server waits
//! for the set the request asked for, then runs: an exec through the
//! agent's exec machinery (a DEBUG container nested in the container),
//! an attach through the container supervisor's attach socket. At the end
//! the output streams are closed, the error stream gets the outcome (v4:
//! a metav1.Status in JSON; before v4: the error's text, nothing on
//! success) and the connection is closed.

use super::session::{Session, Stream, StreamWriter};
use super::{AttachStream, ExecStream};
use crate::agent::api::{exec_input, exec_output, AttachResize, ExecInput, ExecRequest};
use crate::{Containerizer, TerminationReason};
use berth_launcher::attach::{self, Frame};
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// How long the client has to open its streams (kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Streams of a type not asked for that are tolerated (kubelet ignores
/// them): a bound on what a client holds open.
const MAX_EXTRA_STREAMS: usize = 8;
/// See [`finish`].
const V1_ERROR_HEAD_START: Duration = Duration::from_millis(200);

/// The negotiated sub-protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Protocol {
    /// `channel.k8s.io`
    V1,
    /// `v2.channel.k8s.io`
    V2,
    /// `v3.channel.k8s.io`: terminal resizing.
    V3,
    /// `v4.channel.k8s.io`: the outcome as a metav1.Status.
    V4,
}

impl Protocol {
    pub(super) fn of(name: &str) -> Protocol {
        match name {
            "v4.channel.k8s.io" => Protocol::V4,
            "v3.channel.k8s.io" => Protocol::V3,
            "v2.channel.k8s.io" => Protocol::V2,
            _ => Protocol::V1,
        }
    }
}

/// The channels a request asked for.
#[derive(Debug, Clone, Copy)]
struct Want {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
}

impl Want {
    /// With a terminal there is no separate stderr (kubelet drops it).
    fn of(p: Protocol, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Want {
        Want {
            stdin,
            stdout,
            stderr: stderr && !tty,
            resize: tty && p >= Protocol::V3,
        }
    }
}

/// The client's streams, once all that were asked for are open.
struct Streams {
    error: StreamWriter,
    stdin: Option<mpsc::Receiver<Bytes>>,
    stdout: Option<StreamWriter>,
    stderr: Option<StreamWriter>,
    resize: Option<mpsc::Receiver<Bytes>>,
    /// Streams of a type not asked for: our halves, held open until the
    /// end (their input is dropped unread, so it never holds the session).
    _extra: Vec<StreamWriter>,
}

/// Waits for the streams `want` names (and the error stream).
async fn collect(session: &mut Session, want: Want) -> Result<Streams, String> {
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    let (mut error, mut stdin, mut stdout, mut stderr, mut resize) = (None, None, None, None, None);
    let mut extra = Vec::new();
    loop {
        let done = error.is_some()
            && stdin.is_some() == want.stdin
            && stdout.is_some() == want.stdout
            && stderr.is_some() == want.stderr
            && resize.is_some() == want.resize;
        if done {
            break;
        }
        let s = match tokio::time::timeout_at(deadline, session.next_stream()).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err("the client hung up before opening its streams".into()),
            Err(_) => {
                return Err(format!(
                    "the client opened too few streams in {STREAM_CREATION_TIMEOUT:?} \
                     (wanted error and {want:?})"
                ))
            }
        };
        let slot = match s.header("streamtype") {
            Some("error") if error.is_none() => &mut error,
            Some("stdin") if want.stdin && stdin.is_none() => &mut stdin,
            Some("stdout") if want.stdout && stdout.is_none() => &mut stdout,
            Some("stderr") if want.stderr && stderr.is_none() => &mut stderr,
            Some("resize") if want.resize && resize.is_none() => &mut resize,
            t => {
                tracing::info!(stream = s.id, streamtype = ?t, "a stream the request did not ask for");
                if extra.len() >= MAX_EXTRA_STREAMS {
                    return Err(format!(
                        "the client opened over {MAX_EXTRA_STREAMS} unasked-for streams"
                    ));
                }
                extra.push(s.out);
                continue;
            }
        };
        *slot = Some(s);
    }
    let error = error.expect("checked above");
    Ok(Streams {
        error: error.out,
        stdin: stdin.map(|s: Stream| s.input),
        stdout: stdout.map(|s: Stream| s.out),
        stderr: stderr.map(|s: Stream| s.out),
        resize: resize.map(|s: Stream| s.input),
        _extra: extra,
    })
}

/// What the client sends, merged in order.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    Stdin(Bytes),
    StdinClose,
    Resize { rows: u16, cols: u16 },
}

/// A terminal size as client-go's TerminalSize encodes it.
#[derive(serde::Deserialize)]
struct TermSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Every complete JSON size at the front of `buf` (removed from it); a
/// malformed one discards what is buffered.
fn sizes(buf: &mut Vec<u8>) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<TermSize>();
    let used = loop {
        match it.next() {
            Some(Ok(s)) => out.push((s.height, s.width)),
            Some(Err(e)) if e.is_eof() => break it.byte_offset(),
            Some(Err(e)) => {
                tracing::info!(error = %e, "a malformed terminal size; dropped");
                break buf.len();
            }
            None => break buf.len(),
        }
    };
    buf.drain(..used);
    out
}

async fn recv(r: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match r {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// The stdin and resize streams into `tx`, in the order they came (a
/// resize is taken first when both wait, so a size sent before input is
/// in place when the input arrives); stdin's end is `StdinClose`.
async fn inputs(
    mut stdin: Option<mpsc::Receiver<Bytes>>,
    mut resize: Option<mpsc::Receiver<Bytes>>,
    tx: mpsc::Sender<Input>,
) {
    let mut buf = Vec::new();
    loop {
        let msgs = tokio::select! {
            biased;
            m = recv(&mut resize), if resize.is_some() => match m {
                Some(b) => {
                    buf.extend_from_slice(&b);
                    sizes(&mut buf)
                        .into_iter()
                        .map(|(rows, cols)| Input::Resize { rows, cols })
                        .collect()
                }
                None => {
                    resize = None;
                    vec![]
                }
            },
            m = recv(&mut stdin), if stdin.is_some() => match m {
                Some(b) => vec![Input::Stdin(b)],
                None => {
                    stdin = None;
                    vec![Input::StdinClose]
                }
            },
            else => return,
        };
        for m in msgs {
            if tx.send(m).await.is_err() {
                return;
            }
        }
    }
}

/// How a session's command or attach ended.
#[derive(Debug)]
enum Outcome {
    /// The exec's command exited with this code.
    Exited(i32),
    /// The attach ended (the container's stdio closed).
    Ended,
    Failed(String),
    /// The client hung up.
    Gone,
}

/// The outcome as a metav1.Status (v4).
fn status_json(o: &Outcome) -> serde_json::Value {
    use serde_json::json;
    match o {
        Outcome::Exited(0) | Outcome::Ended | Outcome::Gone => {
            json!({"metadata": {}, "status": "Success"})
        }
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(msg) => json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    }
}

/// Reports `o` on the error stream, closes the output streams and ends
/// the session. The report comes first: v2+ clients wait for both, but a
/// v1 client returns as soon as its outputs end, error read or not.
async fn finish(s: Streams, session: Session, p: Protocol, o: Outcome) {
    if !matches!(o, Outcome::Gone) {
        let report = match (p, &o) {
            (Protocol::V4, o) => status_json(o).to_string().into_bytes(),
            (_, Outcome::Exited(code)) if *code != 0 => {
                format!("command terminated with non-zero exit code: {code}").into_bytes()
            }
            (_, Outcome::Failed(msg)) => msg.clone().into_bytes(),
            _ => Vec::new(),
        };
        if !report.is_empty() {
            let _ = s.error.write(&report).await;
        }
        let _ = s.error.close().await;
        if p == Protocol::V1 && !report.is_empty() {
            // The v1 client reads the error stream and its outputs on
            // goroutines that race; give the error a head start.
            tokio::time::sleep(V1_ERROR_HEAD_START).await;
        }
        for w in s.stdout.iter().chain(s.stderr.iter()) {
            let _ = w.close().await;
        }
    }
    drop(s);
    session.close().await;
}

/// Writes to an output the client may not have asked for.
async fn put(w: &Option<StreamWriter>, b: &[u8]) -> Result<(), super::session::Gone> {
    match w {
        Some(w) => w.write(b).await,
        None => Ok(()),
    }
}

/// Serves an Exec URL.
pub(super) async fn exec(c: Containerizer, mut session: Session, p: Protocol, r: ExecStream) {
    let want = Want::of(p, r.tty, r.stdin, r.stdout, r.stderr);
    let mut s = match collect(&mut session, want).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(container = %r.container, error = e, "exec stream setup failed");
            session.close().await;
            return;
        }
    };
    let o = run_exec(c, &mut s, &session, &r).await;
    tracing::info!(container = %r.container, outcome = ?o, "exec stream ends");
    finish(s, session, p, o).await;
}

async fn run_exec(c: Containerizer, s: &mut Streams, session: &Session, r: &ExecStream) -> Outcome {
    if r.cmd.is_empty() {
        return Outcome::Failed("exec: no command given".into());
    }
    let start = ExecRequest {
        id: Some(r.container.clone()),
        command: r.cmd.clone(),
        stdin: s.stdin.is_some(),
        tty: r.tty,
        ..Default::default()
    };
    let (in_tx, in_rx) = mpsc::channel::<Result<ExecInput, tonic::Status>>(16);
    let input = tokio_stream::wrappers::ReceiverStream::new(in_rx);
    let to_status = crate::agent::server::status;
    let mut outputs =
        match crate::agent::exec::exec_started(c, start, Box::pin(input), to_status).await {
            Ok(o) => o,
            Err(st) => {
                return Outcome::Failed(format!(
                    "exec in container {}: {}",
                    r.container,
                    st.message()
                ))
            }
        };
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(inputs(s.stdin.take(), s.resize.take(), tx));
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let i = match m {
                Input::Stdin(b) => exec_input::Input::Stdin(b.to_vec()),
                Input::StdinClose => exec_input::Input::StdinClose(true),
                Input::Resize { rows, cols } => exec_input::Input::Resize(AttachResize {
                    rows: rows.into(),
                    cols: cols.into(),
                }),
            };
            if in_tx.send(Ok(ExecInput { input: Some(i) })).await.is_err() {
                return;
            }
        }
    });
    let ended = session.ended();
    tokio::pin!(ended);
    loop {
        // The client hanging up drops `outputs`, which destroys the
        // DEBUG container.
        let m = tokio::select! {
            m = outputs.next() => m,
            _ = &mut ended => return Outcome::Gone,
        };
        let sent = match m.map(|m| m.map(|m| m.output)) {
            Some(Ok(Some(exec_output::Output::Stdout(b)))) => put(&s.stdout, &b).await,
            Some(Ok(Some(exec_output::Output::Stderr(b)))) => put(&s.stderr, &b).await,
            Some(Ok(Some(exec_output::Output::Exit(t)))) => {
                let never = t.no_exit_status || t.reason() == TerminationReason::StartError;
                return match never {
                    true => Outcome::Failed(format!(
                        "exec {:?} in container {}: the command could not start: {}",
                        r.cmd, r.container, t.message
                    )),
                    false => Outcome::Exited(t.exit_code),
                };
            }
            Some(Ok(_)) => Ok(()),
            Some(Err(st)) => return Outcome::Failed(st.message().to_string()),
            None => return Outcome::Failed("the exec ended without an exit status".into()),
        };
        if sent.is_err() {
            return Outcome::Gone;
        }
    }
}

/// Serves an Attach URL.
pub(super) async fn attach(c: Containerizer, mut session: Session, p: Protocol, r: AttachStream) {
    let want = Want::of(p, r.tty, r.stdin, r.stdout, r.stderr);
    let mut s = match collect(&mut session, want).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(container = %r.container, error = e, "attach stream setup failed");
            session.close().await;
            return;
        }
    };
    let o = run_attach(c, &mut s, &session, &r).await;
    tracing::info!(container = %r.container, outcome = ?o, "attach stream ends");
    finish(s, session, p, o).await;
}

async fn run_attach(
    c: Containerizer,
    s: &mut Streams,
    session: &Session,
    r: &AttachStream,
) -> Outcome {
    let id = r.container.clone();
    match c.status(id.clone()).await {
        Ok(st) if st.termination.is_none() => {}
        Ok(_) => return Outcome::Failed(format!("container {id} is not running")),
        Err(e) => return Outcome::Failed(format!("attach to {id}: {e}")),
    }
    let path = c.attach_socket(&id);
    // Blocking connect (a long path goes through /proc/self/fd).
    let connected = tokio::task::spawn_blocking(move || {
        let s = attach::connect(&path)?.into_stream();
        s.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(s)
    })
    .await;
    let sock = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // It may have ended since the status above (its supervisor
            // gone, the destroy under way): then it is what the status
            // would have said.
            let ended = c.status(id.clone()).await.is_ok_and(|now| {
                now.termination.is_some() || now.state == berth_state::ContainerState::Destroying
            });
            return Outcome::Failed(match ended {
                true => format!("container {id} is not running"),
                false => format!("container {id}: its supervisor's attach socket: {e}"),
            });
        }
        Err(e) => return Outcome::Failed(format!("attach to {id}: {e}")),
    };
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(inputs(s.stdin.take(), s.resize.take(), tx));
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            // The client's stdin ending closes the container's: the CRI's
            // attach with stdin is kubectl's `attach -i`/`run -i` of a
            // stdin_once container (berth keeps no stdin_once of its own).
            let f = match m {
                Input::Stdin(b) => Frame::Stdin(b.to_vec()),
                Input::StdinClose => Frame::StdinClose,
                Input::Resize { rows, cols } => Frame::Resize { rows, cols },
            };
            if wr.write_all(&f.encode()).await.is_err() {
                return;
            }
        }
        // Not shut down: the supervisor takes a client's EOF for its
        // going away, and the output is still to come.
        wr.forget();
    });
    let ended = session.ended();
    tokio::pin!(ended);
    loop {
        let f = tokio::select! {
            f = crate::agent::server::read_frame_async(&mut rd) => f,
            _ = &mut ended => return Outcome::Gone,
        };
        let sent = match f {
            Ok(Some(Frame::Stdout(b))) => put(&s.stdout, &b).await,
            Ok(Some(Frame::Stderr(b))) => put(&s.stderr, &b).await,
            // The container's stdio ended (or its supervisor went away):
            // the attach is over, whatever the container's exit (as
            // kubelet reports an attach).
            Ok(Some(Frame::Exit(_))) | Ok(None) | Err(_) => return Outcome::Ended,
            Ok(Some(_)) => Ok(()),
        };
        if sent.is_err() {
            return Outcome::Gone;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_whole_and_split_anywhere() {
        let mut buf = br#"{"Width":80,"Height":24}
{"Width":1"#
            .to_vec();
        assert_eq!(sizes(&mut buf), vec![(24, 80)]);
        // The whitespace between values is consumed with the first.
        assert_eq!(buf, br#"{"Width":1"#);
        buf.extend_from_slice(b"00,\"Height\":50}\n");
        assert_eq!(sizes(&mut buf), vec![(50, 100)]);
        assert!(buf.iter().all(|b| b.is_ascii_whitespace()), "{buf:?}");
        let mut bad = b"{\"Width\":\"x\"}{\"Width\":1,\"Height\":2}".to_vec();
        assert_eq!(sizes(&mut bad), vec![]);
        assert!(bad.is_empty());
    }

    #[test]
    fn protocols_and_the_streams_they_want() {
        assert_eq!(Protocol::of("v4.channel.k8s.io"), Protocol::V4);
        assert_eq!(Protocol::of("channel.k8s.io"), Protocol::V1);
        let w = Want::of(Protocol::V4, true, true, true, true);
        assert!(!w.stderr && w.resize);
        let w = Want::of(Protocol::V2, true, false, true, false);
        assert!(!w.resize);
        let w = Want::of(Protocol::V4, false, false, true, true);
        assert!(w.stderr && !w.resize && !w.stdin);
    }

    #[test]
    fn the_v4_status_is_what_client_go_decodes() {
        let s = status_json(&Outcome::Exited(3));
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(status_json(&Outcome::Exited(0))["status"], "Success");
        let f = status_json(&Outcome::Failed("boom".into()));
        assert_eq!(
            (f["status"].as_str(), f["message"].as_str()),
            (Some("Failure"), Some("boom"))
        );
    }

    #[tokio::test]
    async fn inputs_keep_order_and_end_with_stdin_close() {
        let (stdin_tx, stdin_rx) = mpsc::channel(4);
        let (resize_tx, resize_rx) = mpsc::channel(4);
        resize_tx
            .send(Bytes::from_static(b"{\"Width\":7,\"Height\":3}\n"))
            .await
            .unwrap();
        stdin_tx.send(Bytes::from_static(b"hi")).await.unwrap();
        drop((stdin_tx, resize_tx));
        let (tx, mut rx) = mpsc::channel(8);
        inputs(Some(stdin_rx), Some(resize_rx), tx).await;
        let mut got = Vec::new();
        while let Some(m) = rx.recv().await {
            got.push(m);
        }
        assert_eq!(
            got,
            vec![
                Input::Resize { rows: 3, cols: 7 },
                Input::Stdin(Bytes::from_static(b"hi")),
                Input::StdinClose
            ]
        );
    }
}
