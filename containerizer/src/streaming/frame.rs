//! SPDY/3.1 framing. Every frame has an 8-byte head: a control frame
//! `[1][version u15][type u16][flags u8][length u24]`, a data frame
//! `[0][stream id u31][flags u8][length u24]`, then `length` bytes.
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) go through the
//! session's zlib streams ([`super::headers`]).

use super::headers::{HeaderDeflater, HeaderInflater, Headers};
use super::StreamingError;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

pub(crate) const VERSION: u16 = 3;
/// DATA, SYN_STREAM, SYN_REPLY, HEADERS: the sender's last frame on it.
pub(crate) const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status: the stream broke the protocol.
pub(crate) const RST_PROTOCOL_ERROR: u32 = 1;
/// GOAWAY status: the peer broke the protocol.
pub(crate) const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// The largest frame accepted: a sanity bound below the 24-bit limit.
pub(crate) const MAX_FRAME: usize = 1 << 20;
/// The largest DATA payload this side sends.
pub(crate) const MAX_DATA: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    SynStream {
        stream_id: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// (flags, id, value) entries.
    Settings(Vec<(u8, u32, u32)>),
    Ping(u32),
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type SPDY/3.1 does not define: ignored, as
    /// the protocol asks.
    Unknown(u16),
}

fn bad(why: impl Into<String>) -> StreamingError {
    StreamingError::Protocol(why.into())
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, StreamingError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| bad(format!("a control frame of {} bytes is too short", b.len())))
}

/// Reads one frame's head and payload; `None` at a clean end between
/// frames.
pub(crate) async fn read_raw(
    r: &mut (impl AsyncRead + Unpin),
) -> Result<Option<([u8; 8], Vec<u8>)>, StreamingError> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(bad("the connection ended inside a frame head")),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return Err(bad(format!("a frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((head, payload)))
}

/// Parses a frame (its header block through `z`).
pub(crate) fn decode(
    head: [u8; 8],
    p: Vec<u8>,
    z: &mut HeaderInflater,
) -> Result<Frame, StreamingError> {
    let flags = head[4];
    if head[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if stream_id == 0 {
            return Err(bad("a DATA frame on stream 0"));
        }
        return Ok(Frame::Data {
            stream_id,
            flags,
            data: Bytes::from(p),
        });
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        return Err(bad(format!(
            "SPDY version {version} (this server speaks 3.1)"
        )));
    }
    let id = |at| u32_at(&p, at).map(|v| v & 0x7fff_ffff);
    Ok(match u16::from_be_bytes([head[2], head[3]]) {
        SYN_STREAM => {
            if p.len() < 10 {
                return Err(bad("a short SYN_STREAM"));
            }
            let stream_id = id(0)?;
            if stream_id == 0 {
                return Err(bad("a SYN_STREAM for stream 0"));
            }
            Frame::SynStream {
                stream_id,
                associated: id(4)?,
                priority: p[8] >> 5,
                flags,
                headers: z.inflate(&p[10..])?,
            }
        }
        SYN_REPLY => Frame::SynReply {
            stream_id: id(0)?,
            flags,
            headers: z.inflate(p.get(4..).unwrap_or_default())?,
        },
        HEADERS => Frame::Headers {
            stream_id: id(0)?,
            flags,
            headers: z.inflate(p.get(4..).unwrap_or_default())?,
        },
        RST_STREAM => Frame::RstStream {
            stream_id: id(0)?,
            status: u32_at(&p, 4)?,
        },
        SETTINGS => {
            let n = u32_at(&p, 0)? as usize;
            if p.len() != 4 + 8 * n {
                return Err(bad(format!("SETTINGS of {n} entries in {} bytes", p.len())));
            }
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                let at = 4 + 8 * i;
                let word = u32_at(&p, at)?;
                v.push(((word >> 24) as u8, word & 0xff_ffff, u32_at(&p, at + 4)?));
            }
            Frame::Settings(v)
        }
        PING => Frame::Ping(u32_at(&p, 0)?),
        GOAWAY => Frame::GoAway {
            last_good: id(0)?,
            status: u32_at(&p, 4)?,
        },
        WINDOW_UPDATE => Frame::WindowUpdate {
            stream_id: id(0)?,
            delta: u32_at(&p, 4)? & 0x7fff_ffff,
        },
        t => Frame::Unknown(t),
    })
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend((0x8000 | VERSION).to_be_bytes());
    v.extend(kind.to_be_bytes());
    v.push(flags);
    v.extend(&(payload.len() as u32).to_be_bytes()[1..]);
    v.extend_from_slice(payload);
    v
}

/// A frame's bytes (its header block through `z`).
pub(crate) fn encode(f: &Frame, z: &mut HeaderDeflater) -> Vec<u8> {
    let two = |a: u32, b: u32| {
        let mut p = a.to_be_bytes().to_vec();
        p.extend(b.to_be_bytes());
        p
    };
    match f {
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let mut v = Vec::with_capacity(8 + data.len());
            v.extend((stream_id & 0x7fff_ffff).to_be_bytes());
            v.push(*flags);
            v.extend(&(data.len() as u32).to_be_bytes()[1..]);
            v.extend_from_slice(data);
            v
        }
        Frame::SynStream {
            stream_id,
            associated,
            priority,
            flags,
            headers,
        } => {
            let mut p = two(*stream_id, *associated);
            p.extend([priority << 5, 0]);
            p.extend(z.deflate(headers));
            control(SYN_STREAM, *flags, &p)
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => {
            let mut p = stream_id.to_be_bytes().to_vec();
            p.extend(z.deflate(headers));
            control(SYN_REPLY, *flags, &p)
        }
        Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            let mut p = stream_id.to_be_bytes().to_vec();
            p.extend(z.deflate(headers));
            control(HEADERS, *flags, &p)
        }
        Frame::RstStream { stream_id, status } => control(RST_STREAM, 0, &two(*stream_id, *status)),
        Frame::Settings(entries) => {
            let mut p = (entries.len() as u32).to_be_bytes().to_vec();
            for (flags, id, value) in entries {
                p.extend(((*flags as u32) << 24 | (id & 0xff_ffff)).to_be_bytes());
                p.extend(value.to_be_bytes());
            }
            control(SETTINGS, 0, &p)
        }
        Frame::Ping(id) => control(PING, 0, &id.to_be_bytes()),
        Frame::GoAway { last_good, status } => control(GOAWAY, 0, &two(*last_good, *status)),
        Frame::WindowUpdate { stream_id, delta } => {
            control(WINDOW_UPDATE, 0, &two(*stream_id, *delta))
        }
        Frame::Unknown(t) => control(*t, 0, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: &[Frame]) -> Vec<Frame> {
        let (mut d, mut i) = (HeaderDeflater::new(), HeaderInflater::new());
        let wire: Vec<u8> = frames.iter().flat_map(|f| encode(f, &mut d)).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut r = &wire[..];
            let mut out = Vec::new();
            while let Some((h, p)) = read_raw(&mut r).await.unwrap() {
                out.push(decode(h, p, &mut i).unwrap());
            }
            out
        })
    }

    #[test]
    fn every_frame_type_round_trips() {
        let hs = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 7,
                flags: FLAG_FIN,
                headers: hs("streamtype", "error"),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 5,
                flags: 0,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: RST_PROTOCOL_ERROR,
            },
            Frame::Settings(vec![(1, 4, 100), (0, 7, 65536)]),
            Frame::Ping(1),
            Frame::GoAway {
                last_good: 5,
                status: 0,
            },
            Frame::Headers {
                stream_id: 5,
                flags: 0,
                headers: hs("port", "80"),
            },
            Frame::WindowUpdate {
                stream_id: 5,
                delta: 4096,
            },
            Frame::Unknown(42),
        ];
        assert_eq!(round_trip(&frames), frames);
    }

    #[test]
    fn the_wire_layout_is_spdy3s() {
        let mut z = HeaderDeflater::new();
        assert_eq!(
            encode(&Frame::Ping(7), &mut z),
            [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]
        );
        assert_eq!(
            encode(
                &Frame::Data {
                    stream_id: 0x0102_0304,
                    flags: FLAG_FIN,
                    data: Bytes::from_static(b"ab"),
                },
                &mut z
            ),
            [1, 2, 3, 4, 1, 0, 0, 2, b'a', b'b']
        );
        assert_eq!(
            encode(
                &Frame::RstStream {
                    stream_id: 9,
                    status: 5
                },
                &mut z
            ),
            [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 5]
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut i = HeaderInflater::new();
        // SPDY/2.
        assert!(decode([0x80, 2, 0, 6, 0, 0, 0, 4], vec![0, 0, 0, 1], &mut i).is_err());
        // A short PING, a short SYN_STREAM, DATA on stream 0.
        assert!(decode([0x80, 3, 0, 6, 0, 0, 0, 2], vec![0, 1], &mut i).is_err());
        assert!(decode([0x80, 3, 0, 1, 0, 0, 0, 4], vec![0, 0, 0, 1], &mut i).is_err());
        assert!(decode([0, 0, 0, 0, 0, 0, 0, 0], vec![], &mut i).is_err());
        // SETTINGS whose count disagrees with its length.
        assert!(decode([0x80, 3, 0, 4, 0, 0, 0, 4], vec![0, 0, 0, 2], &mut i).is_err());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A frame claiming more than the bound, and one cut short.
        let huge = [0x80, 3, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(rt.block_on(read_raw(&mut &huge[..])).is_err());
        let cut = [0x80, 3, 0, 6, 0, 0, 0, 4, 0];
        assert!(rt.block_on(read_raw(&mut &cut[..])).is_err());
        assert!(rt.block_on(read_raw(&mut &[0x80, 3][..])).is_err());
    }
}
