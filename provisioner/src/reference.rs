//! Image references: `name[:tag]`, `name@sha256:…`, with an optional
//! registry host (`127.0.0.1:5000/test/busybox:latest`).

use crate::error::{Error, Result};

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry host\[:port\] when the first component names one.
    pub registry: Option<String>,
    /// The repository path (without the registry).
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// `sha256:<hex>` when given by digest.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `s`; the error says which part is wrong.
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |why: &str| Error::Reference {
            reference: s.to_string(),
            why: why.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                crate::digest::hex_of(d).map_err(|_| bad("digest must be sha256:<64 hex>"))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag (a ':' before it is a port).
        let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && !t.starts_with(['.', '-'])
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(bad("tag must be [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, repo)) if first.contains(['.', ':']) || first == "localhost" => {
                (Some(first.to_string()), repo)
            }
            _ => (None, name),
        };
        if let Some(r) = &registry {
            if !r
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
                || !r.as_bytes()[0].is_ascii_alphanumeric()
            {
                return Err(bad(
                    "registry host must be host[:port] (name components otherwise)",
                ));
            }
        }
        let comp_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if !repository.split('/').all(comp_ok) {
            return Err(bad(
                "name components must be lowercase letters, digits and . _ - (not starting with a separator)",
            ));
        }
        // Docker Hub's long forms name the same images as the short ones.
        let (registry, repository) = match registry.as_deref() {
            Some("docker.io" | "index.docker.io" | "registry-1.docker.io") => (
                None,
                match repository.strip_prefix("library/") {
                    Some(r) if !r.contains('/') => r,
                    _ => repository,
                },
            ),
            _ => (registry, repository),
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// `registry/repository` or `repository`.
    pub fn name(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.clone(),
        }
    }

    /// The canonical text: `name:tag` or `name@digest` (digest wins).
    pub fn canonical(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{d}", self.name()),
            (None, Some(t)) => format!("{}:{t}", self.name()),
            (None, None) => format!("{}:latest", self.name()),
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_tags_digests_and_registries() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(
            (r.registry.as_deref(), r.repository.as_str()),
            (None, "busybox")
        );
        assert_eq!(r.canonical(), "busybox:latest");
        let r = Reference::parse("127.0.0.1:5000/test/busybox:latest").unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository, "test/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = Reference::parse("localhost:5000/x").unwrap();
        assert_eq!(r.canonical(), "localhost:5000/x:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("layered@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.tag, None);
        assert_eq!(r.canonical(), format!("layered@{d}"));
        assert_eq!(
            Reference::parse("layered:base").unwrap().canonical(),
            "layered:base"
        );
        let r = Reference::parse("docker.io/library/busybox:1").unwrap();
        assert_eq!(r.canonical(), "busybox:1");
        assert_eq!(
            Reference::parse("docker.io/x/y").unwrap().canonical(),
            "x/y:latest"
        );
    }

    #[test]
    fn refuses_bad_references_by_part() {
        for (s, part) in [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("a:", "tag"),
            ("a:-x", "tag"),
            ("a@sha256:zz", "digest"),
            ("a//b", "name components"),
            ("../x", "registry host"),
            ("x/../y", "name components"),
        ] {
            let e = Reference::parse(s).unwrap_err().to_string();
            assert!(e.contains(part), "{s:?}: {e}");
        }
    }
}
