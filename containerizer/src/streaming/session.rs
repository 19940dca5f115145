//! A SPDY/3.1 session, server side, over an upgraded HTTP connection. The
//! client (client-go's SPDY executor and port forwarder) opens every
//! stream; each SYN_STREAM is answered with a SYN_REPLY at once and handed
//! to the handler as a [`Stream`]: its headers, the client's data (ended by
//! FIN, RST_STREAM or the connection's end) and a writer for ours.
//!
//! One task reads (and answers PINGs), one task writes; frames are
//! compressed in the order they hit the wire, as SPDY's shared zlib
//! streams require. The client (moby/spdystream) does no flow control
//! (it neither sends nor honours WINDOW_UPDATE), so neither does this side:
//! a slow consumer of a stream's data holds the reading task, and TCP
//! pushes back on the client.

use super::frame::{self, Frame, FLAG_FIN, MAX_DATA};
use super::headers::{HeaderDeflater, HeaderInflater, Headers};
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// How long a closing session waits for the client to hang up.
const LINGER: Duration = Duration::from_secs(5);
/// A session that receives nothing (client-go pings every 5 s) for this
/// long has lost its client: kubelet's default stream idle timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 60 * 60);

/// What the writing task is asked to do.
enum Out {
    Frame(Frame),
    /// GOAWAY, then the end of our side of the connection.
    Close,
}

/// One client-opened stream.
pub(crate) struct Stream {
    pub(crate) id: u32,
    pub(crate) headers: Headers,
    /// The client's data; `None` once it sent FIN (or reset the stream,
    /// or the connection ended).
    pub(crate) input: mpsc::Receiver<Bytes>,
    pub(crate) out: StreamWriter,
}

impl Stream {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        super::headers::get(&self.headers, name)
    }
}

/// Our half of a stream.
#[derive(Clone)]
pub(crate) struct StreamWriter {
    id: u32,
    tx: mpsc::Sender<Out>,
}

/// The session is gone (the connection broke or was closed).
#[derive(Debug)]
pub(crate) struct Gone;

impl StreamWriter {
    /// Sends `data` as DATA frames.
    pub(crate) async fn write(&self, data: &[u8]) -> Result<(), Gone> {
        for chunk in data.chunks(MAX_DATA) {
            self.frame(0, Bytes::copy_from_slice(chunk)).await?;
        }
        Ok(())
    }

    /// Ends our half of the stream (an empty DATA frame with FIN).
    pub(crate) async fn close(&self) -> Result<(), Gone> {
        self.frame(FLAG_FIN, Bytes::new()).await
    }

    async fn frame(&self, flags: u8, data: Bytes) -> Result<(), Gone> {
        let f = Frame::Data {
            stream_id: self.id,
            flags,
            data,
        };
        self.tx.send(Out::Frame(f)).await.map_err(|_| Gone)
    }
}

/// The server's side of one SPDY connection.
pub(crate) struct Session {
    streams: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Out>,
    /// Becomes true when the connection has ended.
    ended: watch::Receiver<bool>,
}

impl Session {
    /// Starts the reading and writing tasks on `io`.
    pub(crate) fn start<IO>(io: IO, what: String) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (streams_tx, streams) = mpsc::channel(16);
        let (ended_tx, ended) = watch::channel(false);
        let (closing_tx, closing) = watch::channel(false);
        tokio::spawn(write_loop(wr, out_rx, closing_tx, what.clone()));
        let out = out_tx.clone();
        tokio::spawn(async move {
            read_loop(rd, out_tx, streams_tx, closing, &what).await;
            let _ = ended_tx.send(true);
        });
        Session {
            streams,
            out,
            ended,
        }
    }

    /// The next stream the client opens; `None` once it can open no more.
    pub(crate) async fn next_stream(&mut self) -> Option<Stream> {
        self.streams.recv().await
    }

    /// Resolves once the connection has ended (the client hung up, or
    /// after [`close`](Self::close)).
    pub(crate) fn ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut e = self.ended.clone();
        async move {
            let _ = e.wait_for(|v| *v).await;
        }
    }

    /// Ends the session: GOAWAY after every frame already queued, then our
    /// side of the connection closes; the client's is read (and dropped)
    /// until it hangs up, at most [`LINGER`], so that nothing we wrote is
    /// lost to a reset.
    pub(crate) async fn close(self) {
        let _ = self.out.send(Out::Close).await;
        let ended = self.ended();
        let _ = tokio::time::timeout(LINGER * 2, ended).await;
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    out: mpsc::Sender<Out>,
    streams: mpsc::Sender<Stream>,
    mut closing: watch::Receiver<bool>,
    what: &str,
) {
    let mut z = HeaderInflater::new();
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut last_id = 0u32;
    // Once our side has closed, the client has LINGER to hang up.
    let linger = async {
        let _ = closing.wait_for(|v| *v).await;
        tokio::time::sleep(LINGER).await;
    };
    tokio::pin!(linger);
    loop {
        let raw = tokio::select! {
            r = tokio::time::timeout(IDLE_TIMEOUT, frame::read_raw(&mut rd)) => match r {
                Ok(r) => r,
                Err(_) => {
                    tracing::info!(session = what, "SPDY session idle for {IDLE_TIMEOUT:?}; dropped");
                    let _ = out.send(Out::Close).await;
                    return;
                }
            },
            _ = &mut linger => {
                tracing::debug!(session = what, "the client did not hang up; dropping it");
                return;
            }
        };
        let f = match raw.and_then(|r| match r {
            Some((h, p)) => frame::decode(h, p, &mut z).map(Some),
            None => Ok(None),
        }) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::info!(session = what, error = %e, "SPDY session ends");
                let _ = out
                    .send(Out::Frame(Frame::GoAway {
                        last_good: last_id,
                        status: frame::GOAWAY_PROTOCOL_ERROR,
                    }))
                    .await;
                let _ = out.send(Out::Close).await;
                return;
            }
        };
        match f {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                // Client streams are odd and increase.
                if stream_id % 2 == 0 || stream_id <= last_id {
                    let _ = out
                        .send(Out::Frame(Frame::RstStream {
                            stream_id,
                            status: frame::RST_PROTOCOL_ERROR,
                        }))
                        .await;
                    continue;
                }
                last_id = stream_id;
                let reply = Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: Vec::new(),
                };
                if out.send(Out::Frame(reply)).await.is_err() {
                    return;
                }
                let (tx, input) = mpsc::channel(16);
                if flags & FLAG_FIN == 0 {
                    open.insert(stream_id, tx);
                }
                let s = Stream {
                    id: stream_id,
                    headers,
                    input,
                    out: StreamWriter {
                        id: stream_id,
                        tx: out.clone(),
                    },
                };
                if streams.send(s).await.is_err() {
                    tracing::debug!(session = what, stream_id, "a stream nobody takes");
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if let Some(tx) = open.get(&stream_id) {
                    // Its reader may be gone (a stream we do not read).
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        open.remove(&stream_id);
                    }
                }
                if flags & FLAG_FIN != 0 {
                    open.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                open.remove(&stream_id);
            }
            // The client's pings are odd; ours (none) would be even.
            Frame::Ping(id) if id % 2 == 1 => {
                let _ = out.send(Out::Frame(Frame::Ping(id))).await;
            }
            Frame::Headers {
                stream_id, flags, ..
            } => {
                if flags & FLAG_FIN != 0 {
                    open.remove(&stream_id);
                }
            }
            // No new streams come after GOAWAY; those open go on.
            Frame::GoAway { .. } => {}
            Frame::Ping(_)
            | Frame::SynReply { .. }
            | Frame::Settings(_)
            | Frame::WindowUpdate { .. }
            | Frame::Unknown(_) => {}
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut out: mpsc::Receiver<Out>,
    closing: watch::Sender<bool>,
    what: String,
) {
    let mut z = HeaderDeflater::new();
    while let Some(o) = out.recv().await {
        let bytes = match o {
            Out::Frame(f) => frame::encode(&f, &mut z),
            Out::Close => {
                let bye = Frame::GoAway {
                    last_good: 0,
                    status: 0,
                };
                let _ = wr.write_all(&frame::encode(&bye, &mut z)).await;
                let _ = wr.flush().await;
                let _ = wr.shutdown().await;
                break;
            }
        };
        if let Err(e) = wr.write_all(&bytes).await {
            tracing::debug!(session = what, error = %e, "SPDY write failed");
            break;
        }
        if out.is_empty() {
            let _ = wr.flush().await;
        }
    }
    let _ = closing.send(true);
}
