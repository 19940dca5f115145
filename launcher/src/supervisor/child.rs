//! The container's init, from the supervisor's fork to the exec of the
//! command. The order of the steps is the order of this file's `setup`
//! and `exec` functions. Runs in the single-threaded supervisor's child,
//! so allocating is fine here.
//!
//! Before release: join the cgroups (so everything after, the command
//! included, is accounted and killable), join and create namespaces, set
//! the hostname, set up the filesystem, report ready, block.
//! After release: rlimits, working dir, user, capabilities, no_new_privs,
//! stdio, signals, close-on-exec for every fd above 2, (with `--init`: fork,
//! the parent stays as the reaper, see `reaper.rs`), seccomp, exec.

use super::Stdio;
use crate::namespaces::Plan;
use crate::step::{StepError, StepResult};
use crate::{capabilities, mounts, protocol, rlimits, sys};
use berth_state::{LaunchInfo, SupervisorRequest};
use nix::sched::CloneFlags;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The PATH used to find argv[0] when the environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the init: never returns. On failure the step's error goes to the
/// supervisor over `status` and the process exits 127.
pub fn run(
    req: &SupervisorRequest,
    plan: &Plan,
    stdio: Stdio,
    userns: Option<OwnedFd>,
    release: OwnedFd,
    status: OwnedFd,
    placed: Option<String>,
) -> ! {
    // Inherited from the supervisor already; said again because from
    // here on this process enters the container's namespaces and must
    // not be reachable (ptrace, /proc/<pid>/exe) from them until its exec.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let mut status = fs::File::from(status);
    let info = req.launch_info.clone().unwrap_or_default();
    let err = match setup(req, plan, userns, placed.as_deref())
        .and_then(|()| open_tty(req, &info, stdio))
    {
        Ok(stdio) => {
            // A failed write means the supervisor is gone: nothing to do.
            let _ = status.write_all(&[protocol::READY]);
            match wait_release(release) {
                true => exec(req, stdio),
                false => {
                    // SAFETY: _exit is always safe; the supervisor went away.
                    unsafe { libc::_exit(1) }
                }
            }
        }
        Err(e) => e,
    };
    let _ = status.write_all(&protocol::encode_error(err.errno, &err.to_string()));
    // SAFETY: _exit skips atexit handlers that belong to the supervisor.
    unsafe { libc::_exit(127) }
}

/// `placed`: the cgroup the init was started in (by `clone3`), not joined
/// again.
fn setup(
    req: &SupervisorRequest,
    plan: &Plan,
    userns: Option<OwnedFd>,
    placed: Option<&str>,
) -> StepResult {
    let info = req.launch_info.clone().unwrap_or_default();
    // Our own session and process group: the POSIX launcher kills by group.
    nix::unistd::setsid().map_err(|e| StepError::nix("setsid", e))?;

    // First, so the init is in the container's cgroups before anything
    // it does is charged and before the command's first instruction.
    for cg in req.cgroups.iter().filter(|cg| Some(cg.as_str()) != placed) {
        super::cgroup_join::join_self(Path::new(cg))
            .map_err(|(file, e)| StepError::io(format!("join cgroup {}", file.display()), e))?;
    }
    if req.posix {
        return Ok(());
    }

    // Every namespace is opened before the first is joined: a joined
    // mount namespace has another /proc.
    let mut joins = Vec::with_capacity(plan.joins.len());
    for (flag, t) in &plan.joins {
        let f = t
            .open()
            .map_err(|e| StepError::io(format!("open namespace {t}"), e))?;
        joins.push((flag, t, f));
    }
    for (flag, t, f) in joins {
        nix::sched::setns(f, *flag)
            .map_err(|e| StepError::nix(format!("setns {t} ({flag:?})"), e))?;
    }
    if !plan.unshare.is_empty() {
        nix::sched::unshare(plan.unshare)
            .map_err(|e| StepError::nix(format!("unshare {:?}", plan.unshare), e))?;
    }
    if !info.hostname.is_empty() {
        nix::unistd::sethostname(&info.hostname)
            .map_err(|e| StepError::nix(format!("sethostname {:?}", info.hostname), e))?;
    }
    let rootfs = (!info.rootfs.is_empty()).then(|| PathBuf::from(&info.rootfs));
    // A joined netns (network/cni) is the container's own too.
    let new_net = plan.unshare.contains(CloneFlags::CLONE_NEWNET)
        || plan
            .joins
            .iter()
            .any(|(f, _)| f.contains(CloneFlags::CLONE_NEWNET));
    let mut sysctls = info.sysctls.clone();
    if userns.is_some() && new_net {
        // The container's root holds no capability over its network
        // namespace (the host's user namespace owns it): as moby does for
        // every container, let it bind low ports and use ICMP sockets.
        for (k, v) in [
            ("net.ipv4.ip_unprivileged_port_start", "0"),
            ("net.ipv4.ping_group_range", "0 2147483647"),
        ] {
            sysctls
                .entry(k.to_string())
                .or_insert_with(|| v.to_string());
        }
    }
    if userns.is_some() {
        // Raising a hard limit takes CAP_SYS_RESOURCE in the host's user
        // namespace: done now, while the init still has it (and again,
        // unchanged, after release).
        rlimits::apply(&info.rlimits)
            .map_err(|(name, e)| StepError::io(format!("setrlimit {name}"), e))?;
    }
    if plan.new_mount {
        let fs = mounts::FsPlan {
            rootfs: rootfs.as_deref(),
            new_net,
            mounts: &info.mounts,
            sandbox: Path::new(&req.sandbox_dir),
            sandbox_identity: super::sandbox_identity(req),
            readonly_root: info.readonly_root,
            hidden: &info.hidden_paths,
            masked: &info.masked_paths,
            readonly: &info.readonly_paths,
            shm_size: info.shm_size_bytes,
            sysctls: &sysctls,
            devices: &info.devices,
            // Unshared above, after the cgroups were joined: the
            // namespace is rooted at the container's own cgroups.
            new_cgroupns: plan.unshare.contains(CloneFlags::CLONE_NEWCGROUP),
            cgroups: &req.cgroups,
            cgroup_mountinfo: (!req.cgroup_mountinfo.is_empty())
                .then_some(req.cgroup_mountinfo.as_str()),
            userns: userns.as_ref().map(|fd| mounts::Userns {
                fd: fd.as_fd(),
                uid_mappings: &info.uid_mappings,
                gid_mappings: &info.gid_mappings,
            }),
        };
        match &fs.userns {
            Some(u) => crate::idmapped_rootfs::as_container_root(u, || mounts::setup(&fs))?,
            None => mounts::setup(&fs)?,
        }
    }
    if let Some(ns) = userns {
        join_userns(ns)?;
    }
    Ok(())
}

/// The last step before ready: into the container's user namespace, as
/// its root (host ids from the mapping). Every other namespace stays
/// owned by the host's user namespace, so the capabilities the command
/// keeps reach no further than files and processes of its own ids.
fn join_userns(ns: OwnedFd) -> StepResult {
    nix::sched::setns(ns, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| StepError::nix("setns into the container's user namespace", e))?;
    nix::unistd::setgroups(&[])
        .map_err(|e| StepError::nix("setgroups in the user namespace", e))?;
    let (g, u) = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
    nix::unistd::setresgid(g, g, g)
        .map_err(|e| StepError::nix("setresgid 0 in the user namespace (is gid 0 mapped?)", e))?;
    nix::unistd::setresuid(u, u, u)
        .map_err(|e| StepError::nix("setresuid 0 in the user namespace (is uid 0 mapped?)", e))
}

/// With a tty: opens a pty in the container's devpts (its `/dev/ptmx`, as
/// the container sees it), sends the master to the supervisor, and makes
/// the slave the command's stdio, owned by the command's user (as the
/// host sees it, through a user namespace's mapping). The slave is taken
/// from the master (`TIOCGPTPEER`), never by a path.
fn open_tty(req: &SupervisorRequest, info: &LaunchInfo, mut stdio: Stdio) -> StepResult<Stdio> {
    let Some(sock) = stdio.tty.take() else {
        return Ok(stdio);
    };
    // SAFETY: a NUL-terminated path; the flags ask for a new fd.
    let m = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if m < 0 {
        return Err(StepError::io(
            "open /dev/ptmx",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new fd nothing else owns.
    let master = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(m) };
    // SAFETY: unlockpt takes the master's fd.
    if unsafe { libc::unlockpt(master.as_raw_fd()) } != 0 {
        return Err(StepError::io("unlockpt", std::io::Error::last_os_error()));
    }
    // SAFETY: TIOCGPTPEER returns a new fd on the slave.
    let s = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY,
        )
    };
    if s < 0 {
        return Err(StepError::io(
            "open the pty's slave (TIOCGPTPEER)",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new fd nothing else owns.
    let slave = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
    if let Some(u) = &req.user {
        let (uid, gid) = match info.uid_mappings.is_empty() {
            true => (u.uid, u.gid),
            false => (
                mounts::to_host(&info.uid_mappings, u.uid),
                mounts::to_host(&info.gid_mappings, u.gid),
            ),
        };
        std::os::unix::fs::fchown(&slave, Some(uid), Some(gid))
            .map_err(|e| StepError::io("chown the pty's slave to the command's user", e))?;
    }
    sys::send_fd(sock.as_fd(), master.as_fd())
        .map_err(|e| StepError::io("send the pty's master to the supervisor", e))?;
    let dup = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| StepError::io("dup the pty's slave", e))
    };
    stdio.files = Some((dup(&slave)?, dup(&slave)?));
    stdio.stdin = slave;
    stdio.ctty = true;
    Ok(stdio)
}

/// Blocks until the supervisor forwards the release; false on EOF.
fn wait_release(release: OwnedFd) -> bool {
    let mut f = fs::File::from(release);
    let mut b = [0u8; 1];
    loop {
        match f.read(&mut b) {
            Ok(1) => return b[0] == protocol::RELEASE,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => return false,
        }
    }
}

/// The steps after release; returns only with the error that stopped it.
fn exec(req: &SupervisorRequest, stdio: Stdio) -> StepError {
    match prepare_exec(req, stdio) {
        Ok(prog) => {
            let argv: Vec<CString> = req
                .argv
                .iter()
                .filter_map(|a| CString::new(a.as_bytes()).ok())
                .collect();
            let env: Vec<CString> = req
                .env
                .iter()
                .filter_map(|e| CString::new(format!("{}={}", e.name, e.value)).ok())
                .collect();
            let e = nix::unistd::execve(&prog, &argv, &env).unwrap_err();
            StepError::nix(format!("exec {}", req.argv[0]), e)
        }
        Err(e) => e,
    }
}

fn prepare_exec(req: &SupervisorRequest, stdio: Stdio) -> StepResult<CString> {
    let info = req.launch_info.clone().unwrap_or_default();
    rlimits::apply(&info.rlimits)
        .map_err(|(name, e)| StepError::io(format!("setrlimit {name}"), e))?;

    let wd = if !info.working_dir.is_empty() {
        info.working_dir.clone()
    } else if !info.rootfs.is_empty() {
        "/".to_string()
    } else {
        req.sandbox_dir.clone()
    };
    if wd == req.sandbox_dir {
        // The sandbox may lie in a parent container's sandbox: entered by
        // its fd (no symlink on the way, still the directory berth made).
        let dir = berth_state::safe_path::open_dir(Path::new(&wd), super::sandbox_identity(req))
            .map_err(|e| StepError::invalid("working dir", e.to_string()))?;
        nix::unistd::fchdir(dir.as_raw_fd())
            .map_err(|e| StepError::nix(format!("chdir to working dir {wd}"), e))?;
        return finish_exec(req, &info, stdio);
    }
    let mut cd = nix::unistd::chdir(Path::new(&wd));
    if cd == Err(nix::Error::ENOENT) && !info.rootfs.is_empty() {
        // As runc: a missing working dir of an image's container is made.
        // We are inside the pivoted root here, so no path can lead out.
        std::fs::create_dir_all(&wd)
            .map_err(|e| StepError::io(format!("create working dir {wd}"), e))?;
        cd = nix::unistd::chdir(Path::new(&wd));
    }
    cd.map_err(|e| StepError::nix(format!("chdir to working dir {wd}"), e))?;
    finish_exec(req, &info, stdio)
}

/// After the working dir: user, capabilities, no_new_privs, stdio,
/// signals, close-on-exec.
fn finish_exec(req: &SupervisorRequest, info: &LaunchInfo, stdio: Stdio) -> StepResult<CString> {
    // Without no_new_privs a seccomp filter needs CAP_SYS_ADMIN to load:
    // it is loaded now, before the user and capabilities change (as
    // runc does), and inherited by the reaper and the command; the
    // syscalls made after it (setuid, capset, prctl, close_range, exec)
    // are ones any profile must allow anyway.
    let escalate = info.allow_privilege_escalation && !req.posix;
    let seccomp_bpf: &[u8] = if escalate && !info.seccomp_bpf.is_empty() {
        sys::load_seccomp(&info.seccomp_bpf)
            .map_err(|e| StepError::io("load the seccomp filter", e))?;
        &[]
    } else {
        &info.seccomp_bpf
    };
    if let Some(u) = &req.user {
        // Keep the permitted set across setuid so the capability step
        // below decides what survives, not the uid switch.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
        let groups: Vec<nix::unistd::Gid> = u
            .groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&groups).map_err(|e| StepError::nix("setgroups", e))?;
        nix::unistd::setgid(nix::unistd::Gid::from_raw(u.gid))
            .map_err(|e| StepError::nix(format!("setgid {}", u.gid), e))?;
        nix::unistd::setuid(nix::unistd::Uid::from_raw(u.uid))
            .map_err(|e| StepError::nix(format!("setuid {}", u.uid), e))?;
    }

    if !req.posix {
        let keep = capabilities::mask(&info.capabilities)
            .map_err(|e| StepError::invalid("capabilities", e.to_string()))?;
        capabilities::restrict_to(keep).map_err(|e| StepError::io("reduce capabilities", e))?;
        // SAFETY: prctl with integer arguments only.
        if !escalate && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(StepError::io(
                "set no_new_privs",
                std::io::Error::last_os_error(),
            ));
        }
    }

    stdio.install()?;
    reset_signals();
    if req.argv.is_empty() && req.init {
        // A pod: the init alone, holding the namespaces for its members.
        sys::close_range(3, u32::MAX, sys::CLOSE_RANGE_CLOEXEC)
            .map_err(|e| StepError::io("close_range(3.., CLOEXEC)", e))?;
        super::reaper::hold(seccomp_bpf)?;
    }

    // Resolve argv[0] before the fds are marked, while errors still can
    // be reported with a path.
    let prog = resolve(&req.argv[0], req)?;

    // The runc CVE-2024-21626 lesson: no fd of the supervisor (or of the
    // agent before it) may reach the command.
    sys::close_range(3, u32::MAX, sys::CLOSE_RANGE_CLOEXEC)
        .map_err(|e| StepError::io("close_range(3.., CLOEXEC)", e))?;
    if req.init {
        // Under the command's user, capabilities and no_new_privs, before
        // its filter: only the command's side returns, the reaper loads
        // the filter for itself.
        super::reaper::split(seccomp_bpf)?;
    }
    // Last: from here on only exec has to be allowed by the filter.
    if !seccomp_bpf.is_empty() {
        sys::load_seccomp(seccomp_bpf).map_err(|e| StepError::io("load the seccomp filter", e))?;
    }
    Ok(prog)
}

/// The supervisor runs with Rust's SIGPIPE ignored; the command must start
/// with every signal at its default and none blocked.
fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default disposition; invalid numbers fail harmlessly.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty, initialised set; SIG_SETMASK with it unblocks all.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// argv[0] as a path: itself when it has a `/`, else the first executable
/// file of that name in the command's PATH (not the supervisor's).
fn resolve(argv0: &str, req: &SupervisorRequest) -> StepResult<CString> {
    let not_found = || {
        StepError::io(
            format!("exec {argv0}"),
            std::io::Error::from_raw_os_error(libc::ENOENT),
        )
    };
    let path = if argv0.contains('/') {
        PathBuf::from(argv0)
    } else {
        let search = req
            .env
            .iter()
            .find(|e| e.name == "PATH")
            .map(|e| e.value.as_str())
            .unwrap_or(DEFAULT_PATH);
        search
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(argv0))
            .find(|p| is_executable(p))
            .ok_or_else(not_found)?
    };
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| StepError::invalid(format!("exec {argv0}"), "argv[0] contains a NUL byte"))
}

fn is_executable(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path.
    let ok = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
    ok && p.is_file()
}

impl Stdio {
    /// Puts the command's stdin, stdout and stderr on fds 0, 1 and 2.
    fn install(&self) -> StepResult {
        dup_onto(&self.stdin, 0, "stdin")?;
        if let Some((out, err)) = &self.files {
            dup_onto(out, 1, "stdout")?;
            dup_onto(err, 2, "stderr")?;
        }
        if self.ctty {
            // The init leads its own session (setsid at the start): the
            // tty becomes its controlling terminal, for job control and
            // ^C.
            // SAFETY: TIOCSCTTY on fd 0 with a plain integer argument.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
                return Err(StepError::io(
                    "make the tty the controlling terminal (TIOCSCTTY)",
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Ok(())
    }
}

fn dup_onto(fd: &OwnedFd, target: i32, name: &str) -> StepResult {
    // SAFETY: both fds are valid; dup2 replaces `target` atomically and
    // the new fd does not carry O_CLOEXEC.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(StepError::io(
            format!("dup2 {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
