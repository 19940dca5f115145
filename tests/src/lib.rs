//! Harness for berth's end-to-end tests.
//!
//! Every test that touches the kernel makes a [`TestEnv`]: a unique name, a
//! temp dir holding the state (checkpoint) dir and the runtime dir, and a
//! unique cgroup root. When the env is dropped it checks that the test left
//! nothing behind — no cgroup under its root, no mount under its temp dir,
//! no process that mentions either — then cleans up whatever it finds and
//! fails the test if something leaked.
//!
//! ```no_run
//! let env = berth_tests::TestEnv::new("launch_echo");
//! // … launch containers with env.state_dir, env.runtime_dir, env.cgroup_root …
//! assert!(env.leaks().is_empty()); // optional: Drop checks too
//! ```

use rand::Rng;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NEED_ROOT: &str = "berth's end-to-end tests need root (namespaces, cgroups, mounts)";

/// One test's private corner of the machine. See the crate docs.
#[derive(Debug)]
pub struct TestEnv {
    /// `berth-t-<short test name>-<random>`: valid as a container-id part
    /// and as a cgroup directory name.
    pub name: String,
    /// The test's temp dir; everything below is removed on drop.
    pub temp_dir: PathBuf,
    /// `<temp_dir>/state`: the checkpoint store's dir (agent `--root`).
    pub state_dir: PathBuf,
    /// `<temp_dir>/run`: the runtime dir (agent `--runtime-dir`).
    pub runtime_dir: PathBuf,
    /// The cgroup root name: the test's cgroups live in
    /// `/sys/fs/cgroup/<hierarchy>/<cgroup_root>/…`.
    pub cgroup_root: String,
}

impl TestEnv {
    /// Makes the env of test `test_name`. Panics unless we are root: the
    /// tests never skip silently.
    pub fn new(test_name: &str) -> TestEnv {
        assert!(nix::unistd::geteuid().is_root(), "{NEED_ROOT}");
        let name = unique_name(test_name);
        let temp_dir = std::env::temp_dir().join(&name);
        // create_dir (not _all): the name is fresh, a clash is a bug.
        fs::create_dir(&temp_dir)
            .unwrap_or_else(|e| panic!("create test dir {}: {e}", temp_dir.display()));
        let state_dir = temp_dir.join("state");
        let runtime_dir = temp_dir.join("run");
        for d in [&state_dir, &runtime_dir] {
            fs::create_dir(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        }
        TestEnv {
            cgroup_root: name.clone(),
            name,
            temp_dir,
            state_dir,
            runtime_dir,
        }
    }

    /// A path under the test's temp dir (not created).
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.temp_dir.join(rel)
    }

    /// A fresh directory under the test's temp dir.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.temp_dir.join(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        p
    }

    /// `<mount point of hierarchy>/<cgroup_root>`, for a v1 controller name
    /// ("memory", "cpu", "freezer", …, or "name=systemd") or "unified" for
    /// cgroup2. Panics when the host has no such hierarchy.
    pub fn cgroup_dir(&self, hierarchy: &str) -> PathBuf {
        let m = cgroup_mounts()
            .into_iter()
            .find(|m| {
                if hierarchy == "unified" {
                    m.v2
                } else {
                    !m.v2 && m.controllers.iter().any(|c| c == hierarchy)
                }
            })
            .unwrap_or_else(|| panic!("this host has no {hierarchy} cgroup hierarchy mounted"));
        m.mount_point.join(&self.cgroup_root)
    }

    /// What the test left behind, one human-readable line each: cgroup
    /// dirs under the cgroup root, mounts under the temp dir, processes
    /// mentioning either. Empty when clean.
    pub fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.leaked_processes() {
            out.push(format!("process {}: {}", p.pid, p.why));
        }
        for m in self.leaked_mounts() {
            out.push(format!("mount {}", m.display()));
        }
        for c in self.leaked_cgroups() {
            out.push(format!("cgroup {}", c.display()));
        }
        out
    }

    /// Cgroup dirs below the roots in every mounted hierarchy, deepest
    /// first (the root dirs themselves are the harness's, not leaks).
    fn leaked_cgroups(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for m in cgroup_mounts() {
            let root = m.mount_point.join(&self.cgroup_root);
            subdirs_deepest_first(&root, &mut out);
        }
        // The supervisors' cgroup is the root's, like the root itself
        // (until `berth retire`): a leak only while a process is in it.
        out.retain(|d| {
            d.file_name() != Some(std::ffi::OsStr::new(".supervisors"))
                || !fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
        });
        out
    }

    /// Mount points at or under the temp dir, deepest first.
    fn leaked_mounts(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = mountinfo()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&self.temp_dir))
            .collect();
        // Deeper (and later-mounted, for stacked mounts) first.
        out.reverse();
        out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        out
    }

    fn leaked_processes(&self) -> Vec<LeakedProcess> {
        let me = std::process::id() as i32;
        let dir = self.temp_dir.to_string_lossy().into_owned();
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return out;
        };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let proc_dir = e.path();
            // A dead supervisor that the machine's init (its parent once
            // it detached) has not reaped yet holds nothing: not a leak.
            let status = fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
            let field = |k: &str| {
                status
                    .lines()
                    .find(|x| x.starts_with(k))
                    .and_then(|x| x.split_whitespace().nth(1))
                    .unwrap_or_default()
                    .to_string()
            };
            if field("State:") == "Z" && field("PPid:") == "1" {
                continue;
            }
            let cmdline = fs::read(proc_dir.join("cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .trim_end_matches('\0')
                        .replace('\0', " ")
                })
                .unwrap_or_default();
            let link = |n: &str| {
                fs::read_link(proc_dir.join(n))
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let (cwd, root) = (link("cwd"), link("root"));
            let cgroups = fs::read_to_string(proc_dir.join("cgroup")).unwrap_or_default();
            let mut why = Vec::new();
            if mentions(&cmdline, &dir) || mentions(&cmdline, &self.cgroup_root) {
                why.push(format!("cmdline {cmdline:?}"));
            }
            if mentions(&cwd, &dir) {
                why.push(format!("cwd {cwd}"));
            }
            if mentions(&root, &dir) {
                why.push(format!("root {root}"));
            }
            if let Some(l) = cgroups
                .lines()
                .find(|l| mentions(l, &format!("/{}", self.cgroup_root)))
            {
                why.push(format!("in cgroup {l}"));
            }
            if !why.is_empty() {
                out.push(LeakedProcess {
                    pid,
                    why: format!("{} ({})", why.join(", "), comm(pid)),
                });
            }
        }
        out
    }

    /// Kills, unmounts and removes everything the test left, then the
    /// cgroup roots and the temp dir. Best effort: it reports what it could
    /// not clean.
    fn clean(&self) -> Vec<String> {
        let mut failures = Vec::new();
        // Processes first: they hold mounts and keep cgroups busy.
        for _ in 0..50 {
            let procs = self.leaked_processes();
            if procs.is_empty() {
                break;
            }
            for p in procs {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for m in self.leaked_mounts() {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                failures.push(format!("umount {}: {e}", m.display()));
            }
        }
        for m in cgroup_mounts() {
            let root = m.mount_point.join(&self.cgroup_root);
            if !root.exists() {
                continue;
            }
            let mut dirs = Vec::new();
            subdirs_deepest_first(&root, &mut dirs);
            dirs.push(root);
            for d in dirs {
                if let Err(e) = remove_cgroup(&d) {
                    failures.push(e);
                }
            }
        }
        // The claim of the cgroup root, made by berth on first use.
        let claim = berth::cgroup_claim_path(&self.cgroup_root);
        if let Err(e) = fs::remove_file(&claim) {
            if e.kind() != std::io::ErrorKind::NotFound {
                failures.push(format!("remove {}: {e}", claim.display()));
            }
        }
        // This process's trash thread may be removing trees under it.
        berth_state::trash::flush();
        if let Err(e) = fs::remove_dir_all(&self.temp_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                failures.push(format!("remove {}: {e}", self.temp_dir.display()));
            }
        }
        failures
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // A process in the middle of its exit (its memory gone, so no
        // environ for a test's own check, but its cwd still readable) is
        // not a leak: one that is still there after a moment is.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !self.leaked_processes().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let leaks = self.leaks();
        let failures = self.clean();
        let mut report = leaks
            .iter()
            .map(|l| format!("  leaked {l}"))
            .collect::<Vec<_>>();
        report.extend(failures.iter().map(|f| format!("  cleanup failed: {f}")));
        if report.is_empty() {
            return;
        }
        let msg = format!(
            "test env {} was not clean:\n{}",
            self.name,
            report.join("\n")
        );
        if std::thread::panicking() {
            // The test already failed; a second panic would abort.
            eprintln!("{msg}");
        } else {
            panic!("{msg}");
        }
    }
}

/// The `berth` binary cargo built beside the running test
/// (target/<profile>/berth).
pub fn berth_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("berth"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --workspace --bins` (scripts/test does)",
        bin.display()
    );
    bin
}

impl TestEnv {
    /// `berth` on the test's own root, runtime dir and cgroup root.
    pub fn berth(&self) -> std::process::Command {
        let mut c = std::process::Command::new(berth_bin());
        c.arg("--root")
            .arg(&self.state_dir)
            .arg("--runtime-dir")
            .arg(&self.runtime_dir)
            .arg("--cgroup-root")
            .arg(&self.cgroup_root);
        c
    }
}

impl TestEnv {
    /// The socket of this test's `berth agent`.
    pub fn socket(&self) -> PathBuf {
        self.temp_dir.join("berth.sock")
    }

    /// `berth` with the test's dirs and agent socket: for the agent and
    /// its clients (`berth launch`, `ps`, …).
    pub fn berth_client(&self) -> std::process::Command {
        let mut c = self.berth();
        c.arg("--socket").arg(self.socket());
        c
    }

    /// Runs a client command (`berth --socket … ARGS`); panics, with its
    /// output and the agent's log, unless it exits with `code`.
    /// A call that hangs for 60 s is killed and fails the test.
    pub fn client_expect<'a>(
        &self,
        agent: impl Into<Option<&'a Agent>>,
        args: &[&str],
        code: i32,
    ) -> std::process::Output {
        let agent: Option<&Agent> = agent.into();
        let log = || agent.map(|a| a.log()).unwrap_or_default();
        let child = self
            .berth_client()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        // Read to the end on a thread (a full pipe must not stall the call).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
                panic!("berth {args:?} hangs\nagent log:\n{}", log());
            }
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "berth {args:?}\nstdout: {}\nstderr: {}\nagent log:\n{}",
            text(&out.stdout),
            text(&out.stderr),
            log()
        );
        out
    }

    /// The agent's containers, as `berth ps --json` lists them.
    pub fn ps_json(&self, agent: &Agent) -> Vec<serde_json::Value> {
        let out = self.client_expect(agent, &["ps", "--json"], 0);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array().unwrap().clone()
    }

    /// Starts `berth agent` on the test's dirs with the failpoints
    /// `failpoints` armed (`""` for none), and waits until it serves (it
    /// serves only once recovery is done). Its stderr goes to
    /// `agent-N.log` in the temp dir.
    pub fn start_agent(&self, failpoints: &str) -> Agent {
        self.start_agent_with(failpoints, &[])
    }

    /// [`TestEnv::start_agent`] with the agent's node options (e.g.
    /// `--userns-range 400000:131072`).
    pub fn start_agent_with(&self, failpoints: &str, options: &[&str]) -> Agent {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let log = self
            .temp_dir
            .join(format!("agent-{}.log", N.fetch_add(1, Ordering::Relaxed)));
        let err = fs::File::create(&log).expect("agent log");
        let mut child = self
            .berth_client()
            .arg("agent")
            .args(options)
            .env("BERTH_FAILPOINTS", failpoints)
            .env("BERTH_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn berth agent");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().expect("agent status") {
                panic!(
                    "berth agent exited ({status}) before serving:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "berth agent did not serve within 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent { child, log }
    }
}

/// A running `berth agent`; stopped when dropped as a service manager
/// stops one (SIGTERM, SIGKILL after 10 s): its containers stay, and it
/// unmounts the rootfs it had made ahead. `kill9` is the crash.
pub struct Agent {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Agent {
    /// SIGKILL, as a crash: the containers keep running.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the agent's exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM agent");
        self.child.wait().expect("agent exit")
    }

    /// Waits (up to `limit`) for the agent to die by itself, e.g. at a
    /// failpoint; true when it did.
    pub fn wait_dead(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().expect("agent status").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// What the agent wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if self.wait_dead(Duration::from_secs(10)) {
                return;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics with a clear message when `name` is not an executable on PATH.
pub fn require_tool(name: &str) {
    if find_tool(name).is_none() {
        panic!("test needs `{name}`; run scripts/test, which installs it");
    }
}

/// The path of executable `name` on PATH, if any.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// One line of `/proc/self/mountinfo`, the parts the harness needs.
#[derive(Debug, Clone)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    /// The per-superblock options (after the ` - `), e.g. `rw,memory`.
    pub super_options: String,
}

/// The mounts of this process's mount namespace, in mount order.
pub fn mountinfo() -> Vec<MountInfo> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    // "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTS [OPTIONAL…] - FSTYPE SOURCE SUPER_OPTS"
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let mut r = right.split(' ');
    Some(MountInfo {
        mount_point: PathBuf::from(unescape_octal(mount_point)),
        fs_type: r.next()?.to_string(),
        source: unescape_octal(r.next()?),
        super_options: r.next().unwrap_or("").to_string(),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
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

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// True for cgroup2.
    pub v2: bool,
    /// v1: the controllers (and `name=…`) from the mount options; empty for v2.
    pub controllers: Vec<String>,
}

/// Every cgroup (v1) and cgroup2 mount of this mount namespace.
pub fn cgroup_mounts() -> Vec<CgroupMount> {
    const NOT_CONTROLLERS: &[&str] = &["rw", "ro", "relatime", "noatime", "nosuid", "nodev"];
    mountinfo()
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .map(|m| CgroupMount {
            v2: m.fs_type == "cgroup2",
            controllers: if m.fs_type == "cgroup" {
                m.super_options
                    .split(',')
                    .filter(|o| !NOT_CONTROLLERS.contains(o) && !o.starts_with("release_agent"))
                    .map(str::to_string)
                    .collect()
            } else {
                Vec::new()
            },
            mount_point: m.mount_point,
        })
        .collect()
}

struct LeakedProcess {
    pid: i32,
    why: String,
}

/// `berth-t-<short>-<random>`: at most 40 characters of `[a-z0-9-]`.
fn unique_name(test_name: &str) -> String {
    // Test names often come as `module::test_fn`; the last part says enough.
    let last = test_name.rsplit("::").next().unwrap_or(test_name);
    let short: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(20)
        .collect();
    let short = short.trim_matches('-');
    let short = if short.is_empty() { "test" } else { short };
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let rand: String = (0..8)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("berth-t-{short}-{rand}")
}

/// True when `needle` occurs in `hay` as a whole name: the character after
/// it (if any) cannot continue a file name, so `/tmp/x-1` does not match
/// `/tmp/x-12`.
fn mentions(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, _)| {
        hay[i + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    })
}

fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Appends the directories below `root` (not `root` itself), children
/// before their parents.
fn subdirs_deepest_first(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        // file_type() does not follow symlinks; cgroupfs has none anyway.
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let p = e.path();
            subdirs_deepest_first(&p, out);
            out.push(p);
        }
    }
}

/// Kills what is left in cgroup `dir` (thawing it if frozen) and removes
/// it, retrying EBUSY as the kernel finishes tearing tasks down.
fn remove_cgroup(dir: &Path) -> Result<(), String> {
    let freezer_state = dir.join("freezer.state");
    if freezer_state.exists() {
        let _ = fs::write(&freezer_state, "THAWED");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for pid in fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("rmdir {}: {e}", dir.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_ids_and_unique() {
        let a = unique_name("launcher::kills_the_whole_tree_when_asked");
        let b = unique_name("launcher::kills_the_whole_tree_when_asked");
        assert_ne!(a, b);
        assert!(a.starts_with("berth-t-kills-the-whole-tree-"), "{a}");
        berth_state::ContainerId::parse(&a).unwrap();
        assert!(a.len() <= 40, "{a}");
        let c = unique_name("::__");
        assert!(c.starts_with("berth-t-test-"), "{c}");
    }

    #[test]
    fn mentions_needs_a_name_boundary() {
        assert!(mentions("/tmp/x-1/run", "/tmp/x-1"));
        assert!(mentions("sup --runtime /tmp/x-1", "/tmp/x-1"));
        assert!(!mentions("/tmp/x-12", "/tmp/x-1"));
        assert!(!mentions("", "/tmp/x-1"));
    }

    #[test]
    fn parses_mountinfo_with_escapes() {
        let l =
            "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw,errors=continue";
        let m = parse_mountinfo_line(l).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/mnt/a b"));
        assert_eq!(m.fs_type, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert_eq!(m.super_options, "rw,errors=continue");
        assert_eq!(unescape_octal("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_octal("trailing\\"), "trailing\\");
    }
}

/// The deterministic workload of the store crash test, shared by the
/// `store-writer` child (which performs it) and the test (which checks
/// what survived a SIGKILL).
#[doc(hidden)]
pub mod store_workload {
    use berth_state::{ContainerId, ContainerRecord, ContainerState, Transition};
    use std::collections::BTreeMap;

    /// How many distinct container ids the workload cycles through.
    pub const KEYS: u64 = 40;

    /// One step of the workload.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Op {
        Put { key: String, seq: u64 },
        Delete { key: String },
    }

    /// Step `seq`: mostly puts (overwriting earlier versions), every fifth
    /// a delete of some other key.
    pub fn op(seq: u64) -> Op {
        if seq % 5 == 4 {
            Op::Delete {
                key: format!("k{}", (seq * 7) % KEYS),
            }
        } else {
            Op::Put {
                key: format!("k{}", seq % KEYS),
                seq,
            }
        }
    }

    /// The record step `seq` writes under `key`: sizes vary from a few
    /// bytes to ~100 KiB so sled's segments and blobs both get exercised.
    pub fn record(key: &str, seq: u64) -> ContainerRecord {
        let pad = if seq.is_multiple_of(17) {
            100 * 1024
        } else {
            ((seq * 37) % 2000) as usize
        };
        ContainerRecord {
            id: Some(ContainerId::new(key)),
            state: ContainerState::Running as i32,
            sandbox_dir: format!("/sandbox/{}", "x".repeat(pad)),
            transitions: vec![Transition {
                state: ContainerState::Running as i32,
                at_unix_nanos: seq as i64,
            }],
            ..Default::default()
        }
    }

    /// The seq a record of this workload was written by.
    pub fn seq_of(record: &ContainerRecord) -> Option<u64> {
        record.transitions.first().map(|t| t.at_unix_nanos as u64)
    }

    /// key → seq of its live version after steps `0..upto` (exclusive).
    pub fn model(upto: u64) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for s in 0..upto {
            match op(s) {
                Op::Put { key, seq } => {
                    m.insert(key, seq);
                }
                Op::Delete { key } => {
                    m.remove(&key);
                }
            }
        }
        m
    }
}

/// Imports [`busybox_layout`] into the test's image store as `busybox`.
pub fn import_busybox(env: &TestEnv) {
    let layout = busybox_layout(env);
    let out = env
        .berth()
        .args(["image", "import"])
        .arg(&layout)
        .args(["--name", "busybox"])
        .output()
        .expect("run berth image import");
    assert!(
        out.status.success(),
        "import busybox: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A one-layer busybox image (busybox with sh and sleep links; tag
/// `latest`) made with umoci as an OCI layout at `<temp>/layout`.
pub fn busybox_layout(env: &TestEnv) -> PathBuf {
    require_tool("umoci");
    let layout = env.path("layout");
    let bundle = env.path("bundle");
    let (l, b) = (layout.display(), bundle.display());
    let script = format!(
        "umoci init --layout {l} && umoci new --image {l}:latest && \
         umoci unpack --image {l}:latest {b} && mkdir -p {b}/rootfs/bin && \
         cp /bin/busybox {b}/rootfs/bin/busybox && ln -s busybox {b}/rootfs/bin/sh && \
         ln -s busybox {b}/rootfs/bin/sleep && umoci repack --image {l}:latest {b} && \
         rm -rf {b}"
    );
    let out = std::process::Command::new("sh")
        .args(["-ec", &script])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    layout
}

/// Runs `cmd` with a new pty of `rows`x`cols` as its stdin, stdout and
/// stderr; returns what it wrote there and its exit code.
pub fn on_pty(mut cmd: std::process::Command, rows: u16, cols: u16) -> (String, Option<i32>) {
    use std::io::Read;
    let ws = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).unwrap();
    let slave = |_: ()| std::process::Stdio::from(pty.slave.try_clone().unwrap());
    cmd.stdin(slave(())).stdout(slave(())).stderr(slave(()));
    // SAFETY: setsid and TIOCSCTTY between fork and exec: async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // The command holds its copies of the slave; ours must go, so that the
    // master reads EIO once the command is done with it.
    let shown = format!("{cmd:?}");
    drop(cmd);
    drop(pty.slave);
    let reader = std::thread::spawn(move || {
        let mut master = std::fs::File::from(pty.master);
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once every slave fd is closed.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{shown} did not end on its pty");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (reader.join().unwrap(), status.code())
}
