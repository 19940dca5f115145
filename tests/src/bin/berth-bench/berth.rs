//! berth's side: the embedded containerizer (launch → wait → destroy,
//! throughput, where the time goes, provisioning), `berth run` as a
//! process, and `berth agent` recovery and memory.

use crate::memory;
use anyhow::{bail, Context, Result};
use berth::provisioner::ImageProvisioner;
use berth::{ContainerConfig, ContainerId, ContainerState, Containerizer};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// berth's dirs for one part of the bench.
#[derive(Clone)]
pub struct Dirs {
    pub root: PathBuf,
    pub runtime: PathBuf,
    pub cgroup_root: String,
}

impl Dirs {
    pub fn new(base: &Path, name: &str) -> Dirs {
        Dirs {
            root: base.join(name).join("root"),
            runtime: base.join(name).join("run"),
            cgroup_root: format!("berth-bench-{name}-{}", std::process::id()),
        }
    }

    pub fn berth(&self) -> Command {
        let exe = std::env::current_exe().expect("current exe");
        let mut c = Command::new(exe.with_file_name("berth"));
        c.arg("--root")
            .arg(&self.root)
            .arg("--runtime-dir")
            .arg(&self.runtime)
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .arg("--socket")
            .arg(self.root.join("berth.sock"));
        c
    }
}

/// Imports `layout` into the store under `dirs.root` as `name`; returns
/// the reference to run.
pub fn import(dirs: &Dirs, layout: &Path, name: &str) -> Result<String> {
    let p = ImageProvisioner::open(dirs.root.join("images"))?;
    let imported = berth::provisioner::import::import(p.store(), layout, Some(name))?;
    Ok(imported
        .first()
        .context("the layout holds no image")?
        .reference
        .clone())
}

/// `--rootfs-pool N`: the embedded containerizers' rootfs pool (the
/// agent's option, with its default).
pub static ROOTFS_POOL: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(berth::DEFAULT_ROOTFS_POOL);

/// The provisioners with a pool, closed by [`close_pools`].
static POOLED: std::sync::Mutex<Vec<ImageProvisioner>> = std::sync::Mutex::new(Vec::new());

/// Unmounts every pooled rootfs (before the bench's dirs go).
pub fn close_pools() {
    let pooled = std::mem::take(&mut *POOLED.lock().unwrap_or_else(|p| p.into_inner()));
    for p in pooled {
        p.close_pool();
    }
}

pub fn containerizer(dirs: &Dirs) -> Result<Containerizer> {
    containerizer_with(dirs, berth::NodeOptions::default())
}

/// [`containerizer`] with node options (e.g. a plugin dir).
pub fn containerizer_with(dirs: &Dirs, node: berth::NodeOptions) -> Result<Containerizer> {
    let pool = ROOTFS_POOL.load(std::sync::atomic::Ordering::Relaxed);
    let p = ImageProvisioner::open(dirs.root.join("images"))?.with_rootfs_pool(pool)?;
    if pool > 0 {
        POOLED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(p.clone());
    }
    Ok(Containerizer::builder(&dirs.root, &dirs.runtime)
        .cgroup_root(&dirs.cgroup_root)
        .node_options(node)
        .default_isolators()
        .provisioner(p)
        .build()?)
}

pub fn config(image: &str, argv: &[&str]) -> ContainerConfig {
    ContainerConfig {
        image: image.into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// One launch → wait (the destroy is done when wait returns) → remove.
/// Returns its time and the container's transitions and exit time.
async fn one(
    c: &Containerizer,
    id: ContainerId,
    cfg: ContainerConfig,
) -> Result<(Duration, Phases)> {
    let t0 = Instant::now();
    c.launch(id.clone(), cfg).await?;
    let t = c.wait(id.clone()).await?;
    let took = t0.elapsed();
    if t.exit_code != 0 {
        bail!("{id} ended with {t:?}");
    }
    let st = c.status(id.clone()).await?;
    c.remove(id).await?;
    let at: BTreeMap<i32, i64> = st
        .transitions
        .iter()
        .map(|t| (t.state, t.at_unix_nanos))
        .collect();
    Ok((
        took,
        Phases {
            at,
            exited_at: t.finished_at_unix_nanos,
        },
    ))
}

/// When each state was entered, and when the command exited.
pub struct Phases {
    at: BTreeMap<i32, i64>,
    exited_at: i64,
}

impl Phases {
    fn between(&self, a: ContainerState, b: ContainerState) -> Option<f64> {
        Some((self.at.get(&(b as i32))? - self.at.get(&(a as i32))?) as f64 / 1e6)
    }

    /// (name, ms) of each step.
    pub fn steps(&self) -> Vec<(&'static str, f64)> {
        use ContainerState::*;
        let mut v = Vec::new();
        for (name, a, b) in [
            ("STARTING", Starting, Provisioning),
            ("PROVISIONING", Provisioning, Preparing),
            ("PREPARING", Preparing, Isolating),
            ("ISOLATING", Isolating, Fetching),
            ("FETCHING", Fetching, Running),
            ("launch-to-exec (STARTING→RUNNING)", Starting, Running),
        ] {
            if let Some(ms) = self.between(a, b) {
                v.push((name, ms));
            }
        }
        if let Some(t) = self.at.get(&(Terminated as i32)) {
            v.push(("exit-to-destroyed", (t - self.exited_at) as f64 / 1e6));
        }
        v
    }
}

/// `runs` sequential lifecycles of `/bin/true` in the image.
pub async fn lifecycle(
    c: &Containerizer,
    image: &str,
    runs: usize,
    tag: &str,
) -> Result<(Vec<Duration>, Vec<Phases>)> {
    lifecycle_on(c, image, runs, tag, "").await
}

/// [`lifecycle`] under the launcher `runtime` (`""`: the default,
/// native; `runc`, `runsc`: an OCI runtime).
pub async fn lifecycle_on(
    c: &Containerizer,
    image: &str,
    runs: usize,
    tag: &str,
    runtime: &str,
) -> Result<(Vec<Duration>, Vec<Phases>)> {
    let mut times = Vec::new();
    let mut phases = Vec::new();
    for i in 0..runs {
        let id = ContainerId::new(format!("{tag}-{i}"));
        let config = ContainerConfig {
            runtime: runtime.into(),
            ..config(image, &["/bin/true"])
        };
        let (t, p) = one(c, id, config).await?;
        times.push(t);
        phases.push(p);
    }
    Ok((times, phases))
}

/// `total` lifecycles with `in_flight` at a time; containers per second.
pub async fn throughput(
    c: &Containerizer,
    image: &str,
    total: usize,
    in_flight: usize,
) -> Result<f64> {
    let t0 = Instant::now();
    let results: Vec<Result<(Duration, Phases)>> = futures::stream::iter(0..total)
        .map(|i| {
            let c = c.clone();
            let image = image.to_string();
            async move {
                one(
                    &c,
                    ContainerId::new(format!("tp-{i}")),
                    config(&image, &["/bin/true"]),
                )
                .await
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(total as f64 / t0.elapsed().as_secs_f64())
}

/// `berth run --image IMAGE -- /bin/true` as a process, `runs` times.
pub fn berth_run(dirs: &Dirs, image: &str, runs: usize) -> Result<Vec<Duration>> {
    timed_runs(dirs, image, runs, &["--in-process"], "run")
}

/// `berth run` handed to the agent serving `dirs`' socket after one
/// warm-up (which unpacks the layer into the agent's cache): `runs` back
/// to back, then `runs` more each after a pause of `apart` (a node with
/// nothing else launching).
pub fn berth_run_agent(
    dirs: &Dirs,
    image: &str,
    runs: usize,
    apart: Duration,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let (agent, _) = Agent::start(dirs)?;
    let r = timed_runs(dirs, image, 1, &[], "warm").and_then(|_| {
        let close = timed_runs(dirs, image, runs, &[], "agent-run")?;
        let quiet = timed_runs_apart(dirs, image, runs, &[], "agent-apart", apart)?;
        Ok((close, quiet))
    });
    agent.terminate();
    r
}

fn timed_runs(
    dirs: &Dirs,
    image: &str,
    runs: usize,
    opts: &[&str],
    prefix: &str,
) -> Result<Vec<Duration>> {
    timed_runs_apart(dirs, image, runs, opts, prefix, Duration::ZERO)
}

/// As [`timed_runs`], each run after a pause of `apart` (not timed).
fn timed_runs_apart(
    dirs: &Dirs,
    image: &str,
    runs: usize,
    opts: &[&str],
    prefix: &str,
    apart: Duration,
) -> Result<Vec<Duration>> {
    let mut v = Vec::new();
    for i in 0..runs {
        std::thread::sleep(apart);
        let name = format!("{prefix}-{i}");
        let t0 = Instant::now();
        let out = dirs
            .berth()
            .arg("run")
            .args(opts)
            .args(["--name", &name, "--image", image, "--", "/bin/true"])
            .stdout(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("berth run: {}", String::from_utf8_lossy(&out.stderr));
        }
        v.push(t0.elapsed());
    }
    Ok(v)
}

/// A `berth agent` process.
pub struct Agent {
    pub child: Child,
}

impl Agent {
    /// Starts the agent; returns it once it serves (after recovery) and
    /// how long that took.
    pub fn start(dirs: &Dirs) -> Result<(Agent, Duration)> {
        let sock = dirs.root.join("berth.sock");
        let t0 = Instant::now();
        let mut child = dirs
            .berth()
            .arg("agent")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        loop {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return Ok((Agent { child }, t0.elapsed()));
            }
            if let Some(st) = child.try_wait()? {
                bail!("berth agent exited: {st}");
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("berth agent did not serve within 120 s");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (the containers stay), and waits for its exit.
    pub fn terminate(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// Launches `n` `sleep` containers through the agent; returns the
/// supervisors' pids.
pub async fn launch_sleepers(dirs: &Dirs, image: &str, from: usize, n: usize) -> Result<()> {
    let mut c = berth::agent::connect(&dirs.root.join("berth.sock")).await?;
    for i in from..from + n {
        c.launch(berth::agent::api::LaunchRequest {
            id: Some(ContainerId::new(format!("sleeper-{i}"))),
            config: Some(config(image, &["/bin/sleep", "100000"])),
        })
        .await
        .with_context(|| format!("launch sleeper-{i}"))?;
    }
    Ok(())
}

/// (running containers, supervisor pids) as the agent lists them.
pub async fn running(dirs: &Dirs) -> Result<(usize, Vec<i32>)> {
    let mut c = berth::agent::connect(&dirs.root.join("berth.sock")).await?;
    let list = c
        .list(berth::agent::api::ListRequest {})
        .await?
        .into_inner()
        .containers;
    let running: Vec<_> = list
        .iter()
        .filter(|s| s.state == ContainerState::Running as i32)
        .collect();
    Ok((
        running.len(),
        running
            .iter()
            .filter_map(|s| s.supervisor.map(|p| p.pid))
            .collect(),
    ))
}

/// Destroys and removes every container of the agent.
pub async fn destroy_all(dirs: &Dirs) -> Result<()> {
    let mut c = berth::agent::connect(&dirs.root.join("berth.sock")).await?;
    let list = c
        .list(berth::agent::api::ListRequest {})
        .await?
        .into_inner()
        .containers;
    let ids: Vec<ContainerId> = list.into_iter().filter_map(|s| s.id).collect();
    let results: Vec<Result<()>> = futures::stream::iter(ids)
        .map(|id| {
            let mut c = c.clone();
            async move {
                let r = berth::agent::api::ContainerRef { id: Some(id) };
                c.destroy(r.clone()).await?;
                c.remove(r).await?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

/// Average (private dirty, PSS) KiB of `pids`.
pub fn average_memory(pids: &[i32]) -> (f64, f64) {
    let v: Vec<(u64, u64)> = pids
        .iter()
        .filter_map(|p| memory::private_dirty_and_pss(*p))
        .collect();
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    (
        v.iter().map(|x| x.0 as f64).sum::<f64>() / n,
        v.iter().map(|x| x.1 as f64).sum::<f64>() / n,
    )
}
