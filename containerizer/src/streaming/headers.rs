//! SPDY/3 header blocks: the name/value block (a u32 count, then each
//! name and value as a u32 length and bytes; a header's several values
//! joined by NUL), compressed with zlib primed with the SPDY/3 dictionary.
//! Each direction of a session is ONE zlib stream: every block is
//! sync-flushed and the next continues it, so a session keeps one
//! [`HeaderInflater`] for what it reads and one [`HeaderDeflater`] for
//! what it writes, and uses each for the frames in wire order.

use super::dictionary::SPDY3_DICTIONARY;
use super::StreamingError;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// A header block, names in lower case (SPDY/3 requires it).
pub(crate) type Headers = Vec<(String, String)>;

/// The value of header `name` (the first, when several were sent).
pub(crate) fn get<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A bound on one decompressed header block: a peer's zlib bomb ends the
/// session instead of filling memory.
const MAX_BLOCK: usize = 256 * 1024;

fn bad(why: impl Into<String>) -> StreamingError {
    StreamingError::Protocol(why.into())
}

/// Encodes a name/value block (uncompressed).
pub(crate) fn encode_block(h: &Headers) -> Vec<u8> {
    let mut v = Vec::new();
    // Several values of one name are one entry, joined by NUL.
    let mut merged: Vec<(String, String)> = Vec::new();
    for (n, val) in h {
        let n = n.to_ascii_lowercase();
        match merged.iter_mut().find(|(m, _)| *m == n) {
            Some((_, all)) => {
                all.push('\0');
                all.push_str(val);
            }
            None => merged.push((n, val.clone())),
        }
    }
    v.extend((merged.len() as u32).to_be_bytes());
    for (n, val) in &merged {
        v.extend((n.len() as u32).to_be_bytes());
        v.extend(n.as_bytes());
        v.extend((val.len() as u32).to_be_bytes());
        v.extend(val.as_bytes());
    }
    v
}

/// Decodes a name/value block (uncompressed).
pub(crate) fn decode_block(b: &[u8]) -> Result<Headers, StreamingError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], StreamingError> {
        let end = at
            .checked_add(n)
            .filter(|e| *e <= b.len())
            .ok_or_else(|| bad("a header block ends inside an entry"))?;
        let s = &b[at..end];
        at = end;
        Ok(s)
    };
    let u32_of = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let count = u32_of(take(4)?);
    let mut h = Headers::new();
    for _ in 0..count {
        let len = u32_of(take(4)?);
        let name = std::str::from_utf8(take(len)?)
            .map_err(|_| bad("a header name is not UTF-8"))?
            .to_ascii_lowercase();
        if name.is_empty() {
            return Err(bad("an empty header name"));
        }
        let len = u32_of(take(4)?);
        let value =
            std::str::from_utf8(take(len)?).map_err(|_| bad("a header value is not UTF-8"))?;
        for v in value.split('\0') {
            h.push((name.clone(), v.to_string()));
        }
    }
    Ok(h)
}

/// The reading side's zlib stream.
pub(crate) struct HeaderInflater {
    z: Decompress,
}

impl HeaderInflater {
    pub(crate) fn new() -> Self {
        HeaderInflater {
            z: Decompress::new(true),
        }
    }

    /// Decompresses one frame's header block and decodes it.
    pub(crate) fn inflate(&mut self, mut input: &[u8]) -> Result<Headers, StreamingError> {
        let mut out = Vec::with_capacity(4 * input.len() + 256);
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_BLOCK {
                    return Err(bad(format!("a header block over {MAX_BLOCK} bytes")));
                }
                out.reserve(out.len());
            }
            let (in0, out0) = (self.z.total_in(), out.len());
            let r = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.z.total_in() - in0) as usize;
            input = &input[used..];
            match r {
                Ok(Status::StreamEnd) if !input.is_empty() => {
                    return Err(bad("the header zlib stream ended inside a session"))
                }
                Ok(_) => {}
                // The first block names the dictionary (its Adler-32):
                // SPDY/3's is the only one a peer may use.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(SPDY3_DICTIONARY)
                        .map_err(|e| bad(format!("the peer's header dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(bad(format!("a compressed header block: {e}"))),
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && out.len() == out0 && out.len() < out.capacity() {
                return Err(bad("a compressed header block makes no progress"));
            }
        }
        decode_block(&out)
    }
}

/// The writing side's zlib stream.
pub(crate) struct HeaderDeflater {
    z: Compress,
}

impl HeaderDeflater {
    pub(crate) fn new() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        // Right after init, as zlib requires; the peer is told its
        // Adler-32 in the stream's header.
        z.set_dictionary(SPDY3_DICTIONARY)
            .expect("a fresh zlib stream takes a dictionary");
        HeaderDeflater { z }
    }

    /// Encodes and compresses one frame's header block (sync-flushed).
    pub(crate) fn deflate(&mut self, h: &Headers) -> Vec<u8> {
        let block = encode_block(h);
        let mut input = &block[..];
        let mut out = Vec::with_capacity(block.len() + 64);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.len().max(64));
            }
            let in0 = self.z.total_in();
            // Compressing into memory cannot fail but for a bug in use.
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("zlib compress into memory");
            input = &input[(self.z.total_in() - in0) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        // The draft's dictionary is 1423 bytes, from "options" to
        // "enq=0." (the real client's interop is tests/tests/streaming.rs).
        assert_eq!(SPDY3_DICTIONARY.len(), 1423);
        assert!(SPDY3_DICTIONARY.starts_with(b"\0\0\0\x07options"));
        assert!(SPDY3_DICTIONARY.ends_with(b",enq=0."));
    }

    #[test]
    fn blocks_round_trip_through_one_stream_each_way() {
        let mut d = HeaderDeflater::new();
        let mut i = HeaderInflater::new();
        let blocks = [
            h(&[("streamtype", "error")]),
            h(&[("streamType", "stdin"), ("x", "a"), ("x", "b")]),
            h(&[]),
            h(&[("port", "8080"), ("requestid", "0"), ("streamtype", "data")]),
        ];
        for b in &blocks {
            let z = d.deflate(b);
            let got = i.inflate(&z).unwrap();
            let want: Headers = b
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect();
            assert_eq!(got, want);
        }
    }

    /// A header block made as Go's spdy framer (moby/spdystream, which
    /// client-go uses) makes it: best compression, the dictionary set
    /// (so the zlib header has FDICT and the dictionary's id), sync flush.
    #[test]
    fn reads_what_the_go_framer_writes() {
        let mut go = flate2::Compress::new(Compression::best(), true);
        go.set_dictionary(SPDY3_DICTIONARY).unwrap();
        let block = encode_block(&h(&[("streamtype", "error")]));
        let mut z = Vec::with_capacity(256);
        go.compress_vec(&block, &mut z, FlushCompress::Sync)
            .unwrap();
        // FDICT is set and the dictionary's Adler-32 follows the header.
        assert_eq!(z[1] & 0x20, 0x20, "{z:x?}");
        let mut i = HeaderInflater::new();
        assert_eq!(i.inflate(&z).unwrap(), h(&[("streamtype", "error")]));
    }

    #[test]
    fn bad_blocks_are_errors_not_panics() {
        assert!(decode_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
        assert!(decode_block(&[0, 0]).is_err());
        assert!(decode_block(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut i = HeaderInflater::new();
        assert!(i.inflate(b"not zlib at all").is_err());
    }

    #[test]
    fn a_zlib_bomb_is_refused() {
        let mut d = HeaderDeflater::new();
        let big = vec![("x".to_string(), "a".repeat(MAX_BLOCK * 2))];
        let z = d.deflate(&big);
        let mut i = HeaderInflater::new();
        let e = i.inflate(&z).unwrap_err();
        assert!(e.to_string().contains("over"), "{e}");
    }
}
