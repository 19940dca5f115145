//! The peers: runc on a bundle, and containerd (its own daemon on a private
//! socket, root and state under the bench's temp dir) driven with `ctr`.

use crate::fixture::sh;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `runc run` of the bundle as container `id`; returns when it exited.
/// `runs` timed `runc run`s of `bundle`, state under `base`.
pub fn runc_lifecycles(
    base: &Path,
    bundle: &Path,
    runs: usize,
    apart: std::time::Duration,
) -> Result<Vec<std::time::Duration>> {
    let state = base.join("runc-state");
    let mut v = Vec::new();
    for i in 0..runs {
        // Not timed: a pause before each run (a node with nothing else
        // launching), or none.
        std::thread::sleep(apart);
        let t0 = std::time::Instant::now();
        runc_run(
            &state,
            bundle,
            &format!("berth-bench-{}-{i}", std::process::id()),
        )?;
        v.push(t0.elapsed());
    }
    Ok(v)
}

pub fn runc_run(state: &Path, bundle: &Path, id: &str) -> Result<()> {
    let st = Command::new("runc")
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("runc run")?;
    if !st.status.success() {
        bail!("runc run {id}: {}", String::from_utf8_lossy(&st.stderr));
    }
    Ok(())
}

/// The containerd namespace (also the name of its cgroup parent, which
/// the bench's cleanup removes by its pid suffix).
fn namespace() -> String {
    format!("berth-bench-ctr-{}", std::process::id())
}

/// A private containerd.
pub struct Containerd {
    child: Child,
    pub socket: PathBuf,
    dir: PathBuf,
}

impl Containerd {
    pub fn start(dir: &Path) -> Result<Containerd> {
        let dir = dir.join("containerd");
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = socket.display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start containerd (apt-get install containerd)")?;
        let c = Containerd { child, socket, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.ctr(&["version"]).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "containerd did not come up: {}",
                    std::fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(c)
    }

    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        sh(Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(namespace())
            .args(args))
    }

    pub fn import(&self, archive: &Path) -> Result<String> {
        self.ctr(&["images", "import", archive.to_str().unwrap()])?;
        Ok("docker.io/library/berth-bench:latest".into())
    }

    /// `ctr run --rm IMAGE id /bin/true`.
    pub fn run_rm(&self, image: &str, id: &str) -> Result<()> {
        self.ctr(&["run", "--rm", image, id, "/bin/true"])
            .map(|_| ())
    }

    /// Every task killed and deleted, every container deleted.
    pub fn clean_containers(&self) {
        let ids = self.ctr(&["containers", "list", "-q"]).unwrap_or_default();
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let _ = self.ctr(&["tasks", "kill", "-s", "KILL", id]);
            for _ in 0..50 {
                if self.ctr(&["tasks", "delete", id]).is_ok()
                    || self
                        .ctr(&["tasks", "list", "-q"])
                        .map(|t| !t.contains(id))
                        .unwrap_or(true)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.ctr(&["containers", "delete", id]);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.clean_containers();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Unmount whatever its snapshotter left under our dir.
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut mounts: Vec<String> = mi
                .lines()
                .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
                .filter(|m| m.starts_with(self.dir.to_str().unwrap_or("/nonexistent")))
                .collect();
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mounts {
                let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}
