//! kubelet's and critest's gRPC client (grpc-go) names a Unix socket's
//! path, percent-encoded, as the HTTP/2 `:authority` of its requests
//! (`%2Frun%2Fberth%2Fcri.sock`), which the `h2` server under tonic
//! rejects as a malformed authority (PROTOCOL_ERROR) before any handler
//! runs. So each CRI connection passes through this relay: frames from
//! the client go on unchanged except header blocks, which are decoded
//! (HPACK, with the connection's own decoder state) and re-encoded with
//! such an authority replaced by `localhost`; the server's frames go back
//! untouched. The re-encoding uses literals without indexing, so the
//! server's decoder table stays empty and consistent.

use bytes::{BufMut, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is refused (gRPC's are tiny).
const MAX_BLOCK: usize = 1 << 20;

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// An HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn put_int(out: &mut BytesMut, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.put_u8(first | v as u8);
        return;
    }
    out.put_u8(first | max as u8);
    v -= max;
    while v >= 128 {
        out.put_u8((v % 128 + 128) as u8);
        v /= 128;
    }
    out.put_u8(v as u8);
}

fn put_str(out: &mut BytesMut, s: &[u8]) {
    put_int(out, 0, 7, s.len());
    out.put_slice(s);
}

/// The header block with an invalid `:authority` made `localhost`.
fn rewrite(decoder: &mut fluke_hpack::Decoder<'_>, block: &[u8]) -> io::Result<BytesMut> {
    let headers = decoder
        .decode(block)
        .map_err(|e| bad(format!("HPACK: {e:?}")))?;
    let mut out = BytesMut::with_capacity(block.len() + 32);
    for (name, value) in headers {
        let value = if name == b":authority"
            && tonic::codegen::http::uri::Authority::try_from(&value[..]).is_err()
        {
            b"localhost".to_vec()
        } else {
            value
        };
        // Literal header field without indexing, new name.
        out.put_u8(0);
        put_str(&mut out, &name);
        put_str(&mut out, &value);
    }
    Ok(out)
}

/// Relays `from` (the client) to `to` (the server), rewriting header
/// blocks; returns at the client's EOF.
pub(crate) async fn relay_client(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> io::Result<()> {
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(bad("not an HTTP/2 client preface"));
    }
    to.write_all(&preface).await?;
    let mut decoder = fluke_hpack::Decoder::new();
    // The header block being gathered: (stream id, END_STREAM, bytes).
    let mut block: Option<(u32, u8, Vec<u8>)> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                to.shutdown().await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let sid = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        let fragment = match kind {
            HEADERS => {
                let mut start = 0;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = *payload.first().ok_or_else(|| bad("empty padded HEADERS"))? as usize;
                    start = 1;
                }
                if flags & PRIORITY != 0 {
                    start += 5;
                }
                if start + pad > len {
                    return Err(bad("HEADERS padding beyond the frame"));
                }
                block = Some((sid, flags & END_STREAM, Vec::new()));
                payload[start..len - pad].to_vec()
            }
            CONTINUATION if block.as_ref().is_some_and(|b| b.0 == sid) => payload,
            _ => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
                continue;
            }
        };
        let b = block.as_mut().expect("a block is being gathered");
        b.2.extend_from_slice(&fragment);
        if b.2.len() > MAX_BLOCK {
            return Err(bad("header block too large"));
        }
        if flags & END_HEADERS == 0 {
            continue;
        }
        let (sid, end_stream, bytes) = block.take().expect("a block is being gathered");
        let out = rewrite(&mut decoder, &bytes)?;
        let chunks: Vec<&[u8]> = if out.is_empty() {
            vec![&[]]
        } else {
            out.chunks(MAX_FRAME).collect()
        };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let mut flags = if i == 0 { end_stream } else { 0 };
            if i == last {
                flags |= END_HEADERS;
            }
            let n = (chunk.len() as u32).to_be_bytes();
            let s = sid.to_be_bytes();
            to.write_all(&[n[1], n[2], n[3], kind, flags, s[0], s[1], s[2], s[3]])
                .await?;
            to.write_all(chunk).await?;
        }
    }
}

/// Serves one accepted client: returns the server's end of the relay.
pub(crate) fn relay(client: tokio::net::UnixStream) -> tokio::io::DuplexStream {
    let (server_end, ours) = tokio::io::duplex(256 * 1024);
    let (cr, mut cw) = client.into_split();
    let (mut sr, sw) = tokio::io::split(ours);
    tokio::spawn(async move {
        let mut sw = sw;
        if let Err(e) = relay_client(cr, &mut sw).await {
            tracing::debug!(error = %e, "CRI connection relay ended");
        }
        // However the client's side ended (a reset, when it closed with
        // our frames unread, is an error), the server reads its end: else
        // the connection stayed open and the agent's graceful stop waited
        // for it forever.
        let _ = sw.shutdown().await;
    });
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    });
    server_end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_that_resets_its_connection_ends_the_servers_too() {
        let (client, ours) = tokio::net::UnixStream::pair().unwrap();
        let mut server = relay(ours);
        let mut client = client;
        client.write_all(PREFACE).await.unwrap();
        let mut got = [0u8; 24];
        server.read_exact(&mut got).await.unwrap();
        // The server's frames reach the client, which closes without
        // reading them: the relay's read of it fails with a reset.
        server.write_all(&[0u8; 64]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(client);
        let mut rest = Vec::new();
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            server.read_to_end(&mut rest),
        )
        .await
        .expect("the server's end of the relay ends with the client's");
        assert_eq!(n.unwrap(), 0);
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_and_the_rest_stays() {
        let mut enc = fluke_hpack::Encoder::new();
        let block = enc.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (b":authority", b"%2Frun%2Fberth%2Fcri.sock"),
            (b":path", b"/runtime.v1.RuntimeService/Version"),
            (b"content-type", b"application/grpc"),
        ]);
        let mut dec = fluke_hpack::Decoder::new();
        let out = rewrite(&mut dec, &block).unwrap();
        let mut check = fluke_hpack::Decoder::new();
        let got = check.decode(&out).unwrap();
        assert_eq!(got[1], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(got[2].1, b"/runtime.v1.RuntimeService/Version".to_vec());
        assert_eq!(got.len(), 4);
        // A valid authority is kept.
        let block = enc.encode(vec![(&b":authority"[..], &b"localhost:50051"[..])]);
        let got = check.decode(&rewrite(&mut dec, &block).unwrap()).unwrap();
        assert_eq!(got[0].1, b"localhost:50051".to_vec());
    }

    #[test]
    fn long_values_use_multi_byte_lengths() {
        let long = vec![b'a'; 300];
        let mut enc = fluke_hpack::Encoder::new();
        let block = enc.encode(vec![(&b"x-long"[..], &long[..])]);
        let mut dec = fluke_hpack::Decoder::new();
        let got = fluke_hpack::Decoder::new()
            .decode(&rewrite(&mut dec, &block).unwrap())
            .unwrap();
        assert_eq!(got[0].1, long);
    }
}
