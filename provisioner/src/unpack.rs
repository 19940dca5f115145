//! Safe layer unpack: a tar stream into a directory, nothing ever written
//! outside it.
//!
//! The `tar` crate's own `unpack` is not trusted. Every entry's path is
//! checked (`..` and absolute paths are refused), and every parent
//! directory is opened component by component with
//! `O_DIRECTORY|O_NOFOLLOW` from the layer root's fd, so a symlink — from
//! this layer or, for the copy backend, from an earlier one — can never
//! redirect a write. The final entry is then made with `*at` calls relative
//! to its parent's fd, never by path. Hardlink targets are resolved the
//! same way (inside the layer, no symlinks). Device nodes are skipped with
//! a warning. Whiteouts become overlay's native form (a 0/0 char device,
//! `trusted.overlay.opaque=y`) or are applied (copy backend).

use crate::error::{io, Error, Result};
use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// What to do with whiteout entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Turn them into overlayfs's form (layer cache for the overlay backend).
    Overlay,
    /// Apply them to what earlier layers put in the same directory (copy backend).
    Apply,
    /// No whiteout meaning: plain files (archives of image layouts).
    Keep,
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// What an unpack did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub skipped_devices: Vec<String>,
}

/// The components of a tar entry's path, or why it is refused.
pub fn sanitize(raw: &[u8]) -> std::result::Result<Vec<OsString>, String> {
    let p = Path::new(OsStr::from_bytes(raw));
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute path (it would escape the layer)".into())
            }
            Component::ParentDir => {
                return Err("a `..` component (it would escape the layer)".into())
            }
        }
    }
    Ok(out)
}

fn cstr(s: &OsStr) -> CString {
    // Tar names never contain NUL (the format ends them with it).
    CString::new(s.as_bytes()).unwrap_or_else(|_| CString::new("invalid").expect("no NUL"))
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn openat_dir(dir: RawFd, name: &OsStr) -> std::io::Result<OwnedFd> {
    let n = cstr(name);
    // SAFETY: n is a valid C string; the fd returned is owned by us.
    let fd = unsafe {
        libc::openat(
            dir,
            n.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: fd was just opened and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Stat without following a symlink: `None` when absent.
fn lstat_at(dir: RawFd, name: &OsStr) -> std::io::Result<Option<libc::stat>> {
    let n = cstr(name);
    // SAFETY: zeroed stat is a valid out buffer for fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    let r = unsafe { libc::fstatat(dir, n.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r < 0 {
        let e = errno();
        return if e.kind() == std::io::ErrorKind::NotFound {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(st))
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

struct Unpacker<'a> {
    root: OwnedFd,
    dest: &'a Path,
    layer: &'a str,
    whiteouts: Whiteouts,
    /// Paths this layer made (the copy backend's opaque dirs keep them).
    created: HashSet<PathBuf>,
    /// Directories made, as components below the root, with their mtime.
    dir_times: Vec<(Vec<OsString>, i64)>,
    stats: Stats,
}

impl Unpacker<'_> {
    fn refuse(&self, entry: &str, why: impl Into<String>) -> Error {
        Error::UnsafeEntry {
            layer: self.layer.to_string(),
            entry: entry.to_string(),
            why: why.into(),
        }
    }

    fn sys(&self, entry: &str, op: &str, e: std::io::Error) -> Error {
        Error::Layer {
            layer: self.layer.to_string(),
            why: format!("entry {entry:?}: {op}: {e}"),
        }
    }

    /// Opens the directory `comps` below the root, never through a
    /// symlink; creates missing ones (0755) when `create`.
    fn walk(&self, entry: &str, comps: &[OsString], create: bool) -> Result<OwnedFd> {
        let mut cur = self
            .root
            .try_clone()
            .map_err(|e| self.sys(entry, "dup the layer root fd", e))?;
        for c in comps {
            let next = match openat_dir(cur.as_raw_fd(), c) {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    let n = cstr(c);
                    // SAFETY: valid fd and C string.
                    if unsafe { libc::mkdirat(cur.as_raw_fd(), n.as_ptr(), 0o755) } < 0 {
                        return Err(self.sys(entry, "mkdir parent", errno()));
                    }
                    openat_dir(cur.as_raw_fd(), c)
                        .map_err(|e| self.sys(entry, "open parent", e))?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                    return Err(self.refuse(
                        entry,
                        format!(
                            "path component {:?} is a symlink or not a directory (refusing to write through it)",
                            c
                        ),
                    ))
                }
                Err(e) => return Err(self.sys(entry, "open parent", e)),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Removes whatever is at `name` in `parent` (a directory recursively,
    /// fd by fd: the tree may be a sandbox a container writes meanwhile).
    fn remove_existing(
        &self,
        entry: &str,
        parent: &OwnedFd,
        host: &Path,
        name: &OsStr,
    ) -> Result<()> {
        let Some(st) =
            lstat_at(parent.as_raw_fd(), name).map_err(|e| self.sys(entry, "lstat", e))?
        else {
            return Ok(());
        };
        if is_dir(&st) {
            berth_state::safe_path::remove_at(parent, name, host).map_err(|e| Error::Layer {
                layer: self.layer.to_string(),
                why: format!("entry {entry:?}: {e}"),
            })
        } else {
            let n = cstr(name);
            // SAFETY: valid fd and C string.
            if unsafe { libc::unlinkat(parent.as_raw_fd(), n.as_ptr(), 0) } < 0 {
                return Err(self.sys(entry, "unlink", errno()));
            }
            Ok(())
        }
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<()> {
        let raw = e.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).to_string();
        let comps = sanitize(&raw).map_err(|why| self.refuse(&shown, why))?;
        let Some((name, parents)) = comps.split_last() else {
            return Ok(()); // the layer root itself
        };
        let rel: PathBuf = comps.iter().collect();
        let host = self.dest.join(&rel);
        let parent_host = self.dest.join(parents.iter().collect::<PathBuf>());
        let nb = name.as_bytes();
        let kind = e.header().entry_type();
        if self.whiteouts != Whiteouts::Keep && nb.starts_with(WHITEOUT_PREFIX) {
            let parent = self.walk(&shown, parents, true)?;
            if nb == OPAQUE {
                return self.opaque(&shown, &parent, &parent_host, parents);
            }
            let target = OsStr::from_bytes(&nb[WHITEOUT_PREFIX.len()..]);
            if target.is_empty() || target == "." || target == ".." || nb.starts_with(b".wh..wh.") {
                return Err(self.refuse(&shown, "malformed whiteout"));
            }
            let target_host = parent_host.join(target);
            self.remove_existing(&shown, &parent, &target_host, target)?;
            if self.whiteouts == Whiteouts::Overlay {
                let n = cstr(target);
                // SAFETY: valid fd and C string; a 0/0 char device is overlay's whiteout.
                if unsafe { libc::mknodat(parent.as_raw_fd(), n.as_ptr(), libc::S_IFCHR, 0) } < 0 {
                    return Err(self.sys(&shown, "mknod whiteout", errno()));
                }
            }
            self.stats.entries += 1;
            return Ok(());
        }
        let h = e.header();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let uid = h.uid().unwrap_or(0) as libc::uid_t;
        let gid = h.gid().unwrap_or(0) as libc::gid_t;
        let mtime = h.mtime().unwrap_or(0) as i64;
        let parent = self.walk(&shown, parents, true)?;
        let pfd = parent.as_raw_fd();
        let n = cstr(name);
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                let existing = lstat_at(pfd, name).map_err(|e| self.sys(&shown, "lstat", e))?;
                if !existing.as_ref().is_some_and(is_dir) {
                    self.remove_existing(&shown, &parent, &host, name)?;
                    // SAFETY: valid fd and C string.
                    if unsafe { libc::mkdirat(pfd, n.as_ptr(), 0o700) } < 0 {
                        return Err(self.sys(&shown, "mkdir", errno()));
                    }
                }
                let d = openat_dir(pfd, name).map_err(|e| self.sys(&shown, "open dir", e))?;
                self.owner_mode(&shown, d.as_raw_fd(), uid, gid, mode)?;
                self.xattrs(&shown, &mut e, d.as_raw_fd());
                self.dir_times.push((comps.clone(), mtime));
            }
            T::Regular | T::Continuous => {
                self.remove_existing(&shown, &parent, &host, name)?;
                // SAFETY: valid fd and C string; O_EXCL|O_NOFOLLOW never reuse or follow.
                let fd = unsafe {
                    libc::openat(
                        pfd,
                        n.as_ptr(),
                        libc::O_WRONLY
                            | libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o600,
                    )
                };
                if fd < 0 {
                    return Err(self.sys(&shown, "create file", errno()));
                }
                // SAFETY: fd was just opened and is owned by nobody else.
                let mut f = unsafe { File::from_raw_fd(fd) };
                std::io::copy(&mut e, &mut f).map_err(|er| self.sys(&shown, "write file", er))?;
                self.owner_mode(&shown, f.as_raw_fd(), uid, gid, mode)?;
                self.xattrs(&shown, &mut e, f.as_raw_fd());
                self.set_time(&shown, pfd, &n, mtime)?;
            }
            T::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&shown, "symlink without a target"))?
                    .into_owned();
                self.remove_existing(&shown, &parent, &host, name)?;
                let t = CString::new(target)
                    .map_err(|_| self.refuse(&shown, "NUL in symlink target"))?;
                // SAFETY: valid C strings and fd. The target is stored, never followed here.
                if unsafe { libc::symlinkat(t.as_ptr(), pfd, n.as_ptr()) } < 0 {
                    return Err(self.sys(&shown, "symlink", errno()));
                }
                // SAFETY: valid fd and C string; AT_SYMLINK_NOFOLLOW changes the link itself.
                if unsafe { libc::fchownat(pfd, n.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) }
                    < 0
                {
                    return Err(self.sys(&shown, "chown symlink", errno()));
                }
                self.set_time(&shown, pfd, &n, mtime)?;
            }
            T::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&shown, "hardlink without a target"))?
                    .into_owned();
                let tshown = String::from_utf8_lossy(&target).to_string();
                let tcomps = sanitize(&target).map_err(|why| {
                    self.refuse(&shown, format!("hardlink target {tshown:?}: {why}"))
                })?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(self.refuse(&shown, "hardlink to the layer root"));
                };
                let tparent = self.walk(&shown, tparents, false).map_err(|_| {
                    self.refuse(
                        &shown,
                        format!("hardlink target {tshown:?} is not in this layer"),
                    )
                })?;
                match lstat_at(tparent.as_raw_fd(), tname) {
                    Ok(Some(st)) if !is_dir(&st) => {}
                    _ => {
                        return Err(self.refuse(
                            &shown,
                            format!("hardlink target {tshown:?} is not a file in this layer"),
                        ))
                    }
                }
                if tcomps != comps {
                    self.remove_existing(&shown, &parent, &host, name)?;
                    let tn = cstr(tname);
                    // SAFETY: valid fds and C strings; flags 0: a symlink target is linked itself, not followed.
                    if unsafe { libc::linkat(tparent.as_raw_fd(), tn.as_ptr(), pfd, n.as_ptr(), 0) }
                        < 0
                    {
                        return Err(self.sys(&shown, "hardlink", errno()));
                    }
                }
            }
            T::Fifo => {
                self.remove_existing(&shown, &parent, &host, name)?;
                // SAFETY: valid fd and C string.
                if unsafe { libc::mknodat(pfd, n.as_ptr(), libc::S_IFIFO | mode, 0) } < 0 {
                    return Err(self.sys(&shown, "mkfifo", errno()));
                }
                // SAFETY: as above.
                unsafe { libc::fchownat(pfd, n.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) };
            }
            T::Char | T::Block => {
                tracing::warn!(layer = self.layer, entry = %shown, "device node skipped");
                self.stats.skipped_devices.push(shown);
                return Ok(());
            }
            other => {
                tracing::warn!(layer = self.layer, entry = %shown, kind = ?other, "unsupported entry type skipped");
                return Ok(());
            }
        }
        self.created.insert(rel);
        self.stats.entries += 1;
        Ok(())
    }

    /// `.wh..wh..opq`: the directory hides what lower layers have there.
    fn opaque(
        &mut self,
        entry: &str,
        dir: &OwnedFd,
        dir_host: &Path,
        comps: &[OsString],
    ) -> Result<()> {
        match self.whiteouts {
            Whiteouts::Overlay => {
                // SAFETY: valid fd and C strings with their lengths.
                let r = unsafe {
                    libc::fsetxattr(
                        dir.as_raw_fd(),
                        c"trusted.overlay.opaque".as_ptr(),
                        b"y".as_ptr().cast(),
                        1,
                        0,
                    )
                };
                if r < 0 {
                    return Err(self.sys(entry, "set trusted.overlay.opaque", errno()));
                }
            }
            Whiteouts::Apply => {
                let rel: PathBuf = comps.iter().collect();
                for child in std::fs::read_dir(dir_host).map_err(io("list", dir_host))? {
                    let child = child.map_err(io("list", dir_host))?;
                    if self.created.contains(&rel.join(child.file_name())) {
                        continue;
                    }
                    let p = child.path();
                    let ft = child.file_type().map_err(io("stat", &p))?;
                    if ft.is_dir() {
                        std::fs::remove_dir_all(&p).map_err(io("remove", &p))?;
                    } else {
                        std::fs::remove_file(&p).map_err(io("remove", &p))?;
                    }
                }
            }
            Whiteouts::Keep => {}
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// chown first: it clears setuid bits that the chmod then sets.
    fn owner_mode(&self, entry: &str, fd: RawFd, uid: u32, gid: u32, mode: u32) -> Result<()> {
        // SAFETY: fd is open and ours.
        if unsafe { libc::fchown(fd, uid, gid) } < 0 {
            return Err(self.sys(entry, "chown", errno()));
        }
        // SAFETY: as above.
        if unsafe { libc::fchmod(fd, mode) } < 0 {
            return Err(self.sys(entry, "chmod", errno()));
        }
        Ok(())
    }

    fn set_time(&self, entry: &str, dir: RawFd, name: &CString, mtime: i64) -> Result<()> {
        let ts = libc::timespec {
            tv_sec: mtime as libc::time_t,
            tv_nsec: 0,
        };
        let times = [ts, ts];
        // SAFETY: valid fd, C string and a 2-element timespec array.
        if unsafe {
            libc::utimensat(
                dir,
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } < 0
        {
            return Err(self.sys(entry, "set mtime", errno()));
        }
        Ok(())
    }

    /// PAX `SCHILY.xattr.*` records, where the filesystem allows them.
    fn xattrs<R: Read>(&self, entry: &str, e: &mut tar::Entry<'_, R>, fd: RawFd) {
        let Ok(Some(exts)) = e.pax_extensions() else {
            return;
        };
        for ext in exts.flatten() {
            let Ok(key) = ext.key() else { continue };
            let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
                continue;
            };
            // overlayfs's own attributes (opaque, redirect, origin) are
            // made by this unpack from whiteouts only, never taken from a tar.
            if name.starts_with("trusted.overlay.") {
                tracing::warn!(
                    layer = self.layer,
                    entry,
                    xattr = name,
                    "overlay xattr from the tar ignored"
                );
                continue;
            }
            let Ok(cname) = CString::new(name) else {
                continue;
            };
            let v = ext.value_bytes();
            // SAFETY: valid fd, C string and buffer with its length.
            if unsafe { libc::fsetxattr(fd, cname.as_ptr(), v.as_ptr().cast(), v.len(), 0) } < 0 {
                tracing::warn!(layer = self.layer, entry, xattr = name, error = %errno(), "xattr not kept");
            }
        }
    }
}

/// Unpacks the tar stream `r` into `dest` (an existing directory, not a
/// symlink). The reader is returned so the caller can drain and hash the
/// rest.
pub fn unpack<R: Read>(r: R, dest: &Path, whiteouts: Whiteouts, layer: &str) -> Result<(Stats, R)> {
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dest)
        .map_err(io("open layer dir", dest))?;
    unpack_at(r, root.into(), dest, whiteouts, layer)
}

/// Unpacks the tar stream `r` into the open directory `root` (`dest` is
/// its path, for messages only: nothing is resolved through it).
pub fn unpack_at<R: Read>(
    r: R,
    root: OwnedFd,
    dest: &Path,
    whiteouts: Whiteouts,
    layer: &str,
) -> Result<(Stats, R)> {
    let mut u = Unpacker {
        root,
        dest,
        layer,
        whiteouts,
        created: HashSet::new(),
        dir_times: Vec::new(),
        stats: Stats::default(),
    };
    let mut ar = tar::Archive::new(r);
    let bad = |e: std::io::Error| Error::Layer {
        layer: layer.to_string(),
        why: format!("reading the tar stream: {e}"),
    };
    for entry in ar.entries().map_err(bad)? {
        u.entry(entry.map_err(bad)?)?;
    }
    // Directory mtimes last: making their children changed them.
    for (comps, mtime) in u.dir_times.iter().rev() {
        let ts = libc::timespec {
            tv_sec: *mtime as libc::time_t,
            tv_nsec: 0,
        };
        // Reopened fd by fd: a directory swapped since is skipped.
        let Ok(d) = u.walk("", comps, false) else {
            continue;
        };
        // SAFETY: valid fd and timespec array.
        unsafe { libc::futimens(d.as_raw_fd(), [ts, ts].as_ptr()) };
    }
    Ok((u.stats, ar.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_refuses_escapes() {
        assert_eq!(
            sanitize(b"./a/b/").unwrap(),
            vec![OsString::from("a"), "b".into()]
        );
        assert!(sanitize(b"./").unwrap().is_empty());
        assert!(sanitize(b"/etc/passwd").unwrap_err().contains("absolute"));
        assert!(sanitize(b"a/../../etc").unwrap_err().contains(".."));
    }
}
