//! `cgroups/devices`: a container may use only the devices a process
//! needs — null, zero, full, random, urandom, tty, ptmx and the pts — and
//! may neither create (mknod) nor open any other device node.
//!
//! v1: the `devices` controller (`devices.deny` everything, then
//! `devices.allow` the list). v2 has no device files: it filters with an
//! eBPF program attached to the cgroup. That program is not written yet;
//! on v2 this isolator instead drops `CAP_MKNOD` from the container's
//! capabilities, so no device node can be created in it (the container's
//! /dev is a fresh tmpfs holding only the allowed nodes), and says so in
//! the log.
//!
//! A container's `devices` (`--device HOST[:CONTAINER][:rwm]`) are added
//! to the allow-list after the defaults, with their own permissions, and
//! returned as [`DeviceNode`]s that the launcher makes (mknod) in the
//! container's fresh /dev. On v2 the nodes are made too (nothing filters
//! them yet).

use super::{cg_err, CgroupDirs, CgroupIsolator, Subsystem, Version};
use crate::IsolatorError;
use berth_state::{ContainerConfig, ContainerId, Device, DeviceNode, LaunchInfo, Resources};
use cgroups_rs::fs::devices::{DevicePermissions, DeviceType, DevicesController};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path};

/// The entries of the container's /dev that berth makes itself; a
/// device may not be put at (or under) one of them.
pub const RESERVED_DEV_ENTRIES: &[&str] = &[
    "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue", "fd",
    "stdin", "stdout", "stderr",
];

/// The permissions of `d` ("rwm" when empty), checked to be a non-empty
/// subset of `rwm`, each letter once.
pub fn device_permissions(d: &Device) -> Result<&str, String> {
    let p = if d.permissions.is_empty() {
        "rwm"
    } else {
        d.permissions.as_str()
    };
    let mut seen = String::new();
    for c in p.chars() {
        if !"rwm".contains(c) || seen.contains(c) {
            return Err(format!(
                "device {}: permissions {p:?} must be a non-empty subset of \"rwm\" \
                 (r read, w write, m mknod)",
                d.host_path
            ));
        }
        seen.push(c);
    }
    Ok(p)
}

/// Where `d` appears inside (its host path when no container path is
/// given), checked: absolute, below /dev, no `.`/`..`, not one of berth's
/// own /dev entries.
pub fn device_container_path(d: &Device) -> Result<&str, String> {
    let p = if d.container_path.is_empty() {
        d.host_path.as_str()
    } else {
        d.container_path.as_str()
    };
    let bad = |why: &str| {
        Err(format!(
            "device {}: container path {p:?} {why}",
            d.host_path
        ))
    };
    if !p.starts_with('/') {
        return bad("is not absolute");
    }
    if p.contains('\0') {
        return bad("contains a NUL byte");
    }
    let mut parts = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            _ => return bad("may not contain \".\" or \"..\""),
        }
    }
    if p.split('/').skip(1).any(|s| s == "." || s == "..") {
        return bad("may not contain \".\" or \"..\"");
    }
    if parts.len() < 2 || parts[0] != "dev" {
        return bad("is not below /dev");
    }
    if RESERVED_DEV_ENTRIES.contains(&parts[1].as_str()) {
        return bad("is one of berth's own /dev entries");
    }
    Ok(p)
}

/// Checks `devices` as a whole (each one's container path and
/// permissions, no two at the same or nested paths), without touching
/// the host.
pub fn check_devices(devices: &[Device]) -> Result<(), String> {
    let mut paths: Vec<(&str, &str)> = Vec::new();
    for d in devices {
        if d.host_path.is_empty() {
            return Err("device with an empty host path".into());
        }
        device_permissions(d)?;
        let p = device_container_path(d)?;
        for (other, host) in &paths {
            let nested = |a: &str, b: &str| a.strip_prefix(b).is_some_and(|r| r.starts_with('/'));
            if *other == p || nested(p, other) || nested(other, p) {
                return Err(format!(
                    "devices {host} and {} clash in the container at {other} and {p}",
                    d.host_path
                ));
            }
        }
        paths.push((p, &d.host_path));
    }
    Ok(())
}

/// The node to make for `d`, from its host node (which must be a
/// character or block device). Blocking (a stat).
pub fn device_node(d: &Device) -> Result<DeviceNode, String> {
    if !d.host_path.starts_with('/') {
        return Err(format!(
            "device {:?}: the host path is not absolute",
            d.host_path
        ));
    }
    let meta =
        std::fs::metadata(&d.host_path).map_err(|e| format!("device {}: {e}", d.host_path))?;
    let ft = meta.file_type();
    let ty = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Err(format!(
            "device {}: not a character or block device",
            d.host_path
        ));
    };
    let path = device_container_path(d)?.to_string();
    let rdev = meta.rdev();
    Ok(DeviceNode {
        path,
        r#type: ty.to_string(),
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        file_mode: meta.mode() & 0o7777,
        uid: 0,
        gid: 0,
    })
}

fn device_type(t: &str) -> DeviceType {
    if t == "b" {
        DeviceType::Block
    } else {
        DeviceType::Char
    }
}

/// `(type, major, minor)` of the devices whose `m` was allowed only for
/// the init to make their nodes: none of the container's devices with
/// those numbers asked for it, and no default entry allows it.
fn mknod_taken_back(devices: &[(DeviceNode, &str)]) -> Vec<(String, i64, i64)> {
    let key = |n: &DeviceNode| (n.r#type.clone(), n.major, n.minor);
    let asked_m: Vec<_> = devices
        .iter()
        .filter(|(_, p)| p.contains('m'))
        .map(|(n, _)| key(n))
        .collect();
    let mut out: Vec<(String, i64, i64)> = Vec::new();
    for (n, _) in devices {
        let k = key(n);
        let default = DEFAULT_ALLOWED_DEVICES.iter().any(|&(t, major, minor)| {
            k.0 == t.to_string() && k.1 == major && (minor == -1 || k.2 == minor)
        });
        if !default && !asked_m.contains(&k) && !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// Writes each rule to the v1 `devices.allow` or `devices.deny` file at
/// `path`, one `write` per rule (the file takes one rule per write) on one
/// open: a launch's dozen default rules were a dozen opens and closes of
/// a cgroup file. On failure: the rule and the error.
fn write_rules(
    path: &Path,
    rules: impl IntoIterator<Item = String>,
) -> Result<(), (String, std::io::Error)> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| (format!("(open {})", path.display()), e))?;
    for rule in rules {
        f.write_all(rule.as_bytes()).map_err(|e| (rule, e))?;
    }
    Ok(())
}

/// A device number in a rule: `*` for any.
fn number(n: i64) -> String {
    if n == -1 {
        "*".to_string()
    } else {
        n.to_string()
    }
}

fn permissions(p: &str) -> Vec<DevicePermissions> {
    p.chars()
        .filter_map(|c| match c {
            'r' => Some(DevicePermissions::Read),
            'w' => Some(DevicePermissions::Write),
            'm' => Some(DevicePermissions::MkNod),
            _ => None,
        })
        .collect()
}

/// `(type, major, minor)` of the devices a container may use; `-1` = any
/// minor (the pts).
pub const DEFAULT_ALLOWED_DEVICES: &[(char, i64, i64)] = &[
    ('c', 1, 3),    // null
    ('c', 1, 5),    // zero
    ('c', 1, 7),    // full
    ('c', 1, 8),    // random
    ('c', 1, 9),    // urandom
    ('c', 5, 0),    // tty
    ('c', 5, 2),    // ptmx
    ('c', 136, -1), // pts/*
];

/// The `cgroups/devices` subsystem.
pub enum Devices {}

impl Devices {
    /// The `cgroups/devices` isolator.
    pub fn isolator(
        h: super::Hierarchies,
        cgroup_root: impl Into<String>,
    ) -> CgroupIsolator<Devices> {
        CgroupIsolator::new(h, cgroup_root)
    }
}

impl Subsystem for Devices {
    const NAME: &'static str = "cgroups/devices";
    const CONTROLLERS: &'static [&'static str] = &["devices"];
    const ISOLATES: bool = true;

    fn apply(
        id: &ContainerId,
        dirs: &CgroupDirs,
        _res: &Resources,
        update: bool,
    ) -> Result<(), IsolatorError> {
        let Some(d) = dirs.of("devices") else {
            return Ok(());
        };
        if update || d.version == Version::V2 {
            return Ok(());
        }
        let at = |what: &str| format!("{what} in {}", d.path.display());
        write_rules(&d.path.join("devices.deny"), ["a *:* rwm".to_string()]).map_err(
            |(_, e)| IsolatorError::failed(id, format!("{}: {e}", at("deny all devices"))),
        )?;
        let rules = DEFAULT_ALLOWED_DEVICES
            .iter()
            .map(|&(t, major, minor)| format!("{t} {}:{} rwm", number(major), number(minor)));
        write_rules(&d.path.join("devices.allow"), rules).map_err(|(rule, e)| {
            IsolatorError::failed(id, format!("{}: {e}", at(&format!("allow device {rule}"))))
        })
    }

    fn validate_config(id: &ContainerId, config: &ContainerConfig) -> Result<(), IsolatorError> {
        check_devices(&config.devices).map_err(|why| IsolatorError::invalid(id, "devices", why))
    }

    fn needs_controller(config: &ContainerConfig) -> bool {
        !config.devices.is_empty()
    }

    fn configure(
        id: &ContainerId,
        dirs: &CgroupDirs,
        config: &ContainerConfig,
        info: &LaunchInfo,
    ) -> Result<(), IsolatorError> {
        let Some(d) = dirs.of("devices") else {
            return Ok(());
        };
        if d.version == Version::V2 {
            return Ok(());
        }
        let c = DevicesController::new(d.path.clone(), d.path.clone());
        // `launch_info` made one node per device, in order. The init, in
        // this cgroup already, makes the nodes: `m` is allowed until
        // `isolate` takes it back from the devices that did not ask for it.
        for (dev, node) in config.devices.iter().zip(&info.devices) {
            let asked = device_permissions(dev)
                .map_err(|why| IsolatorError::invalid(id, "devices", why))?;
            let mut perms = permissions(asked);
            if !asked.contains('m') {
                perms.push(DevicePermissions::MkNod);
            }
            c.allow_device(device_type(&node.r#type), node.major, node.minor, &perms)
                .map_err(|e| {
                    let what = format!(
                        "allow device {} {}:{} {asked} ({}) in {}",
                        node.r#type,
                        node.major,
                        node.minor,
                        dev.host_path,
                        d.path.display()
                    );
                    cg_err(id, &what, e)
                })?;
        }
        Ok(())
    }

    fn isolates(config: &ContainerConfig) -> bool {
        !config.devices.is_empty()
    }

    fn isolate(
        id: &ContainerId,
        dirs: &CgroupDirs,
        config: &ContainerConfig,
    ) -> Result<(), IsolatorError> {
        let Some(d) = dirs.of("devices") else {
            return Ok(());
        };
        if d.version == Version::V2 {
            return Ok(());
        }
        // The numbers from the host's nodes again (a stat), as at prepare.
        let mut devices = Vec::new();
        for dev in &config.devices {
            let node =
                device_node(dev).map_err(|why| IsolatorError::invalid(id, "devices", why))?;
            let perms = device_permissions(dev)
                .map_err(|why| IsolatorError::invalid(id, "devices", why))?;
            devices.push((node, perms));
        }
        let c = DevicesController::new(d.path.clone(), d.path.clone());
        for (ty, major, minor) in mknod_taken_back(&devices) {
            // In a deny-by-default cgroup a deny removes the access from
            // the matching exception.
            c.deny_device(device_type(&ty), major, minor, &[DevicePermissions::MkNod])
                .map_err(|e| {
                    let what = format!(
                        "take back mknod of device {ty} {major}:{minor} in {}",
                        d.path.display()
                    );
                    cg_err(id, &what, e)
                })?;
        }
        Ok(())
    }

    fn launch_info(
        id: &ContainerId,
        dirs: &CgroupDirs,
        config: &ContainerConfig,
    ) -> Result<LaunchInfo, IsolatorError> {
        let mut info = LaunchInfo::default();
        for dev in &config.devices {
            info.devices
                .push(device_node(dev).map_err(|why| IsolatorError::invalid(id, "devices", why))?);
        }
        if dirs.of("devices").is_some_and(|d| d.version == Version::V2) {
            tracing::warn!("cgroup v2: no device filter program yet; CAP_MKNOD is dropped instead");
            info.capabilities = berth_state::capabilities::DEFAULT
                .iter()
                .filter(|c| **c != "CAP_MKNOD")
                .map(|s| s.to_string())
                .collect();
        }
        Ok(info)
    }

    fn has_files(version: Version) -> bool {
        version == Version::V1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(host: &str, inside: &str, perms: &str) -> Device {
        Device {
            host_path: host.into(),
            container_path: inside.into(),
            permissions: perms.into(),
        }
    }

    #[test]
    fn container_paths_and_permissions() {
        assert_eq!(
            device_container_path(&dev("/dev/kvm", "", "")),
            Ok("/dev/kvm")
        );
        assert_eq!(
            device_container_path(&dev("/dev/kvm", "/dev/x/y", "")),
            Ok("/dev/x/y")
        );
        for bad in [
            "x",
            "/dev",
            "/dev/",
            "/devx/a",
            "/dev/./a",
            "/dev/a/../b",
            "/dev/shm/a",
        ] {
            assert!(
                device_container_path(&dev("/dev/kvm", bad, "")).is_err(),
                "{bad}"
            );
        }
        assert_eq!(device_permissions(&dev("/dev/kvm", "", "")), Ok("rwm"));
        assert_eq!(device_permissions(&dev("/dev/kvm", "", "mr")), Ok("mr"));
        for bad in ["rwx", "rr", "R", " "] {
            assert!(
                device_permissions(&dev("/dev/kvm", "", bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn host_nodes_are_stat_ed() {
        let n = device_node(&dev("/dev/null", "/dev/n", "r")).unwrap();
        assert_eq!((n.r#type.as_str(), n.major, n.minor), ("c", 1, 3));
        assert_eq!(n.path, "/dev/n");
        assert_eq!(n.file_mode, 0o666);
        let e = device_node(&dev("/etc/hostname", "/dev/n", "")).unwrap_err();
        assert!(e.contains("not a character or block device"), "{e}");
        let e = device_node(&dev("dev/null", "", "")).unwrap_err();
        assert!(e.contains("not absolute"), "{e}");
    }

    #[test]
    fn mknod_is_taken_back_only_where_nobody_asked_for_it() {
        let node = |t: &str, major, minor| DeviceNode {
            r#type: t.into(),
            major,
            minor,
            ..Default::default()
        };
        let devs = [
            (node("c", 10, 237), "r"),
            (node("c", 10, 237), "rw"),
            (node("b", 7, 0), "rw"),
            (node("b", 7, 0), "m"),
            (node("c", 1, 3), "r"),
            (node("c", 136, 4), "r"),
        ];
        assert_eq!(mknod_taken_back(&devs), [("c".to_string(), 10, 237)]);
    }
}
