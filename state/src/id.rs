//! Container ids: validation, the `parent/child` full form, and parsing.

use crate::model::ContainerId;
use std::fmt;

/// A container id that cannot be used, with the offending text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("container id {0:?} is empty")]
    Empty(String),
    #[error("container id {0:?} is longer than 64 characters")]
    TooLong(String),
    #[error("container id {id:?} contains {ch:?}: only A-Z a-z 0-9 _ . - are allowed")]
    BadChar { id: String, ch: char },
    #[error("container id {0:?} may not start with '.'")]
    LeadingDot(String),
}

impl ContainerId {
    /// A top-level container id.
    ///
    /// ```
    /// let id = berth_state::ContainerId::new("web-1");
    /// assert_eq!(id.to_string(), "web-1");
    /// ```
    pub fn new(value: impl Into<String>) -> Self {
        ContainerId {
            value: value.into(),
            parent: None,
        }
    }

    /// A container nested in `self`.
    ///
    /// ```
    /// let id = berth_state::ContainerId::new("pod").child("sidecar");
    /// assert_eq!(id.to_string(), "pod/sidecar");
    /// ```
    pub fn child(&self, value: impl Into<String>) -> Self {
        ContainerId {
            value: value.into(),
            parent: Some(Box::new(self.clone())),
        }
    }

    /// Parses the full form `a/b/c` (each part validated).
    pub fn parse(full: &str) -> Result<Self, IdError> {
        let mut id: Option<ContainerId> = None;
        for part in full.split('/') {
            validate_part(part).map_err(|e| match e {
                IdError::Empty(_) => IdError::Empty(full.to_string()),
                other => other,
            })?;
            id = Some(match id {
                None => ContainerId::new(part),
                Some(parent) => parent.child(part),
            });
        }
        id.ok_or_else(|| IdError::Empty(full.to_string()))
    }

    /// Checks every part of the id.
    pub fn validate(&self) -> Result<(), IdError> {
        validate_part(&self.value)?;
        match &self.parent {
            Some(p) => p.validate(),
            None => Ok(()),
        }
    }

    /// The parts from the outermost ancestor down to this container.
    pub fn parts(&self) -> Vec<&str> {
        let mut parts = vec![self.value.as_str()];
        let mut cur = self.parent.as_deref();
        while let Some(p) = cur {
            parts.push(p.value.as_str());
            cur = p.parent.as_deref();
        }
        parts.reverse();
        parts
    }

    /// The outermost ancestor's id (itself at top level).
    pub fn root(&self) -> &ContainerId {
        let mut cur = self;
        while let Some(p) = cur.parent.as_deref() {
            cur = p;
        }
        cur
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.parts().join("/"))
    }
}

fn validate_part(part: &str) -> Result<(), IdError> {
    if part.is_empty() {
        return Err(IdError::Empty(part.to_string()));
    }
    if part.len() > 64 {
        return Err(IdError::TooLong(part.to_string()));
    }
    if part.starts_with('.') {
        return Err(IdError::LeadingDot(part.to_string()));
    }
    if let Some(ch) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(IdError::BadChar {
            id: part.to_string(),
            ch,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_nested_ids() {
        let id = ContainerId::parse("a/b.c/d-e").unwrap();
        assert_eq!(id.value, "d-e");
        assert_eq!(id.to_string(), "a/b.c/d-e");
        assert_eq!(id.root().value, "a");
    }

    #[test]
    fn bad_ids_are_named() {
        assert!(matches!(ContainerId::parse(""), Err(IdError::Empty(_))));
        assert!(matches!(ContainerId::parse("a//b"), Err(IdError::Empty(_))));
        assert!(matches!(
            ContainerId::parse(".."),
            Err(IdError::LeadingDot(_))
        ));
        let e = ContainerId::parse("x y").unwrap_err();
        assert_eq!(
            e.to_string(),
            "container id \"x y\" contains ' ': only A-Z a-z 0-9 _ . - are allowed"
        );
        assert!(matches!(
            ContainerId::parse(&"a".repeat(65)),
            Err(IdError::TooLong(_))
        ));
    }
}
