//! Port forwarding (`portforward.k8s.io`), as kubelet serves it: for each
//! connection the client opens a pair of streams sharing a `requestID`
//! header, an `error` stream and a `data` stream, both naming the `port`.
//! The server connects to 127.0.0.1:PORT inside the pod's network
//! namespace and relays the data stream to it; a failure is written as
//! text on the error stream. Both streams are closed when the pod's side
//! of the connection ends.
//!
//! The socket is made by a short-lived thread that joins the pod's netns
//! (opened through its init's /proc entry, checked against the init's
//! start time, so a recycled pid is never entered); a socket stays in the
//! namespace it was made in, so the thread hands it back and exits.

use super::session::{Session, Stream};
use super::PortForwardStream;
use crate::Containerizer;
use berth_state::{ContainerId, ProcessRef};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a connect inside the pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests with one stream of their pair open: a bound on what a client
/// holds (client-go opens the pair back to back).
const MAX_HALF_OPEN: usize = 64;

/// A request's streams as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

/// Serves a PortForward URL until the client hangs up.
pub(super) async fn serve(c: Containerizer, mut session: Session, r: PortForwardStream) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(s) = session.next_stream().await {
        let Some(request) = s.header("requestid").map(str::to_string) else {
            // Clients before client-go 1.x paired streams by id; none
            // that speak SPDY/3.1 to a CRI runtime today.
            let _ = s
                .out
                .write(b"port forward: the stream has no requestID header")
                .await;
            let _ = s.out.close().await;
            continue;
        };
        if !pairs.contains_key(&request) && pairs.len() >= MAX_HALF_OPEN {
            tracing::info!(pod = %r.pod, "port forward: too many half-open requests; closing");
            break;
        }
        let pair = pairs.entry(request.clone()).or_default();
        let slot = match s.header("streamtype") {
            Some("error") if pair.error.is_none() => &mut pair.error,
            Some("data") if pair.data.is_none() => &mut pair.data,
            t => {
                tracing::info!(stream = s.id, streamtype = ?t, "port forward: an unexpected stream");
                let _ = s.out.close().await;
                continue;
            }
        };
        *slot = Some(s);
        if pair.error.is_some() && pair.data.is_some() {
            if let Some(Pair {
                error: Some(error),
                data: Some(data),
            }) = pairs.remove(&request)
            {
                tokio::spawn(forward(c.clone(), r.clone(), error, data));
            }
        }
    }
    session.close().await;
}

async fn forward(c: Containerizer, r: PortForwardStream, error: Stream, data: Stream) {
    let port = data.header("port").unwrap_or("").to_string();
    match connect(&c, &r, &port).await {
        Ok(tcp) => relay(tcp, data).await,
        Err(why) => {
            tracing::info!(pod = %r.pod, port, error = why, "port forward failed");
            let msg = format!("error forwarding port {port} to pod {}: {why}", r.pod);
            let _ = error.out.write(msg.as_bytes()).await;
            let _ = data.out.close().await;
        }
    }
    let _ = error.out.close().await;
}

/// A connection to 127.0.0.1:`port` in the pod's network namespace.
async fn connect(
    c: &Containerizer,
    r: &PortForwardStream,
    port: &str,
) -> Result<tokio::net::TcpStream, String> {
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{port:?} is not a port number"))?;
    if !r.ports.is_empty() && !r.ports.contains(&(port as i32)) {
        return Err(format!(
            "port {port} is not among those this URL forwards ({:?})",
            r.ports
        ));
    }
    let init = pod_init(c, &r.pod).await?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-portfwd".into())
        .spawn(move || {
            let _ = tx.send(connect_in_netns(&init, port));
        })
        .map_err(|e| format!("a thread for the connect: {e}"))?;
    let tcp = rx
        .await
        .map_err(|_| "the connecting thread died".to_string())?
        .map_err(|e| e.to_string())?;
    tcp.set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(tcp))
        .map_err(|e| format!("the connection to port {port}: {e}"))
}

/// The pod's init, while it runs.
async fn pod_init(c: &Containerizer, pod: &ContainerId) -> Result<ProcessRef, String> {
    let st = c.status(pod.clone()).await.map_err(|e| e.to_string())?;
    match (st.init, &st.termination) {
        (Some(init), None) => Ok(init),
        _ => Err(format!("pod {pod} is not running")),
    }
}

/// On a thread of its own: joins `init`'s network namespace and connects.
fn connect_in_netns(init: &ProcessRef, port: u16) -> std::io::Result<std::net::TcpStream> {
    use std::io::Error;
    let ns = init.open_namespace("net").map_err(|e| {
        Error::new(
            e.kind(),
            format!("the pod's network namespace (pid {}): {e}", init.pid),
        )
    })?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::other(format!("setns into the pod's network namespace: {e}")))?;
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)
        .map_err(|e| Error::new(e.kind(), format!("connect to {to} in the pod: {e}")))
}

/// Relays until the pod's side ends; the client's FIN half-closes the
/// connection to the pod.
async fn relay(tcp: tokio::net::TcpStream, data: Stream) {
    let (mut rd, mut wr) = tcp.into_split();
    let Stream { mut input, out, .. } = data;
    let up = tokio::spawn(async move {
        while let Some(b) = input.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = out.close().await;
    up.abort();
}
