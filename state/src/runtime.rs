//! The runtime directory (default `/run/berth`): one directory per
//! container holding the files its supervisor writes — pids, the exit
//! status — so they survive an agent restart (not a reboot, by design:
//! after a reboot no container process exists either).
//!
//! Layout:
//! ```text
//! <runtime>/containers/<id>/                 a top-level container
//! <runtime>/containers/<id>/containers/<id>/ a nested one
//!     supervisor.pid   "PID START_TIME"
//!     init.pid         "PID START_TIME"
//!     exit_status      "exit CODE NANOS" | "signal N NANOS" | "start-error ERRNO NANOS MESSAGE"
//!     record.pb        mirror of the checkpoint, to rebuild a lost store
//! ```
//! Every file is written atomically (temp file, rename), so a reader sees
//! the old content or the new, never a mix. Nothing here is fsynced: the
//! runtime dir lives for one boot (by default /run, a tmpfs on most hosts),
//! and it only has to outlive the agent's process, which the page cache
//! guarantees; the processes it describes do not outlive a power loss
//! either. The durable record is the checkpoint store (flushed). This is
//! Mesos's split too: fsynced checkpoints in its meta dir, plain writes in
//! its runtime dir. The fsyncs cost ~1 ms per write here (ext4), on the
//! launch path (pid files) and on every checkpoint (the record mirror).

use crate::model::{ContainerId, ProcessRef};
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode};
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// File names inside a container's runtime dir.
pub const SUPERVISOR_PID: &str = "supervisor.pid";
pub const INIT_PID: &str = "init.pid";
pub const EXIT_STATUS: &str = "exit_status";
pub const RECORD: &str = "record.pb";

/// A runtime-dir file that is missing, unreadable or malformed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Taking a container's dir out of its place (see
    /// [`RuntimeDir::remove_container_dir`]).
    #[error(transparent)]
    Discard(#[from] crate::safe_path::SafePathError),
    #[error("{path} is malformed ({why}): {content:?}")]
    Malformed {
        path: PathBuf,
        why: &'static str,
        content: String,
    },
}

/// How the container's init ended, as its supervisor recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// exit(code).
    Exited { code: i32, at_unix_nanos: i64 },
    /// Killed by a signal.
    Signaled { signal: i32, at_unix_nanos: i64 },
    /// The command could not be exec'd (START_ERROR).
    StartError {
        errno: i32,
        message: String,
        at_unix_nanos: i64,
    },
}

impl ExitStatus {
    /// The shell-style exit code: the code, 128+N for signal N, 128 for a
    /// start error.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Exited { code, .. } => *code,
            ExitStatus::Signaled { signal, .. } => 128 + signal,
            ExitStatus::StartError { .. } => 128,
        }
    }

    pub fn at_unix_nanos(&self) -> i64 {
        match self {
            ExitStatus::Exited { at_unix_nanos, .. }
            | ExitStatus::Signaled { at_unix_nanos, .. }
            | ExitStatus::StartError { at_unix_nanos, .. } => *at_unix_nanos,
        }
    }

    /// The `exit_status` file's text (one line; also what the supervisor
    /// sends its launcher).
    pub fn encode(&self) -> String {
        match self {
            ExitStatus::Exited {
                code,
                at_unix_nanos,
            } => format!("exit {code} {at_unix_nanos}\n"),
            ExitStatus::Signaled {
                signal,
                at_unix_nanos,
            } => format!("signal {signal} {at_unix_nanos}\n"),
            ExitStatus::StartError {
                errno,
                message,
                at_unix_nanos,
            } => format!(
                "start-error {errno} {at_unix_nanos} {}\n",
                message.replace('\n', " ")
            ),
        }
    }

    /// The status in [`encode`](Self::encode)'s text; `None` when it is
    /// malformed or cut short.
    pub fn decode(s: &str) -> Option<ExitStatus> {
        // A file without its final newline was cut short.
        let line = s.strip_suffix('\n')?;
        let mut it = line.splitn(4, ' ');
        let kind = it.next()?;
        let n: i32 = it.next()?.parse().ok()?;
        let at_unix_nanos: i64 = it.next()?.parse().ok()?;
        let rest = it.next();
        match (kind, rest) {
            ("exit", None) => Some(ExitStatus::Exited {
                code: n,
                at_unix_nanos,
            }),
            ("signal", None) => Some(ExitStatus::Signaled {
                signal: n,
                at_unix_nanos,
            }),
            ("start-error", Some(msg)) => Some(ExitStatus::StartError {
                errno: n,
                message: msg.to_string(),
                at_unix_nanos,
            }),
            _ => None,
        }
    }
}

/// The runtime directory of one agent.
#[derive(Debug, Clone)]
pub struct RuntimeDir {
    root: PathBuf,
}

impl RuntimeDir {
    /// Uses (and creates, mode 0700) `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        let root = root.into();
        let containers = root.join("containers");
        fs::create_dir_all(&containers).map_err(|source| RuntimeError::Io {
            op: "create",
            path: containers.clone(),
            source,
        })?;
        set_mode_0700(&root)?;
        Ok(RuntimeDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of container `id` (not created).
    pub fn container_dir(&self, id: &ContainerId) -> PathBuf {
        let mut p = self.root.clone();
        for part in id.parts() {
            p.push("containers");
            p.push(part);
        }
        p
    }

    /// Creates the directory of container `id`.
    pub fn create_container_dir(&self, id: &ContainerId) -> Result<PathBuf, RuntimeError> {
        let dir = self.container_dir(id);
        fs::create_dir_all(&dir).map_err(|source| RuntimeError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    /// Removes the directory of container `id` (and of its nested ones):
    /// one rename into [`trash`](Self::trash) now, the unlinks (each a
    /// disk write where this dir is not a tmpfs) on the trash thread.
    /// Nothing waits for them: a new container of the same id makes a new
    /// dir. Removing an absent directory is fine.
    pub fn remove_container_dir(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        Ok(self.trash().discard(&self.container_dir(id))?)
    }

    /// Where removed container dirs wait for the trash thread: beside
    /// `containers` (whose names are ids), on the same filesystem. What a
    /// process left there, the next agent's start sweeps.
    pub fn trash(&self) -> crate::trash::Trash {
        crate::trash::Trash::new(self.root.join("trash"))
    }

    /// Every container id with a directory here, nested ones included
    /// (parents before children).
    pub fn list(&self) -> Result<Vec<ContainerId>, RuntimeError> {
        list_id_tree(&self.root.join("containers"), "containers")
    }
}

/// The container ids of a directory tree in which each container is a
/// directory named by its id part, and its nested containers sit in
/// `<its dir>/<nest>` (`"containers"` here; `""` for cgroup trees, where
/// they are direct subdirectories). Parents come before children; names
/// that are not valid ids are skipped. A missing `dir` is an empty tree.
pub fn list_id_tree(dir: &Path, nest: &str) -> Result<Vec<ContainerId>, RuntimeError> {
    let mut out = Vec::new();
    if let Some(top) = open_dir(dir)? {
        list_under(top, dir, nest, None, &mut out)?;
    }
    Ok(out)
}

/// `dir` opened for listing; `None` when it does not exist.
fn open_dir(dir: &Path) -> Result<Option<Dir>, RuntimeError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match Dir::open(dir, flags, Mode::empty()) {
        Ok(d) => Ok(Some(d)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(dir_err(dir, e)),
    }
}

fn dir_err(path: &Path, e: Errno) -> RuntimeError {
    RuntimeError::Io {
        op: "read dir",
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// The top-level container ids of a cgroup tree (no nested ones): what
/// recovery looks at for orphans. A dir no record names is removed with
/// everything below it; one a record names is its container's, and so is
/// every dir below it — berth's nested containers, or sub-cgroups the
/// container made itself (systemd or a container engine inside a
/// privileged container), which are its processes, not orphans.
pub fn list_top_ids(dir: &Path) -> Result<Vec<ContainerId>, RuntimeError> {
    let Some(mut d) = open_dir(dir)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e.map_err(|e| dir_err(dir, e))?;
        if e.file_type() != Some(Type::Directory) {
            continue;
        }
        let Ok(name) = e.file_name().to_str() else {
            continue;
        };
        let id = ContainerId::new(name.to_string());
        if id.validate().is_ok() {
            out.push(id);
        }
    }
    out.sort_by_key(|i| i.to_string());
    Ok(out)
}

// Each level is opened relative to its parent's fd: thousands of
// containers are listed at every recovery, and a lookup of one name
// beneath an open dir costs a fraction of a walk of the whole path.
fn list_under(
    mut dir: Dir,
    path: &Path,
    nest: &str,
    parent: Option<&ContainerId>,
    out: &mut Vec<ContainerId>,
) -> Result<(), RuntimeError> {
    let mut names: Vec<String> = Vec::new();
    let fd = dir.as_raw_fd();
    for e in dir.iter() {
        let e = e.map_err(|e| dir_err(path, e))?;
        // d_type is set by tmpfs, ext4, xfs, btrfs and cgroupfs; an
        // unknown type is asked for.
        let is_dir = match e.file_type() {
            Some(t) => t == Type::Directory,
            None => fstatat(Some(fd), e.file_name(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR),
        };
        let Ok(name) = e.file_name().to_str() else {
            continue;
        };
        if is_dir && name != "." && name != ".." {
            names.push(name.to_string());
        }
    }
    names.sort();
    for name in names {
        let id = match parent {
            Some(p) => p.child(name.clone()),
            None => ContainerId::new(name.clone()),
        };
        if id.validate().is_err() {
            continue;
        }
        out.push(id.clone());
        // A directory's link count is 2 + its subdirectories on cgroupfs
        // (kernfs), tmpfs and ext4: with 2 there is nothing nested, and a
        // stat costs far less than reading a cgroup dir's dozens of control
        // files (thousands of containers are recovered at once). Another
        // count (btrfs says 1) is read as usual.
        if nest.is_empty()
            && fstatat(Some(fd), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|st| st.st_nlink == 2)
        {
            continue;
        }
        let sub = if nest.is_empty() {
            name.clone()
        } else {
            format!("{name}/{nest}")
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        match Dir::openat(Some(fd), sub.as_str(), flags, Mode::empty()) {
            Ok(d) => list_under(d, &path.join(&sub), nest, Some(&id), out)?,
            Err(Errno::ENOENT | Errno::ENOTDIR) => {}
            Err(e) => return Err(dir_err(&path.join(&sub), e)),
        }
    }
    Ok(())
}

fn set_mode_0700(path: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(|source| {
        RuntimeError::Io {
            op: "chmod",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Overwrites `path` in place (made if missing): the file keeps one inode
/// for its whole life, where [`write_atomic`] makes a new one per write
/// and frees the old (on disk an inode allocation and a free cost ~0.1 ms
/// each, and the record mirror is rewritten at every state change). Only
/// for content that carries its own checksum over the whole file: a crash
/// between the write and the truncate leaves new bytes followed by old
/// ones, which must read as damaged, never as another valid content (the
/// reader keeps the copy it had before). A SIGKILL cannot cut the
/// `pwrite` of a regular file short. The first write, with no copy before
/// it, goes by [`write_atomic`]: the file exists whole or not at all.
pub fn overwrite(path: &Path, data: &[u8]) -> Result<(), RuntimeError> {
    use std::os::unix::fs::FileExt;
    let io_err = |op: &'static str| {
        let p = path.to_path_buf();
        move |source| RuntimeError::Io {
            op,
            path: p,
            source,
        }
    };
    let f = match fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return write_atomic(path, data),
        Err(e) => return Err(io_err("open")(e)),
    };
    f.write_all_at(data, 0).map_err(io_err("write"))?;
    f.set_len(data.len() as u64).map_err(io_err("truncate"))
}

/// Writes `data` to `path` atomically: a temp file beside it, renamed
/// over `path` (no fsync: see the module docs).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), RuntimeError> {
    let io_err = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| RuntimeError::Io {
            op,
            path: p,
            source,
        }
    };
    // Unique per call, not just per process: two threads writing the same
    // file must not share (and truncate) one temp file.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    // A bare file name has an empty parent; that is the current dir.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(data).map_err(io_err("write", &tmp))?;
    drop(f);
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("rename into", path)(e));
    }
    Ok(())
}

fn read(path: &Path) -> Result<Option<String>, RuntimeError> {
    match fs::read(path) {
        Ok(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|e| RuntimeError::Malformed {
                path: path.to_path_buf(),
                why: "not UTF-8",
                content: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RuntimeError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes a `PID START_TIME` file.
pub fn write_pid_file(path: &Path, p: &ProcessRef) -> Result<(), RuntimeError> {
    write_atomic(path, format!("{} {}\n", p.pid, p.start_time).as_bytes())
}

/// Reads a `PID START_TIME` file; `Ok(None)` when it does not exist.
pub fn read_pid_file(path: &Path) -> Result<Option<ProcessRef>, RuntimeError> {
    let Some(s) = read(path)? else {
        return Ok(None);
    };
    let parsed = s.strip_suffix('\n').and_then(|l| {
        let (pid, st) = l.split_once(' ')?;
        Some(ProcessRef {
            pid: pid.parse().ok()?,
            start_time: st.parse().ok()?,
        })
    });
    parsed.map(Some).ok_or(RuntimeError::Malformed {
        path: path.to_path_buf(),
        why: "expected \"PID START_TIME\\n\"",
        content: s,
    })
}

/// Writes the exit status file.
pub fn write_exit_status(path: &Path, status: &ExitStatus) -> Result<(), RuntimeError> {
    write_atomic(path, status.encode().as_bytes())
}

/// Reads the exit status file; `Ok(None)` when it does not exist (yet).
pub fn read_exit_status(path: &Path) -> Result<Option<ExitStatus>, RuntimeError> {
    let Some(s) = read(path)? else {
        return Ok(None);
    };
    ExitStatus::decode(&s)
        .map(Some)
        .ok_or(RuntimeError::Malformed {
            path: path.to_path_buf(),
            why: "expected \"exit CODE NANOS\", \"signal N NANOS\" or \"start-error ERRNO NANOS MESSAGE\"",
            content: s,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_round_trips_and_partial_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(EXIT_STATUS);
        assert_eq!(read_exit_status(&p).unwrap(), None);
        for st in [
            ExitStatus::Exited {
                code: 7,
                at_unix_nanos: 5,
            },
            ExitStatus::Signaled {
                signal: 9,
                at_unix_nanos: 6,
            },
            ExitStatus::StartError {
                errno: 2,
                message: "exec /nonexistent: No such file or directory".into(),
                at_unix_nanos: 7,
            },
        ] {
            write_exit_status(&p, &st).unwrap();
            assert_eq!(read_exit_status(&p).unwrap(), Some(st));
        }
        fs::write(&p, "exit 7").unwrap();
        let e = read_exit_status(&p).unwrap_err().to_string();
        assert!(e.contains("malformed"), "{e}");
        assert!(e.contains(EXIT_STATUS), "{e}");
    }

    #[test]
    fn pid_files_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let rt = RuntimeDir::open(dir.path().join("rt")).unwrap();
        let id = ContainerId::new("a").child("b");
        let d = rt.create_container_dir(&id).unwrap();
        assert!(d.ends_with("containers/a/containers/b"));
        let p = ProcessRef {
            pid: 42,
            start_time: 99,
        };
        write_pid_file(&d.join(INIT_PID), &p).unwrap();
        assert_eq!(read_pid_file(&d.join(INIT_PID)).unwrap(), Some(p));
        fs::write(d.join(INIT_PID), "42\n").unwrap();
        assert!(read_pid_file(&d.join(INIT_PID)).is_err());
        let ids: Vec<String> = rt.list().unwrap().iter().map(|i| i.to_string()).collect();
        assert_eq!(ids, vec!["a", "a/b"]);
        rt.remove_container_dir(&ContainerId::new("a")).unwrap();
        assert!(rt.list().unwrap().is_empty());
    }

    #[test]
    fn a_removed_container_dir_leaves_at_once_and_its_files_go_on_the_trash_thread() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap().join("rt");
        let rt = RuntimeDir::open(&root).unwrap();
        let id = ContainerId::new("gone");
        let d = rt.create_container_dir(&id).unwrap();
        fs::write(d.join(EXIT_STATUS), "exited 0 1").unwrap();
        rt.create_container_dir(&id.child("nested")).unwrap();
        rt.remove_container_dir(&id).unwrap();
        assert!(!d.exists());
        assert!(rt.list().unwrap().is_empty());
        crate::trash::flush();
        assert_eq!(fs::read_dir(root.join("trash")).unwrap().count(), 0);
        // Absent: fine, and a new one of the same id is a new dir.
        rt.remove_container_dir(&id).unwrap();
        assert!(rt
            .create_container_dir(&id)
            .unwrap()
            .read_dir()
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn cgroup_style_trees_list_nested_ids_and_skip_files() {
        // Nested containers are direct subdirectories; files beside them
        // (a cgroup's control files) are not ids. Deep nesting and a
        // leaf beside a parent both show (the link-count shortcut must
        // never hide a child).
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["a/b/c", "a/d", "e", "f/g"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "a/cgroup.procs",
            "a/b/tasks",
            "e/memory.limit_in_bytes",
            "top.file",
        ] {
            fs::write(root.join(f), "").unwrap();
        }
        let ids: Vec<String> = list_id_tree(root, "")
            .unwrap()
            .iter()
            .map(|i| i.to_string())
            .collect();
        assert_eq!(ids, vec!["a", "a/b", "a/b/c", "a/d", "e", "f", "f/g"]);
    }
}
