//! The CRI streaming server: the URLs that the CRI's Exec, Attach and
//! PortForward calls return, served as kubelet serves them, for the
//! clients kubelet's own tools use (client-go's remotecommand and
//! portforward over SPDY/3.1).
//!
//! A URL names a single-use token ([`tokens`]) for the request it was
//! made for. The client upgrades an HTTP/1.1 request on it to SPDY/3.1
//! ([`upgrade`]), negotiating the sub-protocol; then it opens one SPDY
//! stream per stdio channel ([`remotecommand`]) or a pair per forwarded
//! connection ([`portforward`]). Framing is [`frame`], the compressed
//! header blocks [`headers`], the stream bookkeeping [`session`].

mod dictionary;
mod frame;
mod headers;
mod portforward;
mod remotecommand;
mod session;
mod tokens;
mod upgrade;

use berth_state::ContainerId;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// What an Exec URL runs: `cmd` in the running `container`.
#[derive(Debug, Clone)]
pub struct ExecStream {
    pub container: ContainerId,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// What an Attach URL attaches to: the stdio of `container`'s init.
#[derive(Debug, Clone)]
pub struct AttachStream {
    pub container: ContainerId,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// What a PortForward URL forwards to: ports of 127.0.0.1 in `pod`'s
/// network namespace (any port when `ports` is empty, as the CRI's
/// PortForwardRequest leaves them to the client).
#[derive(Debug, Clone)]
pub struct PortForwardStream {
    pub pod: ContainerId,
    pub ports: Vec<i32>,
}

/// Why a streaming session failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
    #[error("streaming connection: {0}")]
    Io(#[from] io::Error),
}

/// A pending request, by the kind of URL it was made for.
#[derive(Debug)]
pub(crate) enum Pending {
    Exec(ExecStream),
    Attach(AttachStream),
    PortForward(PortForwardStream),
}

pub(crate) struct Inner {
    pub(crate) c: crate::Containerizer,
    pub(crate) tokens: tokens::Tokens<Pending>,
}

/// The streaming server: cheap to clone; it serves until the runtime it
/// was started on ends.
#[derive(Clone)]
pub struct StreamingServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl StreamingServer {
    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves in a background task.
    pub async fn start(addr: SocketAddr, c: crate::Containerizer) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            c,
            tokens: tokens::Tokens::new(tokens::TTL),
        });
        tokio::spawn(upgrade::serve(listener, inner.clone()));
        tracing::info!(%addr, "CRI streaming server listening");
        Ok(StreamingServer { addr, inner })
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self, kind: &str, p: Pending) -> String {
        let token = self.inner.tokens.insert(p);
        format!("http://{}/{kind}/{token}", self.addr)
    }

    /// `http://ADDR/exec/TOKEN`, valid once, for a minute.
    pub fn exec_url(&self, r: ExecStream) -> String {
        self.url("exec", Pending::Exec(r))
    }

    /// `http://ADDR/attach/TOKEN`, valid once, for a minute.
    pub fn attach_url(&self, r: AttachStream) -> String {
        self.url("attach", Pending::Attach(r))
    }

    /// `http://ADDR/portforward/TOKEN`, valid once, for a minute.
    pub fn port_forward_url(&self, r: PortForwardStream) -> String {
        self.url("portforward", Pending::PortForward(r))
    }
}
