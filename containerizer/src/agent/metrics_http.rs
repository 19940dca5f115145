//! `berth agent --metrics-listen ADDR`: `GET /metrics` answers the
//! containerizer's metrics in Prometheus's text format, over HTTP/1.1
//! (hyper, which the gRPC server already brings). Every scrape reads the
//! counters and asks for the running containers' usage then; nothing is
//! kept between scrapes.

use crate::Containerizer;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::time::Duration;

/// Serves `/metrics` of `containerizer` on `listener` until the returned
/// future is dropped (the agent drops it when it stops).
pub async fn serve_metrics(listener: tokio::net::TcpListener, containerizer: Containerizer) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // E.g. out of fds: wait a little rather than spin.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let c = containerizer.clone();
        actix_rt::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let c = c.clone();
                async move { Ok::<_, Infallible>(respond(&c, req).await) }
            });
            // A client that never finishes its request headers is dropped.
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn respond<B>(c: &Containerizer, req: Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "berth serves its Prometheus metrics at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    match c.metrics_text().await {
        Ok(body) => {
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            r
        }
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("berth: metrics unavailable: {e}\n"),
        ),
    }
}
