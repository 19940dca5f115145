//! Reading a seccomp profile: the OCI runtime-spec form (`LinuxSeccomp`,
//! parsed with oci-spec's types) or Docker's form, which adds per-rule
//! `includes`/`excludes` (capabilities, architectures, minimum kernel),
//! `archMap` and the old single `name`. A Docker rule is kept or dropped
//! for this container and this host, then the profile is plain OCI.

use oci_spec::runtime::LinuxSeccomp;
use serde_json::{Map, Value};

/// What a Docker-form condition is judged against.
pub struct Judge<'a> {
    /// The container's capabilities (`CAP_…`).
    pub caps: &'a [String],
    /// The running kernel as (major, minor).
    pub kernel: (u32, u32),
}

/// This host's architecture as Docker's profiles name it.
const ARCH: &str = if cfg!(target_arch = "x86_64") {
    "amd64"
} else if cfg!(target_arch = "aarch64") {
    "arm64"
} else {
    std::env::consts::ARCH
};

/// Parses `text` (either form) into an OCI profile for this container.
pub fn parse(text: &str, judge: &Judge<'_>) -> Result<LinuxSeccomp, String> {
    let mut v: Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON seccomp profile: {e}"))?;
    let top = v
        .as_object_mut()
        .ok_or("a seccomp profile is a JSON object")?;
    if top.remove("archMap").is_some() && !top.contains_key("architectures") {
        // Docker maps the host's arch to its sub-arches; this host's are:
        let arches: &[&str] = if cfg!(target_arch = "x86_64") {
            &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        } else {
            &[]
        };
        top.insert(
            "architectures".into(),
            arches.iter().map(|a| Value::from(*a)).collect(),
        );
    }
    if let Some(Value::Array(rules)) = top.get_mut("syscalls") {
        let mut kept = Vec::new();
        for (i, r) in rules.drain(..).enumerate() {
            let Value::Object(mut r) = r else {
                return Err(format!("syscalls[{i}] is not an object"));
            };
            if !applies(&mut r, judge).map_err(|e| format!("syscalls[{i}]: {e}"))? {
                continue;
            }
            if let Some(name) = r.remove("name") {
                r.insert("names".into(), Value::Array(vec![name]));
            }
            r.remove("comment");
            kept.push(Value::Object(r));
        }
        *rules = kept;
    }
    serde_json::from_value::<LinuxSeccomp>(v).map_err(|e| format!("seccomp profile: {e}"))
}

/// Whether a Docker rule's `includes` all hold and its `excludes` don't.
fn applies(r: &mut Map<String, Value>, judge: &Judge<'_>) -> Result<bool, String> {
    let inc = r.remove("includes");
    let exc = r.remove("excludes");
    if let Some(inc) = inc {
        let f = Filter::read(&inc, "includes")?;
        let caps_ok = f.caps.iter().all(|c| judge.caps.iter().any(|h| h == c));
        let arch_ok = f.arches.is_empty() || f.arches.iter().any(|a| a == ARCH);
        let kernel_ok = f.min_kernel.is_none_or(|k| judge.kernel >= k);
        if !(caps_ok && arch_ok && kernel_ok) {
            return Ok(false);
        }
    }
    if let Some(exc) = exc {
        let f = Filter::read(&exc, "excludes")?;
        if f.caps.iter().any(|c| judge.caps.iter().any(|h| h == c))
            || f.arches.iter().any(|a| a == ARCH)
            || f.min_kernel.is_some_and(|k| judge.kernel >= k)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

struct Filter {
    caps: Vec<String>,
    arches: Vec<String>,
    min_kernel: Option<(u32, u32)>,
}

impl Filter {
    fn read(v: &Value, what: &str) -> Result<Filter, String> {
        let strings = |k: &str| -> Result<Vec<String>, String> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|s| {
                        s.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| format!("{what}.{k} must hold strings"))
                    })
                    .collect(),
                Some(_) => Err(format!("{what}.{k} must be a list")),
            }
        };
        let min_kernel = match v.get("minKernel") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                kernel_version(s)
                    .ok_or_else(|| format!("{what}.minKernel {s:?} is not a version"))?,
            ),
            Some(_) => return Err(format!("{what}.minKernel must be a string")),
        };
        Ok(Filter {
            caps: strings("caps")?,
            arches: strings("arches")?,
            min_kernel,
        })
    }
}

/// `"6.13.2-foo"` → (6, 13).
pub fn kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The running kernel's (major, minor).
pub fn running_kernel() -> (u32, u32) {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| kernel_version(&u.release().to_string_lossy()))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_rules_apply_by_capability_arch_and_kernel() {
        let caps = vec!["CAP_CHOWN".to_string()];
        let judge = Judge {
            caps: &caps,
            kernel: (6, 1),
        };
        let p = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":[],"syscalls":[
              {"names":["a"],"action":"SCMP_ACT_ALLOW"},
              {"names":["b"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
              {"names":["c"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"]}},
              {"names":["d"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"7.0"}},
              {"name":"e","action":"SCMP_ACT_ALLOW","comment":"old form"}]}"#,
            &judge,
        )
        .unwrap();
        let names: Vec<String> = p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .flat_map(|s| s.names().clone())
            .collect();
        assert_eq!(names, ["a", "c", "e"]);
        assert!(parse("[]", &judge).is_err());
        let e = parse(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#, &judge).unwrap_err();
        assert!(e.contains("SCMP_ACT_NOPE"), "{e}");
    }
}
