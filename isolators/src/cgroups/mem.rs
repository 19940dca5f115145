//! `cgroups/mem`: the memory limit (and soft limit), swap kept out of the
//! way (so a container at its limit is OOM-killed rather than swapped
//! without bound), the memory figures of usage(), and OOM detection —
//! surfaced by `watch` as a limitation with reason OOM_KILLED.

use super::{
    cg_err, keyed, oom, read, write, CgroupDir, CgroupDirs, CgroupIsolator, Subsystem, Version,
};
use crate::{IsolatorError, Limitation};
use berth_state::{ContainerId, ResourceStatistics, Resources, TerminationReason};
use cgroups_rs::fs::memory::MemController;
use futures::future::BoxFuture;
use std::path::Path;

pub(crate) const NAME: &str = "cgroups/mem";

/// Below this a container cannot even exec (the kernel would refuse or
/// OOM-kill at once); a clear error is better.
const MIN_LIMIT: u64 = 4 << 20;

/// The `cgroups/mem` subsystem.
pub enum Memory {}

impl Memory {
    /// The `cgroups/mem` isolator.
    pub fn isolator(
        h: super::Hierarchies,
        cgroup_root: impl Into<String>,
    ) -> CgroupIsolator<Memory> {
        CgroupIsolator::new(h, cgroup_root)
    }
}

/// `n` bytes for people: "32.0 MiB".
pub(crate) fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn current_usage(id: &ContainerId, d: &CgroupDir) -> Result<u64, IsolatorError> {
    let file = match d.version {
        Version::V1 => "memory.usage_in_bytes",
        Version::V2 => "memory.current",
    };
    Ok(read(id, &d.path.join(file))?.trim().parse().unwrap_or(0))
}

fn below_usage(id: &ContainerId, limit: u64, usage: u64) -> IsolatorError {
    IsolatorError::invalid(
        id,
        "memory",
        format!(
            "the new limit {} is below the container's current usage {} and the kernel could not reclaim enough",
            human(limit),
            human(usage)
        ),
    )
}

fn apply_v1(id: &ContainerId, d: &CgroupDir, res: &Resources) -> Result<(), IsolatorError> {
    let c = MemController::new(d.path.clone(), d.path.clone(), false);
    let limit = if res.memory_bytes > 0 {
        res.memory_bytes as i64
    } else {
        -1
    };
    let memsw = d.path.join("memory.memsw.limit_in_bytes");
    let has_memsw = memsw.exists();
    // memsw must stay ≥ the limit: raise memsw first when raising, lower
    // the limit first when lowering. Trying both orders covers both.
    let set_limit = |c: &MemController| -> Result<(), IsolatorError> {
        match c.set_limit(limit) {
            Ok(()) => Ok(()),
            Err(e) => {
                let usage = current_usage(id, d).unwrap_or(0);
                // The kernel answers EBUSY when it cannot reclaim down to
                // the new limit.
                if limit > 0 && usage > limit as u64 {
                    Err(below_usage(id, limit as u64, usage))
                } else {
                    Err(cg_err(
                        id,
                        &format!("set memory limit of {}", d.path.display()),
                        e,
                    ))
                }
            }
        }
    };
    if has_memsw {
        let sw = limit.to_string();
        if write(id, &memsw, &sw).is_ok() {
            set_limit(&c)?;
        } else {
            set_limit(&c)?;
            write(id, &memsw, &sw)?;
        }
    } else {
        set_limit(&c)?;
    }
    let soft = if res.memory_soft_bytes > 0 {
        res.memory_soft_bytes as i64
    } else {
        -1
    };
    c.set_soft_limit(soft).map_err(|e| {
        cg_err(
            id,
            &format!("set memory soft limit of {}", d.path.display()),
            e,
        )
    })
}

fn apply_v2(
    id: &ContainerId,
    d: &CgroupDir,
    res: &Resources,
    update: bool,
) -> Result<(), IsolatorError> {
    let limit = res.memory_bytes;
    if update && limit > 0 {
        // v2 does not refuse a limit below usage: it reclaims and then
        // OOM-kills. A lower limit must be an error, not a kill: reclaim
        // first (memory.reclaim, kernel ≥ 5.19), then check.
        let usage = current_usage(id, d)?;
        if usage > limit {
            let reclaim = d.path.join("memory.reclaim");
            let _ = std::fs::write(&reclaim, (usage - limit).to_string());
            let usage = current_usage(id, d)?;
            if usage > limit {
                return Err(below_usage(id, limit, usage));
            }
        }
    }
    let max = if limit > 0 {
        limit.to_string()
    } else {
        "max".into()
    };
    write(id, &d.path.join("memory.max"), &max)?;
    let swap = d.path.join("memory.swap.max");
    if swap.exists() {
        write(id, &swap, if limit > 0 { "0" } else { "max" })?;
    }
    let low = if res.memory_soft_bytes > 0 {
        res.memory_soft_bytes.to_string()
    } else {
        "0".into()
    };
    write(id, &d.path.join("memory.low"), &low)
}

impl Subsystem for Memory {
    const NAME: &'static str = NAME;
    const CONTROLLERS: &'static [&'static str] = &["memory"];
    const WATCHES: bool = true;

    fn fresh_suffices(_dirs: &CgroupDirs, res: &Resources) -> bool {
        // No limit, no swap limit, no protection: a new cgroup's values.
        res.memory_bytes == 0 && res.memory_soft_bytes == 0
    }

    fn validate(id: &ContainerId, res: &Resources) -> Result<(), IsolatorError> {
        if res.memory_bytes > 0 && res.memory_bytes < MIN_LIMIT {
            return Err(IsolatorError::invalid(
                id,
                "memory",
                format!(
                    "{} is below the minimum of {}",
                    human(res.memory_bytes),
                    human(MIN_LIMIT)
                ),
            ));
        }
        if res.memory_bytes > 0 && res.memory_soft_bytes > res.memory_bytes {
            return Err(IsolatorError::invalid(
                id,
                "memory_soft",
                format!(
                    "soft limit {} is above the hard limit {}",
                    human(res.memory_soft_bytes),
                    human(res.memory_bytes)
                ),
            ));
        }
        Ok(())
    }

    fn apply(
        id: &ContainerId,
        dirs: &CgroupDirs,
        res: &Resources,
        update: bool,
    ) -> Result<(), IsolatorError> {
        let Some(d) = dirs.of("memory") else {
            return Ok(());
        };
        match d.version {
            Version::V1 => apply_v1(id, d, res),
            Version::V2 => apply_v2(id, d, res, update),
        }
    }

    fn usage(id: &ContainerId, dirs: &CgroupDirs) -> Result<ResourceStatistics, IsolatorError> {
        let mut s = ResourceStatistics::default();
        let Some(d) = dirs.of("memory") else {
            return Ok(s);
        };
        let stat = read(id, &d.path.join("memory.stat"))?;
        let num = |f: &str| -> u64 {
            std::fs::read_to_string(d.path.join(f))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0)
        };
        s.mem_usage_bytes = current_usage(id, d)?;
        match d.version {
            Version::V1 => {
                // total_* include nested containers' cgroups.
                s.mem_rss_bytes = keyed(&stat, "total_rss").unwrap_or(0);
                s.mem_cache_bytes = keyed(&stat, "total_cache").unwrap_or(0);
                s.mem_swap_bytes = keyed(&stat, "total_swap").unwrap_or(0);
                s.mem_max_usage_bytes = num("memory.max_usage_in_bytes");
                // An unlimited v1 cgroup reports a huge page-rounded i64 max.
                let limit = num("memory.limit_in_bytes");
                s.mem_limit_bytes = if limit >= (i64::MAX as u64) & !0xfff {
                    0
                } else {
                    limit
                };
            }
            Version::V2 => {
                s.mem_rss_bytes = keyed(&stat, "anon").unwrap_or(0);
                s.mem_cache_bytes = keyed(&stat, "file").unwrap_or(0);
                s.mem_swap_bytes = num("memory.swap.current");
                // memory.peak exists from kernel 5.19.
                s.mem_max_usage_bytes = num("memory.peak");
                s.mem_limit_bytes = num("memory.max");
            }
        }
        Ok(s)
    }

    fn limitation(id: &ContainerId, dirs: &CgroupDirs) -> Option<Limitation> {
        let d = dirs.of("memory")?;
        (oom::oom_kills(d) > 0).then(|| Limitation {
            reason: TerminationReason::OomKilled,
            resource: "memory".into(),
            message: oom_message(id, d),
        })
    }

    fn watch(id: ContainerId, dirs: CgroupDirs) -> BoxFuture<'static, Limitation> {
        let Some(d) = dirs.of("memory").cloned() else {
            return Box::pin(futures::future::pending());
        };
        Box::pin(async move {
            oom::wait_for_oom(&id, &d).await;
            let message = oom_message(&id, &d);
            Limitation {
                reason: TerminationReason::OomKilled,
                resource: "memory".into(),
                message,
            }
        })
    }
}

/// "memory limit of 32.0 MiB reached (usage 31.8 MiB, peak 32.0 MiB); the
/// kernel's OOM killer killed 1 process".
fn oom_message(id: &ContainerId, d: &CgroupDir) -> String {
    let num = |p: &Path| -> u64 {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    let (limit, peak, kills) = match d.version {
        Version::V1 => (
            num(&d.path.join("memory.limit_in_bytes")),
            num(&d.path.join("memory.max_usage_in_bytes")),
            oom::oom_kills(d),
        ),
        Version::V2 => (
            num(&d.path.join("memory.max")),
            num(&d.path.join("memory.peak")),
            oom::oom_kills(d),
        ),
    };
    let usage = current_usage(id, d).unwrap_or(0);
    let peak = if peak > 0 {
        format!(", peak {}", human(peak))
    } else {
        String::new()
    };
    format!(
        "memory limit of {} reached (usage {}{peak}); the kernel's OOM killer killed {kills} process(es)",
        human(limit),
        human(usage)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(32 << 20), "32.0 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }

    #[test]
    fn limits_are_validated() {
        let id = ContainerId::new("c");
        let r = Resources {
            memory_bytes: 1024,
            ..Default::default()
        };
        let e = Memory::validate(&id, &r).unwrap_err().to_string();
        assert!(e.contains("memory") && e.contains("minimum"), "{e}");
        let r = Resources {
            memory_bytes: 64 << 20,
            memory_soft_bytes: 128 << 20,
            ..Default::default()
        };
        assert!(Memory::validate(&id, &r).is_err());
    }
}
