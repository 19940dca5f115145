//! Which cgroup hierarchy holds each controller: cgroup v1 (a mount per
//! controller or group of controllers), v2 (one unified mount whose
//! `cgroup.controllers` lists what it offers), or hybrid (v1 controllers
//! beside a v2 mount, as systemd's "hybrid" mode sets up).
//!
//! The choice is made per controller, by detection: a controller mounted
//! as v1 is used there (on a hybrid host the v2 mount usually holds no
//! controller at all), else the v2 mount is used if it lists it. Nobody
//! has to tell berth which version the host runs.

use berth_state::ContainerId;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A cgroup hierarchy version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// What the host runs, for reports and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only v1 hierarchies (or a v2 mount without controllers beside them:
    /// hybrid, which is treated per controller anyway).
    V1,
    /// Only the unified hierarchy.
    V2,
    /// v1 controllers and a v2 mount holding some controllers.
    Hybrid,
    /// No cgroup hierarchy at all.
    None,
}

/// Where one controller lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub version: Version,
    /// The hierarchy's mount point (e.g. `/sys/fs/cgroup/memory` or
    /// `/sys/fs/cgroup`).
    pub mount: PathBuf,
}

impl Placement {
    /// `<mount>/<cgroup_root>`: berth's root in this hierarchy.
    pub fn root_dir(&self, cgroup_root: &str) -> PathBuf {
        self.mount.join(cgroup_root)
    }

    /// The container's cgroup: `<mount>/<cgroup_root>/<id parts…>`, so
    /// nested containers nest under their parent's cgroup.
    pub fn dir(&self, cgroup_root: &str, id: &ContainerId) -> PathBuf {
        let mut p = self.root_dir(cgroup_root);
        for part in id.parts() {
            p.push(part);
        }
        p
    }
}

/// The cgroup hierarchies of this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    v1: BTreeMap<String, PathBuf>,
    v2: Option<(PathBuf, BTreeSet<String>)>,
}

impl Hierarchies {
    /// Reads `/proc/self/mountinfo` and the v2 mount's `cgroup.controllers`.
    pub fn detect() -> std::io::Result<Hierarchies> {
        let info = berth_state::cgroupfs::cgroup_mountinfo()?;
        Ok(Self::parse(&info, |mount| {
            fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default()
        }))
    }

    /// From mountinfo text; `controllers_of(v2 mount)` returns the text of
    /// its `cgroup.controllers`.
    pub fn parse(mountinfo: &str, controllers_of: impl Fn(&Path) -> String) -> Hierarchies {
        let mut h = Hierarchies::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount) = left.split(' ').nth(4) else {
                continue;
            };
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or("");
            let opts = r.nth(1).unwrap_or("");
            match fstype {
                "cgroup" => {
                    for o in opts.split(',') {
                        // `name=systemd` and mount flags are not controllers.
                        if !o.contains('=') && !matches!(o, "rw" | "ro") {
                            h.v1.entry(o.to_string())
                                .or_insert_with(|| PathBuf::from(mount));
                        }
                    }
                }
                "cgroup2" if h.v2.is_none() => {
                    let mount = PathBuf::from(mount);
                    let ctrls = controllers_of(&mount)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    h.v2 = Some((mount, ctrls));
                }
                _ => {}
            }
        }
        h
    }

    /// A pure-v2 host whose unified hierarchy is mounted at `mount` (for a
    /// fake cgroupfs in tests, or a non-standard mount point).
    pub fn v2_at(mount: impl Into<PathBuf>) -> Hierarchies {
        let mount = mount.into();
        let ctrls = fs::read_to_string(mount.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Hierarchies {
            v1: BTreeMap::new(),
            v2: Some((mount, ctrls)),
        }
    }

    /// Where `controller` ("memory", "cpu", "cpuacct", "pids", "devices")
    /// lives, if anywhere. v1's `cpuacct` is v2's `cpu`; v2 has no
    /// `devices` controller (it uses eBPF programs instead).
    pub fn place(&self, controller: &str) -> Option<Placement> {
        if let Some(mount) = self.v1.get(controller) {
            return Some(Placement {
                version: Version::V1,
                mount: mount.clone(),
            });
        }
        let (mount, ctrls) = self.v2.as_ref()?;
        let v2_name = match controller {
            "cpuacct" => "cpu",
            other => other,
        };
        // `devices` is never in cgroup.controllers, but every v2 cgroup
        // can hold a device program.
        (ctrls.contains(v2_name) || v2_name == "devices").then(|| Placement {
            version: Version::V2,
            mount: mount.clone(),
        })
    }

    /// What the host runs.
    pub fn mode(&self) -> Mode {
        let v2_ctrls = self.v2.as_ref().is_some_and(|(_, c)| !c.is_empty());
        match (self.v1.is_empty(), v2_ctrls) {
            (false, true) => Mode::Hybrid,
            (false, false) => Mode::V1,
            (true, true) => Mode::V2,
            (true, false) if self.v2.is_some() => Mode::V2,
            (true, false) => Mode::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const UNIFIED: &str =
        "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn hybrid_uses_v1_controllers() {
        let h = Hierarchies::parse(HYBRID, |_| "hugetlb".into());
        assert_eq!(h.mode(), Mode::Hybrid);
        let m = h.place("memory").unwrap();
        assert_eq!(m.version, Version::V1);
        assert_eq!(m.mount, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(
            h.place("cpuacct").unwrap().mount,
            PathBuf::from("/sys/fs/cgroup/cpuacct")
        );
        assert!(h.place("pids").is_none());
        assert!(h.place("systemd").is_none());
        let id = ContainerId::new("c").child("n");
        assert_eq!(
            m.dir("berth", &id),
            PathBuf::from("/sys/fs/cgroup/memory/berth/c/n")
        );
    }

    #[test]
    fn unified_lists_its_controllers() {
        let h = Hierarchies::parse(UNIFIED, |_| "cpuset cpu io memory pids".into());
        assert_eq!(h.mode(), Mode::V2);
        for c in ["cpu", "cpuacct", "memory", "pids", "devices"] {
            let p = h.place(c).unwrap();
            assert_eq!(p.version, Version::V2, "{c}");
            assert_eq!(p.mount, PathBuf::from("/sys/fs/cgroup"));
        }
        assert!(h.place("hugetlb").is_none());
    }

    #[test]
    fn co_mounted_v1_controllers_share_a_mount() {
        let info = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let h = Hierarchies::parse(info, |_| String::new());
        assert_eq!(h.place("cpu"), h.place("cpuacct"));
        assert_eq!(h.mode(), Mode::V1);
        assert_eq!(Hierarchies::parse("", |_| String::new()).mode(), Mode::None);
    }
}
