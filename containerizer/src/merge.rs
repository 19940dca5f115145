//! Merging the launch infos that isolators return from `prepare` into the
//! one the launcher gets. Additive fields are unioned; single-valued ones
//! may be set by one isolator only (or by several with the same value);
//! anything else is a conflict that fails the launch.

use berth_state::{LaunchInfo, Namespace};
use std::collections::BTreeMap;

/// Merges `infos` (each with the name of the isolator that returned it).
pub fn merge(infos: &[(String, LaunchInfo)]) -> Result<LaunchInfo, String> {
    let mut out = LaunchInfo::default();
    let mut env_from: BTreeMap<String, &str> = BTreeMap::new();
    let mut target_from: BTreeMap<String, &str> = BTreeMap::new();
    let mut rlimit_from: BTreeMap<String, &str> = BTreeMap::new();
    let mut device_from: BTreeMap<String, &str> = BTreeMap::new();
    let mut single: BTreeMap<&'static str, (&str, String)> = BTreeMap::new();

    for (who, info) in infos {
        for (k, v) in &info.env {
            if let Some(prev) = out.env.get(k).filter(|p| *p != v) {
                return Err(format!(
                    "env {k}: {} sets {prev:?}, {who} sets {v:?}",
                    env_from[k]
                ));
            }
            out.env.insert(k.clone(), v.clone());
            env_from.insert(k.clone(), who);
        }
        for m in &info.mounts {
            if let Some(prev) = target_from.get(&m.target) {
                return Err(format!(
                    "mount target {} is set by {prev} and by {who}",
                    m.target
                ));
            }
            target_from.insert(m.target.clone(), who);
            out.mounts.push(m.clone());
        }
        for ns in &info.clone_namespaces {
            if !out.clone_namespaces.contains(ns) {
                out.clone_namespaces.push(*ns);
            }
        }
        for j in &info.join_namespaces {
            if let Some(prev) = out
                .join_namespaces
                .iter()
                .find(|p| p.namespace == j.namespace)
            {
                if prev.path != j.path {
                    return Err(format!(
                        "{} namespace joined at {} and at {} (by {who})",
                        ns_name(j.namespace),
                        prev.path,
                        j.path
                    ));
                }
            } else {
                out.join_namespaces.push(j.clone());
            }
        }
        for r in &info.rlimits {
            if let Some(prev) = out.rlimits.iter().find(|p| p.name == r.name) {
                if prev != r {
                    return Err(format!(
                        "rlimit {} is set by {} and differently by {who}",
                        r.name, rlimit_from[&r.name]
                    ));
                }
            } else {
                rlimit_from.insert(r.name.clone(), who);
                out.rlimits.push(r.clone());
            }
        }
        for (field, value) in [
            ("rootfs", &info.rootfs),
            ("working_dir", &info.working_dir),
            ("hostname", &info.hostname),
        ] {
            if value.is_empty() {
                continue;
            }
            match single.get(field) {
                Some((prev_who, prev)) if prev != value => {
                    return Err(format!(
                        "{field}: {prev_who} sets {prev:?}, {who} sets {value:?}"
                    ))
                }
                _ => {
                    single.insert(field, (who, value.clone()));
                }
            }
        }
        if !info.capabilities.is_empty() {
            if !out.capabilities.is_empty() && out.capabilities != info.capabilities {
                return Err(format!(
                    "capabilities are set differently by two isolators (one is {who})"
                ));
            }
            out.capabilities = info.capabilities.clone();
        }
        for p in &info.cgroup_paths {
            if !out.cgroup_paths.contains(p) {
                out.cgroup_paths.push(p.clone());
            }
        }
        if !info.seccomp_bpf.is_empty() {
            if !out.seccomp_bpf.is_empty() && out.seccomp_bpf != info.seccomp_bpf {
                return Err(format!(
                    "a seccomp filter is set by two isolators (one is {who})"
                ));
            }
            out.seccomp_bpf = info.seccomp_bpf.clone();
        }
        if !info.seccomp_oci.is_empty() {
            if !out.seccomp_oci.is_empty() && out.seccomp_oci != info.seccomp_oci {
                return Err(format!(
                    "a seccomp profile is set by two isolators (one is {who})"
                ));
            }
            out.seccomp_oci = info.seccomp_oci.clone();
        }
        for (maps, theirs, what) in [
            (&mut out.uid_mappings, &info.uid_mappings, "uid"),
            (&mut out.gid_mappings, &info.gid_mappings, "gid"),
        ] {
            if !theirs.is_empty() {
                if !maps.is_empty() && maps != theirs {
                    return Err(format!(
                        "{what} mappings are set differently by two isolators (one is {who})"
                    ));
                }
                *maps = theirs.clone();
            }
        }
        // Hardening adds up: any isolator may ask for it.
        out.readonly_root |= info.readonly_root;
        for (mine, theirs) in [
            (&mut out.hidden_paths, &info.hidden_paths),
            (&mut out.masked_paths, &info.masked_paths),
            (&mut out.readonly_paths, &info.readonly_paths),
        ] {
            for p in theirs {
                if !mine.contains(p) {
                    mine.push(p.clone());
                }
            }
        }
        out.pre_exec_commands
            .extend(info.pre_exec_commands.iter().cloned());
        for d in &info.devices {
            if let Some(prev) = device_from.get(&d.path) {
                return Err(format!(
                    "device node {} is made by {prev} and by {who}",
                    d.path
                ));
            }
            device_from.insert(d.path.clone(), who);
            out.devices.push(d.clone());
        }
    }
    for j in &out.join_namespaces {
        if out.clone_namespaces.contains(&j.namespace) {
            return Err(format!(
                "the {} namespace is both created and joined ({})",
                ns_name(j.namespace),
                j.path
            ));
        }
    }
    for (field, (_, value)) in single {
        match field {
            "rootfs" => out.rootfs = value,
            "working_dir" => out.working_dir = value,
            _ => out.hostname = value,
        }
    }
    Ok(out)
}

fn ns_name(ns: i32) -> &'static str {
    Namespace::try_from(ns)
        .map(|n| n.as_str_name())
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_state::{DeviceNode, Mount, NamespaceJoin};

    fn named(who: &str, info: LaunchInfo) -> (String, LaunchInfo) {
        (who.to_string(), info)
    }

    #[test]
    fn unions_and_single_values() {
        let a = LaunchInfo {
            clone_namespaces: vec![Namespace::Pid as i32],
            env: [("A".to_string(), "1".to_string())].into(),
            hostname: "h".into(),
            ..Default::default()
        };
        let b = LaunchInfo {
            clone_namespaces: vec![Namespace::Pid as i32, Namespace::Mount as i32],
            env: [("A".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let m = merge(&[named("a", a), named("b", b)]).unwrap();
        assert_eq!(m.clone_namespaces.len(), 2);
        assert_eq!(m.hostname, "h");
    }

    #[test]
    fn conflicts_name_both_sides() {
        let r = |p: &str| LaunchInfo {
            rootfs: p.into(),
            ..Default::default()
        };
        let e = merge(&[named("x", r("/a")), named("y", r("/b"))]).unwrap_err();
        assert!(
            e.contains("rootfs") && e.contains('x') && e.contains('y'),
            "{e}"
        );

        let m = |t: &str| LaunchInfo {
            mounts: vec![Mount {
                target: t.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = merge(&[named("x", m("/data")), named("y", m("/data"))]).unwrap_err();
        assert!(e.contains("/data"), "{e}");

        let e = merge(&[
            named(
                "x",
                LaunchInfo {
                    clone_namespaces: vec![Namespace::Net as i32],
                    ..Default::default()
                },
            ),
            named(
                "y",
                LaunchInfo {
                    join_namespaces: vec![NamespaceJoin {
                        namespace: Namespace::Net as i32,
                        path: "/proc/1/ns/net".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ),
        ])
        .unwrap_err();
        assert!(e.contains("NET"), "{e}");

        let env = |v: &str| LaunchInfo {
            env: [("K".to_string(), v.to_string())].into(),
            ..Default::default()
        };
        assert!(merge(&[named("x", env("1")), named("y", env("2"))]).is_err());

        let dev = |p: &str| LaunchInfo {
            devices: vec![DeviceNode {
                path: p.into(),
                r#type: "c".into(),
                major: 1,
                minor: 3,
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = merge(&[named("x", dev("/dev/a")), named("y", dev("/dev/a"))]).unwrap_err();
        assert!(
            e.contains("/dev/a") && e.contains('x') && e.contains('y'),
            "{e}"
        );
        let m = merge(&[named("x", dev("/dev/a")), named("y", dev("/dev/b"))]).unwrap();
        let paths: Vec<&str> = m.devices.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["/dev/a", "/dev/b"]);
    }
}
