//! `cgroups/pids`: `pids.max` (tasks: processes and threads), and the
//! current counts for usage(): `threads` (every task, `pids.current`) and
//! `processes` (distinct thread groups in the cgroup tree's
//! `cgroup.procs`), as Mesos's `PidsAndTids`. A container at its limit
//! gets EAGAIN from fork; it is not destroyed for it.

use super::{io_err, read, write, CgroupDirs, CgroupIsolator, Subsystem};
use crate::IsolatorError;
use berth_state::{ContainerId, ResourceStatistics, Resources};
use std::collections::HashSet;
use std::path::Path;

pub(crate) const NAME: &str = "cgroups/pids";

/// The `cgroups/pids` subsystem.
pub enum Pids {}

impl Pids {
    /// The `cgroups/pids` isolator.
    pub fn isolator(h: super::Hierarchies, cgroup_root: impl Into<String>) -> CgroupIsolator<Pids> {
        CgroupIsolator::new(h, cgroup_root)
    }
}

impl Subsystem for Pids {
    const NAME: &'static str = NAME;
    const CONTROLLERS: &'static [&'static str] = &["pids"];

    fn fresh_suffices(_dirs: &CgroupDirs, res: &Resources) -> bool {
        res.pids == 0 // pids.max is "max"
    }

    fn apply(
        id: &ContainerId,
        dirs: &CgroupDirs,
        res: &Resources,
        _update: bool,
    ) -> Result<(), IsolatorError> {
        let Some(d) = dirs.of("pids") else {
            return Ok(());
        };
        let max = if res.pids > 0 {
            res.pids.to_string()
        } else {
            "max".into()
        };
        write(id, &d.path.join("pids.max"), &max)
    }

    fn usage(id: &ContainerId, dirs: &CgroupDirs) -> Result<ResourceStatistics, IsolatorError> {
        let mut s = ResourceStatistics::default();
        if let Some(d) = dirs.of("pids") {
            // pids.current counts every task (thread) of the cgroup and
            // its descendants (nested containers' too).
            s.threads = read(id, &d.path.join("pids.current"))?
                .trim()
                .parse()
                .unwrap_or(0);
            s.processes = count_processes(id, &d.path)?;
        }
        Ok(s)
    }
}

/// The distinct processes (thread group ids in `cgroup.procs`, on v1 and
/// v2 alike) in the cgroup at `dir` and every cgroup below it (Mesos's
/// `processes`). A cgroup removed during the walk counts as empty.
fn count_processes(id: &ContainerId, dir: &Path) -> Result<u64, IsolatorError> {
    let mut seen = HashSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let procs = d.join("cgroup.procs");
        match std::fs::read_to_string(&procs) {
            Ok(text) => seen.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && d != dir => continue,
            Err(e) => return Err(io_err(id, "read", &procs, e)),
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            // cgroupfs holds only directories (cgroups) and plain files.
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                todo.push(e.path());
            }
        }
    }
    Ok(seen.len() as u64)
}
