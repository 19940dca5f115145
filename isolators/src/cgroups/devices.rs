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

use super::{cg_err, CgroupDirs, CgroupIsolator, Subsystem, Version};
use crate::IsolatorError;
use berth_state::{ContainerId, LaunchInfo, Resources};
use cgroups_rs::fs::devices::{DevicePermissions, DeviceType, DevicesController};

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
        let c = DevicesController::new(d.path.clone(), d.path.clone());
        let rwm = [
            DevicePermissions::Read,
            DevicePermissions::Write,
            DevicePermissions::MkNod,
        ];
        let at = |what: &str| format!("{what} in {}", d.path.display());
        c.deny_device(DeviceType::All, -1, -1, &rwm)
            .map_err(|e| cg_err(id, &at("deny all devices"), e))?;
        for &(t, major, minor) in DEFAULT_ALLOWED_DEVICES {
            let ty = if t == 'b' {
                DeviceType::Block
            } else {
                DeviceType::Char
            };
            c.allow_device(ty, major, minor, &rwm)
                .map_err(|e| cg_err(id, &at(&format!("allow device {t} {major}:{minor}")), e))?;
        }
        Ok(())
    }

    fn launch_info(dirs: &CgroupDirs) -> LaunchInfo {
        let mut info = LaunchInfo::default();
        if dirs.of("devices").is_some_and(|d| d.version == Version::V2) {
            tracing::warn!("cgroup v2: no device filter program yet; CAP_MKNOD is dropped instead");
            info.capabilities = berth_state::capabilities::DEFAULT
                .iter()
                .filter(|c| **c != "CAP_MKNOD")
                .map(|s| s.to_string())
                .collect();
        }
        info
    }

    fn has_files(version: Version) -> bool {
        version == Version::V1
    }
}
