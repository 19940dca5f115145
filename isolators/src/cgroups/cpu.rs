//! `cgroups/cpu`: cpu shares from `cpus` (1024 per cpu, minimum 2, as
//! Mesos and the Nomad executor do; v2 gets the equivalent `cpu.weight`),
//! an optional hard limit through CFS quota/period, and cpu usage from
//! `cpuacct` (v1) or `cpu.stat` (v2).

use super::{cg_err, keyed, read, CgroupDirs, CgroupIsolator, Subsystem, Version};
use crate::IsolatorError;
use berth_state::{ContainerId, ResourceStatistics, Resources};
use cgroups_rs::fs::cpu::CpuController;

pub(crate) const NAME: &str = "cgroups/cpu";

/// The CFS period berth uses for hard limits (100 ms, the kernel's default).
pub const CFS_PERIOD_US: u64 = 100_000;
/// The kernel refuses quotas under 1 ms.
const MIN_QUOTA_US: u64 = 1_000;
/// The v1 default share, for containers that ask for no cpus.
const DEFAULT_SHARES: u64 = 1024;

/// The `cgroups/cpu` subsystem.
pub enum Cpu {}

impl Cpu {
    /// The `cgroups/cpu` isolator.
    pub fn isolator(h: super::Hierarchies, cgroup_root: impl Into<String>) -> CgroupIsolator<Cpu> {
        CgroupIsolator::new(h, cgroup_root)
    }
}

/// v1 `cpu.shares` for `cpus` cores: 1024 per core, at least 2 (the
/// kernel's minimum); 0 cores = the default 1024.
pub fn cpu_shares(cpus: f64) -> u64 {
    if cpus <= 0.0 {
        return DEFAULT_SHARES;
    }
    ((cpus * 1024.0).round() as u64).clamp(2, 262_144)
}

/// v2 `cpu.weight` for v1 `shares`: the linear map of [2, 262144] onto
/// [1, 10000] that runc and systemd use.
pub fn cpu_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

fn quota_us(cpu_limit: f64) -> i64 {
    if cpu_limit <= 0.0 {
        -1
    } else {
        ((cpu_limit * CFS_PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US) as i64
    }
}

impl Subsystem for Cpu {
    const NAME: &'static str = NAME;
    const CONTROLLERS: &'static [&'static str] = &["cpu", "cpuacct"];

    fn validate(id: &ContainerId, res: &Resources) -> Result<(), IsolatorError> {
        for (field, v) in [("cpus", res.cpus), ("cpu_limit", res.cpu_limit)] {
            if !v.is_finite() || v < 0.0 {
                return Err(IsolatorError::invalid(
                    id,
                    field,
                    format!("{v} is not a non-negative number of cores"),
                ));
            }
        }
        Ok(())
    }

    fn fresh_suffices(dirs: &CgroupDirs, res: &Resources) -> bool {
        // v1's default shares are 1024, what no cpus ask for; v2's default
        // weight (100) is not what 1024 shares map to.
        res.cpus == 0.0
            && res.cpu_limit == 0.0
            && dirs.of("cpu").is_some_and(|d| d.version == Version::V1)
    }

    fn apply(
        id: &ContainerId,
        dirs: &CgroupDirs,
        res: &Resources,
        update: bool,
    ) -> Result<(), IsolatorError> {
        let Some(d) = dirs.of("cpu") else {
            return Ok(());
        };
        let v2 = d.version == Version::V2;
        let c = CpuController::new(d.path.clone(), d.path.clone(), v2);
        let shares = cpu_shares(res.cpus);
        let value = if v2 { cpu_weight(shares) } else { shares };
        c.set_shares(value)
            .map_err(|e| cg_err(id, &format!("set cpu shares of {}", d.path.display()), e))?;
        // A new cgroup has no quota and the default period: writing them
        // anyway costs the kernel a walk of every cgroup on the node
        // (tg_set_cfs_bandwidth checks the whole tree), which with
        // thousands of containers was a large part of each launch.
        if !update && res.cpu_limit == 0.0 {
            return Ok(());
        }
        let quota = quota_us(res.cpu_limit);
        c.set_cfs_quota_and_period(Some(quota), Some(CFS_PERIOD_US))
            .map_err(|e| cg_err(id, &format!("set cpu quota of {}", d.path.display()), e))
    }

    fn usage(id: &ContainerId, dirs: &CgroupDirs) -> Result<ResourceStatistics, IsolatorError> {
        let mut s = ResourceStatistics::default();
        let Some(d) = dirs.of("cpu") else {
            return Ok(s);
        };
        let stat = read(id, &d.path.join("cpu.stat"))?;
        s.cpus_nr_periods = keyed(&stat, "nr_periods").unwrap_or(0);
        s.cpus_nr_throttled = keyed(&stat, "nr_throttled").unwrap_or(0);
        match d.version {
            Version::V2 => {
                s.cpus_throttled_time_secs =
                    keyed(&stat, "throttled_usec").unwrap_or(0) as f64 / 1e6;
                s.cpus_user_time_secs = keyed(&stat, "user_usec").unwrap_or(0) as f64 / 1e6;
                s.cpus_system_time_secs = keyed(&stat, "system_usec").unwrap_or(0) as f64 / 1e6;
                let max = read(id, &d.path.join("cpu.max"))?;
                let mut it = max.split_whitespace();
                if let (Some(q), Some(p)) = (it.next(), it.next()) {
                    if let (Ok(q), Ok(p)) = (q.parse::<f64>(), p.parse::<f64>()) {
                        s.cpus_limit = q / p;
                    }
                }
            }
            Version::V1 => {
                s.cpus_throttled_time_secs =
                    keyed(&stat, "throttled_time").unwrap_or(0) as f64 / 1e9;
                let q: i64 = read(id, &d.path.join("cpu.cfs_quota_us"))?
                    .trim()
                    .parse()
                    .unwrap_or(-1);
                let p: i64 = read(id, &d.path.join("cpu.cfs_period_us"))?
                    .trim()
                    .parse()
                    .unwrap_or(0);
                if q > 0 && p > 0 {
                    s.cpus_limit = q as f64 / p as f64;
                }
                if let Some(acct) = dirs.of("cpuacct") {
                    // cpuacct.stat counts USER_HZ ticks.
                    let text = read(id, &acct.path.join("cpuacct.stat"))?;
                    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
                        .ok()
                        .flatten()
                        .unwrap_or(100) as f64;
                    s.cpus_user_time_secs = keyed(&text, "user").unwrap_or(0) as f64 / hz;
                    s.cpus_system_time_secs = keyed(&text, "system").unwrap_or(0) as f64 / hz;
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_weights() {
        assert_eq!(cpu_shares(0.0), 1024);
        assert_eq!(cpu_shares(1.0), 1024);
        assert_eq!(cpu_shares(0.5), 512);
        assert_eq!(cpu_shares(2.5), 2560);
        // The minimum, as the seeds do.
        assert_eq!(cpu_shares(0.001), 2);
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(262_144), 10_000);
        assert_eq!(cpu_weight(1024), 39);
        assert_eq!(quota_us(0.5), 50_000);
        assert_eq!(quota_us(0.0), -1);
        assert_eq!(quota_us(0.001), 1_000);
    }
}
