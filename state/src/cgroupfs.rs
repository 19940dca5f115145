//! cgroupfs chores shared by the launcher's kill cgroup and the cgroup
//! isolators: removing a cgroup tree, which needs care because an emptied
//! cgroup can stay busy (`EBUSY`) for a moment after its last task died.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lines of `/proc/self/mountinfo` that mount a cgroup hierarchy
/// (`cgroup` or `cgroup2`), in mountinfo's format.
///
/// Kept until the mount table changes: an agent with thousands of
/// containers has as many overlay mounts, so mountinfo runs to megabytes,
/// and the launchers, the freezer and each cgroup isolator all look for
/// the hierarchies as the agent starts. The kernel marks an open
/// mountinfo file readable-with-priority (POLLPRI) once any mount or
/// unmount happens in the namespace after its open or its last poll, so a
/// poll of the file kept open says whether the copy is stale.
pub fn cgroup_mountinfo() -> io::Result<std::sync::Arc<str>> {
    use std::io::{Read, Seek};
    use std::os::fd::AsFd;
    use std::sync::{Arc, Mutex};
    static CACHE: Mutex<Option<(fs::File, Arc<str>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((file, lines)) = cache.as_ref() {
        let mut fds = [nix::poll::PollFd::new(
            file.as_fd(),
            nix::poll::PollFlags::POLLPRI,
        )];
        let changed = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO)
            .map(|n| n > 0)
            .unwrap_or(true);
        if !changed {
            return Ok(lines.clone());
        }
    }
    // Opened before it is read: a mount made meanwhile marks this file,
    // so the next call reads again.
    let mut file = match cache.take() {
        Some((mut f, _)) => {
            f.rewind()?;
            f
        }
        None => fs::File::open("/proc/self/mountinfo")?,
    };
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let lines: String = text
        .lines()
        .filter(|l| {
            l.split_once(" - ")
                .and_then(|(_, right)| right.split(' ').next())
                .is_some_and(|t| matches!(t, "cgroup" | "cgroup2"))
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    let lines: Arc<str> = lines.into();
    *cache = Some((file, lines.clone()));
    Ok(lines)
}

/// The mount points of every cgroup hierarchy (v1, named v1, v2), from
/// `/proc/self/mountinfo`.
pub fn mounts() -> io::Result<Vec<PathBuf>> {
    let text = cgroup_mountinfo()?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let point = left.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        })
        .collect())
}

/// The subdirectories of `root`, deepest first (the order `rmdir` needs).
pub fn subdirs_deepest_first(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

fn walk(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let p = e.path();
            walk(&p, out);
            out.push(p);
        }
    }
}

/// `rmdir`s one cgroup, retrying `EBUSY` with backoff until `deadline`.
/// A missing dir is fine. The error names nothing: callers add the path.
pub fn rmdir_retrying(dir: &Path, deadline: Instant) -> io::Result<()> {
    let mut pause = Duration::from_millis(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Removes `dir` and every cgroup below it, bottom-up. Returns the dir
/// that could not be removed with the cause. Idempotent.
pub fn remove_tree(dir: &Path, deadline: Instant) -> Result<(), (PathBuf, io::Error)> {
    let mut dirs = subdirs_deepest_first(dir);
    dirs.push(dir.to_path_buf());
    for d in dirs {
        rmdir_retrying(&d, deadline).map_err(|e| (d, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mountinfo_holds_only_cgroup_lines_and_is_read_again_after_a_mount() {
        let first = cgroup_mountinfo().unwrap();
        let fresh = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let want: Vec<&str> = fresh
            .lines()
            .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
            .collect();
        assert!(!want.is_empty(), "this host mounts no cgroup hierarchy");
        assert_eq!(first.lines().collect::<Vec<_>>(), want);
        // A mount anywhere marks the kept file: the next call reads anew.
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let after = cgroup_mountinfo();
        nix::mount::umount(dir.path()).unwrap();
        let after = after.unwrap();
        assert!(
            !std::sync::Arc::ptr_eq(&first, &after),
            "a stale copy was kept"
        );
        assert_eq!(*first, *after);
    }

    #[test]
    fn removes_a_tree_bottom_up_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("a");
        fs::create_dir_all(top.join("b/c")).unwrap();
        fs::create_dir_all(top.join("d")).unwrap();
        let order = subdirs_deepest_first(&top);
        let pos = |p: &str| order.iter().position(|x| x.ends_with(p)).unwrap();
        assert!(pos("b/c") < pos("a/b"));
        let deadline = Instant::now() + Duration::from_secs(1);
        remove_tree(&top, deadline).unwrap();
        assert!(!top.exists());
        remove_tree(&top, deadline).unwrap();
    }
}
