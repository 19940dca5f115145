//! The container's filesystem, set up by its init inside its own mount
//! namespace, in this order: the sources of propagating (rslave,
//! rshared) binds cloned; everything private; the rootfs bound onto
//! itself (when there is one); a fresh `/proc`; a tmpfs `/dev` with the
//! usual nodes, the launch info's device nodes, devpts, shm and mqueue; a
//! read-only `/sys` (with its own cgroup namespace, a private
//! `/sys/fs/cgroup` showing only the container's cgroups, see
//! [`crate::cgroup_view`]); a private `/tmp` (host filesystem only); the
//! launch info's mounts; the masked and read-only paths (as the Nomad
//! executor and runc do); `pivot_root`.
//!
//! Every path below is the container's path joined under the new root
//! (the rootfs, or `/` for the host filesystem), so the same code serves
//! both cases.

use crate::cgroup_view::CgroupView;
use crate::step::{StepError, StepResult};
use crate::sys;
use berth_state::safe_path::{self, Identity};
use berth_state::{DeviceNode, IdMapping, Mount};
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Paths hidden from the container: files get `/dev/null` bound over them,
/// directories an empty read-only tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths the container may read but not write.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Device nodes bound from the host into the container's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What the filesystem setup needs to know.
#[derive(Debug)]
pub struct FsPlan<'a> {
    /// The rootfs to pivot into; `None` = the host's filesystem.
    pub rootfs: Option<&'a Path>,
    /// The container has a network namespace of its own (a fresh sysfs
    /// then shows its interfaces, not the host's).
    pub new_net: bool,
    /// The launch info's mounts, made after the standard ones.
    pub mounts: &'a [Mount],
    /// The sandbox dir (host path). On the host filesystem it stays
    /// reachable at that path even when it lies under the private `/tmp`.
    pub sandbox: &'a Path,
    /// The sandbox as berth made it; a bind of it must find that one.
    pub sandbox_identity: Option<Identity>,
    /// Make the root read-only (the host's recursively, or the rootfs).
    pub readonly_root: bool,
    /// Host paths hidden from a host-filesystem container.
    pub hidden: &'a [String],
    /// The container's own paths to mask and to make read-only, after
    /// berth's (paths inside the root).
    pub masked: &'a [String],
    pub readonly: &'a [String],
    /// Size of /dev/shm in bytes (0 = 64 MiB).
    pub shm_size: u64,
    /// Namespaced sysctls to write under the new /proc/sys.
    pub sysctls: &'a std::collections::BTreeMap<String, String>,
    /// The user namespace the init joins after this setup: binds (the
    /// rootfs, the sandbox, volumes) are idmapped with it, and berth's own
    /// mounts and nodes are given to the container's root.
    pub userns: Option<Userns<'a>>,
    /// Device nodes to make in the container's /dev (container paths
    /// under /dev).
    pub devices: &'a [DeviceNode],
    /// The init has unshared a cgroup namespace of its own (after joining
    /// `cgroups`): `/sys/fs/cgroup` then shows only those cgroups.
    pub new_cgroupns: bool,
    /// The launcher's cgroup mountinfo lines (see the request's
    /// `cgroup_mountinfo`); `None`: read this process's own.
    pub cgroup_mountinfo: Option<&'a str>,
    /// The cgroup dirs (host paths) the init joined.
    pub cgroups: &'a [String],
}

/// The container's user namespace, for the filesystem setup.
#[derive(Debug, Clone, Copy)]
pub struct Userns<'a> {
    /// An fd on the namespace (its mappings are written).
    pub fd: BorrowedFd<'a>,
    /// Its uid map.
    pub uid_mappings: &'a [IdMapping],
    /// Its gid map.
    pub gid_mappings: &'a [IdMapping],
}

impl Userns<'_> {
    /// The host uid of container uid `id` (the overflow id if unmapped).
    pub fn host_uid(&self, id: u32) -> u32 {
        to_host(self.uid_mappings, id)
    }

    /// The host gid of container gid `id` (the overflow id if unmapped).
    pub fn host_gid(&self, id: u32) -> u32 {
        to_host(self.gid_mappings, id)
    }
}

/// Container id → host id through `maps`; 65534 (the kernel's overflow
/// id) when no line covers it.
pub fn to_host(maps: &[IdMapping], id: u32) -> u32 {
    maps.iter()
        .find(|m| id >= m.container_id && id - m.container_id < m.size)
        .map(|m| m.host_id + (id - m.container_id))
        .unwrap_or(65534)
}

/// Sets up the container's filesystem. Must run in a fresh mount
/// namespace (or every mount here would land on the host).
pub fn setup(plan: &FsPlan<'_>) -> StepResult {
    // The host's device numbers, read before /dev is covered.
    let devs = DEVICES
        .iter()
        .map(|d| {
            let p = format!("/dev/{d}");
            let st = nix::sys::stat::stat(Path::new(&p))
                .map_err(|e| StepError::nix(format!("stat {p}"), e))?;
            Ok((*d, st.st_rdev))
        })
        .collect::<StepResult<Vec<_>>>()?;
    // The hierarchies to show, read before /sys is covered.
    let cgroup_view = match plan.new_cgroupns {
        true => Some(
            CgroupView::read(plan.cgroups, plan.cgroup_mountinfo)
                .map_err(|e| StepError::io("read /proc/self/mountinfo", e))?,
        ),
        false => None,
    };

    // The sandbox, held open in case the private /tmp covers it.
    // On the host filesystem the sandbox is bound back onto its own path
    // (writable on a read-only root, visible under the private /tmp or a
    // hidden dir); held open before anything covers it.
    let sandbox = match plan.rootfs {
        None => Some(open_sandbox_path(plan, plan.sandbox)?),
        _ => None,
    };

    // The bind sources, held open for the same reason: a volume under the
    // host's /tmp would otherwise be hidden by the private /tmp. A source
    // in the sandbox (the sandbox itself, a volume in it) lies in a tree
    // a container writes (a parent's, for a nested one): it is opened with
    // no symlink on the way, so the bind cannot be led to a host path.
    let bind_sources = plan
        .mounts
        .iter()
        .map(|m| match is_bind(m) {
            true if Path::new(&m.source).starts_with(plan.sandbox) => {
                open_sandbox_path(plan, Path::new(&m.source)).map(Some)
            }
            true => fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(&m.source)
                .map(|f| Some(OwnedFd::from(f)))
                .map_err(|e| StepError::io(format!("bind {} on {}", m.source, m.target), e)),
            false => Ok(None),
        })
        .collect::<StepResult<Vec<_>>>()?;

    // A volume that propagates (rslave, rshared) is cloned now, while
    // this namespace's copy of its source is still in the host's peer
    // group: the detached clone stays in it, and the private step below
    // does not reach it.
    let propagating = plan
        .mounts
        .iter()
        .zip(&bind_sources)
        .map(|(m, fd)| propagating_tree(m, fd.as_ref(), plan.userns.as_ref()))
        .collect::<StepResult<Vec<_>>>()?;

    // Nothing mounted below may propagate back to the host.
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
        "make / private",
    )?;

    let root = plan.rootfs.unwrap_or(Path::new("/")).to_path_buf();
    if plan.rootfs.is_none() && plan.readonly_root {
        // The host's root and every mount below it, read-only. berth's own
        // mounts (proc, dev, tmp, the sandbox, volumes) come after, with
        // their own flags.
        set_readonly_recursive(Path::new("/"))?;
    }
    if let Some(rootfs) = plan.rootfs {
        match &plan.userns {
            Some(u) if crate::idmapped_rootfs::is_overlay(rootfs) => {
                crate::idmapped_rootfs::mount(rootfs, u)?
            }
            // pivot_root needs the new root to be a mount point.
            u => bind(
                rootfs,
                rootfs,
                true,
                u.as_ref(),
                &format!("bind the rootfs {} onto itself", rootfs.display()),
            )?,
        }
    }
    let at = |p: &str| join_inside(&root, p);
    // User mount targets are resolved inside the root, so the image's
    // symlinks cannot lead them (or the directories made for them) out.
    let root_fd = open_path(&root)?;

    let proc_dir = at("/proc")?;
    plain_dir(plan.rootfs, &proc_dir)?;
    mnt_path(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;

    let dev_dir = at("/dev")?;
    plain_dir(plan.rootfs, &dev_dir)?;
    setup_dev(
        &dev_dir,
        &devs,
        plan.devices,
        plan.shm_size,
        plan.userns.as_ref(),
    )?;
    let sys_dir = at("/sys")?;
    plain_dir(plan.rootfs, &sys_dir)?;
    setup_sys(&sys_dir, plan.new_net, cgroup_view.as_ref())?;

    if plan.rootfs.is_none() {
        mnt_path(
            Some(Path::new("tmpfs")),
            Path::new("/tmp"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&format!("mode=1777{}", owner_opts(plan.userns.as_ref()))),
        )?;
        let hidden_dirs = hide(plan.hidden, &at("/dev/null")?)?;
        if let Some(fd) = &sandbox {
            ensure_dir(plan.sandbox)?;
            let src = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            bind(
                &src,
                plan.sandbox,
                true,
                plan.userns.as_ref(),
                &format!("bind the sandbox {} onto itself", plan.sandbox.display()),
            )?;
            // Writable even on a read-only root (a bind inherits its
            // source mount's read-only flag). Not nodev: the device cgroup
            // is what refuses device nodes there.
            mnt(
                None,
                plan.sandbox,
                None,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID,
                None,
                &format!("remount the sandbox {} writable", plan.sandbox.display()),
            )?;
        }
        for d in hidden_dirs {
            mnt(
                None,
                &d,
                None,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                None,
                &format!("make the hiding tmpfs on {} read-only", d.display()),
            )?;
        }
    }

    for ((m, fd), tree) in plan.mounts.iter().zip(&bind_sources).zip(propagating) {
        let bound = Bound {
            held: fd.as_ref(),
            tree,
        };
        match Path::new(&m.target).is_absolute() {
            true => user_mount(&root, &root_fd, m, bound, plan.userns.as_ref())?,
            false => sandbox_mount(plan, &root_fd, m, bound)?,
        }
    }

    // Before /proc/sys goes read-only; the keys were checked to be
    // namespaced ones, so this writes the container's own values.
    for (k, v) in plan.sysctls {
        let p = at(&format!("/proc/sys/{}", k.replace('.', "/")))?;
        fs::write(&p, v).map_err(|e| StepError::io(format!("sysctl {k}={v}"), e))?;
    }

    let dev_null = at("/dev/null")?;
    for p in MASKED_PATHS {
        mask(&at(p)?, &dev_null)?;
    }
    for p in READONLY_PATHS {
        readonly(&at(p)?)?;
    }
    own_masks(&root_fd, plan, &dev_null)?;

    if let Some(thermal) = at("/sys/devices/system/cpu")
        .ok()
        .and_then(|d| fs::read_dir(d).ok())
    {
        for e in thermal.flatten() {
            let t = e.path().join("thermal_throttle");
            if e.file_name().as_bytes().starts_with(b"cpu") && t.is_dir() {
                mask(&t, &dev_null)?;
            }
        }
    }

    if let Some(rootfs) = plan.rootfs {
        if plan.readonly_root {
            // The rootfs mount itself (its submounts keep their flags).
            mnt(
                None,
                rootfs,
                None,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
                None,
                &format!("make the rootfs {} read-only", rootfs.display()),
            )?;
        }
        pivot(rootfs)?;
    }
    Ok(())
}

/// `/proc`, `/dev` and `/sys` of a rootfs must be real directories (as
/// runc requires): a symlink there would put berth's mounts, and the
/// masks over them, somewhere else than where the container looks.
fn plain_dir(rootfs: Option<&Path>, p: &Path) -> StepResult {
    if rootfs.is_some() {
        match fs::symlink_metadata(p) {
            Ok(m) if !m.is_dir() => {
                return Err(StepError::invalid(
                    format!("{} in the rootfs", p.display()),
                    "is a symlink or not a directory; berth mounts only on a real directory",
                ))
            }
            _ => {}
        }
    }
    ensure_dir(p)
}

/// `,uid=…,gid=…` making a tmpfs's root the container root's (nothing
/// without a user namespace: the host's root is the container's).
fn owner_opts(userns: Option<&Userns<'_>>) -> String {
    userns
        .map(|u| format!(",uid={},gid={}", u.host_uid(0), u.host_gid(0)))
        .unwrap_or_default()
}

fn setup_dev(
    dev: &Path,
    devs: &[(&str, u64)],
    devices: &[DeviceNode],
    shm_size: u64,
    userns: Option<&Userns<'_>>,
) -> StepResult {
    let owner = owner_opts(userns);
    mnt_path(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some(&format!("mode=755,size=65536k{owner}")),
    )?;
    // Nodes of the container's own (mknod, as runc does outside a user
    // namespace), never binds of the host's: a chown or chmod inside would
    // change the host's /dev/null.
    for (name, rdev) in devs {
        let node = dev.join(name);
        let c = cpath(&node)?;
        // SAFETY: a NUL-terminated path in our fresh tmpfs.
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, *rdev) } < 0 {
            return Err(StepError::io(
                format!("mknod {}", node.display()),
                std::io::Error::last_os_error(),
            ));
        }
        // The umask narrowed the mode.
        // SAFETY: as above.
        if unsafe { libc::chmod(c.as_ptr(), 0o666) } < 0 {
            return Err(StepError::io(
                format!("chmod {}", node.display()),
                std::io::Error::last_os_error(),
            ));
        }
    }
    // The container's own devices, while the tmpfs holds nothing but
    // berth's nodes (no link, no submount on the way).
    for d in devices {
        make_device(dev, d, userns)?;
    }
    let pts = dev.join("pts");
    ensure_dir(&pts)?;
    mnt_path(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&format!(
            "newinstance,ptmxmode=0666,mode=0620,gid={}",
            userns.map(|u| u.host_gid(5)).unwrap_or(5)
        )),
    )?;
    symlink("pts/ptmx", &dev.join("ptmx"))?;
    let shm = dev.join("shm");
    ensure_dir(&shm)?;
    mnt_path(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(&format!(
            "mode=1777,size={}{owner}",
            if shm_size == 0 { 64 << 20 } else { shm_size }
        )),
    )?;
    let mq = dev.join("mqueue");
    ensure_dir(&mq)?;
    mnt_path(
        Some(Path::new("mqueue")),
        &mq,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    if let Some(u) = userns {
        // mqueue takes no owner option.
        nix::unistd::chown(
            &mq,
            Some(nix::unistd::Uid::from_raw(u.host_uid(0))),
            Some(nix::unistd::Gid::from_raw(u.host_gid(0))),
        )
        .map_err(|e| {
            StepError::nix(format!("chown {} to the container's root", mq.display()), e)
        })?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, &dev.join(link))?;
    }
    Ok(())
}

/// Makes device node `d` at its path under `dev` (the container's fresh
/// /dev tmpfs), with the parent dirs it needs, and its mode and owner.
fn make_device(dev: &Path, d: &DeviceNode, userns: Option<&Userns<'_>>) -> StepResult {
    let node = device_path(dev, &d.path)?;
    let what = |op: &str| format!("{op} device node {} (from {})", node.display(), d.path);
    let kind = match d.r#type.as_str() {
        "c" => libc::S_IFCHR,
        "b" => libc::S_IFBLK,
        t => {
            return Err(StepError::invalid(
                what("mknod"),
                format!("type {t:?} is neither \"c\" nor \"b\""),
            ))
        }
    };
    let (Ok(major), Ok(minor)) = (u32::try_from(d.major), u32::try_from(d.minor)) else {
        return Err(StepError::invalid(
            what("mknod"),
            format!("bad device number {}:{}", d.major, d.minor),
        ));
    };
    if let Some(parent) = node.parent() {
        fs::create_dir_all(parent).map_err(|e| StepError::io(what("make the parent of"), e))?;
    }
    let mode = d.file_mode & 0o777;
    let c = cpath(&node)?;
    let rdev = libc::makedev(major, minor);
    // SAFETY: a NUL-terminated path in our fresh tmpfs.
    if unsafe { libc::mknod(c.as_ptr(), kind | mode, rdev) } < 0 {
        return Err(StepError::io(
            what("mknod"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: as above; the node was just made by us (the umask narrowed
    // its mode).
    if unsafe { libc::chmod(c.as_ptr(), mode) } < 0 {
        return Err(StepError::io(
            what("chmod"),
            std::io::Error::last_os_error(),
        ));
    }
    // Its owner as the container sees it: through the user namespace.
    let (uid, gid) = match userns {
        Some(u) => (u.host_uid(d.uid), u.host_gid(d.gid)),
        None => (d.uid, d.gid),
    };
    // SAFETY: as above.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } < 0 {
        return Err(StepError::io(
            what("chown"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// `dev` joined with container path `p`, which must lie below `/dev`
/// with plain components only (no `.`, `..` or empty name).
fn device_path(dev: &Path, p: &str) -> StepResult<PathBuf> {
    let refused = || {
        StepError::invalid(
            format!("device node {p:?}"),
            "must be an absolute path below /dev without \".\" or \"..\"",
        )
    };
    let rest = p.strip_prefix("/dev/").ok_or_else(refused)?;
    let mut out = dev.to_path_buf();
    for part in rest.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return Err(refused());
        }
        out.push(part);
    }
    Ok(out)
}

fn setup_sys(sys_dir: &Path, new_net: bool, cgroups: Option<&CgroupView>) -> StepResult {
    ensure_dir(sys_dir)?;
    if cgroups.is_some() {
        // On the host filesystem a fresh sysfs goes over the host's /sys:
        // its cgroup mounts would stay listed (if unreachable) below it.
        detach(&sys_dir.join("fs/cgroup"))?;
    }
    if new_net {
        mnt_path(
            Some(Path::new("sysfs")),
            sys_dir,
            Some("sysfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
            None,
        )?;
    } else if sys_dir != Path::new("/sys") {
        // With a cgroup view of its own, the host's sysfs alone, as a
        // fresh sysfs (a network of its own) would be: none of the host's
        // mounts below it (tracefs, debugfs, securityfs, bpffs; its cgroup
        // hierarchies are replaced below anyway).
        let rec = match cgroups {
            Some(_) => MsFlags::empty(),
            None => MsFlags::MS_REC,
        };
        mnt_path(
            Some(Path::new("/sys")),
            sys_dir,
            None,
            MsFlags::MS_BIND | rec,
            None,
        )?;
    }
    if let Some(view) = cgroups {
        setup_cgroup_dir(&sys_dir.join("fs/cgroup"), view)?;
    }
    // Recursive: the cgroup mounts below /sys must be read-only too.
    set_readonly_recursive(sys_dir)
}

/// `/sys/fs/cgroup` of a container with its own cgroup namespace: the
/// host's hierarchies (bound in with the host's /sys) detached, a tmpfs,
/// and a fresh mount of each hierarchy the container joined, made in the
/// new namespace so that it shows the container's cgroup as its root.
/// Read-only with the rest of /sys.
fn setup_cgroup_dir(dir: &Path, view: &CgroupView) -> StepResult {
    ensure_dir(dir)?;
    // A bind of the host's /sys (or the host's own) carries the host's
    // cgroup mounts: gone from this mount namespace, not just covered.
    detach(dir)?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if !view.unified_at_top() {
        mnt_path(
            Some(Path::new("tmpfs")),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=755,size=64k"),
        )?;
    }
    for h in &view.hierarchies {
        let target = dir.join(&h.rel);
        ensure_dir(&target)?;
        let data = (!h.options.is_empty()).then_some(h.options.as_str());
        mnt(
            Some(Path::new(h.fs_type)),
            &target,
            Some(h.fs_type),
            flags,
            data,
            &format!(
                "mount {} ({}) on {}",
                h.fs_type,
                if h.options.is_empty() {
                    "-"
                } else {
                    &h.options
                },
                target.display()
            ),
        )?;
    }
    for (name, target) in &view.links {
        symlink(target, &dir.join(name))?;
    }
    Ok(())
}

/// Detaches the mount at `path` and everything below it, if `path` is a
/// mount point (in this, the container's, mount namespace only).
fn detach(path: &Path) -> StepResult {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(StepError::nix(format!("detach {}", path.display()), e)),
    }
}

fn is_bind(m: &Mount) -> bool {
    m.fs_type.is_empty()
        || MountOptions::parse(&m.options)
            .flags
            .contains(MsFlags::MS_BIND)
}

/// Makes mount `m`; `held` is an `O_PATH` fd on a bind mount's source,
/// opened before anything covered it.
fn user_mount(
    root: &Path,
    root_fd: &OwnedFd,
    m: &Mount,
    bound: Bound<'_>,
    userns: Option<&Userns<'_>>,
) -> StepResult {
    let held = bound.held;
    let shown = join_inside(root, &m.target)?;
    let opts = MountOptions::parse(&m.options);
    let is_bind = is_bind(m);
    let held_path = held.map(|fd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())));
    let source = held_path.as_deref().unwrap_or(Path::new(&m.source));
    // The target and any directory missing on its way are made inside the
    // root, fd by fd: a symlink in the image resolves inside it, so
    // nothing is created, nor mounted, outside. Nothing else runs in the
    // rootfs yet, so the resolved path stays what it is.
    let refused = |e: safe_path::SafePathError| {
        let hint = match e.errno() {
            Some(libc::EROFS) if root == Path::new("/") => {
                " (the host's root is read-only in the container: mount under /tmp or the \
                 sandbox, or run with --host-rootfs rw)"
            }
            _ => "",
        };
        StepError::invalid(
            format!("mount {} on {}", m.source, m.target),
            format!("{e}{hint}"),
        )
    };
    let target_fd = if is_bind && source.is_file() {
        safe_path::create_file_in_root(root_fd.as_fd(), Path::new(&m.target), &shown)
    } else {
        safe_path::create_dirs_in_root(root_fd.as_fd(), Path::new(&m.target), &shown)
    }
    .map_err(refused)?;
    let target = safe_path::fd_path(target_fd.as_fd(), &shown).map_err(refused)?;
    let real_root = safe_path::fd_path(root_fd.as_fd(), root).map_err(refused)?;
    if !target.starts_with(&real_root) {
        return Err(StepError::invalid(
            format!("mount {} on {}", m.source, m.target),
            format!("target resolves to {} outside the rootfs", target.display()),
        ));
    }
    if let Some(tree) = bound.tree {
        sys::move_mount_to_fd(&tree, &target_fd).map_err(|e| {
            StepError::io(
                format!("bind {} on {}: move_mount", m.source, target.display()),
                e,
            )
        })?;
        remount_bind(&target, &target, m, &opts)?;
    } else if is_bind {
        let rec = opts.flags & MsFlags::MS_REC;
        bind(
            source,
            &target,
            !rec.is_empty(),
            userns,
            &format!("bind {} on {}", m.source, target.display()),
        )?;
        remount_bind(&target, &target, m, &opts)?;
    } else {
        let data = (!opts.data.is_empty()).then(|| opts.data.join(","));
        mnt_path(
            Some(source),
            &target,
            Some(&m.fs_type),
            opts.flags,
            data.as_deref(),
        )?;
    }
    if let Some(prop) = opts.propagation {
        mnt(
            None,
            &target,
            None,
            prop,
            None,
            &format!("set propagation of {}", target.display()),
        )?;
    }
    Ok(())
}

/// Makes mount `m` whose target is relative: a path in the container's
/// sandbox (a relative `--volume` destination). The sandbox is opened
/// where the container sees it — on the host filesystem its own path
/// (bound onto itself above), in a rootfs the target of the bind of the
/// sandbox made before (resolved inside the root) — and must be the
/// directory berth made. The target is made beneath it fd by fd without
/// following any symlink (a nested sandbox is written by its parent at
/// any time), the mount goes on that fd, and the flags are set on the new
/// mount reopened beneath the sandbox and checked to be the source.
fn sandbox_mount(plan: &FsPlan<'_>, root_fd: &OwnedFd, m: &Mount, bound: Bound<'_>) -> StepResult {
    let held = bound.held;
    let what = format!("mount {} on {} in the sandbox", m.source, m.target);
    let refused = |e: safe_path::SafePathError| StepError::invalid(what.clone(), e.to_string());
    let (sandbox_fd, shown) = match plan.rootfs {
        None => (
            safe_path::open_dir(plan.sandbox, plan.sandbox_identity).map_err(refused)?,
            plan.sandbox.join(&m.target),
        ),
        Some(_) => {
            let Some(at) = plan.mounts.iter().find(|x| {
                is_bind(x) && Path::new(&x.source) == plan.sandbox && x.target.starts_with('/')
            }) else {
                return Err(StepError::invalid(
                    what.clone(),
                    "the sandbox is not mounted in the container's rootfs                      (filesystem/linux does it)",
                ));
            };
            let shown = Path::new(&at.target).join(&m.target);
            let fd = safe_path::open_in_root(
                root_fd.as_fd(),
                Path::new(&at.target),
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
                0,
                &shown,
            )
            .map_err(refused)?;
            if let Some(want) = plan.sandbox_identity {
                if safe_path::identity(fd.as_fd(), &shown).map_err(refused)? != want {
                    return Err(StepError::invalid(
                        what.clone(),
                        format!("{} is not the container's sandbox", at.target),
                    ));
                }
            }
            (fd, shown)
        }
    };
    let rel = Path::new(&m.target);
    let opts = MountOptions::parse(&m.options);
    let held_path = held.map(|fd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())));
    let source = held_path.as_deref().unwrap_or(Path::new(&m.source));
    let bind_mount = is_bind(m);
    let target_fd = if bind_mount && source.is_file() {
        safe_path::create_file_beneath(sandbox_fd.as_fd(), rel, &shown)
    } else {
        safe_path::create_dirs_beneath(sandbox_fd.as_fd(), rel, &shown)
    }
    .map_err(refused)?;
    let on = PathBuf::from(format!("/proc/self/fd/{}", target_fd.as_raw_fd()));
    let rec = opts.flags & MsFlags::MS_REC;
    if let Some(tree) = bound.tree {
        sys::move_mount_to_fd(&tree, &target_fd).map_err(|e| {
            StepError::io(
                format!("bind {} on {}: move_mount", m.source, shown.display()),
                e,
            )
        })?;
    } else if bind_mount {
        bind_on_fd(
            source,
            &target_fd,
            !rec.is_empty(),
            plan.userns.as_ref(),
            &format!("bind {} on {}", m.source, shown.display()),
        )?;
    } else {
        let data = (!opts.data.is_empty()).then(|| opts.data.join(","));
        mnt(
            Some(source),
            &on,
            Some(&m.fs_type),
            opts.flags,
            data.as_deref(),
            &format!("mount {} {} on {}", m.fs_type, m.source, shown.display()),
        )?;
    }
    // The new mount, reached again beneath the sandbox: for a bind it must
    // be the source's root (nothing swapped in between).
    let mounted = safe_path::open_beneath(
        sandbox_fd.as_fd(),
        rel,
        nix::fcntl::OFlag::O_PATH,
        0,
        &shown,
    )
    .map_err(refused)?;
    if let Some(src) = held {
        let want = safe_path::identity(src.as_fd(), &shown).map_err(refused)?;
        if safe_path::identity(mounted.as_fd(), &shown).map_err(refused)? != want {
            return Err(StepError::invalid(
                what.clone(),
                format!("{} changed while it was mounted", shown.display()),
            ));
        }
    }
    let at = PathBuf::from(format!("/proc/self/fd/{}", mounted.as_raw_fd()));
    if bind_mount {
        remount_bind(&at, &shown, m, &opts)?;
    }
    if let Some(prop) = opts.propagation {
        mnt(
            None,
            &at,
            None,
            prop,
            None,
            &format!("set propagation of {}", shown.display()),
        )?;
    }
    Ok(())
}

/// A mount's source as held before anything was covered or made private.
struct Bound<'a> {
    /// An `O_PATH` fd on a bind mount's source.
    held: Option<&'a OwnedFd>,
    /// The detached clone of a propagating bind's source (see
    /// [`propagating_tree`]), attached in place of a bind.
    tree: Option<OwnedFd>,
}

/// For a bind asking for `rslave`/`rshared` propagation: a detached clone
/// (`open_tree`) of its source, taken before `/` is made private. A clone
/// keeps its source's peer group (and master), so once attached in the
/// container it receives the host's mounts under the source, and (shared)
/// sends the container's back; a plain bind made after the private step
/// would be private. With a user namespace the clone's top mount is
/// idmapped as any bind (mounts that propagate in later are not).
fn propagating_tree(
    m: &Mount,
    held: Option<&OwnedFd>,
    userns: Option<&Userns<'_>>,
) -> StepResult<Option<OwnedFd>> {
    let opts = MountOptions::parse(&m.options);
    let Some(prop) = opts.propagation else {
        return Ok(None);
    };
    if !is_bind(m) || !prop.intersects(MsFlags::MS_SHARED | MsFlags::MS_SLAVE) {
        return Ok(None);
    }
    let held_path = held.map(|fd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())));
    let source = held_path.as_deref().unwrap_or(Path::new(&m.source));
    let what = format!("bind {} on {}", m.source, m.target);
    let tree = sys::open_tree_clone(&cpath(source)?, opts.flags.contains(MsFlags::MS_REC))
        .map_err(|e| StepError::io(format!("{what}: open_tree"), e))?;
    if let Some(u) = userns {
        match sys::idmap_tree(&tree, &u.fd) {
            Ok(()) => {}
            // A filesystem that cannot be idmapped: a plain bind, as
            // `bind_on_fd` falls back to.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
                ) => {}
            Err(e) => return Err(StepError::io(format!("{what}: idmap"), e)),
        }
    }
    Ok(Some(tree))
}

/// [`bind`] onto an open file or directory instead of a path.
fn bind_on_fd(
    source: &Path,
    target: &OwnedFd,
    recursive: bool,
    userns: Option<&Userns<'_>>,
    what: &str,
) -> StepResult {
    let on = PathBuf::from(format!("/proc/self/fd/{}", target.as_raw_fd()));
    let Some(u) = userns else {
        return bind(source, &on, recursive, None, what);
    };
    let tree = sys::open_tree_clone(&cpath(source)?, recursive)
        .map_err(|e| StepError::io(format!("{what}: open_tree"), e))?;
    match sys::idmap_tree(&tree, &u.fd) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
            ) =>
        {
            return bind(source, &on, recursive, None, what);
        }
        Err(e) => return Err(StepError::io(format!("{what}: idmap"), e)),
    }
    sys::move_mount_to_fd(&tree, target)
        .map_err(|e| StepError::io(format!("{what}: move_mount"), e))
}

/// Sets a bind mount's own flags at `at` (shown as `shown` in messages).
/// Always remounted: a bind inherits its source mount's flags (a read-only
/// host root's too), and only a remount sets ours; `ro` of a recursive
/// bind reaches its submounts too.
fn remount_bind(at: &Path, shown: &Path, m: &Mount, opts: &MountOptions) -> StepResult {
    let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY);
    mnt(
        None,
        at,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra | (opts.flags & MsFlags::MS_RDONLY),
        None,
        &format!("remount {} ({})", shown.display(), m.options.join(",")),
    )?;
    if opts.flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_REC) {
        set_readonly_recursive(at)?;
    }
    Ok(())
}

/// mount(8)-style options split into flags, propagation and fs data.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// `MS_*` flags.
    pub flags: MsFlags,
    /// A propagation change applied after the mount.
    pub propagation: Option<MsFlags>,
    /// Options passed to the filesystem as data.
    pub data: Vec<String>,
}

impl MountOptions {
    /// Parses options like `["rbind", "ro", "private", "size=1m"]`.
    pub fn parse(options: &[String]) -> MountOptions {
        let mut o = MountOptions {
            flags: MsFlags::empty(),
            propagation: None,
            data: Vec::new(),
        };
        for opt in options {
            match opt.as_str() {
                "bind" => o.flags |= MsFlags::MS_BIND,
                "rbind" => o.flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
                "ro" => o.flags |= MsFlags::MS_RDONLY,
                "rw" => {}
                "nosuid" => o.flags |= MsFlags::MS_NOSUID,
                "nodev" => o.flags |= MsFlags::MS_NODEV,
                "noexec" => o.flags |= MsFlags::MS_NOEXEC,
                "noatime" => o.flags |= MsFlags::MS_NOATIME,
                "relatime" => o.flags |= MsFlags::MS_RELATIME,
                "strictatime" => o.flags |= MsFlags::MS_STRICTATIME,
                "private" => o.propagation = Some(MsFlags::MS_PRIVATE),
                "rprivate" => o.propagation = Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
                "slave" => o.propagation = Some(MsFlags::MS_SLAVE),
                "rslave" => o.propagation = Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
                "shared" => o.propagation = Some(MsFlags::MS_SHARED),
                "rshared" => o.propagation = Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
                other => o.data.push(other.to_string()),
            }
        }
        o
    }
}

/// A bind mount of `source` on `target` (recursive or not). With a user
/// namespace, the bind is idmapped with it (`open_tree`, `mount_setattr`,
/// `move_mount`): files the host's root owns show as the container
/// root's, and the container's root writes them as the host's root
/// would, on disk. A filesystem that cannot be idmapped gets a plain bind
/// (its files then show their host owners, unmapped ones as nobody).
fn bind(
    source: &Path,
    target: &Path,
    recursive: bool,
    userns: Option<&Userns<'_>>,
    what: &str,
) -> StepResult {
    let flags = MsFlags::MS_BIND
        | if recursive {
            MsFlags::MS_REC
        } else {
            MsFlags::empty()
        };
    let Some(u) = userns else {
        return mnt(Some(source), target, None, flags, None, what);
    };
    let tree = sys::open_tree_clone(&cpath(source)?, recursive)
        .map_err(|e| StepError::io(format!("{what}: open_tree"), e))?;
    match sys::idmap_tree(&tree, &u.fd) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
            ) =>
        {
            return mnt(Some(source), target, None, flags, None, what);
        }
        Err(e) => return Err(StepError::io(format!("{what}: idmap"), e)),
    }
    sys::move_mount_to(&tree, &cpath(target)?)
        .map_err(|e| StepError::io(format!("{what}: move_mount"), e))
}

fn mask(path: &Path, dev_null: &Path) -> StepResult {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(()); // Not on this kernel: nothing to hide.
    };
    if meta.is_dir() {
        mnt(
            Some(Path::new("tmpfs")),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=0"),
            &format!("mask {} (tmpfs)", path.display()),
        )
    } else {
        mnt(
            Some(dev_null),
            path,
            None,
            MsFlags::MS_BIND,
            None,
            &format!("mask {} (bind /dev/null)", path.display()),
        )
    }
}

/// The container's own masked and read-only paths. The image (or, on the
/// host's filesystem, anyone) may have put symlinks on the way: each is
/// resolved inside the root (`RESOLVE_IN_ROOT`) to an `O_PATH` fd, and
/// the mount goes on that fd. A path that does not exist is skipped, as
/// for the defaults.
fn own_masks(root_fd: &OwnedFd, plan: &FsPlan<'_>, dev_null: &Path) -> StepResult {
    let resolve = |p: &str| -> StepResult<Option<OwnedFd>> {
        let shown = Path::new(p);
        match safe_path::open_in_root(
            root_fd.as_fd(),
            shown,
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            0,
            shown,
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(StepError::invalid(format!("resolve {p}"), e.to_string())),
        }
    };
    let fd_path = |fd: &OwnedFd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    for p in plan.masked {
        let Some(fd) = resolve(p)? else { continue };
        let st = safe_path::stat(fd.as_fd(), Path::new(p))
            .map_err(|e| StepError::invalid(format!("mask {p}"), e.to_string()))?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let at = fd_path(&fd);
        let what = format!("mask {p}");
        match is_dir {
            true => mnt(
                Some(Path::new("tmpfs")),
                &at,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
                &what,
            )?,
            false => mnt(Some(dev_null), &at, None, MsFlags::MS_BIND, None, &what)?,
        }
    }
    for p in plan.readonly {
        let Some(fd) = resolve(p)? else { continue };
        let at = fd_path(&fd);
        mnt(
            Some(&at),
            &at,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
            &format!("bind {p} read-only"),
        )?;
        // The fd names what lay under the new bind: resolve again to
        // reach the bind itself.
        let Some(top) = resolve(p)? else { continue };
        set_readonly_recursive(&fd_path(&top))?;
    }
    Ok(())
}

/// Hides host paths: a directory under an empty tmpfs (returned, to be
/// made read-only once the sandbox has its mount point in it), a file
/// under `/dev/null`. A path already gone (under the private /tmp) is
/// hidden as it is.
fn hide(paths: &[String], dev_null: &Path) -> StepResult<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for p in paths {
        let p = Path::new(p);
        match fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => {
                mnt_path(
                    Some(Path::new("tmpfs")),
                    p,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    Some("mode=755,size=1m"),
                )?;
                dirs.push(p.to_path_buf());
            }
            Ok(m) if m.is_file() => mask(p, dev_null)?,
            _ => {}
        }
    }
    Ok(dirs)
}

fn readonly(path: &Path) -> StepResult {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mnt(
        Some(path),
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
        &format!("bind {} read-only", path.display()),
    )?;
    set_readonly_recursive(path)
}

fn set_readonly_recursive(path: &Path) -> StepResult {
    let c = cpath(path)?;
    sys::mount_setattr_recursive(&c, sys::MOUNT_ATTR_RDONLY)
        .map_err(|e| StepError::io(format!("make {} read-only", path.display()), e))
}

/// `pivot_root` into `rootfs` and detach the old root (runc's
/// `pivot_root(".", ".")` way: no directory for the old root needed).
fn pivot(rootfs: &Path) -> StepResult {
    let old_root = open_path(Path::new("/"))?;
    nix::unistd::chdir(rootfs)
        .map_err(|e| StepError::nix(format!("chdir {}", rootfs.display()), e))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| StepError::nix(format!("pivot_root into {}", rootfs.display()), e))?;
    // The old root is now stacked on "/"; make sure its unmount cannot
    // propagate anywhere, then detach it. "." is made the old root
    // explicitly (as runc does): made a slave recursively, the new root
    // would take a volume's shared propagation away with it.
    nix::unistd::fchdir(old_root.as_raw_fd())
        .map_err(|e| StepError::nix("fchdir to the old root", e))?;
    drop(old_root);
    mnt(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
        "make the old root a slave",
    )?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| StepError::nix("detach the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| StepError::nix("chdir / after pivot_root", e))
}

/// `root` joined with the container path `p`; `..` is refused so that a
/// mount target cannot climb out of the rootfs.
pub fn join_inside(root: &Path, p: &str) -> StepResult<PathBuf> {
    let mut out = root.to_path_buf();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(StepError::invalid(
                    format!("container path {p:?}"),
                    "may not contain \"..\"",
                ))
            }
        }
    }
    Ok(out)
}

/// An `O_PATH` fd on `p`, the sandbox or a path in it: no symlink on the
/// way, and the sandbox itself must be the directory berth made.
fn open_sandbox_path(plan: &FsPlan<'_>, p: &Path) -> StepResult<OwnedFd> {
    let refused = |e: safe_path::SafePathError| {
        StepError::invalid(format!("bind {}", p.display()), e.to_string())
    };
    if p == plan.sandbox {
        safe_path::open_dir(p, plan.sandbox_identity).map_err(refused)
    } else {
        safe_path::open_nofollow(p, nix::fcntl::OFlag::O_PATH).map_err(refused)
    }
}

/// An `O_PATH` fd on `p`: a handle that can be bound from
/// `/proc/self/fd/N` after `p` itself has been covered by a mount.
fn open_path(p: &Path) -> StepResult<OwnedFd> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(p)
        .map(OwnedFd::from)
        .map_err(|e| StepError::io(format!("open {}", p.display()), e))
}

fn ensure_dir(p: &Path) -> StepResult {
    fs::create_dir_all(p).map_err(|e| StepError::io(format!("create dir {}", p.display()), e))
}

fn symlink(target: &str, link: &Path) -> StepResult {
    match std::os::unix::fs::symlink(target, link) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StepError::io(
            format!("symlink {} -> {target}", link.display()),
            e,
        )),
    }
}

fn cpath(p: &Path) -> StepResult<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| StepError::invalid(format!("path {}", p.display()), "contains a NUL byte"))
}

/// `mount` with a message naming source, type and target.
fn mnt_path(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> StepResult {
    let what = match (source, fstype) {
        (Some(s), Some(t)) => format!("mount {t} {} on {}", s.display(), target.display()),
        (Some(s), None) => format!("bind {} on {}", s.display(), target.display()),
        (None, _) => format!("mount on {}", target.display()),
    };
    mnt(source, target, fstype, flags, data, &what)
}

fn mnt(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    what: &str,
) -> StepResult {
    mount(source, target, fstype, flags, data).map_err(|e| StepError::nix(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = MountOptions::parse(&[
            "rbind".into(),
            "ro".into(),
            "private".into(),
            "size=1m".into(),
        ]);
        assert_eq!(
            o.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(o.propagation, Some(MsFlags::MS_PRIVATE));
        assert_eq!(o.data, vec!["size=1m".to_string()]);
    }

    #[test]
    fn container_paths_stay_inside_the_root() {
        let r = Path::new("/r");
        assert_eq!(
            join_inside(r, "/mnt/sandbox").unwrap(),
            Path::new("/r/mnt/sandbox")
        );
        assert_eq!(join_inside(r, "proc").unwrap(), Path::new("/r/proc"));
        assert!(join_inside(r, "/a/../../etc").is_err());
    }
}
