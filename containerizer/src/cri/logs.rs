//! The CRI log at `log_directory/log_path`: the supervisor writes the
//! container's output in the CRI format to `container.log` in its sandbox
//! (never rotated for CRI containers); a relay per container copies what
//! is new there to the CRI's path, which kubelet reads and rotates
//! (ReopenContainerLog makes the relay open the path again).
//!
//! The sandbox is the container's: the source is opened beneath the
//! sandbox's fd, refused unless it is a regular file with one link
//! (`safe_path::open_read_beneath`), so a planted link never makes the
//! agent read a host file into the log. The destination is kubelet's
//! path, opened without following a link at its last component.
//!
//! After an agent restart a relay resumes at the destination's length
//! (what it had copied), unless kubelet rotated the file in between.

use super::records::ContainerRecord;
use super::Service;
use berth_state::{safe_path, ContainerState};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};

/// The supervisor's CRI log file in the sandbox.
const CRI_LOG: &str = "container.log";

/// How often a relay looks for new output.
const POLL: std::time::Duration = std::time::Duration::from_millis(200);

struct Relay {
    reopen: Arc<Notify>,
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

/// The running relays, by CRI container id.
#[derive(Default)]
pub(crate) struct Relays(Mutex<HashMap<String, Relay>>);

impl Relays {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Relay>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the rest and ends the relay of `id` (if any); returns once
    /// it has ended.
    pub async fn finish(&self, id: &str) {
        let done = {
            let relays = self.lock();
            let Some(r) = relays.get(id) else { return };
            let _ = r.stop.send(true);
            r.done.clone()
        };
        let mut done = done;
        let _ = done.wait_for(|d| *d).await;
    }

    /// Drops the relay of a removed container.
    pub fn forget(&self, id: &str) {
        if let Some(r) = self.lock().remove(id) {
            let _ = r.stop.send(true);
        }
    }

    /// Makes the relay of `id` open its destination again; false when
    /// there is none.
    pub fn reopen(&self, id: &str) -> bool {
        match self.lock().get(id) {
            Some(r) if !*r.done.borrow() => {
                r.reopen.notify_one();
                true
            }
            _ => false,
        }
    }

    pub fn stop_all(&self) {
        for r in self.lock().values() {
            let _ = r.stop.send(true);
        }
    }
}

/// One relay's files.
struct Copy {
    sandbox: PathBuf,
    dest: PathBuf,
    src: Option<File>,
    dst: Option<File>,
    /// Seek the source to the destination's length when first opened.
    resume: bool,
}

pub(crate) fn open_dest(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

impl Copy {
    /// Copies what is new; errors are logged, the relay goes on.
    fn step(&mut self) {
        if self.dst.is_none() {
            match open_dest(&self.dest) {
                Ok(f) => self.dst = Some(f),
                Err(e) => {
                    tracing::warn!(path = %self.dest.display(), error = %e, "CRI log: cannot open");
                    return;
                }
            }
        }
        if self.src.is_none() {
            let Ok(dir) = safe_path::open_dir(&self.sandbox, None) else {
                return;
            };
            let name = Path::new(CRI_LOG);
            let Ok(mut f) =
                safe_path::open_read_beneath(dir.as_fd(), name, &self.sandbox.join(name))
            else {
                return;
            };
            if self.resume {
                let at = self
                    .dst
                    .as_ref()
                    .and_then(|d| d.metadata().ok())
                    .map(|m| m.len())
                    .unwrap_or(0);
                let _ = f.seek(SeekFrom::Start(at));
            }
            self.src = Some(f);
        }
        let (Some(src), Some(dst)) = (self.src.as_mut(), self.dst.as_mut()) else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Err(e) = dst.write_all(&buf[..n]) {
                        tracing::warn!(path = %self.dest.display(), error = %e, "CRI log: write failed");
                        break;
                    }
                }
            }
        }
    }
}

async fn step(copy: Copy) -> Copy {
    tokio::task::spawn_blocking(move || {
        let mut copy = copy;
        copy.step();
        copy
    })
    .await
    .expect("the CRI log copy does not panic")
}

/// Creates (or opens) the CRI log file `path` now, so it exists when the
/// call that made it answers (kubelet and critest open it at once).
pub(crate) async fn create_dest(path: &str) -> Result<(), tonic::Status> {
    let p = PathBuf::from(path);
    tokio::task::spawn_blocking(move || open_dest(&p).map(drop))
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .map_err(|e| tonic::Status::internal(format!("CRI log {path}: cannot create it: {e}")))
}

impl Service {
    /// Starts the relay of started container `r` (`resume`: after an
    /// agent restart).
    pub(crate) fn start_log(&self, r: &ContainerRecord, resume: bool) {
        let bid = Self::berth_id(r);
        let reopen = Arc::new(Notify::new());
        let (stop_tx, mut stop) = watch::channel(false);
        let (done_tx, done) = watch::channel(false);
        self.logs.lock().insert(
            r.id.clone(),
            Relay {
                reopen: reopen.clone(),
                stop: stop_tx,
                done,
            },
        );
        let c = self.c.clone();
        let dest = PathBuf::from(&r.log_path);
        tokio::spawn(async move {
            let Ok(st) = c.status(bid.clone()).await else {
                let _ = done_tx.send(true);
                return;
            };
            let mut copy = Copy {
                sandbox: st.sandbox_dir,
                dest,
                src: None,
                dst: None,
                resume,
            };
            loop {
                copy = step(copy).await;
                let ended = *stop.borrow()
                    || !matches!(
                        c.status(bid.clone()).await.map(|s| s.state),
                        Ok(ContainerState::Running | ContainerState::Paused)
                            | Ok(ContainerState::Starting)
                            | Ok(ContainerState::Provisioning)
                            | Ok(ContainerState::Preparing)
                            | Ok(ContainerState::Isolating)
                            | Ok(ContainerState::Fetching)
                    );
                if ended {
                    // What the supervisor wrote last.
                    step(copy).await;
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = reopen.notified() => copy.dst = None,
                    _ = stop.changed() => {}
                }
            }
            let _ = done_tx.send(true);
        });
    }
}
