//! `volume/host_path`: host directories or files bind-mounted into the
//! container, checked as the YARN runc runtime checks its mounts.
//!
//! - SRC must be absolute, exist, and (once symlinks are resolved) sit
//!   under the operator's allow-list: `allow_rw` for read-write volumes,
//!   `allow_ro` or `allow_rw` for read-only ones. The container's own
//!   sandbox is always allowed; nothing else is by default.
//! - DST must be free of `..`. An absolute one — in a container with its
//!   own rootfs — must not resolve through a symlink to a place outside
//!   it. A relative one lies in the sandbox (as Mesos's host-path volumes
//!   with a relative container path): `data` is `<sandbox>/data` (in an
//!   image container, under the sandbox's mount point), made by the
//!   launcher beneath the sandbox without following any symlink.
//! - The bind is private (no propagation either way) unless the volume
//!   asks for `rslave` (the source must be a shared or slave mount: host
//!   mounts under it then show inside) or `rshared` (a shared source:
//!   both ways). An `ro` volume is remounted read-only by the launcher,
//!   so it really cannot be written.

use crate::{Isolator, IsolatorError, IsolatorFuture, PrepareRequest};
use berth_state::{volume, ContainerId, LaunchInfo, Mount, Volume};
use std::path::{Component, Path, PathBuf};

/// The operator's allow-lists (the agent's config).
#[derive(Debug, Clone, Default)]
pub struct HostPathConfig {
    /// Host directories that may be mounted read-only.
    pub allow_ro: Vec<PathBuf>,
    /// Host directories that may be mounted read-write (or read-only).
    pub allow_rw: Vec<PathBuf>,
}

/// The `volume/host_path` isolator.
#[derive(Debug, Clone, Default)]
pub struct HostPathVolumes {
    config: HostPathConfig,
}

impl HostPathVolumes {
    /// An isolator with the operator's allow-lists.
    pub fn new(config: HostPathConfig) -> Self {
        HostPathVolumes { config }
    }
}

impl Isolator for HostPathVolumes {
    fn name(&self) -> &str {
        "volume/host_path"
    }

    fn watches(&self) -> bool {
        false
    }

    fn isolates(&self) -> bool {
        false
    }

    fn supports_nesting(&self) -> bool {
        true
    }
    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        let req = req.clone();
        let config = self.config.clone();
        Box::pin(async move {
            if req.config.volumes.is_empty() {
                return Ok(None);
            }
            // canonicalize/stat block: the blocking pool.
            crate::blocking(move || {
                let mut info = LaunchInfo::default();
                for v in &req.config.volumes {
                    info.mounts.push(check_volume(
                        &req.id,
                        &config,
                        &req.sandbox_dir,
                        req.rootfs.as_deref(),
                        v,
                    )?);
                }
                Ok(Some(info))
            })
            .await
        })
    }
}

/// Checks one volume and returns the bind mount that realises it.
pub fn check_volume(
    id: &ContainerId,
    config: &HostPathConfig,
    sandbox: &Path,
    rootfs: Option<&Path>,
    v: &Volume,
) -> Result<Mount, IsolatorError> {
    let entry = format!(
        "{}:{}:{}",
        v.host_path,
        v.container_path,
        if v.mode == volume::Mode::Ro as i32 {
            "ro"
        } else {
            "rw"
        }
    );
    let bad = |why: String| IsolatorError::invalid(id, &format!("volume {entry:?}"), why);
    let ro = match volume::Mode::try_from(v.mode) {
        Ok(volume::Mode::Ro) => true,
        Ok(volume::Mode::Rw) => false,
        Err(_) => return Err(bad(format!("unknown mode {}", v.mode))),
    };
    let propagation = match volume::Propagation::try_from(v.propagation) {
        Ok(volume::Propagation::Private) => "private",
        Ok(volume::Propagation::Rslave) => "rslave",
        Ok(volume::Propagation::Rshared) => "rshared",
        Err(_) => return Err(bad(format!("unknown propagation {}", v.propagation))),
    };

    // SRC: absolute, existing, under the allow-list once resolved.
    let src = Path::new(&v.host_path);
    if !src.is_absolute() {
        return Err(bad(format!(
            "source {:?} is not an absolute path",
            v.host_path
        )));
    }
    let real_src = std::fs::canonicalize(src)
        .map_err(|e| bad(format!("source {:?} cannot be resolved: {e}", v.host_path)))?;
    let mut allowed: Vec<PathBuf> = config.allow_rw.clone();
    if ro {
        allowed.extend(config.allow_ro.iter().cloned());
    }
    allowed.push(sandbox.to_path_buf());
    let permitted = allowed
        .iter()
        .filter_map(|a| std::fs::canonicalize(a).ok())
        .any(|a| real_src.starts_with(&a));
    if !permitted {
        let list = if ro { "read-only" } else { "read-write" };
        return Err(bad(format!(
            "source {} is not under an allowed {list} volume directory \
             (--volume-allow-{}) or the sandbox",
            real_src.display(),
            if ro { "ro" } else { "rw" }
        )));
    }

    // DST: no `..`; absolute (with no symlink leading out of the rootfs),
    // or relative: a path in the sandbox.
    let dst = Path::new(&v.container_path);
    if dst
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err(bad(format!(
            "destination {:?} may not contain \"..\"",
            v.container_path
        )));
    }
    if propagation != "private" {
        check_propagation(&real_src, propagation).map_err(bad)?;
    }
    let mut options = vec!["rbind".to_string(), propagation.to_string()];
    if ro {
        options.push("ro".into());
    }
    if !dst.is_absolute() {
        // As Mesos: a relative destination lies in the sandbox. The
        // launcher makes it beneath the sandbox, following no symlink.
        let rel: PathBuf = dst
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect();
        if rel.as_os_str().is_empty() {
            return Err(bad(
                "destination may not be the sandbox itself (name a path in it)".into(),
            ));
        }
        return Ok(Mount {
            source: real_src.display().to_string(),
            target: rel.display().to_string(),
            fs_type: String::new(),
            options,
        });
    }
    if dst.components().all(|c| c == Component::RootDir) {
        return Err(bad("destination may not be the container's root".into()));
    }
    // Where it lands, as the container sees it: symlinks resolved inside
    // the rootfs (or on the host for a host-filesystem container).
    let lands = match rootfs {
        Some(root) => {
            let r = resolve_inside(root, dst).map_err(bad)?;
            Path::new("/").join(r.strip_prefix(root).unwrap_or(&r))
        }
        None => std::fs::canonicalize(dst).unwrap_or_else(|_| dst.to_path_buf()),
    };
    // As runc and moby: a volume may not cover the kernel's filesystems.
    if let Some(Component::Normal(top)) = lands.components().nth(1) {
        if ["proc", "sys", "dev"].iter().any(|k| top == *k) {
            return Err(bad(format!(
                "destination {} lies in /{} (resolved: {}): berth does not mount volumes into /proc, /sys or /dev",
                v.container_path,
                top.to_string_lossy(),
                lands.display()
            )));
        }
    }

    Ok(Mount {
        source: real_src.display().to_string(),
        target: v.container_path.clone(),
        fs_type: String::new(),
        options,
    })
}

/// Checks that the host mount holding `src` can propagate as asked: a
/// bind only shares the peer group (or the master) of its source mount,
/// so a private source would silently propagate nothing.
fn check_propagation(src: &Path, propagation: &str) -> Result<(), String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let (point, shared, slave) = mount_of(&info, src)
        .ok_or_else(|| format!("no mount holds {} in /proc/self/mountinfo", src.display()))?;
    let ok = match propagation {
        "rshared" => shared,
        _ => shared || slave,
    };
    if ok {
        return Ok(());
    }
    let want = match propagation {
        "rshared" => "a shared mount",
        _ => "a shared or slave mount",
    };
    Err(format!(
        "{propagation}: source {} is mounted on {} but it is not {want} \
         (make it one, e.g. `mount --bind {} {}` then `mount --make-shared {}`)",
        src.display(),
        point.display(),
        src.display(),
        src.display(),
        src.display()
    ))
}

/// The mount point holding `path` in mountinfo text `info` (the last one
/// mounted there wins), and whether it is shared and/or a slave.
fn mount_of(info: &str, path: &Path) -> Option<(PathBuf, bool, bool)> {
    let mut best: Option<(PathBuf, bool, bool)> = None;
    for line in info.lines() {
        let Some((left, _)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let Some(point) = fields.get(4).map(|p| unescape(p)) else {
            continue;
        };
        if !path.starts_with(&point) {
            continue;
        }
        let optional = fields.get(6..).unwrap_or_default();
        let shared = optional.iter().any(|f| f.starts_with("shared:"));
        let slave = optional.iter().any(|f| f.starts_with("master:"));
        let deeper = best
            .as_ref()
            .is_none_or(|(b, _, _)| point.components().count() >= b.components().count());
        if deeper {
            best = Some((point, shared, slave));
        }
    }
    best
}

/// mountinfo's octal escapes (`\040` for a space) undone.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(n) = u8::from_str_radix(digits, 8) {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Resolves `dst` inside `root` component by component, following
/// symlinks as the container would see them (absolute targets relative to
/// `root`), and fails if any step would leave `root`.
fn resolve_inside(root: &Path, dst: &Path) -> Result<PathBuf, String> {
    let mut parts: Vec<std::ffi::OsString> = Vec::new();
    let mut todo: Vec<std::ffi::OsString> = dst
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            if parts.pop().is_none() {
                return Err(format!(
                    "destination {} climbs out of the container's root through a symlink",
                    dst.display()
                ));
            }
            continue;
        }
        if name == "." {
            continue;
        }
        let mut here = root.to_path_buf();
        here.extend(&parts);
        here.push(&name);
        match std::fs::read_link(&here) {
            Ok(target) => {
                links += 1;
                if links > 40 {
                    return Err(format!("destination {}: too many symlinks", dst.display()));
                }
                if target.is_absolute() {
                    parts.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            // Not a symlink, or not there yet (the launcher creates it).
            Err(_) => parts.push(name),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&parts);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_destinations_lie_in_the_sandbox() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let config = HostPathConfig {
            allow_ro: vec![src.clone()],
            ..Default::default()
        };
        let id = ContainerId::new("c");
        let check = |dst: &str, rootfs: Option<&Path>| {
            let v = Volume {
                host_path: src.display().to_string(),
                container_path: dst.into(),
                mode: volume::Mode::Ro as i32,
                ..Default::default()
            };
            check_volume(&id, &config, &t.path().join("sandbox"), rootfs, &v)
        };
        for rootfs in [None, Some(t.path())] {
            let m = check("./data/x", rootfs).unwrap();
            assert_eq!(m.target, "data/x");
            assert!(m.options.contains(&"ro".to_string()), "{:?}", m.options);
            for bad in ["data/../../x", "..", "../data"] {
                let e = check(bad, rootfs).unwrap_err().to_string();
                assert!(e.contains("may not contain \"..\""), "{bad}: {e}");
            }
            let e = check(".", rootfs).unwrap_err().to_string();
            assert!(e.contains("the sandbox itself"), "{e}");
        }
    }

    #[test]
    fn the_mount_holding_a_path_and_its_propagation() {
        let info = "22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n\
                    30 22 0:40 / /mnt/a\\040b rw shared:7 - tmpfs t rw\n\
                    31 30 0:41 / /mnt/a\\040b/s rw master:7 - tmpfs t rw\n\
                    32 22 0:42 / /mnt/a\\040bc rw - tmpfs t rw\n";
        let at = |p: &str| mount_of(info, Path::new(p)).unwrap();
        assert_eq!(at("/etc"), (PathBuf::from("/"), false, false));
        assert_eq!(at("/mnt/a b/x"), (PathBuf::from("/mnt/a b"), true, false));
        assert_eq!(
            at("/mnt/a b/s/y"),
            (PathBuf::from("/mnt/a b/s"), false, true)
        );
        assert_eq!(at("/mnt/a bc"), (PathBuf::from("/mnt/a bc"), false, false));
    }

    #[test]
    fn symlinks_may_not_lead_out_of_the_rootfs() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("a/up")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        assert!(resolve_inside(root, Path::new("/a/up/x")).is_err());
        // An absolute link is read relative to the container's root.
        assert_eq!(
            resolve_inside(root, Path::new("/abs/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            resolve_inside(root, Path::new("/a/b")).unwrap(),
            root.join("a/b")
        );
    }
}
