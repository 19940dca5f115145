//! Capability sets shared by the launcher (which applies them) and
//! isolators (which may narrow them).

/// berth's default bounding set: Docker's 14 capabilities.
pub const DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A capability list naming only this is the empty set: an empty list
/// means [`DEFAULT`] (`LaunchInfo.capabilities`), so dropping every
/// capability (`--cap-drop ALL`) needs a name of its own.
pub const NONE: &str = "NONE";

/// Every capability name, in number order (`CAP_CHOWN` = 0 …).
pub const ALL: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// `name` as berth writes it (`net_raw`, `NET_RAW`, `CAP_NET_RAW` →
/// `CAP_NET_RAW`), if it is a capability.
pub fn canonical(name: &str) -> Option<&'static str> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL.iter().copied().find(|n| *n == full)
}

/// The set `base` (empty = [`DEFAULT`]) with Docker's `--cap-drop` then
/// `--cap-add` applied; `ALL` in either means every capability.
/// Unknown names are an error naming them.
pub fn adjust(base: &[String], add: &[String], drop: &[String]) -> Result<Vec<String>, String> {
    let named = |list: &[String]| -> Result<(bool, Vec<&'static str>), String> {
        let mut all = false;
        let mut out = Vec::new();
        for n in list {
            if n.trim().eq_ignore_ascii_case("ALL") {
                all = true;
            } else {
                out.push(canonical(n).ok_or_else(|| format!("unknown capability {n:?}"))?);
            }
        }
        Ok((all, out))
    };
    let (add_all, add) = named(add)?;
    let (drop_all, drop) = named(drop)?;
    let mut set: Vec<String> = if base.is_empty() {
        DEFAULT.iter().map(|s| s.to_string()).collect()
    } else {
        base.iter().filter(|c| *c != NONE).cloned().collect()
    };
    if drop_all {
        set.clear();
    }
    set.retain(|c| !drop.contains(&c.as_str()));
    let adding: Vec<&str> = if add_all { ALL.to_vec() } else { add };
    for c in adding {
        if !set.iter().any(|s| s == c) {
            set.push(c.to_string());
        }
    }
    if set.is_empty() {
        set.push(NONE.to_string());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_every_capability_is_the_empty_set_not_the_default() {
        let none = adjust(&[], &[], &["ALL".to_string()]).unwrap();
        assert_eq!(none, [NONE]);
        // And adding to it starts from nothing.
        let kill = adjust(&none, &["KILL".to_string()], &[]).unwrap();
        assert_eq!(kill, ["CAP_KILL"]);
    }

    #[test]
    fn adjust_drops_then_adds() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let r = adjust(&[], &s(&["sys_admin"]), &s(&["NET_RAW"])).unwrap();
        assert!(r.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!r.contains(&"CAP_NET_RAW".to_string()));
        assert_eq!(r.len(), DEFAULT.len());
        let r = adjust(&[], &s(&["CAP_KILL"]), &s(&["ALL"])).unwrap();
        assert_eq!(r, s(&["CAP_KILL"]));
        assert_eq!(adjust(&[], &s(&["all"]), &[]).unwrap().len(), ALL.len());
        assert!(adjust(&[], &s(&["NOPE"]), &[])
            .unwrap_err()
            .contains("NOPE"));
    }
}
