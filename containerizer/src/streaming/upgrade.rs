//! The HTTP/1.1 side: each streaming URL is one request that upgrades to
//! SPDY/3.1 (`Connection: Upgrade`, `Upgrade: SPDY/3.1`), with the
//! sub-protocol negotiated in `X-Stream-Protocol-Version`: the first the
//! client offers that we speak, as kubelet picks it.

use super::remotecommand::Protocol;
use super::session::Session;
use super::{Inner, Pending};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;

const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// remotecommand's sub-protocols, newest first.
const REMOTECOMMAND: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
const PORTFORWARD: [&str; 1] = ["portforward.k8s.io"];

pub(super) async fn serve(listener: tokio::net::TcpListener, inner: Arc<Inner>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of fds, most likely: wait rather than spin.
                tracing::warn!(error = %e, "streaming server: accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |r| handle(r, inner.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "streaming server: HTTP connection");
            }
        });
    }
}

/// A refusal as a metav1.Status, which client-go turns into an error
/// carrying `msg` (plain text it reports poorly).
fn reply(code: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": msg.into(),
        "reason": code.canonical_reason().unwrap_or("").replace(' ', ""),
        "code": code.as_u16(),
    });
    let mut r = Response::new(Full::new(Bytes::from(status.to_string())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// True when header `name` lists `token` (comma-separated, any case).
fn lists(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// The sub-protocols the client offers, in its order.
fn offered(req: &Request<Incoming>) -> Vec<String> {
    req.headers()
        .get_all(PROTOCOL_HEADER)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

async fn handle(
    mut req: Request<Incoming>,
    inner: Arc<Inner>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let (kind, token) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""));
    let ours: &[&str] = match kind {
        "exec" | "attach" => &REMOTECOMMAND,
        "portforward" => &PORTFORWARD,
        _ => {
            return Ok(reply(
                StatusCode::NOT_FOUND,
                format!("no streaming endpoint {path}"),
            ))
        }
    };
    if req.method() != Method::POST && req.method() != Method::GET {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} {path}: streaming URLs take POST or GET", req.method()),
        ));
    }
    if !lists(&req, header::CONNECTION, "upgrade") || !lists(&req, header::UPGRADE, "SPDY/3.1") {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            "this streaming server speaks SPDY/3.1 only: the request must carry \
             `Connection: Upgrade` and `Upgrade: SPDY/3.1`",
        ));
    }
    let offered = offered(&req);
    // A client that names no sub-protocol gets the oldest (kubelet's rule).
    let protocol = match offered.iter().find(|p| ours.contains(&p.as_str())) {
        Some(p) => p.clone(),
        None if offered.is_empty() => ours[ours.len() - 1].to_string(),
        None => {
            return Ok(reply(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to negotiate a protocol: the client offers {offered:?}, \
                     this server speaks {ours:?}"
                ),
            ))
        }
    };
    let pending = match inner.tokens.take(token) {
        Some(p) => p,
        None => {
            return Ok(reply(
                StatusCode::NOT_FOUND,
                format!("{path}: an unknown, used or expired streaming URL"),
            ))
        }
    };
    let matches = matches!(
        (&pending, kind),
        (Pending::Exec(_), "exec")
            | (Pending::Attach(_), "attach")
            | (Pending::PortForward(_), "portforward")
    );
    if !matches {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            format!("{path}: this token is for another kind of stream"),
        ));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let what = format!("{kind} {}", &token[..token.len().min(8)]);
    let proto = protocol.clone();
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(up) => TokioIo::new(up),
            Err(e) => {
                tracing::info!(session = what, error = %e, "the streaming upgrade failed");
                return;
            }
        };
        let session = Session::start(io, what.clone());
        tracing::info!(session = what, protocol = proto, "streaming session starts");
        let c = inner.c.clone();
        match pending {
            Pending::Exec(r) => {
                super::remotecommand::exec(c, session, Protocol::of(&proto), r).await
            }
            Pending::Attach(r) => {
                super::remotecommand::attach(c, session, Protocol::of(&proto), r).await
            }
            Pending::PortForward(r) => super::portforward::serve(c, session, r).await,
        }
        tracing::info!(session = what, "streaming session ends");
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("SPDY/3.1"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&protocol) {
        h.insert(PROTOCOL_HEADER, v);
    }
    Ok(r)
}
