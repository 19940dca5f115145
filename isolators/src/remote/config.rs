//! A plugin's config file: one JSON object per file in `--plugin-dir`
//! (JSON: berth already reads it, and every language writes it).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the plugin dir could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin dir {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin file {file}: {why}")]
    Invalid { file: PathBuf, why: String },
    #[error("plugin {name}: start {command:?}: {source}")]
    Start {
        name: String,
        command: Vec<String>,
        #[source]
        source: std::io::Error,
    },
}

/// Default deadline of one call, when the file sets none.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default time a plugin berth starts has to listen on its socket.
pub const DEFAULT_START_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default)]
    socket: Option<PathBuf>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    start_timeout_ms: Option<u64>,
    #[serde(default)]
    order: i64,
}

/// Where the plugin is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// A socket someone else serves: berth dials it.
    Socket(PathBuf),
    /// A program berth starts (in the config file's dir) and restarts
    /// when it dies; it serves on `$BERTH_PLUGIN_SOCKET`.
    Command(Vec<String>),
}

/// One plugin's config.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// `[A-Za-z0-9_.-]{1,64}`; the isolator is named `plugin/<name>`.
    pub name: String,
    pub endpoint: Endpoint,
    /// The deadline of each call but Watch.
    pub timeout: Duration,
    /// How long a started plugin has to accept on its socket.
    pub start_timeout: Duration,
    /// Plugins run after the built-in isolators, in ascending `order`
    /// (then name).
    pub order: i64,
    /// The config file's directory: a command's working directory.
    pub dir: PathBuf,
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl PluginConfig {
    /// Parses one file's text.
    pub fn parse(file: &Path, text: &str) -> Result<PluginConfig, PluginError> {
        let bad = |why: String| PluginError::Invalid {
            file: file.to_path_buf(),
            why,
        };
        let f: File = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if !valid_name(&f.name) {
            return Err(bad(format!(
                "name {:?}: 1-64 characters of [A-Za-z0-9_.-], not starting with '.'",
                f.name
            )));
        }
        let endpoint = match (f.socket, f.command) {
            (Some(s), None) if s.is_absolute() => Endpoint::Socket(s),
            (Some(s), None) => {
                return Err(bad(format!("socket {}: must be absolute", s.display())))
            }
            (None, Some(c)) if !c.is_empty() && !c[0].is_empty() => Endpoint::Command(c),
            (None, Some(_)) => return Err(bad("command: empty".into())),
            _ => return Err(bad("give exactly one of `socket` and `command`".into())),
        };
        let ms = |v: Option<u64>, d: u64, what: &str| match v.unwrap_or(d) {
            0 => Err(bad(format!("{what}: must be above 0"))),
            v => Ok(Duration::from_millis(v)),
        };
        Ok(PluginConfig {
            name: f.name,
            endpoint,
            timeout: ms(f.timeout_ms, DEFAULT_TIMEOUT_MS, "timeout_ms")?,
            start_timeout: ms(
                f.start_timeout_ms,
                DEFAULT_START_TIMEOUT_MS,
                "start_timeout_ms",
            )?,
            order: f.order,
            dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        })
    }

    /// Every `*.json` file of `dir` (other files are ignored), in isolator
    /// order. Two plugins with one name are refused.
    pub fn load_dir(dir: &Path) -> Result<Vec<PluginConfig>, PluginError> {
        let read_err = |source| PluginError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        };
        let mut out: Vec<PluginConfig> = Vec::new();
        for e in std::fs::read_dir(dir).map_err(read_err)? {
            let path = e.map_err(read_err)?.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| PluginError::Invalid {
                file: path.clone(),
                why: e.to_string(),
            })?;
            let c = PluginConfig::parse(&path, &text)?;
            if out.iter().any(|o| o.name == c.name) {
                return Err(PluginError::Invalid {
                    file: path,
                    why: format!("a second plugin named {:?}", c.name),
                });
            }
            out.push(c);
        }
        out.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PluginConfig, String> {
        PluginConfig::parse(Path::new("/etc/p/x.json"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn files() {
        let c =
            parse(r#"{"name": "greeting", "command": ["python3", "p.py"], "order": 3}"#).unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint::Command(vec!["python3".into(), "p.py".into()])
        );
        assert_eq!(c.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        assert_eq!((c.order, c.dir), (3, PathBuf::from("/etc/p")));
        let c = parse(r#"{"name": "g", "socket": "/run/g.sock", "timeout_ms": 250}"#).unwrap();
        assert_eq!(c.endpoint, Endpoint::Socket("/run/g.sock".into()));
        assert_eq!(c.timeout, Duration::from_millis(250));
        for (bad, says) in [
            (r#"{"name": "g"}"#, "exactly one"),
            (
                r#"{"name": "g", "socket": "/a", "command": ["x"]}"#,
                "exactly one",
            ),
            (r#"{"name": "g", "socket": "rel.sock"}"#, "absolute"),
            (r#"{"name": "g", "command": []}"#, "empty"),
            (r#"{"name": "a/b", "command": ["x"]}"#, "name"),
            (
                r#"{"name": "g", "command": ["x"], "timeout_ms": 0}"#,
                "timeout_ms",
            ),
            (
                r#"{"name": "g", "command": ["x"], "tmeout_ms": 5}"#,
                "unknown field",
            ),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.contains(says) && e.contains("/etc/p/x.json"),
                "{bad}: {e}"
            );
        }
    }
}
