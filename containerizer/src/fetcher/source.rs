//! Opening a URI's content: `file://`, a plain absolute path, `http://` or
//! `https://`; and copying it somewhere while its sha256 is computed.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// A reader of the URI's content.
pub(super) fn open(value: &str) -> Result<Box<dyn Read>, String> {
    if value.starts_with("http://") || value.starts_with("https://") {
        // A server that stops answering must fail the launch, not hang it.
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(120))
            .build();
        return match agent.get(value).call() {
            Ok(r) => Ok(Box::new(r.into_reader())),
            Err(ureq::Error::Status(code, r)) => Err(format!(
                "the server answered HTTP {code} {}",
                r.status_text()
            )),
            Err(e) => Err(e.to_string()),
        };
    }
    let path = value.strip_prefix("file://").unwrap_or(value);
    if !path.starts_with('/') {
        return Err("expected file://, an absolute path, http:// or https://".into());
    }
    Ok(Box::new(
        fs::File::open(path).map_err(|e| format!("open {path}: {e}"))?,
    ))
}

/// What a download wrote.
pub(super) struct Written {
    pub sha256: String,
    pub size: u64,
}

/// Copies the URI's content into a new file `dest`. The file is removed
/// when the download fails or `expect` (a sha256 in hex) does not match.
pub(super) fn download(value: &str, dest: &Path, expect: &str) -> Result<Written, String> {
    let r = copy_hashing(value, dest);
    let w = match r {
        Ok(w) => w,
        Err(e) => {
            let _ = fs::remove_file(dest);
            return Err(e);
        }
    };
    if !expect.is_empty() && !expect.eq_ignore_ascii_case(&w.sha256) {
        let _ = fs::remove_file(dest);
        return Err(format!(
            "sha256 mismatch: expected {}, got {}",
            expect.to_ascii_lowercase(),
            w.sha256
        ));
    }
    Ok(w)
}

fn copy_hashing(value: &str, dest: &Path) -> Result<Written, String> {
    let mut out = fs::File::create(dest).map_err(|e| format!("create {}: {e}", dest.display()))?;
    copy_hashing_to(value, &mut out, dest)
}

/// Copies the URI's content into `out` (`dest` names it in messages),
/// computing its sha256.
pub(super) fn copy_hashing_to(
    value: &str,
    out: &mut fs::File,
    dest: &Path,
) -> Result<Written, String> {
    let mut src = open(value)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        size += n as u64;
        out.write_all(&buf[..n])
            .map_err(|e| format!("write {}: {e}", dest.display()))?;
    }
    Ok(Written {
        sha256: hex(&hash.finalize()),
        size,
    })
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
