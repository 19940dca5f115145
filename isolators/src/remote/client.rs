//! The agent's side of one plugin's connection: dialing its socket, the
//! handshake, Recover for a plugin that restarted, and every call under
//! the plugin's deadline with its failure put in words that name it.

use super::proto::isolator_client::IsolatorClient;
use super::proto::{HandshakeRequest, ProtocolVersion, RecoverRequest};
use super::PluginProcess;
use berth_state::{ContainerId, ContainerRecord};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// The connector's answer when tonic would reconnect on its own: berth
/// makes every new connection itself, so that it begins with Handshake.
const LOST: &str = "berth: the connection to the plugin was lost";

/// Whether a call failed because the connector refused to reconnect, i.e.
/// before its request was sent.
fn unsent(s: &tonic::Status) -> bool {
    let mut e: Option<&dyn std::error::Error> = Some(s);
    while let Some(x) = e {
        if x.to_string().contains(LOST) {
            return true;
        }
        e = x.source();
    }
    false
}

/// A failed call.
struct Failed {
    why: String,
    broken: bool,
    unsent: bool,
}

/// Whether a failed call means the plugin is gone or unreachable rather
/// than an answer of its own.
fn died(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unavailable
        || std::error::Error::source(s).is_some()
        || s.message() == "transport error"
}

/// What the plugin said it can isolate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub nesting: bool,
    pub standalone: bool,
}

#[derive(Default)]
struct Session {
    client: Option<IsolatorClient<Channel>>,
    /// The process generation the client talks to (0 for a dialed socket).
    generation: u64,
    instance: Option<String>,
    /// A call failed in a way that may mean a new process: handshake again.
    broken: bool,
    /// A session was made before: the next new instance needs Recover.
    had_one: bool,
    /// The plugin restarted and has not taken a Recover yet.
    recover_due: bool,
    /// The last failed dial and why: calls queued behind it fail at once
    /// for a while instead of each waiting out its own dial.
    down: Option<(Instant, String)>,
}

/// How long a failed dial answers for the calls that come after it.
const DOWN_FOR: Duration = Duration::from_millis(500);

/// One plugin, as the agent reaches it.
pub(crate) struct Client {
    pub name: String,
    socket: PathBuf,
    process: Option<PluginProcess>,
    pub timeout: Duration,
    start_timeout: Duration,
    session: tokio::sync::Mutex<Session>,
    /// The containers the plugin should know (prepared, not yet cleaned
    /// up), as given to Recover.
    pub known: Mutex<BTreeMap<String, ContainerRecord>>,
    pub caps: Mutex<Caps>,
}

impl Client {
    pub fn new(
        name: String,
        socket: PathBuf,
        process: Option<PluginProcess>,
        timeout: Duration,
        start_timeout: Duration,
    ) -> Client {
        Client {
            name,
            socket,
            process,
            timeout,
            start_timeout,
            session: Default::default(),
            known: Default::default(),
            caps: Mutex::new(Caps {
                nesting: false,
                standalone: true,
            }),
        }
    }

    /// The message of a failed call: `plugin NAME: CALL: why`.
    pub fn fail(&self, call: &str, why: impl std::fmt::Display) -> String {
        format!("plugin {}: {call}: {why}", self.name)
    }

    /// Words for a failed gRPC call, and whether the failure may mean the
    /// plugin restarted (the session then handshakes again).
    fn status_error(&self, call: &str, s: &tonic::Status) -> (String, bool) {
        use tonic::Code;
        let (why, broken) = match s.code() {
            // A connection that broke mid-call (the plugin died) comes as
            // Unknown with the transport error as its source.
            Code::Unavailable | Code::Unknown if died(s) => (
                format!("the plugin is unreachable or died ({})", s.message()),
                true,
            ),
            // tonic ends a call past the request's grpc-timeout itself.
            Code::DeadlineExceeded => (self.no_reply(), true),
            Code::Cancelled if s.message().contains("Timeout expired") => (self.no_reply(), true),
            // tonic's own report of a reply it could not decode.
            Code::Internal if s.message().contains("decode") => (
                format!("a reply that is not a valid message ({})", s.message()),
                false,
            ),
            c => (format!("{c:?}: {}", s.message()), false),
        };
        (self.fail(call, why), broken)
    }

    fn no_reply(&self) -> String {
        format!(
            "no reply within {} ms (the plugin's timeout_ms)",
            self.timeout.as_millis()
        )
    }

    /// Runs one call under the plugin's deadline; the error says why,
    /// whether the session must handshake again, and whether the request
    /// never left (the connection was found lost before it was sent).
    async fn timed<T>(
        &self,
        call: &str,
        f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Failed> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => {
                let (why, broken) = self.status_error(call, &s);
                Err(Failed {
                    why,
                    broken,
                    unsent: unsent(&s),
                })
            }
            // A hung call may hold a connection that is of no use.
            Err(_) => Err(Failed {
                why: self.fail(call, self.no_reply()),
                broken: true,
                unsent: false,
            }),
        }
    }

    /// Makes one call on a live session under the plugin's deadline. A
    /// request that never left because the connection was lost (the
    /// plugin restarted since the last call) is sent once more on a new
    /// session, which begins with Handshake and, for a new instance,
    /// Recover: a restarted plugin never sees a call before its Recover.
    pub async fn call<T, Fut>(
        &self,
        call: &str,
        f: impl Fn(IsolatorClient<Channel>) -> Fut,
    ) -> Result<T, String>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut retried = false;
        loop {
            let c = self.ready(None).await?;
            match self.timed(call, f(c)).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if e.broken || e.unsent {
                        self.mark_broken().await;
                    }
                    if e.unsent && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(e.why);
                }
            }
        }
    }

    /// [`Client::call`] for a call that is safe to repeat (cleanup): when a
    /// plugin berth started is down (it died under the call, or just
    /// before it, and is being restarted), the call waits for the new
    /// process and goes again (after its Handshake and Recover), until the
    /// plugin's start timeout, rather than failing a destroy stage over a
    /// restart already under way. An answer of the plugin's own (an error
    /// it returned) is final.
    pub async fn call_through_restart<T, Fut>(
        &self,
        call: &str,
        f: impl Fn(IsolatorClient<Channel>) -> Fut,
    ) -> Result<T, String>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.start_timeout;
        loop {
            let why = match self.call(call, &f).await {
                Ok(v) => return Ok(v),
                Err(why) => why,
            };
            let down = {
                let s = self.session.lock().await;
                s.client.is_none() || s.broken
            };
            if self.process.is_none() || !down || Instant::now() >= deadline {
                return Err(why);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Marks the session for a new handshake (a stream that broke).
    pub async fn mark_broken(&self) {
        self.session.lock().await.broken = true;
    }

    /// A request carrying the plugin's deadline (grpc-timeout), so the
    /// plugin knows how long it has.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        r
    }

    async fn dial(&self) -> Result<IsolatorClient<Channel>, String> {
        // A started plugin may still be starting: wait for its socket.
        let patience = match self.process {
            Some(_) => self.start_timeout,
            None => self.timeout,
        };
        let deadline = Instant::now() + patience;
        loop {
            let p = self.socket.clone();
            let used = Arc::new(AtomicBool::new(false));
            let ch = Endpoint::from_static("http://berth.plugin")
                .connect_timeout(self.timeout)
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let p = p.clone();
                    let again = used.swap(true, Ordering::SeqCst);
                    async move {
                        if again {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::NotConnected,
                                LOST,
                            ));
                        }
                        let s = tokio::net::UnixStream::connect(p).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                }))
                .await;
            match ch {
                Ok(ch) => return Ok(IsolatorClient::new(ch)),
                Err(e) if Instant::now() >= deadline => {
                    return Err(self.fail(
                        "connect",
                        format!(
                            "cannot connect to {} within {} ms: {e:?}",
                            self.socket.display(),
                            patience.as_millis()
                        ),
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// A client on a live session: dials, handshakes and, for a plugin
    /// that restarted since the last session, sends Recover first.
    /// `recover` forces a Recover with these orphans (the agent's start).
    pub async fn ready(
        &self,
        recover: Option<Vec<ContainerId>>,
    ) -> Result<IsolatorClient<Channel>, String> {
        let mut s = self.session.lock().await;
        let generation = self.process.as_ref().map_or(0, PluginProcess::generation);
        if s.client.is_none() || s.broken || s.generation != generation {
            s.client = None;
            if let Some((at, why)) = &s.down {
                // A restarted program is worth a dial at once.
                if at.elapsed() < DOWN_FOR && s.generation == generation {
                    return Err(why.clone());
                }
            }
            let mut c = match self.dial().await {
                Ok(c) => c,
                Err(why) => {
                    s.down = Some((Instant::now(), why.clone()));
                    s.generation = generation;
                    return Err(why);
                }
            };
            s.down = None;
            let req = HandshakeRequest {
                protocol_version: ProtocolVersion::ProtocolVersion1 as u32,
                plugin_name: self.name.clone(),
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            let hs = self
                .timed("handshake", c.handshake(self.request(req)))
                .await
                .map_err(|f| f.why)?;
            if hs.protocol_version != ProtocolVersion::ProtocolVersion1 as u32 {
                return Err(self.fail(
                    "handshake",
                    format!(
                        "the plugin speaks protocol version {}, berth speaks {}",
                        hs.protocol_version,
                        ProtocolVersion::ProtocolVersion1 as u32
                    ),
                ));
            }
            if let Ok(mut caps) = self.caps.lock() {
                *caps = Caps {
                    nesting: hs.supports_nesting,
                    standalone: hs.supports_standalone,
                };
            }
            if s.had_one
                && (hs.instance_id.is_empty() || s.instance.as_ref() != Some(&hs.instance_id))
            {
                tracing::warn!(plugin = %self.name, "the plugin restarted; giving it Recover");
                s.recover_due = true;
            }
            s.instance = Some(hs.instance_id);
            s.generation = generation;
            s.broken = false;
            s.had_one = true;
            s.client = Some(c);
        }
        let Some(client) = s.client.clone() else {
            return Err(self.fail("connect", "no session"));
        };
        if s.recover_due || recover.is_some() {
            let containers = self
                .known
                .lock()
                .map(|k| k.values().cloned().collect())
                .unwrap_or_default();
            let req = RecoverRequest {
                containers,
                orphans: recover.unwrap_or_default(),
            };
            let mut c = client.clone();
            let r = self.timed("recover", c.recover(self.request(req))).await;
            if let Err(f) = r {
                // Recover again before the next call.
                s.recover_due = true;
                s.broken |= f.broken || f.unsent;
                return Err(f.why);
            }
            s.recover_due = false;
        }
        Ok(client)
    }
}
