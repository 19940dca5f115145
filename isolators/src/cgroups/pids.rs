//! `cgroups/pids`: `pids.max` (tasks: processes and threads), and the
//! current count for usage(). A container at its limit gets EAGAIN from
//! fork; it is not destroyed for it.

use super::{read, write, CgroupDirs, CgroupIsolator, Subsystem};
use crate::IsolatorError;
use berth_state::{ContainerId, ResourceStatistics, Resources};

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
            s.processes = read(id, &d.path.join("pids.current"))?
                .trim()
                .parse()
                .unwrap_or(0);
        }
        Ok(s)
    }
}
