//! Driving an OCI runtime's CLI (`runc`, `runsc`): `state`, `kill`,
//! `delete`, `list`, `pause`/`resume`, each with berth's own `--root`.
//! `create` and `start` are run by the container's supervisor (it must be
//! their parent: see [`crate::supervisor`]); this module gives it the
//! argv.
//!
//! Calls block (a runtime answers in milliseconds; runsc's `delete` may
//! take longer): callers run them on the blocking pool.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// One registered runtime: its name, binary, berth's state root for it
/// and the operator's extra global arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRuntime {
    /// The name containers choose it by (`runc`, `runsc`).
    pub name: String,
    pub path: PathBuf,
    /// Global arguments (before the subcommand), e.g. `--network=none`.
    pub args: Vec<String>,
    /// The runtime's `--root`: its state, one per berth runtime dir.
    pub root: PathBuf,
}

/// A runtime call that failed, with what it printed.
#[derive(Debug, thiserror::Error)]
#[error("{runtime} {op} {id}: {why}")]
pub struct RuntimeCallError {
    pub runtime: String,
    pub op: String,
    pub id: String,
    pub why: String,
}

/// What `state` says of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// `creating`, `created`, `running`, `paused`, `stopped`.
    pub status: String,
    pub pid: i32,
}

impl OciRuntime {
    /// Where berth keeps runtime `name`'s state under its runtime dir.
    pub fn root_in(runtime_dir: &Path, name: &str) -> PathBuf {
        runtime_dir.join("oci").join(name)
    }

    /// The global arguments: `--root` first, then the operator's.
    pub fn global_args(&self) -> Vec<String> {
        let mut v = vec!["--root".to_string(), self.root.display().to_string()];
        v.extend(self.args.iter().cloned());
        v
    }

    fn run(&self, op: &str, id: &str, args: &[&str]) -> Result<Output, RuntimeCallError> {
        let err = |why: String| RuntimeCallError {
            runtime: self.name.clone(),
            op: op.to_string(),
            id: id.to_string(),
            why,
        };
        let out = Command::new(&self.path)
            .args(self.global_args())
            .arg(op)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("run {}: {e}", self.path.display())))?;
        if out.status.success() {
            Ok(out)
        } else {
            let text = String::from_utf8_lossy(&out.stderr);
            Err(err(format!(
                "{} ({})",
                text.trim().lines().last().unwrap_or(""),
                out.status
            )))
        }
    }

    /// The container's state, `None` when the runtime does not know it.
    pub fn state(&self, id: &str) -> Result<Option<State>, RuntimeCallError> {
        match self.run("state", id, &[id]) {
            Ok(out) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).map_err(|e| RuntimeCallError {
                        runtime: self.name.clone(),
                        op: "state".into(),
                        id: id.into(),
                        why: format!("unreadable answer: {e}"),
                    })?;
                Ok(Some(State {
                    status: v["status"].as_str().unwrap_or("").to_string(),
                    pid: v["pid"].as_i64().unwrap_or(0) as i32,
                }))
            }
            Err(e) if not_found(&e.why) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends `signal` to the container's init (`all`: to every process).
    /// A container the runtime no longer knows, or that has stopped, is
    /// nothing to signal.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeCallError> {
        let sig = signal.to_string();
        let mut args = vec![];
        if all {
            args.push("--all");
        }
        args.extend([id, sig.as_str()]);
        match self.run("kill", id, &args) {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e.why) || stopped(&e.why) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// As [`kill`](Self::kill), for a container whose `start` may still be
    /// under way in its supervisor (a launch returns once the release is
    /// sent): runsc refuses to signal a container in state `created`, so
    /// this waits up to `timeout` for the state to move on, then signals.
    pub fn kill_once_started(
        &self,
        id: &str,
        signal: i32,
        timeout: std::time::Duration,
    ) -> Result<(), RuntimeCallError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.kill(id, signal, false) {
                Err(e) if not_started(&e.why) && std::time::Instant::now() < deadline => {
                    match self.state(id)? {
                        Some(s) if s.status == "created" || s.status == "creating" => {
                            std::thread::sleep(std::time::Duration::from_millis(2))
                        }
                        // Started (signal it now), stopped or gone.
                        _ => {}
                    }
                }
                r => return r,
            }
        }
    }

    /// Removes the container from the runtime (`--force`: killing what
    /// runs). Idempotent.
    pub fn delete(&self, id: &str) -> Result<(), RuntimeCallError> {
        match self.run("delete", id, &["--force", id]) {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e.why) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `pause` or `resume`.
    pub fn set_frozen(&self, id: &str, frozen: bool) -> Result<(), RuntimeCallError> {
        let op = if frozen { "pause" } else { "resume" };
        self.run(op, id, &[id]).map(|_| ())
    }

    /// The ids of every container under berth's root for this runtime.
    pub fn list(&self) -> Result<Vec<String>, RuntimeCallError> {
        if !self.root.is_dir() {
            return Ok(Vec::new());
        }
        let out = self.run("list", "", &["--format", "json"])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn not_found(why: &str) -> bool {
    let w = why.to_ascii_lowercase();
    w.contains("does not exist") || w.contains("not exist") || w.contains("not found")
}

/// runsc's answer to a signal for a container not yet started.
pub(crate) fn not_started(why: &str) -> bool {
    why.to_ascii_lowercase().contains("in state created")
}

fn stopped(why: &str) -> bool {
    let w = why.to_ascii_lowercase();
    w.contains("not running") || w.contains("stopped") || w.contains("process already finished")
}
