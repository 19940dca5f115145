//! Supervision of a plugin program berth starts: one thread per plugin
//! starts it with its socket path in `BERTH_PLUGIN_SOCKET`, waits for it,
//! and starts it again (with a backoff) when it dies. A plugin never
//! outlives the agent: it gets SIGKILL when the thread that forked it dies
//! (`PR_SET_PDEATHSIG`), and that thread lives until the agent's process
//! ends, by exit or by SIGKILL; dropping the handle kills it too.

use super::config::PluginError;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment variable naming the socket a plugin must serve on.
pub const SOCKET_ENV: &str = "BERTH_PLUGIN_SOCKET";

struct Shared {
    name: String,
    /// Bumped at every start: a new value means a new process, which must
    /// be given Recover.
    generation: AtomicU64,
    stop: AtomicBool,
    child: Mutex<Option<Child>>,
}

/// A running plugin program (restarted when it dies).
pub struct PluginProcess {
    shared: Arc<Shared>,
    socket: PathBuf,
}

impl PluginProcess {
    /// Starts `command` in `dir` serving on `socket`; fails when the
    /// program cannot be started at all.
    pub fn start(
        name: &str,
        command: &[String],
        dir: &Path,
        socket: PathBuf,
    ) -> Result<PluginProcess, PluginError> {
        let shared = Arc::new(Shared {
            name: name.to_string(),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            child: Mutex::new(None),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let (s, cmd, d, sock) = (
            shared.clone(),
            command.to_vec(),
            dir.to_path_buf(),
            socket.clone(),
        );
        let start_err = |source| PluginError::Start {
            name: name.to_string(),
            command: command.to_vec(),
            source,
        };
        std::thread::Builder::new()
            .name(format!("plugin-{name}"))
            .spawn(move || supervise(s, cmd, d, sock, tx))
            .map_err(start_err)?;
        match rx.recv() {
            Ok(Ok(())) => Ok(PluginProcess { shared, socket }),
            Ok(Err(e)) => Err(start_err(e)),
            Err(_) => Err(start_err(std::io::Error::other("supervisor thread died"))),
        }
    }

    /// Which start of the program is running (1 for the first).
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::SeqCst)
    }

    /// The socket the program serves on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The running process's pid, if one runs.
    pub fn pid(&self) -> Option<u32> {
        self.shared
            .child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(Child::id))
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Ok(mut c) = self.shared.child.lock() {
            if let Some(child) = c.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            *c = None;
        }
    }
}

fn spawn(command: &[String], dir: &Path, socket: &Path) -> std::io::Result<Child> {
    // The runtime dir is berth's own: a stale socket from a dead plugin is
    // removed by name so the new one can bind.
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let parent = std::process::id() as i32;
    let mut c = Command::new(&command[0]);
    c.args(&command[1..])
        .current_dir(dir)
        .env(SOCKET_ENV, socket)
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe calls (prctl, getppid).
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The agent died before the prctl took effect: no signal will come.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the agent is gone"));
            }
            Ok(())
        });
    }
    c.spawn()
}

fn supervise(
    s: Arc<Shared>,
    command: Vec<String>,
    dir: PathBuf,
    socket: PathBuf,
    started: std::sync::mpsc::Sender<std::io::Result<()>>,
) {
    let mut started = Some(started);
    let mut backoff = Duration::from_millis(100);
    while !s.stop.load(Ordering::SeqCst) {
        let child = spawn(&command, &dir, &socket);
        let child = match (child, started.take()) {
            (Ok(c), tx) => {
                if let Some(tx) = tx {
                    let _ = tx.send(Ok(()));
                }
                c
            }
            // The first start failed: the agent's start fails, naming it.
            (Err(e), Some(tx)) => {
                let _ = tx.send(Err(e));
                return;
            }
            (Err(e), None) => {
                tracing::error!(plugin = %s.name, error = %e, "cannot restart the plugin");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let began = Instant::now();
        tracing::info!(plugin = %s.name, pid = child.id(), "plugin started");
        match s.child.lock() {
            Ok(mut c) => *c = Some(child),
            Err(_) => return,
        }
        s.generation.fetch_add(1, Ordering::SeqCst);
        // Polled, not waited on, so that Drop can kill it through the lock
        // (a pid waited on elsewhere could be reaped and reused meanwhile).
        let status = loop {
            std::thread::sleep(Duration::from_millis(20));
            let Ok(mut c) = s.child.lock() else { return };
            match c.as_mut().map(Child::try_wait) {
                None => return, // killed by Drop
                Some(Ok(None)) => continue,
                Some(Ok(Some(st))) => {
                    *c = None;
                    break st.to_string();
                }
                Some(Err(e)) => {
                    *c = None;
                    break e.to_string();
                }
            }
        };
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        tracing::warn!(plugin = %s.name, %status, "plugin exited; restarting it");
        if began.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
