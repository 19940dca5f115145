//! What a container with its own cgroup namespace sees under
//! `/sys/fs/cgroup`: a private tmpfs holding, for each hierarchy the
//! container *joined*, a fresh read-only mount of that hierarchy made
//! inside the namespace (so its root is the container's own cgroup), at
//! the same place as on the host (`memory`, `cpu,cpuacct`, `unified`, or
//! `/sys/fs/cgroup` itself on a pure v2 host), plus the host's symlinks
//! (`cpu -> cpu,cpuacct`) whose target is shown. Hierarchies the
//! container did not join are not shown.
//!
//! The plan is pure (mountinfo text and the host's links in, mounts out),
//! so it is unit-tested without root; [`CgroupView::read`] gathers the
//! facts before anything covers `/sys`.

use std::fs;
use std::path::{Path, PathBuf};

/// Where the host's cgroup hierarchies live.
pub const CGROUP_DIR: &str = "/sys/fs/cgroup";

/// One hierarchy to mount inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HierarchyMount {
    /// Its place relative to `/sys/fs/cgroup` (empty: `/sys/fs/cgroup`
    /// itself, a pure v2 host).
    pub rel: PathBuf,
    /// `cgroup` (v1) or `cgroup2`.
    pub fs_type: &'static str,
    /// v1: the hierarchy's controllers and name as the host mounted them
    /// (`cpu,cpuacct`, `name=systemd`), which must match to mount it
    /// again; empty for v2.
    pub options: String,
}

/// The container's view of `/sys/fs/cgroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupView {
    pub hierarchies: Vec<HierarchyMount>,
    /// `(name, target)` links to make in the tmpfs, e.g. `("cpu",
    /// "cpu,cpuacct")`.
    pub links: Vec<(String, String)>,
}

impl CgroupView {
    /// The view for cgroup dirs `joined` (host paths), from this process's
    /// mountinfo and the host's `/sys/fs/cgroup` links.
    /// `mountinfo`: the launcher's cgroup lines when this process's mount
    /// namespace is a copy of its (`None`: read our own).
    pub fn read(joined: &[String], mountinfo: Option<&str>) -> std::io::Result<CgroupView> {
        let own;
        let mountinfo = match mountinfo {
            Some(m) => m,
            None => {
                own = fs::read_to_string("/proc/self/mountinfo")?;
                own.as_str()
            }
        };
        let mut links = Vec::new();
        if let Ok(entries) = fs::read_dir(CGROUP_DIR) {
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_symlink()) {
                    continue;
                }
                if let (Some(name), Ok(target)) = (e.file_name().to_str(), fs::read_link(e.path()))
                {
                    if let Some(t) = target.to_str() {
                        links.push((name.to_string(), t.to_string()));
                    }
                }
            }
        }
        links.sort();
        Ok(plan(mountinfo, joined, &links))
    }

    /// Whether the cgroup2 fs goes on `/sys/fs/cgroup` itself (no tmpfs).
    pub fn unified_at_top(&self) -> bool {
        self.hierarchies
            .iter()
            .any(|h| h.rel.as_os_str().is_empty())
    }
}

/// The hierarchies holding `joined` (each the cgroup or cgroup2 mount
/// below `/sys/fs/cgroup` whose mount point is the longest prefix of the
/// path), each once, in the order joined; and the `host_links` whose
/// target is one of them.
pub fn plan(mountinfo: &str, joined: &[String], host_links: &[(String, String)]) -> CgroupView {
    let mounts: Vec<(PathBuf, &'static str, String)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = PathBuf::from(unescape(left.split(' ').nth(4)?));
            let mut r = right.split(' ');
            let fs_type = match r.next()? {
                "cgroup" => "cgroup",
                "cgroup2" => "cgroup2",
                _ => return None,
            };
            let options = if fs_type == "cgroup" {
                v1_options(r.nth(1).unwrap_or(""))
            } else {
                String::new()
            };
            Some((point, fs_type, options))
        })
        .collect();
    let mut view = CgroupView::default();
    for path in joined {
        let path = Path::new(path);
        let Some((point, fs_type, options)) = mounts
            .iter()
            .filter(|(point, _, _)| path.starts_with(point))
            .max_by_key(|(point, _, _)| point.components().count())
        else {
            continue;
        };
        let Ok(rel) = point.strip_prefix(CGROUP_DIR) else {
            continue; // mounted elsewhere: nothing to show at /sys/fs/cgroup
        };
        if view.hierarchies.iter().any(|h| h.rel == rel) {
            continue;
        }
        view.hierarchies.push(HierarchyMount {
            rel: rel.to_path_buf(),
            fs_type,
            options: options.clone(),
        });
    }
    for (name, target) in host_links {
        let shown = view
            .hierarchies
            .iter()
            .any(|h| !h.rel.as_os_str().is_empty() && h.rel == Path::new(target));
        let plain = !name.contains('/') && !name.is_empty() && name != "." && name != "..";
        if shown && plain && !view.hierarchies.iter().any(|h| h.rel == Path::new(name)) {
            view.links.push((name.clone(), target.clone()));
        }
    }
    view
}

/// A v1 hierarchy's super options without the read-only flag and the
/// release agent (which only the host's mount may set): what mounting
/// that same hierarchy again takes.
fn v1_options(super_options: &str) -> String {
    super_options
        .split(',')
        .filter(|o| !o.is_empty() && !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent="))
        .collect::<Vec<_>>()
        .join(",")
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory,release_agent=/x
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    fn joined(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn joined_v1_hierarchies_with_their_controllers_and_links() {
        let links = vec![
            ("cpu".to_string(), "cpu,cpuacct".to_string()),
            ("cpuacct".to_string(), "cpu,cpuacct".to_string()),
            ("net_cls".to_string(), "net_cls,net_prio".to_string()),
        ];
        let v = plan(
            HYBRID,
            &joined(&[
                "/sys/fs/cgroup/freezer/berth/c1",
                "/sys/fs/cgroup/cpu,cpuacct/berth/c1",
                "/sys/fs/cgroup/memory/berth/c1",
                "/sys/fs/cgroup/memory/berth/c1",
                "/elsewhere/berth/c1",
            ]),
            &links,
        );
        let got: Vec<(&str, &str, &str)> = v
            .hierarchies
            .iter()
            .map(|h| (h.rel.to_str().unwrap(), h.fs_type, h.options.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("freezer", "cgroup", "freezer"),
                ("cpu,cpuacct", "cgroup", "cpu,cpuacct"),
                ("memory", "cgroup", "memory"),
            ]
        );
        // Only links to what is shown.
        assert_eq!(v.links, links[..2].to_vec());
        assert!(!v.unified_at_top());
    }

    #[test]
    fn named_and_unified_hierarchies() {
        let v = plan(
            HYBRID,
            &joined(&[
                "/sys/fs/cgroup/systemd/berth/c1",
                "/sys/fs/cgroup/unified/berth/c1",
            ]),
            &[],
        );
        assert_eq!(v.hierarchies[0].options, "xattr,name=systemd");
        assert_eq!(
            v.hierarchies[1],
            HierarchyMount {
                rel: "unified".into(),
                fs_type: "cgroup2",
                options: String::new(),
            }
        );
    }

    #[test]
    fn pure_v2_mounts_at_the_top() {
        let info =
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw\n";
        let v = plan(info, &joined(&["/sys/fs/cgroup/berth/c1"]), &[]);
        assert_eq!(v.hierarchies.len(), 1);
        assert!(v.unified_at_top());
        // Nothing joined: nothing shown.
        assert_eq!(plan(info, &[], &[]), CgroupView::default());
    }

    #[test]
    fn escaped_mount_points() {
        let info = "1 2 0:1 / /sys/fs/cgroup/a\\040b rw - cgroup cgroup rw,pids\n";
        let v = plan(info, &joined(&["/sys/fs/cgroup/a b/x"]), &[]);
        assert_eq!(v.hierarchies[0].rel, Path::new("a b"));
    }
}
