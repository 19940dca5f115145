//! cgroupfs chores shared by the launcher's kill cgroup and the cgroup
//! isolators: removing a cgroup tree, which needs care because an emptied
//! cgroup can stay busy (`EBUSY`) for a moment after its last task died.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The mount points of every cgroup hierarchy (v1, named v1, v2), from
/// `/proc/self/mountinfo`.
pub fn mounts() -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
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
