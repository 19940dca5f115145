//! The per-container kill cgroup: on cgroup v1 a freezer cgroup, on v2 a
//! plain cgroup with `cgroup.kill`. Every process of the container is in
//! it (the init joins it before anything else), so destroy kills even
//! processes that escaped the init's tree.
//!
//! Destroy, as Mesos learned it: freeze (retrying: a v1 freeze can stay
//! FREEZING), SIGKILL every task, thaw (frozen tasks die only when
//! thawed), wait until empty, then `rmdir` bottom-up retrying EBUSY with
//! backoff (an emptied cgroup can stay busy for a moment).

use berth_state::ContainerId;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A failure of the kill cgroup, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum FreezerError {
    /// A cgroupfs operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Processes survived every kill round.
    #[error("{path} still has processes {pids:?} after {secs} s")]
    NotEmpty {
        path: PathBuf,
        pids: Vec<i32>,
        secs: u64,
    },
    /// Neither hierarchy is mounted.
    #[error("no freezer (cgroup v1) or cgroup2 hierarchy is mounted")]
    NoHierarchy,
}

/// Which kind of hierarchy the kill cgroups live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freezer {
    /// cgroup v1 freezer hierarchy at this mount point.
    V1 { mount: PathBuf },
    /// cgroup2 at this mount point (`cgroup.kill`, kernel ≥ 5.14).
    V2 { mount: PathBuf },
}

impl Freezer {
    /// The v1 freezer hierarchy if mounted, else the cgroup2 mount.
    pub fn detect() -> Result<Freezer, FreezerError> {
        let info =
            berth_state::cgroupfs::cgroup_mountinfo().map_err(|source| FreezerError::Io {
                op: "read",
                path: "/proc/self/mountinfo".into(),
                source,
            })?;
        let mut v2 = None;
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mp) = left.split(' ').nth(4) else {
                continue;
            };
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or("");
            let opts = r.nth(1).unwrap_or("");
            if fstype == "cgroup" && opts.split(',').any(|o| o == "freezer") {
                return Ok(Freezer::V1 { mount: mp.into() });
            }
            // Prefer a cgroup2 mount that has controllers (the real one).
            if fstype == "cgroup2" && v2.is_none() {
                v2 = Some(PathBuf::from(mp));
            }
        }
        v2.map(|mount| Freezer::V2 { mount })
            .ok_or(FreezerError::NoHierarchy)
    }

    /// Uses `mount`, a v1 freezer hierarchy or a cgroup2 mount (told apart
    /// by `freezer.state` or `cgroup.controllers` at its root).
    pub fn at(mount: PathBuf) -> Freezer {
        if mount.join("cgroup.controllers").exists() {
            Freezer::V2 { mount }
        } else {
            Freezer::V1 { mount }
        }
    }

    fn mount(&self) -> &Path {
        match self {
            Freezer::V1 { mount } | Freezer::V2 { mount } => mount,
        }
    }

    /// The cgroup root dir of this launcher.
    pub fn root_dir(&self, cgroup_root: &str) -> PathBuf {
        self.mount().join(cgroup_root)
    }

    /// The cgroup of container `id` (nested ids nest).
    pub fn dir(&self, cgroup_root: &str, id: &ContainerId) -> PathBuf {
        let mut p = self.root_dir(cgroup_root);
        for part in id.parts() {
            p.push(part);
        }
        p
    }

    /// Creates the container's cgroup (and the root).
    pub fn create(&self, dir: &Path) -> Result<(), FreezerError> {
        fs::create_dir_all(dir).map_err(|source| FreezerError::Io {
            op: "create cgroup",
            path: dir.to_path_buf(),
            source,
        })
    }

    /// The container ids with a cgroup under the root.
    pub fn list(&self, cgroup_root: &str) -> Vec<ContainerId> {
        // Top level only: below a recorded container everything is its own
        // (see `list_top_ids`); an unrecorded one goes with its whole tree.
        // An unreadable tree lists as empty: orphans are best effort.
        berth_state::runtime::list_top_ids(&self.root_dir(cgroup_root)).unwrap_or_default()
    }

    /// Freezes (`true`) or thaws every process in `dir` and below, and
    /// waits until the kernel says it is done (or `timeout`).
    pub fn set_frozen(
        &self,
        dir: &Path,
        frozen: bool,
        timeout: Duration,
    ) -> Result<(), FreezerError> {
        let deadline = Instant::now() + timeout;
        let done = match self {
            Freezer::V1 { .. } => {
                freeze_v1(dir, if frozen { "FROZEN" } else { "THAWED" }, timeout)?
            }
            Freezer::V2 { .. } => {
                write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                loop {
                    let events = fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
                    if events.lines().any(|l| l.trim() == want) {
                        break true;
                    }
                    if Instant::now() >= deadline {
                        break false;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        if done {
            return Ok(());
        }
        Err(FreezerError::NotEmpty {
            path: dir.to_path_buf(),
            pids: all_pids(dir),
            secs: timeout.as_secs(),
        })
    }

    /// Whether `dir` is frozen now.
    pub fn is_frozen(&self, dir: &Path) -> bool {
        match self {
            Freezer::V1 { .. } => {
                fs::read_to_string(dir.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
            }
            Freezer::V2 { .. } => fs::read_to_string(dir.join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1")),
        }
    }

    /// Kills every process in `dir` and below, then removes the cgroups
    /// bottom-up. A missing `dir` is fine (idempotent).
    pub fn destroy(&self, dir: &Path, timeout: Duration) -> Result<(), FreezerError> {
        if !dir.exists() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        match self {
            Freezer::V1 { .. } => kill_v1(dir, deadline)?,
            Freezer::V2 { .. } => kill_v2(dir, deadline)?,
        }
        berth_state::cgroupfs::remove_tree(dir, deadline).map_err(|(path, source)| {
            FreezerError::Io {
                op: "rmdir",
                path,
                source,
            }
        })
    }
}

fn kill_v1(dir: &Path, deadline: Instant) -> Result<(), FreezerError> {
    // Nothing to kill, the usual case (the command exited, and with it
    // its pid namespace): no freeze. Freezing and thawing flip a kernel
    // static key while nothing else on the node is frozen, patching the
    // kernel's text on every CPU (~0.5 ms of each destroy here). A task
    // that joins after this look makes the rmdir fail busy, and the
    // destroy, retried, finds it here.
    if all_pids(dir).is_empty() {
        return Ok(());
    }
    loop {
        // Freezing first stops a fork bomb from outrunning the kill loop.
        let frozen = freeze_v1(dir, "FROZEN", Duration::from_secs(1))?;
        let pids = all_pids(dir);
        for &pid in &pids {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        // Thaw even if freezing timed out: a frozen task never dies.
        write(&dir.join("freezer.state"), "THAWED")?;
        if settled(dir, deadline)? {
            return Ok(());
        }
        tracing::debug!(path = %dir.display(), frozen, "cgroup not empty after kill; again");
    }
}

/// After a kill round: waits (up to 2 s, within `deadline`) for `dir` to
/// empty. `Ok(true)` when empty, `Ok(false)` to try another round, an error
/// once the deadline has passed with tasks left.
fn settled(dir: &Path, deadline: Instant) -> Result<bool, FreezerError> {
    if wait_empty(
        dir,
        Instant::now() + Duration::from_secs(2).min(remaining(deadline)),
    ) {
        return Ok(true);
    }
    if Instant::now() >= deadline {
        return Err(FreezerError::NotEmpty {
            path: dir.to_path_buf(),
            pids: all_pids(dir),
            secs: 0,
        });
    }
    Ok(false)
}

/// Writes `state` until the freezer reports it (v1 freezing can stall in
/// FREEZING; writing FROZEN again retries it). False on timeout.
fn freeze_v1(dir: &Path, state: &str, timeout: Duration) -> Result<bool, FreezerError> {
    let f = dir.join("freezer.state");
    let deadline = Instant::now() + timeout;
    loop {
        write(&f, state)?;
        for _ in 0..10 {
            if fs::read_to_string(&f)
                .map(|s| s.trim() == state)
                .unwrap_or(false)
            {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

fn kill_v2(dir: &Path, deadline: Instant) -> Result<(), FreezerError> {
    let kill = dir.join("cgroup.kill");
    loop {
        if kill.exists() {
            write(&kill, "1")?;
        } else {
            for pid in all_pids(dir) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
        if settled(dir, deadline)? {
            return Ok(());
        }
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Waits (sleeping with backoff) until no process is left in `dir` or below.
fn wait_empty(dir: &Path, deadline: Instant) -> bool {
    let mut pause = Duration::from_millis(1);
    loop {
        if all_pids(dir).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Every pid in `dir` and its descendants (v1 `cgroup.procs` lists only
/// the cgroup's own).
pub fn all_pids(dir: &Path) -> Vec<i32> {
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(berth_state::cgroupfs::subdirs_deepest_first(dir));
    dirs.iter()
        .flat_map(|d| {
            fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn write(path: &Path, value: &str) -> Result<(), FreezerError> {
    fs::write(path, value).map_err(|source| FreezerError::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_nested_ids_and_listing_stays_at_the_top() {
        let tmp = tempfile::tempdir().unwrap();
        let f = Freezer::V1 {
            mount: tmp.path().to_path_buf(),
        };
        let id = ContainerId::new("pod").child("side");
        let d = f.dir("root", &id);
        assert_eq!(d, tmp.path().join("root/pod/side"));
        fs::create_dir_all(&d).unwrap();
        fs::create_dir_all(tmp.path().join("root/.hidden")).unwrap();
        // Below a container everything is its own: not listed.
        let ids: Vec<String> = f.list("root").iter().map(|i| i.to_string()).collect();
        assert_eq!(ids, vec!["pod"]);
    }

    #[test]
    fn v2_is_told_apart_by_its_controllers_file() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(Freezer::at(tmp.path().into()), Freezer::V1 { .. }));
        fs::write(tmp.path().join("cgroup.controllers"), "").unwrap();
        assert!(matches!(Freezer::at(tmp.path().into()), Freezer::V2 { .. }));
    }

    #[test]
    fn destroying_an_absent_cgroup_is_fine() {
        let f = Freezer::V1 {
            mount: "/nonexistent".into(),
        };
        f.destroy(Path::new("/nonexistent/x"), Duration::from_secs(1))
            .unwrap();
    }
}
