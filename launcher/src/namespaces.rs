//! Linux namespaces: which ones a launch creates and joins, as clone flags.

use berth_state::{LaunchInfo, Namespace, NamespaceJoin, ProcessRef};
use nix::sched::CloneFlags;
use std::os::fd::OwnedFd;

/// A namespace request the launcher cannot honour.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamespaceError {
    /// A value that is not a `Namespace`.
    #[error("unknown namespace value {0}")]
    Unknown(i32),
    /// A user namespace is joined only as a live process's (a DEBUG
    /// container's parent's), never by path.
    #[error(
        "a user namespace can be joined only as a process's (NamespaceJoin.process), not by path"
    )]
    UserJoinUnsupported,
    /// A join that names neither a path nor a process.
    #[error("joining namespace {0:?} needs a path or a process")]
    JoinWithoutTarget(Namespace),
    /// A user namespace needs its id mappings.
    #[error("a user namespace needs uid and gid mappings (uid_mappings, gid_mappings)")]
    UserWithoutMappings,
    /// Id mappings without a user namespace.
    #[error("uid/gid mappings need a user namespace (add USER to clone_namespaces)")]
    MappingsWithoutUser,
    /// A namespace in both `clone_namespaces` and `join_namespaces`.
    #[error("namespace {0:?} is both created and joined")]
    CreatedAndJoined(Namespace),
    /// A hostname without a UTS namespace would rename the host.
    #[error("a hostname needs a UTS namespace of its own (add UTS to clone_namespaces)")]
    HostnameWithoutUts,
}

/// What the init does with namespaces, split by who must do it: a new or
/// joined pid namespace applies to the *children* of the caller, so the
/// supervisor does those before it forks; the init does the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `unshare(CLONE_NEWPID)` in the supervisor before it forks the init.
    pub new_pid: bool,
    /// A pid namespace the supervisor joins before it forks.
    pub join_pid: Option<Target>,
    /// `setns` done by the init, in order: (flag, namespace). All are
    /// opened before the first is joined (a joined mount namespace
    /// changes what `/proc` is).
    pub joins: Vec<(CloneFlags, Target)>,
    /// A user namespace to join as the init's last step (a DEBUG
    /// container entering its parent), as for `new_user`.
    pub join_user: Option<Target>,
    /// `unshare` flags of the init (all but pid).
    pub unshare: CloneFlags,
    /// The init gets a mount namespace of its own (so it may mount).
    pub new_mount: bool,
    /// A user namespace with the launch info's mappings: the supervisor
    /// makes it before it forks; the init sets everything up as the
    /// host's root, then joins it as its last step (so every other
    /// namespace stays owned by the host's user namespace, and the
    /// container's root is root over nothing but its own ids).
    pub new_user: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            new_pid: false,
            join_pid: None,
            joins: Vec::new(),
            join_user: None,
            unshare: CloneFlags::empty(),
            new_mount: false,
            new_user: false,
        }
    }
}

/// A namespace to join: a file (a bind-mounted netns) or a live
/// process's, checked by its start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A path such as a bind-mounted netns file.
    Path(String),
    /// `(pid, start time)` of the process whose namespace is joined.
    Process(i32, u64, Namespace),
}

impl Target {
    fn of(j: &NamespaceJoin, n: Namespace) -> Result<Target, NamespaceError> {
        match (&j.process, j.path.is_empty()) {
            (Some(p), _) => Ok(Target::Process(p.pid, p.start_time, n)),
            (None, false) => Ok(Target::Path(j.path.clone())),
            (None, true) => Err(NamespaceError::JoinWithoutTarget(n)),
        }
    }

    /// Opens the namespace (for `setns`).
    pub fn open(&self) -> std::io::Result<OwnedFd> {
        match self {
            Target::Path(p) => std::fs::File::open(p).map(OwnedFd::from),
            Target::Process(pid, start_time, n) => ProcessRef {
                pid: *pid,
                start_time: *start_time,
            }
            .open_namespace(proc_name(*n)),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Path(p) => write!(f, "{p}"),
            Target::Process(pid, _, n) => write!(f, "/proc/{pid}/ns/{}", proc_name(*n)),
        }
    }
}

/// The namespace's name under `/proc/PID/ns`.
pub fn proc_name(ns: Namespace) -> &'static str {
    match ns {
        Namespace::Mount => "mnt",
        Namespace::Pid => "pid",
        Namespace::Uts => "uts",
        Namespace::Ipc => "ipc",
        Namespace::Net => "net",
        Namespace::Cgroup => "cgroup",
        Namespace::User => "user",
        Namespace::Unspecified => "unspecified",
    }
}

/// The clone flag of one namespace.
pub fn flag(ns: Namespace) -> Result<CloneFlags, NamespaceError> {
    Ok(match ns {
        Namespace::Mount => CloneFlags::CLONE_NEWNS,
        Namespace::Pid => CloneFlags::CLONE_NEWPID,
        Namespace::Uts => CloneFlags::CLONE_NEWUTS,
        Namespace::Ipc => CloneFlags::CLONE_NEWIPC,
        Namespace::Net => CloneFlags::CLONE_NEWNET,
        Namespace::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        Namespace::User => CloneFlags::CLONE_NEWUSER,
        Namespace::Unspecified => return Err(NamespaceError::Unknown(0)),
    })
}

fn ns(v: i32) -> Result<Namespace, NamespaceError> {
    Namespace::try_from(v).map_err(|_| NamespaceError::Unknown(v))
}

/// Checks `info`'s namespace requests and orders them.
pub fn plan(info: &LaunchInfo) -> Result<Plan, NamespaceError> {
    let mut p = Plan::default();
    let mut created = Vec::new();
    for &v in &info.clone_namespaces {
        let n = ns(v)?;
        let f = flag(n)?;
        created.push(n);
        if n == Namespace::Pid {
            p.new_pid = true;
        } else if n == Namespace::User {
            p.new_user = true;
        } else {
            p.unshare |= f;
        }
        if n == Namespace::Mount {
            p.new_mount = true;
        }
    }
    for j in &info.join_namespaces {
        let n = ns(j.namespace)?;
        if created.contains(&n) {
            return Err(NamespaceError::CreatedAndJoined(n));
        }
        let f = flag(n)?;
        let target = Target::of(j, n)?;
        match n {
            Namespace::User if j.process.is_none() => {
                return Err(NamespaceError::UserJoinUnsupported)
            }
            Namespace::User => p.join_user = Some(target),
            Namespace::Pid => p.join_pid = Some(target),
            _ => p.joins.push((f, target)),
        }
    }
    // The mount namespace last: joining it changes the root.
    p.joins
        .sort_by_key(|(f, _)| f.contains(CloneFlags::CLONE_NEWNS));
    if !info.hostname.is_empty() && !created.contains(&Namespace::Uts) {
        return Err(NamespaceError::HostnameWithoutUts);
    }
    let mapped = !info.uid_mappings.is_empty() || !info.gid_mappings.is_empty();
    if p.new_user && (info.uid_mappings.is_empty() || info.gid_mappings.is_empty()) {
        return Err(NamespaceError::UserWithoutMappings);
    }
    if mapped && !p.new_user && p.join_user.is_none() {
        return Err(NamespaceError::MappingsWithoutUser);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_state::NamespaceJoin;

    #[test]
    fn pid_is_split_from_the_rest() {
        let info = LaunchInfo {
            clone_namespaces: vec![Namespace::Pid as i32, Namespace::Mount as i32],
            join_namespaces: vec![NamespaceJoin {
                namespace: Namespace::Net as i32,
                path: "/proc/1/ns/net".into(),
                process: None,
            }],
            ..Default::default()
        };
        let p = plan(&info).unwrap();
        assert!(p.new_pid && p.new_mount);
        assert_eq!(p.unshare, CloneFlags::CLONE_NEWNS);
        assert_eq!(
            p.joins,
            vec![(
                CloneFlags::CLONE_NEWNET,
                Target::Path("/proc/1/ns/net".to_string())
            )]
        );
    }

    #[test]
    fn bad_requests_are_named() {
        let both = LaunchInfo {
            clone_namespaces: vec![Namespace::Net as i32],
            join_namespaces: vec![berth_state::NamespaceJoin {
                namespace: Namespace::Net as i32,
                path: "/x".into(),
                process: None,
            }],
            ..Default::default()
        };
        assert_eq!(
            plan(&both),
            Err(NamespaceError::CreatedAndJoined(Namespace::Net))
        );
        let host = LaunchInfo {
            hostname: "h".into(),
            ..Default::default()
        };
        assert_eq!(plan(&host), Err(NamespaceError::HostnameWithoutUts));
        let user = LaunchInfo {
            clone_namespaces: vec![Namespace::User as i32],
            ..Default::default()
        };
        assert_eq!(plan(&user), Err(NamespaceError::UserWithoutMappings));
        let one = vec![berth_state::IdMapping {
            container_id: 0,
            host_id: 100000,
            size: 65536,
        }];
        let mapped = LaunchInfo {
            uid_mappings: one.clone(),
            gid_mappings: one.clone(),
            ..Default::default()
        };
        assert_eq!(plan(&mapped), Err(NamespaceError::MappingsWithoutUser));
        let ok = LaunchInfo {
            clone_namespaces: vec![Namespace::User as i32],
            ..mapped
        };
        let p = plan(&ok).unwrap();
        assert!(p.new_user && p.unshare.is_empty());
    }
}
