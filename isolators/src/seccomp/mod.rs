//! `linux/seccomp`: a seccomp filter on every container, on by default.
//!
//! The profile is, in order: the container's own (`ContainerConfig::
//! seccomp_profile`: a profile's JSON, or `unconfined`), the agent's
//! default ([`SeccompIsolator::new`]), or berth's built-in default, equal
//! in effect to Docker's. Profiles come in Docker's or the OCI
//! runtime-spec's JSON form. Each is compiled by libseccomp here, in the
//! agent, into a BPF program that the launch info carries to the
//! container's init, which loads it as its very last step before exec.

mod compile;
pub mod default;
mod disk_cache;
pub mod profile;

use crate::{Isolator, IsolatorError, IsolatorFuture, PrepareRequest};
use berth_state::LaunchInfo;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The value of a profile setting that turns the filter off.
pub const UNCONFINED: &str = "unconfined";

/// The `linux/seccomp` isolator.
///
/// ```
/// use berth_isolators::seccomp::SeccompIsolator;
/// // berth's built-in default for containers that name no profile:
/// let iso = SeccompIsolator::new(None);
/// # let _ = iso;
/// ```
#[derive(Debug, Default)]
pub struct SeccompIsolator {
    default: Option<String>,
    /// Compiled programs by profile text: most containers share one.
    compiled: Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>>,
    /// Compiled programs kept across starts (see [`Self::cache_dir`]).
    disk: Option<disk_cache::DiskCache>,
}

impl SeccompIsolator {
    /// `default`: the agent's profile (JSON text, or [`UNCONFINED`]) for
    /// containers that name none; `None` = berth's built-in default.
    pub fn new(default: Option<String>) -> Self {
        SeccompIsolator {
            default,
            compiled: Arc::default(),
            disk: None,
        }
    }

    /// Keeps compiled programs in `dir` too (a dir of berth's own, best a
    /// tmpfs such as the runtime dir), so a cold start need not compile.
    pub fn cache_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.disk = Some(disk_cache::DiskCache::new(dir));
        self
    }
}

/// What names berth's built-in profile in the caches (its text follows
/// from berth's version, which the disk cache's key holds).
const BUILTIN_KEY: &str = "berth:builtin-default";

/// Compiles a profile's text for a container with capabilities `caps`
/// (what Docker-form rules are judged against).
pub fn compile_text(text: &str, caps: &[String]) -> Result<Vec<u8>, String> {
    let judge = profile::Judge {
        caps,
        kernel: profile::running_kernel(),
    };
    let p = profile::parse(text, &judge)?;
    compile::compile(&p)
}

/// A profile's text as the runtime-spec's `linux.seccomp` JSON for a
/// container with capabilities `caps`: what an OCI runtime loads.
pub fn oci_text(text: &str, caps: &[String]) -> Result<String, String> {
    let judge = profile::Judge {
        caps,
        kernel: profile::running_kernel(),
    };
    let p = profile::parse(text, &judge)?;
    serde_json::to_string(&p).map_err(|e| format!("encode seccomp profile: {e}"))
}

impl Isolator for SeccompIsolator {
    fn name(&self) -> &str {
        "linux/seccomp"
    }

    fn watches(&self) -> bool {
        false
    }

    fn isolates(&self) -> bool {
        false
    }

    fn supports_nesting(&self) -> bool {
        true
    }
    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        let own = &req.config.seccomp_profile;
        let text = if !own.is_empty() {
            Some(own.clone())
        } else {
            self.default.clone()
        };
        // The built-in profile is named rather than hashed whole: a cold
        // start with a cached program never builds its text.
        let builtin = text.is_none();
        let text = text.unwrap_or_default();
        let id = req.id.clone();
        let cache = self.compiled.clone();
        // The container's capabilities decide which Docker-form rules
        // apply (CAP_SYS_ADMIN allows mount, unshare, …), as in Docker.
        let caps =
            berth_state::capabilities::adjust(&[], &req.config.cap_add, &req.config.cap_drop)
                .unwrap_or_default();
        let named = if builtin { BUILTIN_KEY } else { text.as_str() };
        let key = format!("{}\n{named}", caps.join(","));
        let disk = self.disk.clone();
        // An OCI runtime loads the profile itself, from its JSON form.
        let oci = !matches!(req.config.runtime.as_str(), "" | "native");
        Box::pin(async move {
            if text.trim() == UNCONFINED {
                return Ok(None);
            }
            if oci {
                let json = crate::blocking(move || {
                    let t = match builtin {
                        true => default::profile().to_string(),
                        false => text,
                    };
                    oci_text(&t, &caps)
                        .map_err(|why| IsolatorError::invalid(&id, "seccomp profile", why))
                })
                .await?;
                return Ok(Some(LaunchInfo {
                    seccomp_oci: json,
                    ..Default::default()
                }));
            }
            let hit = cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned();
            let bpf = match hit {
                Some(b) => b,
                None => {
                    let b = crate::blocking(move || {
                        let file = disk_cache::DiskCache::key(
                            if builtin { BUILTIN_KEY } else { &text },
                            &caps,
                        );
                        if let Some(b) = disk.as_ref().and_then(|d| d.get(&file)) {
                            return Ok(b);
                        }
                        // The built-in profile's text, made once.
                        static DEFAULT_TEXT: std::sync::OnceLock<String> =
                            std::sync::OnceLock::new();
                        let t = match builtin {
                            true => DEFAULT_TEXT.get_or_init(|| default::profile().to_string()),
                            false => &text,
                        };
                        let b = compile_text(t, &caps)
                            .map_err(|why| IsolatorError::invalid(&id, "seccomp profile", why))?;
                        if let Some(d) = &disk {
                            d.put(&file, &b);
                        }
                        Ok(b)
                    })
                    .await?;
                    let b = Arc::new(b);
                    cache
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, b.clone());
                    b
                }
            };
            Ok(Some(LaunchInfo {
                seccomp_bpf: bpf.to_vec(),
                ..Default::default()
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_compiles() {
        let caps: Vec<String> = berth_state::capabilities::DEFAULT
            .iter()
            .map(|s| s.to_string())
            .collect();
        let bpf = compile_text(&default::profile().to_string(), &caps).unwrap();
        assert!(
            !bpf.is_empty() && bpf.len().is_multiple_of(8),
            "{}",
            bpf.len()
        );
    }

    #[test]
    fn a_bad_profile_names_the_rule() {
        let e = compile_text(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
               {"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
            &[],
        )
        .unwrap_err();
        assert!(
            e.contains("syscalls[0] (mkdir)") && e.contains("NOTIFY"),
            "{e}"
        );
        let e = compile_text(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
               {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","args":[{"index":9,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
            &[],
        )
        .unwrap_err();
        assert!(e.contains("argument index 9"), "{e}");
    }
}
