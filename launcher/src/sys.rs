//! Thin wrappers over the Linux syscalls that neither std nor nix wrap
//! (pidfds, `close_range`, `mount_setattr`, `capset`).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `pidfd_open(pid, 0)`: a handle on the process that cannot be confused
/// with a later process reusing the pid, readable once it has exited.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`.
pub fn pidfd_send_signal(pidfd: &impl std::os::fd::AsRawFd, sig: i32) -> std::io::Result<()> {
    // SAFETY: a valid fd, a signal number, a NULL siginfo and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `CLOSE_RANGE_CLOEXEC` from `<linux/close_range.h>`.
pub const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;

/// `close_range(first, last, flags)`: closes (or, with
/// [`CLOSE_RANGE_CLOEXEC`], marks close-on-exec) every fd in the range.
pub fn close_range(first: u32, last: u32, flags: u32) -> std::io::Result<()> {
    // SAFETY: plain integers; closing fds we own is the point.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_RDONLY`.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `AT_RECURSIVE`.
const AT_RECURSIVE: u32 = 0x8000;

/// Sets `attr_set` on the mount at `path` and every mount below it
/// (`mount_setattr(AT_FDCWD, path, AT_RECURSIVE, …)`): one call makes a
/// whole tree read-only, submounts included.
pub fn mount_setattr_recursive(path: &std::ffi::CStr, attr_set: u64) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: path is NUL-terminated, attr is a valid struct of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `MOUNT_ATTR_IDMAP`.
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: u32 = 1;
const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE [| AT_RECURSIVE])`: a
/// detached copy of the mount at `path` (and those below it when
/// `recursive`), not yet attached anywhere.
pub fn open_tree_clone(path: &std::ffi::CStr, recursive: bool) -> std::io::Result<OwnedFd> {
    let flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: a NUL-terminated path and integer flags; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Idmaps the detached mount `tree` (from [`open_tree_clone`]) with the
/// user namespace `userns`: files owned by host id `h` show as the id
/// that `h` has in that namespace, and ids written through it are mapped
/// back. Only the top mount (idmapping every submount would fail on the
/// first filesystem that cannot be idmapped).
pub fn idmap_tree(
    tree: &impl std::os::fd::AsRawFd,
    userns: &impl std::os::fd::AsRawFd,
) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: valid fds, an empty NUL-terminated path, a valid struct of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as u32,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches the detached mount `tree` on `target` (`move_mount`).
pub fn move_mount_to(
    tree: &impl std::os::fd::AsRawFd,
    target: &std::ffi::CStr,
) -> std::io::Result<()> {
    // SAFETY: a valid fd, NUL-terminated paths and integer flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

/// Attaches the detached mount `tree` on the directory (or file) open as
/// `target` (`move_mount` to an fd: no path is looked up again).
pub fn move_mount_to_fd(
    tree: &impl std::os::fd::AsRawFd,
    target: &impl std::os::fd::AsRawFd,
) -> std::io::Result<()> {
    // SAFETY: valid fds, empty NUL-terminated paths and integer flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const FSOPEN_CLOEXEC: u32 = 1;
const FSMOUNT_CLOEXEC: u32 = 1;
const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_FD: u32 = 5;
const FSCONFIG_CMD_CREATE: u32 = 6;

fn new_fd(r: libc::c_long) -> std::io::Result<OwnedFd> {
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// `fsopen(fstype, FSOPEN_CLOEXEC)`: a filesystem context to configure.
pub fn fsopen(fstype: &std::ffi::CStr) -> std::io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name and integer flags.
    new_fd(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })
}

/// `fsconfig(fs, cmd, key, NULL, aux)`: every use here passes no value.
fn fsconfig(
    fs: &impl std::os::fd::AsRawFd,
    cmd: u32,
    key: Option<&std::ffi::CStr>,
    aux: i32,
) -> std::io::Result<()> {
    // SAFETY: a valid fd, a NUL-terminated key or NULL, and a NULL value,
    // as each of the commands used here requires.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            key.map_or(std::ptr::null(), |k| k.as_ptr()),
            std::ptr::null::<libc::c_void>(),
            aux,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `fsconfig(fs, FSCONFIG_SET_FD, key, NULL, fd)`.
pub fn fsconfig_set_fd(
    fs: &impl std::os::fd::AsRawFd,
    key: &std::ffi::CStr,
    fd: &impl std::os::fd::AsRawFd,
) -> std::io::Result<()> {
    fsconfig(fs, FSCONFIG_SET_FD, Some(key), fd.as_raw_fd())
}

/// `fsconfig(fs, FSCONFIG_SET_FLAG, key, NULL, 0)`: a flag option.
pub fn fsconfig_set_flag(
    fs: &impl std::os::fd::AsRawFd,
    key: &std::ffi::CStr,
) -> std::io::Result<()> {
    fsconfig(fs, FSCONFIG_SET_FLAG, Some(key), 0)
}

/// `fsconfig(fs, FSCONFIG_CMD_CREATE, …)`: makes the superblock.
pub fn fsconfig_create(fs: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    fsconfig(fs, FSCONFIG_CMD_CREATE, None, 0)
}

/// `fsmount(fs, FSMOUNT_CLOEXEC, 0)`: a detached mount of the superblock.
pub fn fsmount(fs: &impl std::os::fd::AsRawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: a valid fd and integer flags.
    new_fd(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })
}

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAP_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's capability sets as 64-bit masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSets {
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
}

/// `capget` for the calling thread.
pub fn capget() -> std::io::Result<CapSets> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: v3 takes a header and an array of two data structs.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| (lo as u64) | ((hi as u64) << 32);
    Ok(CapSets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

/// `capset` for the calling thread.
pub fn capset(sets: CapSets) -> std::io::Result<()> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let split = |m: u64| (m as u32, (m >> 32) as u32);
    let (e0, e1) = split(sets.effective);
    let (p0, p1) = split(sets.permitted);
    let (i0, i1) = split(sets.inheritable);
    let data = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: v3 takes a header and an array of two data structs.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Loads a seccomp BPF program (an array of `struct sock_filter`, as
/// libseccomp exports it) on the calling thread. Needs no_new_privs or
/// CAP_SYS_ADMIN.
pub fn load_seccomp(bpf: &[u8]) -> std::io::Result<()> {
    const INSN: usize = std::mem::size_of::<libc::sock_filter>();
    if bpf.is_empty() || !bpf.len().is_multiple_of(INSN) || bpf.len() / INSN > u16::MAX as usize {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // Copied into properly aligned instructions.
    let insns: Vec<libc::sock_filter> = bpf
        .chunks_exact(INSN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: insns.len() as u16,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at `insns`, alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Calls `f` with a msghdr over a one-byte data buffer and room for one
/// fd's control message: what [`send_fd`] and [`recv_fd`] exchange.
fn with_fd_message<R>(f: impl FnOnce(&mut libc::msghdr) -> R) -> R {
    let mut byte = [0u8; 1];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: an all-zero msghdr is valid; the fields set point at the
    // locals above, which outlive `f`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    f(&mut msg)
}

/// Sends `fd` over the Unix socket `sock` (SCM_RIGHTS, one byte of data).
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    with_fd_message(|msg| {
        // SAFETY: the control message is written within the buffer (sized
        // by CMSG_SPACE for one fd) by the CMSG macros.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd.as_raw_fd());
            if libc::sendmsg(sock.as_raw_fd(), msg, libc::MSG_NOSIGNAL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
}

/// Receives one fd sent by [`send_fd`] (blocking), close-on-exec.
pub fn recv_fd(sock: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    with_fd_message(|msg| {
        // SAFETY: `msg` points at live buffers; the fd read from the
        // control message is new and ours alone.
        unsafe {
            if libc::recvmsg(sock.as_raw_fd(), msg, libc::MSG_CMSG_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let c = libc::CMSG_FIRSTHDR(msg);
            if c.is_null()
                || (*c).cmsg_level != libc::SOL_SOCKET
                || (*c).cmsg_type != libc::SCM_RIGHTS
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "no fd in the message",
                ));
            }
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>());
            Ok(OwnedFd::from_raw_fd(fd))
        }
    })
}
