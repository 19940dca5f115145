//! `berth image pull REF`: the Docker Registry HTTP API v2 / OCI
//! distribution. The manifest (or index, resolved to this host's
//! platform) by tag or digest, then the config and layer blobs streamed
//! into the store, each checked against its digest and size. Bearer token
//! and basic auth (credentials from `BERTH_REGISTRY_AUTH=user:password`);
//! plain http only with `insecure` or for a loopback registry. A progress
//! bar when stderr is a terminal, quiet otherwise.

use crate::error::{Error, Result};
use crate::import::Imported;
use crate::import_layout::pick_platform;
use crate::reference::Reference;
use crate::store::Store;
use oci_spec::image::{ImageIndex, ImageManifest};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Manifests are small; a bigger one is refused rather than buffered.
const MAX_MANIFEST: u64 = 4 << 20;

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Allow plain http to a non-loopback registry.
    pub insecure: bool,
    /// Draw a progress bar (the CLI sets it when stderr is a terminal).
    pub progress: bool,
    /// Bytes of blobs downloaded are added here as they arrive (the
    /// agent's `berth_image_pulled_bytes` metric); blobs the store
    /// already has are not downloaded, so not counted.
    pub downloaded: Option<Arc<AtomicU64>>,
    /// `user`, `password` for the registry (else `BERTH_REGISTRY_AUTH`).
    pub credentials: Option<(String, String)>,
    /// Registry mirrors: the upstream host a reference names (`gcr.io`,
    /// `docker.io` for Docker Hub) → the base URL pulled from instead
    /// (`http://127.0.0.1:5000`). The image keeps its upstream name.
    pub mirrors: std::collections::BTreeMap<String, String>,
}

/// Adds what it reads to a counter.
struct Counting<R> {
    inner: R,
    counter: Option<Arc<AtomicU64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(c) = &self.counter {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

struct Registry {
    agent: ureq::Agent,
    base: String,
    host: String,
    repository: String,
    /// `Authorization` header value once a challenge was answered.
    auth: Option<String>,
    credentials: Option<(String, String)>,
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    h == "localhost" || h == "[::1]" || h.starts_with("127.")
}

/// `key="value"` pairs of a WWW-Authenticate challenge.
fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(stripped) = after.strip_prefix('"') {
            match stripped.find('"') {
                Some(end) => (&stripped[..end], &stripped[end + 1..]),
                None => (stripped, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_string()));
        rest = next;
    }
    out
}

fn basic(user: &str, pass: &str) -> String {
    // A tiny base64 (one header per pull; not worth a dependency).
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{pass}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

impl Registry {
    fn err(&self, why: impl Into<String>) -> Error {
        Error::Registry {
            registry: self.host.clone(),
            why: why.into(),
        }
    }

    /// GET `path` (below /v2/<repo>/), answering one auth challenge.
    fn get(&mut self, path: &str, accept: Option<&str>) -> Result<ureq::Response> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repository);
        for attempt in 0..2 {
            let mut req = self.agent.get(&url);
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            if let Some(a) = &self.auth {
                req = req.set("Authorization", a);
            }
            match req.call() {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if attempt == 0 => {
                    let header = r.header("WWW-Authenticate").unwrap_or_default().to_string();
                    self.authenticate(&header)?;
                }
                Err(ureq::Error::Status(code, r)) => {
                    let body = r.into_string().unwrap_or_default();
                    let body: String = body.chars().take(300).collect();
                    return Err(self.err(format!("GET {url}: HTTP {code}: {}", body.trim())));
                }
                Err(e) => return Err(self.err(format!("GET {url}: {e}"))),
            }
        }
        Err(self.err(format!(
            "GET {url}: still unauthorised after authenticating"
        )))
    }

    fn authenticate(&mut self, challenge: &str) -> Result<()> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params = challenge_params(params);
        let param = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let (u, p) = self.credentials.clone().ok_or_else(|| {
                    self.err("basic auth required: set BERTH_REGISTRY_AUTH=user:password")
                })?;
                self.auth = Some(basic(&u, &p));
            }
            "bearer" => {
                let realm =
                    param("realm").ok_or_else(|| self.err("bearer challenge without a realm"))?;
                let mut req = self.agent.get(&realm);
                if let Some(s) = param("service") {
                    req = req.query("service", &s);
                }
                let scope = param("scope")
                    .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                req = req.query("scope", &scope);
                if let Some((u, p)) = &self.credentials {
                    req = req.set("Authorization", &basic(u, p));
                }
                let resp = req
                    .call()
                    .map_err(|e| self.err(format!("token from {realm}: {e}")))?;
                let v: serde_json::Value =
                    serde_json::from_reader(resp.into_reader().take(MAX_MANIFEST))
                        .map_err(|e| self.err(format!("token from {realm}: {e}")))?;
                let token = v["token"]
                    .as_str()
                    .or(v["access_token"].as_str())
                    .ok_or_else(|| self.err(format!("no token in the answer of {realm}")))?;
                self.auth = Some(format!("Bearer {token}"));
            }
            _ => return Err(self.err(format!("unsupported auth challenge {challenge:?}"))),
        }
        Ok(())
    }

    /// The manifest or index `reference` names: its bytes, verified digest
    /// and content type.
    fn manifest(&mut self, reference: &str) -> Result<(Vec<u8>, String, String)> {
        let r = self.get(&format!("manifests/{reference}"), Some(ACCEPT))?;
        let ct = r.content_type().to_string();
        let mut body = Vec::new();
        r.into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.err(format!("manifest {reference}: {e}")))?;
        if body.len() as u64 > MAX_MANIFEST {
            return Err(self.err(format!(
                "manifest {reference} is larger than {MAX_MANIFEST} bytes"
            )));
        }
        let digest = crate::digest::of_bytes(&body);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(Error::Blob {
                digest: reference.to_string(),
                why: format!("the registry's manifest hashes to {digest}"),
            });
        }
        Ok((body, digest, ct))
    }
}

/// The mirror of the registry a reference names (`None`: Docker Hub,
/// which the mirrors may name `docker.io`).
fn mirror_of<'a>(
    mirrors: &'a std::collections::BTreeMap<String, String>,
    registry: Option<&str>,
) -> Option<&'a String> {
    let key = registry.unwrap_or("docker.io");
    mirrors.get(key).or_else(|| match key {
        "docker.io" => mirrors
            .get("registry-1.docker.io")
            .or_else(|| mirrors.get("index.docker.io")),
        _ => None,
    })
}

/// Pulls `reference` into the store and tags it with its full name.
pub fn pull(store: &Store, reference: &str, opts: &PullOptions) -> Result<Imported> {
    let r = Reference::parse(reference)?;
    // As for import: no prune between the blobs and their reference.
    let _lock = store.flock("content", false)?;
    let (host, repository) = match &r.registry {
        Some(h) => (h.clone(), r.repository.clone()),
        None if !r.repository.contains('/') => (
            "registry-1.docker.io".into(),
            format!("library/{}", r.repository),
        ),
        None => ("registry-1.docker.io".into(), r.repository.clone()),
    };
    let scheme = if opts.insecure || is_loopback(&host) {
        "http"
    } else {
        "https"
    };
    let mirror = mirror_of(&opts.mirrors, r.registry.as_deref());
    let base = match mirror {
        Some(m) => m.trim_end_matches('/').to_string(),
        None => format!("{scheme}://{host}"),
    };
    let credentials = opts.credentials.clone().or_else(|| {
        std::env::var("BERTH_REGISTRY_AUTH").ok().and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        })
    });
    let mut reg = Registry {
        agent: ureq::AgentBuilder::new()
            .timeout_connect(std::time::Duration::from_secs(30))
            .build(),
        base,
        host: host.clone(),
        repository,
        auth: None,
        credentials,
    };
    let wanted = r
        .digest
        .clone()
        .or(r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let (mut body, mut digest, ct) = reg.manifest(&wanted)?;
    // An index by its content type, or — for registries that answer
    // `application/json` — by its `manifests` list.
    let is_index = ct.contains("index")
        || ct.contains("manifest.list")
        || serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|v| v.get("manifests").is_some_and(|m| m.is_array()));
    if is_index {
        let index = ImageIndex::from_reader(&body[..])
            .map_err(|e| reg.err(format!("index {digest}: {e}")))?;
        let m = pick_platform(index.manifests(), &r.canonical())?;
        let d = m.digest().to_string();
        (body, digest, _) = reg.manifest(&d)?;
    }
    let manifest = ImageManifest::from_reader(&body[..])
        .map_err(|e| reg.err(format!("manifest {digest}: {e}")))?;
    let blobs: Vec<_> = std::iter::once(manifest.config())
        .chain(manifest.layers())
        .collect();
    let total: u64 = blobs.iter().map(|b| b.size()).sum();
    let bar = opts.progress.then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(r.canonical());
        b
    });
    for b in blobs {
        let d = b.digest().to_string();
        if store.has_blob(&d) {
            if let Some(bar) = &bar {
                bar.inc(b.size());
            }
            continue;
        }
        let resp = reg.get(&format!("blobs/{d}"), None)?;
        let reader = Counting {
            inner: resp.into_reader(),
            counter: opts.downloaded.clone(),
        };
        match &bar {
            Some(bar) => store.put_blob(bar.wrap_read(reader), &d, Some(b.size()))?,
            None => store.put_blob(reader, &d, Some(b.size()))?,
        };
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    store.put_blob(&body[..], &digest, Some(body.len() as u64))?;
    store.register(&digest)?;
    // Named by its full reference (registry included).
    let full = Reference {
        registry: Some(host),
        ..r
    };
    let full = Reference::parse(&full.canonical())?;
    store.tag(&full, &digest)?;
    Ok(Imported {
        reference: full.canonical(),
        manifest: digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_credentials_and_loopback() {
        let p = challenge_params(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            p[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(p[2].1, "repository:library/busybox:pull");
        assert_eq!(basic("user", "pass"), "Basic dXNlcjpwYXNz");
        assert_eq!(basic("a", "b"), "Basic YTpi");
        assert!(
            is_loopback("127.0.0.1:5000") && is_loopback("localhost") && !is_loopback("quay.io")
        );
    }
}

#[cfg(test)]
mod mirror_tests {
    use super::mirror_of;

    #[test]
    fn a_mirror_is_chosen_by_the_upstream_registry() {
        let m: std::collections::BTreeMap<String, String> = [
            ("gcr.io".to_string(), "http://127.0.0.1:5000".to_string()),
            ("docker.io".to_string(), "http://127.0.0.1:5001".to_string()),
        ]
        .into();
        assert_eq!(
            mirror_of(&m, Some("gcr.io")).unwrap(),
            "http://127.0.0.1:5000"
        );
        assert_eq!(mirror_of(&m, None).unwrap(), "http://127.0.0.1:5001");
        assert!(mirror_of(&m, Some("quay.io")).is_none());
    }
}
