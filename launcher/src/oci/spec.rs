//! A launch spec as an OCI runtime-spec bundle (`config.json`), through
//! oci-spec's types.
//!
//! What berth's own init does (namespaces, rootfs, proc/dev/sys, masked
//! and read-only paths, volumes, rlimits, capabilities, user, hostname)
//! becomes the runtime's job; `cgroupsPath` names berth's own cgroup of
//! the container (the cgroup isolators made it, with its limits, at
//! prepare), so the runtime's init joins it and berth keeps owning limits,
//! usage and OOM.

use crate::LaunchSpec;
use berth_state::{LaunchInfo, Namespace};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilities, LinuxIdMapping, LinuxIdMappingBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources, Mount, MountBuilder,
    PosixRlimit, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    UserBuilder,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the sandbox is inside an image container (as the filesystem
/// isolator mounts it).
const SANDBOX_IN_ROOTFS: &str = "/mnt/mesos/sandbox";

/// What the OCI launcher does not do (yet): refused at fork with this
/// text rather than run differently from what was asked.
pub fn unsupported(spec: &LaunchSpec) -> Option<&'static str> {
    let info = &spec.launch_info;
    // A namespace named by a file (the network isolator's netns) is the
    // spec's namespace path; one of a process (a pod's, an exec's parent)
    // is a nested container's.
    let joins_process = info
        .join_namespaces
        .iter()
        .any(|j| j.path.is_empty() || j.process.is_some());
    if spec.id.parent.is_some() || joins_process {
        Some("nested containers (pods, exec) under an OCI runtime")
    } else if spec.io.tty {
        Some("a tty (-t) under an OCI runtime")
    } else if spec.init {
        Some("--init under an OCI runtime")
    } else if !info.devices.is_empty() {
        Some("--device under an OCI runtime")
    } else if !info.pre_exec_commands.is_empty() {
        Some("pre-exec commands under an OCI runtime")
    } else {
        None
    }
}

/// The runtime spec for `spec`, whose init joins `cgroups_path` (relative
/// to each hierarchy's root, as runtimes take it on cgroup v1).
/// `host_root_in`: a host-filesystem container's root is this empty dir
/// with the host's root bound on it (runc); `None`: `/` itself (gVisor,
/// whose gofer serves it).
pub fn build(
    spec: &LaunchSpec,
    cgroups_path: &str,
    host_root_in: Option<&Path>,
) -> Result<Spec, String> {
    let info = &spec.launch_info;
    let image = !info.rootfs.is_empty();
    let (uid, gid, groups) = spec.user.clone().unwrap_or((0, 0, Vec::new()));
    let user = UserBuilder::default()
        .uid(uid)
        .gid(gid)
        .additional_gids(groups)
        .build()
        .map_err(|e| e.to_string())?;
    let caps = capabilities(&info.capabilities)?;
    let cwd = match info.working_dir.as_str() {
        "" if image => "/".to_string(),
        "" => spec.sandbox_dir.display().to_string(),
        w => w.to_string(),
    };
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(spec.argv.clone())
        .env(
            spec.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(cwd)
        .user(user)
        .capabilities(caps)
        .rlimits(rlimits(info)?)
        .no_new_privileges(!info.allow_privilege_escalation)
        .build()
        .map_err(|e| e.to_string())?;
    let root = RootBuilder::default()
        .path(match (image, host_root_in) {
            (true, _) => PathBuf::from(&info.rootfs),
            (false, Some(dir)) => dir.to_path_buf(),
            (false, None) => PathBuf::from("/"),
        })
        .readonly(info.readonly_root)
        .build()
        .map_err(|e| e.to_string())?;

    let mut masked = oci_spec::runtime::get_default_maskedpaths();
    masked.extend([
        "/proc/interrupts".to_string(),
        "/sys/devices/virtual/powercap".into(),
    ]);
    masked.extend(info.masked_paths.iter().cloned());
    let mut readonly = oci_spec::runtime::get_default_readonly_paths();
    readonly.extend(info.readonly_paths.iter().cloned());
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(info))
        .cgroups_path(PathBuf::from(cgroups_path))
        .masked_paths(masked)
        .readonly_paths(readonly)
        .sysctl(
            info.sysctls
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        // Limits are berth's cgroup isolators' (already written in the
        // cgroup at cgroupsPath): the runtime gets none to write over them.
        .resources(LinuxResources::default());
    if !info.seccomp_oci.is_empty() {
        let seccomp: oci_spec::runtime::LinuxSeccomp =
            serde_json::from_str(&info.seccomp_oci).map_err(|e| format!("seccomp profile: {e}"))?;
        linux = linux.seccomp(seccomp);
    }
    if !info.uid_mappings.is_empty() {
        linux = linux
            .uid_mappings(id_mappings(&info.uid_mappings)?)
            .gid_mappings(id_mappings(&info.gid_mappings)?);
    }
    // A volume's propagation needs the runtime's copy of the host's
    // mounts to keep theirs: rshared ones stay peers of the host's (runc
    // then makes only the rootfs's parent mount private), rslave ones
    // slaves (runc's default, said explicitly).
    let has = |p: &str| info.mounts.iter().any(|m| m.options.iter().any(|o| o == p));
    if has("rshared") {
        linux = linux.rootfs_propagation("rshared");
    } else if has("rslave") {
        linux = linux.rootfs_propagation("rslave");
    }
    let linux = linux.build().map_err(|e| e.to_string())?;

    let mut oci = Spec::default();
    oci.set_process(Some(process))
        .set_root(Some(root))
        .set_hostname(Some(info.hostname.clone()).filter(|h| !h.is_empty()))
        .set_mounts(Some(mounts(spec, host_root_in)?))
        .set_linux(Some(linux))
        .set_annotations(None);
    Ok(oci)
}

fn capabilities(names: &[String]) -> Result<LinuxCapabilities, String> {
    let names: Vec<String> = if names.is_empty() {
        crate::capabilities::DEFAULT
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        names.to_vec()
    };
    let mut set = HashSet::new();
    for n in names
        .iter()
        .filter(|n| *n != berth_state::capabilities::NONE)
    {
        let upper = n.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        set.insert(Capability::from_str(bare).map_err(|_| format!("unknown capability {n:?}"))?);
    }
    // As berth's own init: the same set whatever the user.
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()))
        .set_effective(Some(set.clone()))
        .set_permitted(Some(set))
        .set_inheritable(None)
        .set_ambient(None);
    Ok(caps)
}

fn rlimits(info: &LaunchInfo) -> Result<Vec<PosixRlimit>, String> {
    info.rlimits
        .iter()
        .map(|r| {
            let name = format!("RLIMIT_{}", r.name.to_ascii_uppercase());
            let typ = PosixRlimitType::from_str(&name)
                .map_err(|_| format!("unknown rlimit {:?}", r.name))?;
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(r.soft)
                .hard(r.hard)
                .build()
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn id_mappings(maps: &[berth_state::IdMapping]) -> Result<Vec<LinuxIdMapping>, String> {
    maps.iter()
        .map(|m| {
            LinuxIdMappingBuilder::default()
                .container_id(m.container_id)
                .host_id(m.host_id)
                .size(m.size)
                .build()
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// The namespaces berth's isolators asked for: made, or joined by path
/// (the network isolator's netns); no network namespace means the host's
/// network, as with berth's own launcher.
fn namespaces(info: &LaunchInfo) -> Vec<LinuxNamespace> {
    let made = info.clone_namespaces.iter().filter_map(|n| {
        LinuxNamespaceBuilder::default()
            .typ(oci_namespace(*n)?)
            .build()
            .ok()
    });
    let joined = info.join_namespaces.iter().filter_map(|j| {
        LinuxNamespaceBuilder::default()
            .typ(oci_namespace(j.namespace)?)
            .path(PathBuf::from(&j.path))
            .build()
            .ok()
    });
    made.chain(joined).collect()
}

fn oci_namespace(n: i32) -> Option<LinuxNamespaceType> {
    Some(match Namespace::try_from(n).ok()? {
        Namespace::Mount => LinuxNamespaceType::Mount,
        Namespace::Pid => LinuxNamespaceType::Pid,
        Namespace::Net => LinuxNamespaceType::Network,
        Namespace::Ipc => LinuxNamespaceType::Ipc,
        Namespace::Uts => LinuxNamespaceType::Uts,
        Namespace::Cgroup => LinuxNamespaceType::Cgroup,
        Namespace::User => LinuxNamespaceType::User,
        _ => return None,
    })
}

/// Whether the container has a network namespace of its own (made, or
/// the network isolator's joined).
fn own_network(info: &LaunchInfo) -> bool {
    info.clone_namespaces.contains(&(Namespace::Net as i32))
        || info
            .join_namespaces
            .iter()
            .any(|j| j.namespace == Namespace::Net as i32)
}

/// The runtime's standard mounts, then the sandbox (a host-filesystem
/// container sees it at its own path; an image container gets it from
/// the filesystem isolator's mounts), a private `/tmp` on the host's root,
/// and the isolators' mounts (volumes). A relative target lies in the
/// sandbox where the container sees it.
fn mounts(spec: &LaunchSpec, host_root_in: Option<&Path>) -> Result<Vec<Mount>, String> {
    let info = &spec.launch_info;
    let image = !info.rootfs.is_empty();
    let mut out = oci_spec::runtime::get_default_mounts();
    // A fresh cgroup mount of the container's own cgroups needs a cgroup
    // namespace; without one, none (as berth's own init on the host root).
    if !info.clone_namespaces.contains(&(Namespace::Cgroup as i32)) {
        out.retain(|m| m.destination() != Path::new("/sys/fs/cgroup"));
    }
    // A fresh sysfs needs a network namespace of its own; else the
    // host's is bound (read-only), as berth's own init does.
    if !own_network(info) {
        for m in out.iter_mut() {
            if m.destination() == Path::new("/sys") {
                *m = bind(
                    Path::new("/sys"),
                    Path::new("/sys"),
                    &["rbind", "ro", "nosuid", "nodev", "noexec"],
                )?;
            }
        }
    }
    let shm = info.shm_size_bytes;
    if shm > 0 {
        for m in out.iter_mut() {
            if m.destination() == Path::new("/dev/shm") {
                m.set_options(Some(vec![
                    "nosuid".into(),
                    "noexec".into(),
                    "nodev".into(),
                    "mode=1777".into(),
                    format!("size={shm}"),
                ]));
            }
        }
    }
    let sandbox_seen = if image {
        PathBuf::from(SANDBOX_IN_ROOTFS)
    } else {
        // The private /tmp first (berth's dirs may lie in the host's
        // /tmp), then berth's binaries hidden under the host's /dev/null
        // (before `/dev` is replaced) and berth's dirs under empty tmpfs,
        // then the sandbox (in berth's state, so under one of those by
        // then) bound back in.
        let s = spec.sandbox_dir.clone();
        let mut first = Vec::new();
        if host_root_in.is_some() {
            // runc cannot pivot from the host's root into itself: its root
            // is an empty dir with the host's root bound on it (bind
            // sources are then looked up on the host, not in what is being
            // built).
            first.push(bind(Path::new("/"), Path::new("/"), &["rbind", "ro"])?);
        }
        first.push(tmpfs("/tmp", "1777")?);
        let mut hidden: Vec<&Path> = info.hidden_paths.iter().map(Path::new).collect();
        hidden.sort_by_key(|h| h.is_dir());
        for h in hidden {
            first.push(match h.is_dir() {
                true => tmpfs(h, "755")?,
                false => bind(Path::new("/dev/null"), h, &["bind", "ro"])?,
            });
        }
        first.push(bind(&s, &s, &["rbind", "rw"])?);
        first.append(&mut out);
        out = first;
        s
    };
    for m in &info.mounts {
        let target = Path::new(&m.target);
        let dest = if target.is_absolute() {
            target.to_path_buf()
        } else {
            sandbox_seen.join(target)
        };
        let mut options = m.options.clone();
        if m.fs_type.is_empty() && !options.iter().any(|o| o == "bind" || o == "rbind") {
            options.push("rbind".into());
        }
        let mut b = MountBuilder::default()
            .destination(dest)
            .source(PathBuf::from(&m.source))
            .options(options);
        b = b.typ(if m.fs_type.is_empty() {
            "bind".to_string()
        } else {
            m.fs_type.clone()
        });
        out.push(b.build().map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn tmpfs(dest: impl AsRef<Path>, mode: &str) -> Result<Mount, String> {
    MountBuilder::default()
        .destination(dest.as_ref())
        .typ("tmpfs")
        .source("tmpfs")
        .options(vec![
            "nosuid".into(),
            "nodev".into(),
            format!("mode={mode}"),
        ])
        .build()
        .map_err(|e| e.to_string())
}

fn bind(source: &Path, dest: &Path, options: &[&str]) -> Result<Mount, String> {
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_state::{ContainerId, Rlimit};

    fn spec(info: LaunchInfo) -> LaunchSpec {
        LaunchSpec {
            id: ContainerId::new("c1"),
            argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec![("A".into(), "b".into())],
            launch_info: info,
            user: Some((1000, 1000, vec![10])),
            sandbox_dir: "/var/lib/berth/sandboxes/c1".into(),
            sandbox_identity: None,
            stdio: Default::default(),
            init: false,
            io: Default::default(),
            restore: None,
        }
    }

    #[test]
    fn image_container_spec() {
        let info = LaunchInfo {
            rootfs: "/r".into(),
            clone_namespaces: vec![Namespace::Mount as i32, Namespace::Pid as i32],
            rlimits: vec![Rlimit {
                name: "nofile".into(),
                soft: 10,
                hard: 20,
            }],
            mounts: vec![
                berth_state::Mount {
                    source: "/host/vol".into(),
                    target: "data".into(),
                    fs_type: String::new(),
                    options: vec!["ro".into()],
                },
                berth_state::Mount {
                    source: "/sb".into(),
                    target: SANDBOX_IN_ROOTFS.into(),
                    fs_type: String::new(),
                    options: vec!["rbind".into(), "private".into()],
                },
            ],
            ..Default::default()
        };
        let s = build(&spec(info), "/berth/c1", None).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["root"]["path"], "/r");
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["process"]["env"][0], "A=b");
        assert_eq!(v["process"]["cwd"], "/");
        assert_eq!(v["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(v["linux"]["cgroupsPath"], "/berth/c1");
        let ns: Vec<_> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ns, ["mount", "pid"]);
        let mounts = v["mounts"].as_array().unwrap();
        let vol = mounts.iter().find(|m| m["source"] == "/host/vol").unwrap();
        assert_eq!(vol["destination"], "/mnt/mesos/sandbox/data");
        assert_eq!(vol["options"], serde_json::json!(["ro", "rbind"]));
        // No cgroup namespace: no cgroup mount.
        assert!(!mounts.iter().any(|m| m["destination"] == "/sys/fs/cgroup"));
        let caps = v["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), crate::capabilities::DEFAULT.len());
        // No propagating volume: the runtime's default root propagation.
        assert!(v["linux"].get("rootfsPropagation").is_none());
    }

    #[test]
    fn a_propagating_volume_sets_the_root_propagation() {
        for (prop, root) in [("rslave", "rslave"), ("rshared", "rshared")] {
            let info = LaunchInfo {
                rootfs: "/r".into(),
                mounts: vec![berth_state::Mount {
                    source: "/host/vol".into(),
                    target: "/vol".into(),
                    fs_type: String::new(),
                    options: vec!["rbind".into(), prop.into()],
                }],
                ..Default::default()
            };
            let v = serde_json::to_value(build(&spec(info), "/berth/c1", None).unwrap()).unwrap();
            assert_eq!(v["linux"]["rootfsPropagation"], root);
            let vol = &v["mounts"].as_array().unwrap().last().unwrap().clone();
            assert_eq!(vol["options"], serde_json::json!(["rbind", prop]));
        }
    }

    #[test]
    fn host_filesystem_container_spec() {
        let tmp = tempfile::tempdir().unwrap();
        let hidden = tmp.path().display().to_string();
        let info = LaunchInfo {
            readonly_root: true,
            hidden_paths: vec![hidden.clone()],
            ..Default::default()
        };
        let v = serde_json::to_value(build(&spec(info), "/b/c1", None).unwrap()).unwrap();
        assert_eq!(v["root"]["path"], "/");
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["cwd"], "/var/lib/berth/sandboxes/c1");
        let dests: Vec<_> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap().to_string())
            .collect();
        let at = |d: &str| dests.iter().position(|x| x == d).unwrap();
        // Hidden first, the sandbox bound back in after.
        assert!(at(&hidden) < at("/var/lib/berth/sandboxes/c1"));
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let mut s = spec(LaunchInfo::default());
        assert!(unsupported(&s).is_none());
        s.io.tty = true;
        assert!(unsupported(&s).unwrap().contains("tty"));
    }
}
