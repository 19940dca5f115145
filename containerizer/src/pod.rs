//! Pods and DEBUG containers: what a nested container takes from its
//! parent. A pod member (a nested container) joins its parent's network,
//! IPC and UTS namespaces, and its pid namespace on request; a DEBUG
//! container (an exec) enters all of its parent's namespaces and runs
//! under its parent's security settings. Which namespaces are shared is
//! [`berth_isolators::namespaces::shared_with_parent`]'s to say (the
//! isolators then create none); the joins are made here, on the parent's
//! init as a [`ProcessRef`] (pid + start time), which the launcher checks
//! before it opens anything.

use berth_isolators::namespaces::shared_with_parent;
use berth_state::{
    ContainerClass, ContainerConfig, ContainerId, LaunchInfo, Namespace, NamespaceJoin, ProcessRef,
};

/// A DEBUG container's config at admission: the parent's security
/// settings (seccomp profile, capabilities, no_new_privs, rlimits, user
/// namespace) are
/// its own, so an exec can do no more than the container it enters; its
/// env and user default to the parent's.
pub(crate) fn adopt_parent(parent: &ContainerConfig, config: &mut ContainerConfig) {
    if config.container_class != ContainerClass::Debug as i32 {
        return;
    }
    config.seccomp_profile = parent.seccomp_profile.clone();
    config.cap_add = parent.cap_add.clone();
    config.cap_drop = parent.cap_drop.clone();
    config.userns = parent.userns.clone();
    config.supplemental_groups = parent.supplemental_groups.clone();
    // An exec may gain privileges (setuid) only where its container may.
    config.allow_privilege_escalation = parent.allow_privilege_escalation;
    if config.rlimits.is_empty() {
        config.rlimits = parent.rlimits.clone();
    }
    if config.user.is_empty() {
        config.user = parent.user.clone();
    }
    let mut env = parent.env.clone();
    env.extend(std::mem::take(&mut config.env));
    config.env = env;
}

/// The namespaces `id` joins of its parent's: by the parent's init.
pub(crate) fn parent_joins(
    id: &ContainerId,
    config: &ContainerConfig,
    parent_init: &ProcessRef,
    parent_info: &LaunchInfo,
) -> Vec<NamespaceJoin> {
    let debug = config.container_class == ContainerClass::Debug as i32;
    let mut all = vec![
        Namespace::Cgroup,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Net,
        Namespace::Pid,
        Namespace::Mount,
    ];
    // Only a user namespace of the parent's own: joining the one we are in
    // is an error.
    if debug && !parent_info.uid_mappings.is_empty() {
        all.push(Namespace::User);
    }
    all.into_iter()
        .filter(|&ns| debug || shared_with_parent(id, config, ns))
        .map(|ns| NamespaceJoin {
            namespace: ns as i32,
            process: Some(*parent_init),
            ..Default::default()
        })
        .collect()
}

/// A DEBUG container's launch info: it enters the parent's namespaces as
/// they are, so it makes no filesystem, device or hostname of its own;
/// the parent's env (under the exec's own) and working dir are its
/// defaults, and the parent's id mappings stay for the user check.
pub(crate) fn debug_launch_info(info: &mut LaunchInfo, parent: &LaunchInfo) {
    info.rootfs.clear();
    info.mounts.clear();
    info.hidden_paths.clear();
    info.readonly_root = false;
    info.devices.clear();
    info.hostname.clear();
    info.shm_size_bytes = 0;
    info.sysctls.clear();
    info.clone_namespaces.clear();
    info.uid_mappings = parent.uid_mappings.clone();
    info.gid_mappings = parent.gid_mappings.clone();
    let mut env = parent.env.clone();
    env.extend(std::mem::take(&mut info.env));
    info.env = env;
    if info.working_dir.is_empty() {
        // The parent's, as its launcher chose it: its image's root when
        // it has a rootfs and no working dir (never the DEBUG container's
        // own sandbox, which its parent's mount namespace does not show).
        info.working_dir = match (parent.working_dir.is_empty(), parent.rootfs.is_empty()) {
            (false, _) => parent.working_dir.clone(),
            (true, false) => "/".into(),
            (true, true) => String::new(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ContainerId {
        ContainerId::parse(s).unwrap()
    }

    fn joined(j: &[NamespaceJoin]) -> Vec<Namespace> {
        j.iter()
            .map(|j| Namespace::try_from(j.namespace).unwrap())
            .collect()
    }

    #[test]
    fn pod_members_share_net_ipc_uts_and_pid_on_request() {
        let init = ProcessRef {
            pid: 42,
            start_time: 7,
        };
        let info = LaunchInfo::default();
        let member = ContainerConfig::default();
        let j = parent_joins(&id("pod/a"), &member, &init, &info);
        assert_eq!(joined(&j), [Namespace::Ipc, Namespace::Uts, Namespace::Net]);
        assert!(j
            .iter()
            .all(|j| j.process == Some(init) && j.path.is_empty()));
        let shared = ContainerConfig {
            share_pid_namespace: true,
            ..Default::default()
        };
        let j = parent_joins(&id("pod/a"), &shared, &init, &info);
        assert!(joined(&j).contains(&Namespace::Pid));
        // A member with a network of its own keeps it.
        let own_net = ContainerConfig {
            network: Some(Default::default()),
            ..Default::default()
        };
        let j = parent_joins(&id("pod/a"), &own_net, &init, &info);
        assert!(!joined(&j).contains(&Namespace::Net));
        // A top-level container joins nothing.
        assert!(parent_joins(&id("top"), &shared, &init, &info).is_empty());
    }

    #[test]
    fn debug_containers_enter_everything_and_inherit_security() {
        let init = ProcessRef {
            pid: 42,
            start_time: 7,
        };
        let debug = ContainerConfig {
            container_class: ContainerClass::Debug as i32,
            ..Default::default()
        };
        let mapped = LaunchInfo {
            uid_mappings: vec![Default::default()],
            ..Default::default()
        };
        let j = parent_joins(&id("c/x"), &debug, &init, &LaunchInfo::default());
        assert_eq!(j.len(), 6);
        assert!(!joined(&j).contains(&Namespace::User));
        let j = parent_joins(&id("c/x"), &debug, &init, &mapped);
        assert!(joined(&j).contains(&Namespace::User));

        let parent = ContainerConfig {
            seccomp_profile: "unconfined".into(),
            cap_drop: vec!["ALL".into()],
            user: "nobody".into(),
            env: [("A".to_string(), "1".to_string()), ("B".into(), "1".into())].into(),
            allow_privilege_escalation: true,
            ..Default::default()
        };
        let mut c = ContainerConfig {
            env: [("B".to_string(), "2".to_string())].into(),
            seccomp_profile: "ignored".into(),
            ..debug
        };
        adopt_parent(&parent, &mut c);
        assert_eq!(c.seccomp_profile, "unconfined");
        assert_eq!(c.cap_drop, ["ALL"]);
        assert_eq!(c.user, "nobody");
        assert!(c.allow_privilege_escalation);
        assert_eq!(c.env["A"], "1");
        assert_eq!(c.env["B"], "2");
    }
}
