//! Linux capabilities: names, berth's default set (Docker's 14), and
//! reducing the init's sets before it execs.

use crate::sys::{self, CapSets};

/// Capability names in number order (`CAP_CHOWN` = 0 …).
const NAMES: &[&str] = berth_state::capabilities::ALL;

pub use berth_state::capabilities::DEFAULT;

/// A capability name that berth does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown capability {0:?} (expected a name like CAP_CHOWN)")]
pub struct UnknownCapability(pub String);

/// The number of capability `name` (`CAP_` prefix optional, any case).
pub fn number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

/// The bit mask of `names`; empty `names` means [`DEFAULT`], `[NONE]` none.
pub fn mask(names: &[String]) -> Result<u64, UnknownCapability> {
    let mut m = 0u64;
    if names.is_empty() {
        for n in DEFAULT {
            m |= 1 << number(n).unwrap_or(0);
        }
        return Ok(m);
    }
    for n in names
        .iter()
        .filter(|n| *n != berth_state::capabilities::NONE)
    {
        let bit = number(n).ok_or_else(|| UnknownCapability(n.clone()))?;
        m |= 1 << bit;
    }
    Ok(m)
}

/// The highest capability the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

/// Reduces the calling (single-threaded) process to the capabilities in
/// `keep`: bounding set via `PR_CAPBSET_DROP`, then effective, permitted
/// and inheritable via `capset`, and the ambient set cleared. Called after
/// the uid switch (with `PR_SET_KEEPCAPS`) so that permitted caps survive
/// it long enough to be trimmed here.
pub fn restrict_to(keep: u64) -> std::io::Result<()> {
    // Dropping from the bounding set needs CAP_SETPCAP in the effective
    // set, which a uid switch just cleared: raise effective to permitted.
    let cur = sys::capget()?;
    sys::capset(CapSets {
        effective: cur.permitted,
        ..cur
    })?;
    for cap in 0..=last_cap() {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        // EINVAL: the kernel does not know this cap; nothing to drop.
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(std::io::Error::last_os_error());
        }
    }
    let allowed = cur.permitted & keep;
    sys::capset(CapSets {
        effective: allowed,
        permitted: allowed,
        inheritable: cur.inheritable & keep,
    })?;
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mask_is_dockers_fourteen() {
        let m = mask(&[]).unwrap();
        assert_eq!(m.count_ones(), 14);
        // The value Docker containers show as CapBnd.
        assert_eq!(m, 0x00000000a80425fb);
    }

    #[test]
    fn names_parse_with_or_without_prefix() {
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("sys_admin"), Some(21));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(
            mask(&["CAP_NOPE".into()]),
            Err(UnknownCapability("CAP_NOPE".into()))
        );
        assert_eq!(mask(&["CAP_KILL".into()]).unwrap(), 1 << 5);
    }
}
