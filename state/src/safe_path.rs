//! Path operations on trees a container can write.
//!
//! berth runs as root; a container's sandbox (and every nested sandbox in
//! it), its rootfs and its overlay upper dir are written by the container,
//! so any name there may be a symlink, a hardlink to a host file, a FIFO,
//! or a directory swapped by rename between two of berth's calls. Every
//! host-side operation on such a tree goes through this module:
//!
//! - names are resolved beneath a directory fd with `openat2`:
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` for
//!   sandboxes, `RESOLVE_IN_ROOT` for paths inside a rootfs (where the
//!   image's own symlinks must work, but only inside it);
//! - berth's own paths above a sandbox are canonical, so an absolute
//!   sandbox path is opened with `RESOLVE_NO_SYMLINKS` from `/`: any
//!   symlink on the way is one a container planted;
//! - the result is an fd, and berth acts on the fd (`fchown`, `fstat`,
//!   `openat`, `unlinkat` of one component), never on a path resolved
//!   again later;
//! - a directory berth made is remembered by its [`Identity`] and checked
//!   when it is opened again, so a directory swapped in by rename is
//!   refused;
//! - walks (chown, disk usage, removal) go fd by fd, never follow a link,
//!   stay on one filesystem, and never chown a file with other hard links.
//!
//! ```
//! use berth_state::safe_path;
//! let t = tempfile::tempdir().unwrap();
//! let base = std::fs::canonicalize(t.path()).unwrap();
//! let (dir, _id) = safe_path::create_dirs(&base, "a/containers/b".as_ref(), true).unwrap();
//! let f = safe_path::create_file(&dir, "stdout".as_ref(), 0o644, &base.join("a/containers/b/stdout")).unwrap();
//! drop(f);
//! safe_path::remove_tree(&base.join("a")).unwrap();
//! ```

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A path operation refused or failed; the message names the path.
#[derive(Debug, thiserror::Error)]
pub enum SafePathError {
    /// The syscall failed (a symlink met with `RESOLVE_NO_SYMLINKS` shows
    /// as ELOOP, a path leaving the directory as EXDEV).
    #[error("{op} {path}: {source}{}", hint(source))]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Something is there that berth did not make or will not touch.
    #[error("refusing {path}: {why}")]
    Refused { path: PathBuf, why: String },
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ELOOP) => {
            " (a symlink on the way: berth does not follow links in a container-writable tree)"
        }
        Some(libc::EXDEV) => " (the path leads out of its directory)",
        Some(libc::ENOTDIR) => {
            " (not a directory: a symlink or a file where berth expects a directory)"
        }
        _ => "",
    }
}

impl SafePathError {
    /// The underlying errno, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SafePathError::Io { source, .. } => source.raw_os_error(),
            SafePathError::Refused { .. } => None,
        }
    }
    /// True when the path (or a component) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, SafePathError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> SafePathError + 'a {
    move |e| SafePathError::Io {
        op,
        path: path.to_path_buf(),
        source: io::Error::from_raw_os_error(e as i32),
    }
}

fn refused(path: &Path, why: impl Into<String>) -> SafePathError {
    SafePathError::Refused {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Which inode a directory is: berth records it when it makes a sandbox
/// and checks it when it opens the sandbox again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl Identity {
    fn of(st: &FileStat) -> Identity {
        Identity {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// `fstat` of an fd.
pub fn stat(fd: BorrowedFd<'_>, shown: &Path) -> Result<FileStat> {
    nix::sys::stat::fstat(fd.as_raw_fd()).map_err(io_err("stat", shown))
}

/// The identity of an open directory.
pub fn identity(fd: BorrowedFd<'_>, shown: &Path) -> Result<Identity> {
    stat(fd, shown).map(|s| Identity::of(&s))
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn kind_name(st: &FileStat) -> &'static str {
    match kind(st) {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "of an unknown type",
    }
}

fn openat2(
    dir: Option<BorrowedFd<'_>>,
    path: &Path,
    flags: OFlag,
    mode: u32,
    resolve: ResolveFlag,
    shown: &Path,
) -> Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(mode))
        .resolve(resolve);
    let dirfd = dir.map(|d| d.as_raw_fd()).unwrap_or(libc::AT_FDCWD);
    // An empty relative path means the directory itself.
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    loop {
        match nix::fcntl::openat2(dirfd, path, how) {
            // SAFETY: openat2 returned a new fd that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            // The kernel asks for a retry when a rename raced the lookup.
            Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(io_err("open", shown)(e)),
        }
    }
}

const BENEATH: ResolveFlag = ResolveFlag::RESOLVE_BENEATH
    .union(ResolveFlag::RESOLVE_NO_SYMLINKS)
    .union(ResolveFlag::RESOLVE_NO_MAGICLINKS);

/// Opens the absolute `path` refusing a symlink at any component (berth's
/// own directories above it are canonical, so any link is a plant).
pub fn open_nofollow(path: &Path, flags: OFlag) -> Result<OwnedFd> {
    if !path.is_absolute() {
        return Err(refused(path, "not an absolute path"));
    }
    openat2(
        None,
        path,
        flags | OFlag::O_NOFOLLOW,
        0,
        ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        path,
    )
}

/// Opens the directory at the absolute `path` (no symlink anywhere) and,
/// given `expect`, checks it is still the directory berth made.
pub fn open_dir(path: &Path, expect: Option<Identity>) -> Result<OwnedFd> {
    let fd = open_nofollow(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    if let Some(want) = expect {
        let got = identity(fd.as_fd(), path)?;
        if got != want {
            return Err(refused(
                path,
                "the directory berth made was replaced (renamed or swapped) since",
            ));
        }
    }
    Ok(fd)
}

/// Opens `rel` beneath `dir`: no `..` out of it, no symlink, no magic link.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
    mode: u32,
    shown: &Path,
) -> Result<OwnedFd> {
    openat2(
        Some(dir),
        rel,
        flags | OFlag::O_NOFOLLOW,
        mode,
        BENEATH,
        shown,
    )
}

/// Opens `path` inside the root `root` as a process chrooted there would:
/// the image's symlinks work but cannot lead out (`RESOLVE_IN_ROOT`).
pub fn open_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    flags: OFlag,
    mode: u32,
    shown: &Path,
) -> Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    openat2(
        Some(root),
        rel,
        flags,
        mode,
        ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        shown,
    )
}

/// Creates the missing directories of `path` inside the root `root`
/// (`RESOLVE_IN_ROOT`: the image's symlinks are followed, but only inside
/// it; a dangling link is never created through) and returns an `O_PATH`
/// fd on the last one.
pub fn create_dirs_in_root(root: BorrowedFd<'_>, path: &Path, shown: &Path) -> Result<OwnedFd> {
    let names: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::RootDir | Component::CurDir => None,
            _ => Some(Err(refused(shown, "may not contain \"..\""))),
        })
        .collect::<Result<_>>()?;
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let mut cur = open_in_root(root, Path::new("/"), dir_flags, 0, shown)?;
    let mut prefix = PathBuf::from("/");
    for n in names {
        prefix.push(n);
        cur = match open_in_root(root, &prefix, dir_flags, 0, shown) {
            Ok(fd) => fd,
            Err(e) if e.is_not_found() => {
                let c = cstr(n, shown)?;
                // SAFETY: valid dirfd (O_PATH dirs serve *at calls) and name.
                // mkdirat never follows a trailing link: a dangling one
                // stays EEXIST and the reopen below fails.
                let r = unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), 0o755) };
                if r < 0 && nix::Error::last() != nix::Error::EEXIST {
                    return Err(io_err("create directory", shown)(nix::Error::last()));
                }
                open_in_root(root, &prefix, dir_flags, 0, shown)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(cur)
}

/// As [`create_dirs_in_root`] for a file: its parents are made, an empty
/// regular file is created when nothing is there; returns an `O_PATH` fd
/// on whatever is at `path` (resolved in the root).
pub fn create_file_in_root(root: BorrowedFd<'_>, path: &Path, shown: &Path) -> Result<OwnedFd> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(refused(shown, "no file name"));
    };
    let dir = create_dirs_in_root(root, parent, shown)?;
    match open_in_root(root, path, OFlag::O_PATH, 0, shown) {
        Err(e) if e.is_not_found() => {}
        r => return r,
    }
    let c = cstr(name, shown)?;
    // SAFETY: valid dirfd and name; O_EXCL|O_NOFOLLOW never reuse or follow.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(io_err("create file", shown)(nix::Error::last()));
    }
    // SAFETY: a new fd nothing else owns.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    open_in_root(root, path, OFlag::O_PATH, 0, shown)
}

/// The path the kernel gives an open fd (`/proc/self/fd/N`'s target).
pub fn fd_path(fd: BorrowedFd<'_>, shown: &Path) -> Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|source| {
        SafePathError::Io {
            op: "read the path of",
            path: shown.to_path_buf(),
            source,
        }
    })
}

fn cstr(name: &OsStr, shown: &Path) -> Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| refused(shown, "contains a NUL byte"))
}

/// The plain components of a relative path; `..`, `.` and roots refused.
fn components<'a>(rel: &'a Path, shown: &Path) -> Result<Vec<&'a OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(refused(shown, "only plain names are allowed in this path")),
        })
        .collect()
}

/// `mkdirat` + open of one name in `dir`: a missing directory is made
/// (mode 0755), an existing one must be a real directory (not a link).
/// With `fresh`, the name must not exist at all.
fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, fresh: bool, shown: &Path) -> Result<OwnedFd> {
    let c = cstr(name, shown)?;
    // SAFETY: a valid dirfd and NUL-terminated name.
    let r = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) };
    if r < 0 {
        let e = nix::Error::last();
        if e != nix::Error::EEXIST {
            return Err(io_err("create directory", shown)(e));
        }
        if fresh {
            return Err(refused(
                shown,
                "it already exists; berth makes this directory itself and will not use one made by a container",
            ));
        }
    }
    let fd = open_beneath(
        dir,
        Path::new(name),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        0,
        shown,
    )?;
    Ok(fd)
}

/// Creates the directories of `rel` under the trusted directory `base`,
/// component by component on directory fds; existing ones must be real
/// directories, and with `fresh_last` the last one must not exist at all.
/// Returns the last one's fd and identity.
pub fn create_dirs(base: &Path, rel: &Path, fresh_last: bool) -> Result<(OwnedFd, Identity)> {
    let shown = base.join(rel);
    let names = components(rel, &shown)?;
    let Some((last, middle)) = names.split_last() else {
        return Err(refused(&shown, "no directory to create"));
    };
    let mut cur = open_dir(base, None)?;
    let mut at = base.to_path_buf();
    for n in middle {
        at.push(n);
        cur = mkdir_at(cur.as_fd(), n, false, &at)?;
    }
    let fd = mkdir_at(cur.as_fd(), last, fresh_last, &shown)?;
    let id = identity(fd.as_fd(), &shown)?;
    Ok((fd, id))
}

/// Creates the directories of the relative `rel` beneath the directory
/// `dir` (a sandbox), component by component on directory fds: existing
/// ones must be real directories, no symlink is followed, and `..` or an
/// absolute path is refused. Returns the last one's fd.
pub fn create_dirs_beneath(dir: BorrowedFd<'_>, rel: &Path, shown: &Path) -> Result<OwnedFd> {
    let names = components(rel, shown)?;
    let mut cur: Option<OwnedFd> = None;
    for n in names {
        let parent = cur.as_ref().map(|f| f.as_fd()).unwrap_or(dir);
        cur = Some(mkdir_at(parent, n, false, shown)?);
    }
    cur.ok_or_else(|| refused(shown, "no directory to create"))
}

/// As [`create_dirs_beneath`] for a file: its parents are made, then an
/// empty regular file unless one is there already; anything else there
/// (a link, a directory, a FIFO, a device) is refused. Returns an
/// `O_PATH` fd on the file.
pub fn create_file_beneath(dir: BorrowedFd<'_>, rel: &Path, shown: &Path) -> Result<OwnedFd> {
    let names = components(rel, shown)?;
    let Some((last, middle)) = names.split_last() else {
        return Err(refused(shown, "no file name"));
    };
    let parent = match middle.is_empty() {
        true => None,
        false => Some(create_dirs_beneath(
            dir,
            &middle.iter().collect::<PathBuf>(),
            shown,
        )?),
    };
    let parent = parent.as_ref().map(|f| f.as_fd()).unwrap_or(dir);
    let c = cstr(last, shown)?;
    // SAFETY: a valid dirfd and NUL-terminated name; O_EXCL|O_NOFOLLOW
    // never reuse nor follow what is there.
    let fd = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        let e = nix::Error::last();
        if e != nix::Error::EEXIST {
            return Err(io_err("create file", shown)(e));
        }
    } else {
        // SAFETY: a new fd nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    // O_PATH|O_NOFOLLOW opens a link itself: the type check refuses it.
    let f = open_beneath(parent, Path::new(last), OFlag::O_PATH, 0, shown)?;
    let st = stat(f.as_fd(), shown)?;
    if kind(&st) != SFlag::S_IFREG {
        return Err(refused(
            shown,
            format!("it is {}, not a regular file", kind_name(&st)),
        ));
    }
    Ok(f)
}

/// Creates (or opens for appending) the regular file `name` in `dir`,
/// never following a link, never blocking on a FIFO; refuses anything
/// but a regular file with a single link (a hard link to a host file
/// planted there would otherwise be written).
pub fn create_file(dir: &OwnedFd, name: &Path, mode: u32, shown: &Path) -> Result<File> {
    create_file_as(dir, name, mode, shown, OFlag::O_WRONLY)
}

/// As [`create_file`], opened for reading too.
pub fn create_file_rw(dir: &OwnedFd, name: &Path, mode: u32, shown: &Path) -> Result<File> {
    create_file_as(dir, name, mode, shown, OFlag::O_RDWR)
}

fn create_file_as(
    dir: &OwnedFd,
    name: &Path,
    mode: u32,
    shown: &Path,
    access: OFlag,
) -> Result<File> {
    if name.components().count() != 1 || components(name, shown).is_err() {
        return Err(refused(shown, "not a single file name"));
    }
    let fd = openat2(
        Some(dir.as_fd()),
        name,
        access
            | OFlag::O_APPEND
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY,
        mode,
        BENEATH,
        shown,
    )
    .map_err(|e| match e.errno() {
        // O_NONBLOCK on a FIFO with no reader; O_WRONLY on a dir or socket.
        Some(libc::ENXIO) | Some(libc::EISDIR) => {
            refused(shown, "not a regular file (a FIFO, socket or directory)")
        }
        _ => e,
    })?;
    let st = stat(fd.as_fd(), shown)?;
    check_plain_file(&st, shown)?;
    // Regular files ignore O_NONBLOCK, but clear it for whoever inherits it.
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_APPEND),
    )
    .map_err(io_err("fcntl", shown))?;
    Ok(File::from(fd))
}

fn check_plain_file(st: &FileStat, shown: &Path) -> Result<()> {
    if kind(st) != SFlag::S_IFREG {
        return Err(refused(
            shown,
            format!("it is {}, not a regular file", kind_name(st)),
        ));
    }
    if st.st_nlink != 1 {
        return Err(refused(
            shown,
            format!(
                "it has {} hard links (it may be a host file linked in)",
                st.st_nlink
            ),
        ));
    }
    Ok(())
}

/// Creates the regular file `name` in `dir` anew (`O_EXCL`): whatever a
/// container planted at that name is unlinked first (a link is removed,
/// not followed; a directory tree is removed fd by fd), so the file is
/// always berth's own. Opened for appending.
pub fn create_new_file(dir: &OwnedFd, name: &Path, mode: u32, shown: &Path) -> Result<File> {
    if name.components().count() != 1 || components(name, shown).is_err() {
        return Err(refused(shown, "not a single file name"));
    }
    let c = cstr(name.as_os_str(), shown)?;
    // A container racing us can plant again between the unlink and the
    // create: a few tries, then give up.
    let mut last = None;
    for _ in 0..4 {
        // SAFETY: valid dirfd and NUL-terminated name; O_EXCL|O_NOFOLLOW
        // never open what is there.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_WRONLY
                    | libc::O_APPEND
                    | libc::O_CREAT
                    | libc::O_EXCL
                    | libc::O_NOFOLLOW
                    | libc::O_CLOEXEC
                    | libc::O_NOCTTY,
                mode,
            )
        };
        if fd >= 0 {
            // SAFETY: a new fd nothing else owns.
            return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let e = nix::Error::last();
        if e != nix::Error::EEXIST {
            return Err(io_err("create file", shown)(e));
        }
        last = Some(e);
        remove_at(dir, name.as_os_str(), shown)?;
    }
    Err(io_err("create file", shown)(
        last.unwrap_or(nix::Error::EEXIST),
    ))
}

/// Opens the regular file `name` beneath `dir` for reading: no symlink
/// followed, and refused unless it is a regular file with one link (a
/// FIFO would block, a device could read the host's disk, a hard link
/// could be a host file). The type is checked on an `O_PATH` fd before
/// anything is opened for reading.
pub fn open_read_beneath(dir: BorrowedFd<'_>, name: &Path, shown: &Path) -> Result<File> {
    let p = open_beneath(dir, name, OFlag::O_PATH, 0, shown)?;
    let st = stat(p.as_fd(), shown)?;
    check_plain_file(&st, shown)?;
    // Reopens the very inode checked above, not the name again.
    let proc = PathBuf::from(format!("/proc/self/fd/{}", p.as_raw_fd()));
    let fd = nix::fcntl::open(
        &proc,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(io_err("open", shown))?;
    // SAFETY: a new fd nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `renameat` of two names in one directory fd.
pub fn rename_at(dir: &OwnedFd, from: &Path, to: &Path, shown: &Path) -> Result<()> {
    nix::fcntl::renameat(Some(dir.as_raw_fd()), from, Some(dir.as_raw_fd()), to)
        .map_err(io_err("rename into", shown))
}

/// What [`walk`] shows its visitor for each entry.
pub struct Entry<'a> {
    /// An `O_DIRECTORY` fd for a directory, an `O_PATH|O_NOFOLLOW` fd for
    /// anything else (a symlink's fd is the link itself).
    pub fd: BorrowedFd<'a>,
    /// `fstat` of that fd.
    pub stat: &'a FileStat,
    /// The path, for messages only: never open it.
    pub shown: &'a Path,
}

impl Entry<'_> {
    /// A directory.
    pub fn is_dir(&self) -> bool {
        kind(self.stat) == SFlag::S_IFDIR
    }
    /// A regular file.
    pub fn is_file(&self) -> bool {
        kind(self.stat) == SFlag::S_IFREG
    }
    /// A symlink.
    pub fn is_symlink(&self) -> bool {
        kind(self.stat) == SFlag::S_IFLNK
    }
    /// Changes the owner of this entry itself (a link, never its target).
    pub fn chown(&self, uid: u32, gid: u32) -> Result<()> {
        let empty = c"";
        // SAFETY: valid fd; AT_EMPTY_PATH acts on the fd's own inode.
        let r = unsafe {
            libc::fchownat(
                self.fd.as_raw_fd(),
                empty.as_ptr(),
                uid,
                gid,
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r < 0 {
            return Err(io_err("chown", self.shown)(nix::Error::last()));
        }
        Ok(())
    }
}

/// Visits `dir` and everything beneath it, fd by fd: no link is followed,
/// no other filesystem is entered (its mount point is not visited), and an
/// entry swapped between the listing and the open is skipped. The visitor
/// returns whether to descend into a directory.
pub fn walk(
    dir: OwnedFd,
    shown: &Path,
    visit: &mut dyn FnMut(&Entry<'_>) -> Result<bool>,
) -> Result<()> {
    let st = stat(dir.as_fd(), shown)?;
    if kind(&st) != SFlag::S_IFDIR {
        return Err(refused(
            shown,
            format!("it is {}, not a directory", kind_name(&st)),
        ));
    }
    let dev = st.st_dev;
    let e = Entry {
        fd: dir.as_fd(),
        stat: &st,
        shown,
    };
    if visit(&e)? {
        walk_dir(dir, dev, shown, visit)?;
    }
    Ok(())
}

fn walk_dir(
    dir: OwnedFd,
    dev: u64,
    shown: &Path,
    visit: &mut dyn FnMut(&Entry<'_>) -> Result<bool>,
) -> Result<()> {
    for name in list(&dir, shown)? {
        let p = shown.join(&name);
        let path_fd = match open_beneath(dir.as_fd(), Path::new(&name), OFlag::O_PATH, 0, &p) {
            Ok(fd) => fd,
            // Gone since the listing.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let st = stat(path_fd.as_fd(), &p)?;
        if st.st_dev != dev {
            continue;
        }
        if kind(&st) == SFlag::S_IFDIR {
            // Reopen for reading; it must still be the inode just seen.
            let d = match open_beneath(
                dir.as_fd(),
                Path::new(&name),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                0,
                &p,
            ) {
                Ok(d) => d,
                Err(e)
                    if e.is_not_found()
                        || e.errno() == Some(libc::ENOTDIR)
                        || e.errno() == Some(libc::ELOOP) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            let st2 = stat(d.as_fd(), &p)?;
            if Identity::of(&st2) != Identity::of(&st) {
                continue;
            }
            let e = Entry {
                fd: d.as_fd(),
                stat: &st2,
                shown: &p,
            };
            if visit(&e)? {
                walk_dir(d, dev, &p, visit)?;
            }
        } else {
            visit(&Entry {
                fd: path_fd.as_fd(),
                stat: &st,
                shown: &p,
            })?;
        }
    }
    Ok(())
}

/// The names in an open directory (without `.` and `..`).
fn list(dir: &OwnedFd, shown: &Path) -> Result<Vec<std::ffi::OsString>> {
    let dup = dir.try_clone().map_err(|source| SafePathError::Io {
        op: "dup",
        path: shown.to_path_buf(),
        source,
    })?;
    let mut d = nix::dir::Dir::from_fd(dup.as_raw_fd()).map_err(io_err("list", shown))?;
    // Dir owns the fd now.
    std::mem::forget(dup);
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io_err("list", shown))?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(names)
}

/// Gives `dir` and everything in it to `uid:gid`, as [`walk`] goes: links
/// are chowned themselves, regular files only when they have no other
/// hard link, devices, FIFOs and sockets not at all.
pub fn chown_tree(dir: OwnedFd, shown: &Path, uid: u32, gid: u32) -> Result<()> {
    walk(dir, shown, &mut |e| {
        let plain = e.is_dir() || e.is_symlink() || (e.is_file() && e.stat.st_nlink == 1);
        if plain {
            e.chown(uid, gid)?;
        }
        Ok(true)
    })
}

/// Removes the absolute `path` and everything beneath it. The parent is
/// opened with no symlink anywhere, the entry is removed by name on that
/// fd, and its content fd by fd: a link is unlinked, never followed. A
/// missing path is not an error.
pub fn remove_tree(path: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(refused(path, "no parent directory"));
    };
    let dir = match open_dir(parent, None) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_at(&dir, name, path)
}

/// Removes `name` (anything: file, link, tree) from the directory `dir`.
pub fn remove_at(dir: &OwnedFd, name: &OsStr, shown: &Path) -> Result<()> {
    let c = cstr(name, shown)?;
    match open_beneath(
        dir.as_fd(),
        Path::new(name),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        0,
        shown,
    ) {
        Ok(sub) => {
            for n in list(&sub, shown)? {
                remove_at(&sub, &n, &shown.join(&n))?;
            }
            // SAFETY: valid dirfd and NUL-terminated name.
            if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) } < 0 {
                let e = nix::Error::last();
                if e != nix::Error::ENOENT {
                    return Err(io_err("remove directory", shown)(e));
                }
            }
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        // Not a directory (a file, a link, a FIFO): unlink the name itself.
        Err(e) if matches!(e.errno(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
            // SAFETY: as above.
            if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } < 0 {
                let e = nix::Error::last();
                if e != nix::Error::ENOENT {
                    return Err(io_err("remove", shown)(e));
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Reads the file at `path` inside the root `root` (`RESOLVE_IN_ROOT`),
/// refusing anything but a regular file (a FIFO would block, a device
/// would read the host's). `None` when it does not exist.
pub fn read_in_root(root: &Path, path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    // The root's own path is berth's (the provisioner's), used as given.
    let rfd = openat2(
        None,
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        0,
        ResolveFlag::empty(),
        root,
    )?;
    let shown = root.join(path.strip_prefix("/").unwrap_or(path));
    let fd = match open_in_root(
        rfd.as_fd(),
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
        0,
        &shown,
    ) {
        Ok(fd) => fd,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = stat(fd.as_fd(), &shown)?;
    if kind(&st) != SFlag::S_IFREG {
        return Err(refused(
            &shown,
            format!("it is {}, not a regular file", kind_name(&st)),
        ));
    }
    let mut buf = Vec::new();
    File::from(fd)
        .take(limit)
        .read_to_end(&mut buf)
        .map_err(|source| SafePathError::Io {
            op: "read",
            path: shown.clone(),
            source,
        })?;
    Ok(Some(buf))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A temp dir and its canonical path (no symlink of the host's above).
    pub(crate) fn base() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let b = std::fs::canonicalize(t.path()).unwrap();
        (t, b)
    }

    #[test]
    fn create_dirs_refuses_a_symlinked_component_and_an_existing_last() {
        let (_t, b) = base();
        let outside = b.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::create_dir(b.join("p")).unwrap();
        std::os::unix::fs::symlink(&outside, b.join("p/containers")).unwrap();
        let e = create_dirs(&b, "p/containers/c".as_ref(), true).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOTDIR), "{e}");
        assert!(!outside.join("c").exists());
        std::fs::remove_file(b.join("p/containers")).unwrap();
        std::fs::create_dir_all(b.join("p/containers/c")).unwrap();
        let e = create_dirs(&b, "p/containers/c".as_ref(), true).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        let e = create_dirs(&b, "p/../x".as_ref(), true).unwrap_err();
        assert!(e.to_string().contains("plain names"), "{e}");
    }

    #[test]
    fn create_beneath_follows_no_link_and_refuses_dotdot() {
        let (_t, b) = base();
        let outside = b.join("outside");
        std::fs::create_dir(&outside).unwrap();
        let (d, _) = create_dirs(&b, "s".as_ref(), true).unwrap();
        let sb = b.join("s");
        std::os::unix::fs::symlink(&outside, sb.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), sb.join("flink")).unwrap();
        let shown = Path::new("shown");
        // Through a link, or a link as the target: refused.
        for rel in ["link/x", "link"] {
            assert!(create_dirs_beneath(d.as_fd(), rel.as_ref(), shown).is_err());
        }
        for rel in ["link/f", "flink"] {
            assert!(create_file_beneath(d.as_fd(), rel.as_ref(), shown).is_err());
        }
        for rel in ["../x", "a/../../x", "/abs", "./a"] {
            assert!(create_dirs_beneath(d.as_fd(), rel.as_ref(), shown).is_err());
            assert!(create_file_beneath(d.as_fd(), rel.as_ref(), shown).is_err());
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(!outside.join("f").exists());
        // Plain names are made (and found again).
        create_dirs_beneath(d.as_fd(), "a/b".as_ref(), shown).unwrap();
        create_dirs_beneath(d.as_fd(), "a/b".as_ref(), shown).unwrap();
        assert!(sb.join("a/b").is_dir());
        create_file_beneath(d.as_fd(), "c/f".as_ref(), shown).unwrap();
        create_file_beneath(d.as_fd(), "c/f".as_ref(), shown).unwrap();
        assert!(sb.join("c/f").is_file());
        // A directory where a file is wanted: refused by type.
        let e = create_file_beneath(d.as_fd(), "a".as_ref(), shown).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
    }

    #[test]
    fn open_dir_checks_identity_and_links() {
        let (_t, b) = base();
        let (_, id) = create_dirs(&b, "a".as_ref(), true).unwrap();
        open_dir(&b.join("a"), Some(id)).unwrap();
        std::fs::rename(b.join("a"), b.join("a2")).unwrap();
        std::fs::create_dir(b.join("a")).unwrap();
        let e = open_dir(&b.join("a"), Some(id)).unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
        std::fs::remove_dir(b.join("a")).unwrap();
        std::os::unix::fs::symlink(b.join("a2"), b.join("a")).unwrap();
        assert_eq!(
            open_dir(&b.join("a"), Some(id)).unwrap_err().errno(),
            Some(libc::ENOTDIR)
        );
    }

    #[test]
    fn create_file_refuses_links_fifos_and_hardlinks() {
        let (_t, b) = base();
        let (d, _) = create_dirs(&b, "s".as_ref(), true).unwrap();
        let canary = b.join("canary");
        std::fs::write(&canary, "secret").unwrap();
        std::os::unix::fs::symlink(&canary, b.join("s/stdout")).unwrap();
        let e = create_file(&d, "stdout".as_ref(), 0o644, &b.join("s/stdout")).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ELOOP), "{e}");
        std::os::unix::fs::symlink(b.join("missing"), b.join("s/stderr")).unwrap();
        create_file(&d, "stderr".as_ref(), 0o644, &b.join("s/stderr")).unwrap_err();
        assert!(!b.join("missing").exists());
        std::fs::hard_link(&canary, b.join("s/hard")).unwrap();
        let e = create_file(&d, "hard".as_ref(), 0o644, &b.join("s/hard")).unwrap_err();
        assert!(e.to_string().contains("hard links"), "{e}");
        nix::unistd::mkfifo(&b.join("s/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let e = create_file(&d, "fifo".as_ref(), 0o644, &b.join("s/fifo")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let mut f = create_file(&d, "ok".as_ref(), 0o644, &b.join("s/ok")).unwrap();
        std::io::Write::write_all(&mut f, b"x").unwrap();
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "secret");
    }

    #[test]
    fn chown_tree_skips_hardlinks_and_never_follows() {
        let (_t, b) = base();
        let (d, _) = create_dirs(&b, "s".as_ref(), true).unwrap();
        let canary = b.join("canary");
        std::fs::write(&canary, "secret").unwrap();
        std::fs::hard_link(&canary, b.join("s/hard")).unwrap();
        std::os::unix::fs::symlink(&canary, b.join("s/link")).unwrap();
        std::fs::create_dir(b.join("s/sub")).unwrap();
        std::fs::write(b.join("s/sub/own"), "mine").unwrap();
        chown_tree(d, &b.join("s"), 4242, 4243).unwrap();
        assert_eq!(std::fs::metadata(&canary).unwrap().uid(), 0);
        assert_eq!(
            std::fs::symlink_metadata(b.join("s/link")).unwrap().uid(),
            4242
        );
        assert_eq!(std::fs::metadata(b.join("s/sub/own")).unwrap().uid(), 4242);
        assert_eq!(std::fs::metadata(b.join("s/sub")).unwrap().gid(), 4243);
    }

    #[test]
    fn remove_tree_never_removes_through_a_link() {
        let (_t, b) = base();
        let outside = b.join("outside");
        std::fs::create_dir_all(outside.join("keep")).unwrap();
        std::fs::create_dir_all(b.join("p/x")).unwrap();
        std::os::unix::fs::symlink(&outside, b.join("p/containers")).unwrap();
        std::os::unix::fs::symlink(&outside, b.join("p/x/l")).unwrap();
        // Through a link in the path: refused, nothing removed.
        let e = remove_tree(&b.join("p/containers/keep")).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOTDIR), "{e}");
        assert!(outside.join("keep").is_dir());
        remove_tree(&b.join("p")).unwrap();
        assert!(outside.join("keep").is_dir());
        assert!(!b.join("p").exists());
        remove_tree(&b.join("p")).unwrap();
    }

    #[test]
    fn create_in_root_never_creates_outside() {
        let (_t, b) = base();
        let outside = b.join("outside");
        std::fs::create_dir_all(b.join("r")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(b.join("r/inside")).unwrap();
        std::os::unix::fs::symlink(&outside, b.join("r/host")).unwrap();
        std::os::unix::fs::symlink("/inside", b.join("r/mnt")).unwrap();
        std::os::unix::fs::symlink("/nowhere", b.join("r/dangling")).unwrap();
        let root = open_dir(&b.join("r"), None).unwrap();
        // An absolute link resolves inside r.
        let fd = create_dirs_in_root(root.as_fd(), "/mnt/sandbox".as_ref(), &b).unwrap();
        assert_eq!(fd_path(fd.as_fd(), &b).unwrap(), b.join("r/inside/sandbox"));
        // A link to a host path is r/<host path>, missing: nothing is made.
        create_dirs_in_root(root.as_fd(), "/host/sandbox".as_ref(), &b).unwrap_err();
        assert!(!outside.join("sandbox").exists());
        create_dirs_in_root(root.as_fd(), "/dangling/x".as_ref(), &b).unwrap_err();
        assert!(!Path::new("/nowhere").exists());
        let f = create_file_in_root(root.as_fd(), "/etc/hosts".as_ref(), &b).unwrap();
        assert_eq!(fd_path(f.as_fd(), &b).unwrap(), b.join("r/etc/hosts"));
    }

    #[test]
    fn read_in_root_stays_in_the_root() {
        let (_t, b) = base();
        std::fs::create_dir_all(b.join("r")).unwrap();
        std::fs::create_dir_all(b.join("host")).unwrap();
        std::fs::write(b.join("host/passwd"), "host").unwrap();
        std::os::unix::fs::symlink(b.join("host"), b.join("r/etc")).unwrap();
        // The host's file is not read: the absolute link resolves in r.
        let got = read_in_root(&b.join("r"), "/etc/passwd".as_ref(), 1 << 20).unwrap();
        assert_eq!(got, None);
        std::fs::remove_file(b.join("r/etc")).unwrap();
        std::fs::create_dir(b.join("r/etc")).unwrap();
        std::fs::write(b.join("r/etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        let got = read_in_root(&b.join("r"), "/etc/passwd".as_ref(), 1 << 20)
            .unwrap()
            .unwrap();
        assert!(got.starts_with(b"root:"));
    }
}
