//! The URI fetcher (Mesos's fetcher, without its cache yet): each URI of a
//! config — `file://`, a plain absolute path, `http://` or `https://` — is
//! copied into the sandbox while its sha256 is computed, checked against the
//! config's checksum, made executable or extracted (tar, tar.gz, tgz, with
//! the image layers' no-escape unpacker). All of it on the blocking pool.

use crate::fetcher::Fetcher;
use berth_state::{ContainerId, FetchUri};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The fetcher `berth run` and `berth agent` use.
#[derive(Debug, Default)]
pub struct UriFetcher;

impl Fetcher for UriFetcher {
    fn supported(&self) -> bool {
        true
    }

    fn fetch(
        &mut self,
        id: &ContainerId,
        uris: &[FetchUri],
        sandbox: &Path,
    ) -> BoxFuture<'static, Result<(), String>> {
        let (uris, sandbox, id) = (uris.to_vec(), sandbox.to_path_buf(), id.to_string());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                for u in &uris {
                    fetch_one(u, &sandbox).map_err(|e| format!("fetch {}: {e}", u.value))?;
                    tracing::info!(container = %id, uri = %u.value, "fetched");
                }
                Ok(())
            })
            .await
            .map_err(|e| format!("fetch task failed: {e}"))?
        })
    }
}

/// The file name in the sandbox: `output_file`, or the URI's last segment.
fn file_name(u: &FetchUri) -> Result<String, String> {
    let name = if u.output_file.is_empty() {
        let path = u.value.split(['?', '#']).next().unwrap_or_default();
        path.rsplit('/').next().unwrap_or_default().to_string()
    } else {
        u.output_file.clone()
    };
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(format!(
            "{name:?} is not a file name for the sandbox (give output_file=NAME)"
        ));
    }
    Ok(name)
}

fn open(value: &str) -> Result<Box<dyn Read>, String> {
    if value.starts_with("http://") || value.starts_with("https://") {
        return match ureq::get(value).call() {
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

fn fetch_one(u: &FetchUri, sandbox: &Path) -> Result<(), String> {
    if u.cache {
        return Err("the shared fetch cache is not built yet; drop `cache`".into());
    }
    let name = file_name(u)?;
    let dest: PathBuf = sandbox.join(&name);
    let mut src = open(&u.value)?;
    let mut out = fs::File::create(&dest).map_err(|e| format!("create {}: {e}", dest.display()))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = src.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| format!("write {}: {e}", dest.display()))?;
    }
    drop(out);
    let got = hex(&hash.finalize());
    if !u.sha256.is_empty() && !u.sha256.eq_ignore_ascii_case(&got) {
        let _ = fs::remove_file(&dest);
        return Err(format!(
            "sha256 mismatch: expected {}, got {got}",
            u.sha256.to_ascii_lowercase()
        ));
    }
    if u.executable {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", dest.display()))?;
    }
    if u.extract {
        extract(&dest, &name, sandbox)?;
    }
    Ok(())
}

fn extract(archive: &Path, name: &str, into: &Path) -> Result<(), String> {
    let f = fs::File::open(archive).map_err(|e| format!("open {}: {e}", archive.display()))?;
    let label = format!("archive {name}");
    let keep = berth_provisioner::unpack::Whiteouts::Keep;
    let r = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        berth_provisioner::unpack::unpack(flate2::read::GzDecoder::new(f), into, keep, &label)
            .map(|_| ())
    } else if name.ends_with(".tar") {
        berth_provisioner::unpack::unpack(f, into, keep, &label).map(|_| ())
    } else {
        return Err(format!(
            "cannot extract {name}: the supported archives are .tar, .tar.gz and .tgz"
        ));
    };
    r.map_err(|e| format!("extract {name}: {e}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
