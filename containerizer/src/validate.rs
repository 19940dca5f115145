//! STARTING: a config is checked before anything is created. Every option
//! must be backed by a component this containerizer runs; an option that
//! is not is refused by name — never silently ignored.

use crate::ContainerizerError;
use berth_state::{network, ContainerClass, ContainerConfig, ContainerId};

/// What the containerizer runs, for deciding which options are backed.
pub(crate) struct Backing<'a> {
    pub isolators: &'a [String],
    pub fetcher: bool,
    pub provisioner: Option<&'a dyn berth_provisioner::Provisioner>,
}

pub(crate) fn validate(
    id: &ContainerId,
    config: &ContainerConfig,
    backing: &Backing<'_>,
) -> Result<(), ContainerizerError> {
    let invalid = |why: String| ContainerizerError::InvalidConfig {
        id: id.to_string(),
        why,
    };
    id.validate().map_err(|e| invalid(e.to_string()))?;
    if config.command.is_empty() && config.image.is_empty() && !config.pod {
        return Err(invalid(
            "no command given (and no image to take one from)".into(),
        ));
    }
    if config.shell && config.command.is_empty() {
        return Err(invalid("shell is set but the command is empty".into()));
    }
    if !config.entrypoint.is_empty() && config.image.is_empty() {
        return Err(invalid("an entrypoint override needs an image".into()));
    }
    berth_state::capabilities::adjust(&[], &config.cap_add, &config.cap_drop)
        .map_err(|e| invalid(format!("--cap-add/--cap-drop: {e}")))?;
    for (what, paths) in [
        ("masked path", &config.masked_paths),
        ("read-only path", &config.readonly_paths),
    ] {
        if let Some(p) = paths
            .iter()
            .find(|p| !p.starts_with('/') || p.contains('\0'))
        {
            return Err(invalid(format!(
                "{what} {p:?} must be an absolute path inside the container"
            )));
        }
    }
    if config.read_only_rootfs && config.image.is_empty() {
        return Err(invalid(
            "read-only rootfs needs an image (the host's root is read-only unless --host-rootfs rw)"
                .into(),
        ));
    }
    if config.host_rootfs_rw && !config.image.is_empty() {
        return Err(invalid(
            "--host-rootfs rw is for containers without an image".into(),
        ));
    }
    if !config.image.is_empty() && !config.image.starts_with("sha256:") {
        berth_provisioner::reference::Reference::parse(&config.image)
            .map_err(|e| invalid(e.to_string()))?;
    }
    if config.container_class == ContainerClass::Debug as i32 && id.parent.is_none() {
        return Err(invalid(
            "a DEBUG container must be nested in a parent".into(),
        ));
    }
    if config.container_class == ContainerClass::Debug as i32 && !config.image.is_empty() {
        return Err(invalid(
            "a DEBUG container runs in its parent's filesystem and takes no image".into(),
        ));
    }
    if config.pod {
        let why = if id.parent.is_some() {
            Some("a pod cannot be nested in another container")
        } else if !config.command.is_empty() || config.shell {
            Some("a pod (--pod) runs no command: its members do")
        } else if !config.image.is_empty() {
            Some("a pod (--pod) takes no image: its members may")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(invalid(why.into()));
        }
    }
    if config.share_pid_namespace && id.parent.is_none() {
        return Err(invalid(
            "--share-pid-namespace is for a nested container (a pod member): it joins its parent's pid namespace"
                .into(),
        ));
    }
    if config.host_ipc && id.parent.is_some() {
        return Err(invalid(
            "host_ipc is for a top-level container (a pod): a nested one shares its parent's IPC namespace"
                .into(),
        ));
    }
    if config.host_pid && id.parent.is_some() {
        return Err(invalid(
            "host_pid is for a top-level container (a pod): a nested one shares its parent's pid namespace with --share-pid-namespace"
                .into(),
        ));
    }
    // rshared lets the container's mounts reach the host: only for a
    // container that holds every capability anyway (kubelet's rule: a
    // privileged one).
    let privileged =
        config.cap_add.iter().any(|c| c.eq_ignore_ascii_case("ALL")) && config.cap_drop.is_empty();
    for v in &config.volumes {
        if v.propagation == berth_state::volume::Propagation::Rshared as i32 && !privileged {
            return Err(invalid(format!(
                "volume {}:{}: rshared propagation lets the container's mounts reach the host, \
                 so it is only for a privileged container (--cap-add ALL, nothing dropped)",
                v.host_path, v.container_path
            )));
        }
    }
    for (k, _) in config.env.iter() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(invalid(format!("environment variable name {k:?}")));
        }
    }
    if !config.working_dir.is_empty() && !config.working_dir.starts_with('/') {
        return Err(invalid(format!(
            "working dir {:?} is not absolute",
            config.working_dir
        )));
    }

    let needs = |option: &str, backing: &str| ContainerizerError::Unsupported {
        id: id.to_string(),
        option: option.to_string(),
        backing: backing.to_string(),
    };
    let has = |name: &str| backing.isolators.iter().any(|i| i == name);
    let res = config.resources.unwrap_or_default();
    let net_mode = config.network.as_ref().map(|n| n.mode).unwrap_or(0);
    let checks: [(bool, &str, &str); 9] = [
        (!config.hostname.is_empty(), "hostname", "namespaces/uts"),
        (res.cpus > 0.0 || res.cpu_limit > 0.0, "cpus", "cgroups/cpu"),
        (
            res.memory_bytes > 0 || res.memory_soft_bytes > 0,
            "memory",
            "cgroups/mem",
        ),
        (res.pids > 0, "pids", "cgroups/pids"),
        (res.disk_bytes > 0, "disk", "disk/du"),
        (!config.volumes.is_empty(), "volumes", "volume/host_path"),
        (!config.rlimits.is_empty(), "rlimits", "posix/rlimits"),
        (!config.devices.is_empty(), "devices", "cgroups/devices"),
        (
            net_mode != network::Mode::Host as i32,
            "network",
            "network/cni",
        ),
    ];
    for (asked, option, isolator) in checks {
        if asked && !has(isolator) {
            return Err(needs(option, &format!("the {isolator} isolator")));
        }
    }
    // Devices: each host node (a stat: it must exist and be a character
    // or block device) and container path, then the permissions and
    // clashes between them.
    for d in &config.devices {
        berth_isolators::cgroups::device_node(d).map_err(invalid)?;
    }
    berth_isolators::cgroups::check_devices(&config.devices).map_err(invalid)?;
    for key in config.sysctls.keys() {
        let own_net =
            net_mode == network::Mode::None as i32 || net_mode == network::Mode::Cni as i32;
        match sysctl_namespace(key) {
            None => {
                return Err(ContainerizerError::InvalidConfig {
                    id: id.to_string(),
                    why: format!(
                        "sysctl {key:?} is not namespaced (allowed: net.* with the container's own \
                         network, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)"
                    ),
                })
            }
            Some("net") if !own_net => {
                return Err(ContainerizerError::InvalidConfig {
                    id: id.to_string(),
                    why: format!(
                        "sysctl {key:?} would change the host's network: give the container its \
                         own (--network none or a CNI network)"
                    ),
                })
            }
            Some("ipc") if !has("namespaces/ipc") => {
                return Err(needs("sysctls", "the namespaces/ipc isolator"));
            }
            Some(_) => {}
        }
    }
    if !config.userns.is_empty() {
        let mode = berth_isolators::userns::UsernsMode::parse(&config.userns)
            .map_err(|why| invalid(format!("userns: {why}")))?;
        if mode != berth_isolators::userns::UsernsMode::Host && !has("namespaces/user") {
            return Err(needs("userns", "the namespaces/user isolator"));
        }
    }
    if !config.uris.is_empty() && !backing.fetcher {
        return Err(needs("fetch URIs", "a fetcher"));
    }
    if !config.image.is_empty() && backing.provisioner.is_none() {
        return Err(needs("image", "a provisioner"));
    }
    if !matches!(config.log_format.as_str(), "" | "plain" | "cri") {
        return Err(invalid(format!(
            "log format {:?}: expected plain or cri",
            config.log_format
        )));
    }
    if !config.rootfs_backend.is_empty() {
        if config.image.is_empty() {
            return Err(invalid(format!(
                "rootfs backend {:?} needs an image (a container without one runs on the host's filesystem)",
                config.rootfs_backend
            )));
        }
        let backend: berth_provisioner::Backend = config.rootfs_backend.parse().map_err(invalid)?;
        if let Some(p) = backing.provisioner {
            p.check_backend(backend).map_err(|why| {
                invalid(format!("rootfs backend {backend} is not available: {why}"))
            })?;
        }
    }
    Ok(())
}

/// Which namespace a sysctl lives in (`net` or `ipc`); `None` for one
/// that is not namespaced (it would change the host), or a malformed key.
pub(crate) fn sysctl_namespace(key: &str) -> Option<&'static str> {
    let well_formed = !key.is_empty()
        && key.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !well_formed {
        return None;
    }
    if key.starts_with("net.") {
        return Some("net");
    }
    let ipc = key.starts_with("kernel.shm")
        || key.starts_with("kernel.msg")
        || key == "kernel.sem"
        || key.starts_with("fs.mqueue.");
    ipc.then_some("ipc")
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_state::Resources;

    fn cfg() -> ContainerConfig {
        ContainerConfig {
            command: vec!["true".into()],
            ..Default::default()
        }
    }

    #[test]
    fn unbacked_options_are_refused_by_name() {
        let isolators = vec!["namespaces/pid".to_string()];
        let b = Backing {
            isolators: &isolators,
            fetcher: false,
            provisioner: None,
        };
        let id = ContainerId::new("c");
        assert!(validate(&id, &cfg(), &b).is_ok());
        let mut c = cfg();
        c.resources = Some(Resources {
            memory_bytes: 1 << 20,
            ..Default::default()
        });
        let e = validate(&id, &c, &b).unwrap_err().to_string();
        assert!(e.contains("memory") && e.contains("cgroups/mem"), "{e}");
        let mut c = cfg();
        c.image = "busybox".into();
        assert!(validate(&id, &c, &b)
            .unwrap_err()
            .to_string()
            .contains("provisioner"));
        let mut c = cfg();
        c.hostname = "h".into();
        assert!(validate(&id, &c, &b)
            .unwrap_err()
            .to_string()
            .contains("namespaces/uts"));
    }

    #[test]
    fn devices_are_checked_by_name() {
        use berth_state::Device;
        let isolators = vec!["cgroups/devices".to_string()];
        let b = Backing {
            isolators: &isolators,
            fetcher: false,
            provisioner: None,
        };
        let id = ContainerId::new("c");
        let with = |host: &str, inside: &str, perms: &str| {
            let mut c = cfg();
            c.devices = vec![Device {
                host_path: host.into(),
                container_path: inside.into(),
                permissions: perms.into(),
            }];
            validate(&id, &c, &b)
        };
        assert!(with("/dev/null", "/dev/mynull", "rw").is_ok());
        for (host, inside, perms, why) in [
            (
                "/etc/passwd",
                "",
                "",
                "/etc/passwd: not a character or block device",
            ),
            ("/nonexistent", "", "", "/nonexistent: No such file"),
            ("/dev/null", "relative", "", "\"relative\" is not absolute"),
            ("/dev/null", "/etc/null", "", "is not below /dev"),
            ("/dev/null", "/dev/../etc/x", "", "may not contain"),
            (
                "/dev/null",
                "/dev/x",
                "rwx",
                "\"rwx\" must be a non-empty subset",
            ),
            ("/dev/null", "/dev/x", "rr", "must be a non-empty subset"),
            ("/dev/null", "/dev/pts/x", "", "berth's own /dev entries"),
            ("/dev/null", "/dev", "", "is not below /dev"),
        ] {
            let e = with(host, inside, perms).unwrap_err().to_string();
            assert!(e.contains(why), "{host}:{inside}:{perms}: {e}");
        }
        let mut c = cfg();
        c.devices = vec![
            Device {
                host_path: "/dev/null".into(),
                container_path: "/dev/a".into(),
                ..Default::default()
            },
            Device {
                host_path: "/dev/zero".into(),
                container_path: "/dev/a/b".into(),
                ..Default::default()
            },
        ];
        let e = validate(&id, &c, &b).unwrap_err().to_string();
        assert!(e.contains("clash"), "{e}");
        let none: Vec<String> = Vec::new();
        let b = Backing {
            isolators: &none,
            fetcher: false,
            provisioner: None,
        };
        let mut c = cfg();
        c.devices = vec![Device {
            host_path: "/dev/null".into(),
            ..Default::default()
        }];
        let e = validate(&id, &c, &b).unwrap_err().to_string();
        assert!(
            e.contains("devices") && e.contains("cgroups/devices"),
            "{e}"
        );
    }

    #[test]
    fn bad_input_is_named() {
        let b = Backing {
            isolators: &[],
            fetcher: false,
            provisioner: None,
        };
        let e = validate(&ContainerId::new("c"), &ContainerConfig::default(), &b).unwrap_err();
        assert!(e.to_string().contains("no command"), "{e}");
        let e = validate(&ContainerId::new("bad id"), &cfg(), &b).unwrap_err();
        assert!(e.to_string().contains("bad id"), "{e}");
        let mut c = cfg();
        c.rootfs_backend = "copy".into();
        let e = validate(&ContainerId::new("c"), &c, &b).unwrap_err();
        assert!(e.to_string().contains("needs an image"), "{e}");
    }

    /// A provisioner that has every backend but overlay.
    struct NoOverlay;
    impl berth_provisioner::Provisioner for NoOverlay {
        fn provision(
            &self,
            _: ContainerId,
            _: String,
            _: Option<berth_provisioner::Backend>,
        ) -> futures::future::BoxFuture<
            'static,
            Result<berth_provisioner::Provisioned, berth_provisioner::ProvisionError>,
        > {
            unreachable!("not called by validate")
        }
        fn destroy(
            &self,
            _: ContainerId,
        ) -> futures::future::BoxFuture<'static, Result<(), berth_provisioner::ProvisionError>>
        {
            unreachable!("not called by validate")
        }
        fn recover(
            &self,
            _: Vec<ContainerId>,
        ) -> futures::future::BoxFuture<'static, Result<(), berth_provisioner::ProvisionError>>
        {
            unreachable!("not called by validate")
        }
        fn check_backend(&self, b: berth_provisioner::Backend) -> Result<(), String> {
            match b {
                berth_provisioner::Backend::Overlay => Err("no overlayfs here".into()),
                _ => Ok(()),
            }
        }
    }

    #[test]
    fn rootfs_backends_are_checked_at_starting() {
        let p = NoOverlay;
        let b = Backing {
            isolators: &[],
            fetcher: false,
            provisioner: Some(&p),
        };
        let id = ContainerId::new("c");
        let with = |backend: &str| {
            let mut c = cfg();
            c.image = "busybox:latest".into();
            c.rootfs_backend = backend.into();
            validate(&id, &c, &b)
        };
        assert!(with("").is_ok());
        assert!(with("copy").is_ok());
        assert!(with("bind").is_ok());
        let e = with("overlay").unwrap_err().to_string();
        assert!(
            e.contains("rootfs backend overlay is not available: no overlayfs here"),
            "{e}"
        );
        let e = with("zfs").unwrap_err().to_string();
        assert!(e.contains("\"zfs\": expected overlay, copy or bind"), "{e}");
    }
}
