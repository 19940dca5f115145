//! The cgroup isolators: `cgroups/cpu`, `cgroups/mem`, `cgroups/pids`,
//! `cgroups/devices`.
//!
//! Each keeps its containers under berth's own root in its controller's
//! hierarchy — `<mount>/<cgroup_root>/<id>` (v1, e.g.
//! `/sys/fs/cgroup/memory/berth/c1`) or `<unified>/<cgroup_root>/<id>` (v2)
//! — and nested containers nest under their parent's cgroup. Which
//! hierarchy a controller lives in is detected ([`Hierarchies`]), per
//! controller, so v1, v2 and hybrid hosts all work without a flag.
//!
//! `prepare` creates the cgroups and writes the limits before the init
//! exists, and hands their paths to the launcher (`LaunchInfo.cgroup_paths`),
//! whose init joins them before it execs: no process of the container ever
//! runs outside them. `cleanup` removes them bottom-up (after the launcher
//! has killed every process); `recover` removes cgroups under berth's root
//! that no record explains.
//!
//! ```no_run
//! use berth_isolators::cgroups::{Cpu, Hierarchies, Memory};
//! let h = Hierarchies::detect().expect("read /proc/self/mountinfo");
//! let cpu = Cpu::isolator(h.clone(), "berth");
//! let mem = Memory::isolator(h, "berth");
//! // berth::Containerizer::builder(root, run).isolator(cpu).isolator(mem)…
//! ```

mod cpu;
mod devices;
mod hierarchy;
mod mem;
mod oom;
mod pids;

pub use cpu::{cpu_shares, cpu_weight, Cpu};
pub use devices::{
    check_devices, device_container_path, device_node, device_permissions, Devices,
    DEFAULT_ALLOWED_DEVICES, RESERVED_DEV_ENTRIES,
};
pub use hierarchy::{Hierarchies, Mode, Placement, Version};
pub use mem::Memory;
pub use pids::Pids;

use crate::{blocking, Isolator, IsolatorError, IsolatorFuture, Limitation, PrepareRequest};
use berth_state::{
    ContainerConfig, ContainerId, ContainerRecord, LaunchInfo, ResourceStatistics, Resources,
};
use futures::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long cleanup waits for an emptied cgroup to stop being busy.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One cgroup a container has for a controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    /// The controller's v1 name ("cpu", "cpuacct", "memory", …).
    pub controller: &'static str,
    pub version: Version,
    pub path: PathBuf,
}

/// A container's cgroups for one isolator (one per hierarchy).
#[derive(Debug, Clone, Default)]
pub struct CgroupDirs(pub Vec<CgroupDir>);

impl CgroupDirs {
    /// The cgroup holding `controller`, if the host has it.
    pub fn of(&self, controller: &str) -> Option<&CgroupDir> {
        self.0.iter().find(|d| d.controller == controller)
    }

    /// Distinct paths (co-mounted v1 controllers and v2 share one).
    fn paths(&self) -> Vec<(&Path, Version)> {
        let mut out: Vec<(&Path, Version)> = Vec::new();
        for d in &self.0 {
            if !out.iter().any(|(p, _)| *p == d.path) {
                out.push((&d.path, d.version));
            }
        }
        out
    }
}

/// What one cgroup controller does; [`CgroupIsolator`] does the rest
/// (placement, creation, removal, recovery).
pub trait Subsystem: Send + Sync + 'static {
    /// The isolator's name, e.g. "cgroups/mem".
    const NAME: &'static str;
    /// The controllers it uses, by v1 name.
    const CONTROLLERS: &'static [&'static str];
    /// Whether [`watch`](Subsystem::watch) can resolve (see
    /// [`Isolator::watches`]).
    const WATCHES: bool = false;
    /// Whether [`isolates`](Subsystem::isolates) can be `true` for any
    /// config (see [`Isolator::isolates`]).
    const ISOLATES: bool = false;

    /// Checks the resources before anything is created.
    fn validate(_id: &ContainerId, _res: &Resources) -> Result<(), IsolatorError> {
        Ok(())
    }

    /// Writes the limits (at prepare and on update). Blocking.
    fn apply(
        id: &ContainerId,
        dirs: &CgroupDirs,
        res: &Resources,
        update: bool,
    ) -> Result<(), IsolatorError>;

    /// Whether a cgroup this prepare has just made already holds what
    /// [`apply`](Self::apply) would write for `res` (the kernel's defaults:
    /// no limit): the prepare then writes nothing, saving an open, a write
    /// and a close of a cgroup file per value.
    fn fresh_suffices(_dirs: &CgroupDirs, _res: &Resources) -> bool {
        false
    }

    /// Checks the rest of the config (beyond resources) before anything
    /// is created.
    fn validate_config(_id: &ContainerId, _config: &ContainerConfig) -> Result<(), IsolatorError> {
        Ok(())
    }

    /// Whether `config` asks for something only this controller can do
    /// (beyond resources): a host without it then cannot run the container.
    fn needs_controller(_config: &ContainerConfig) -> bool {
        false
    }

    /// Whether [`isolate`](Self::isolate) has work for this config: the
    /// isolator then keeps the config from prepare until then.
    fn isolates(_config: &ContainerConfig) -> bool {
        false
    }

    /// At ISOLATING: the init has set up its filesystem and is blocked
    /// before exec (e.g. take back a permission only berth's own setup
    /// needed). Blocking.
    fn isolate(
        _id: &ContainerId,
        _dirs: &CgroupDirs,
        _config: &ContainerConfig,
    ) -> Result<(), IsolatorError> {
        Ok(())
    }

    /// Launch info besides the cgroup paths (e.g. capabilities, device
    /// nodes), from the config, before the cgroups are made. Blocking.
    fn launch_info(
        _id: &ContainerId,
        _dirs: &CgroupDirs,
        _config: &ContainerConfig,
    ) -> Result<LaunchInfo, IsolatorError> {
        Ok(LaunchInfo::default())
    }

    /// Writes what the config asks beyond resources (e.g. the allowed
    /// devices), once, at prepare, after [`apply`](Self::apply); `info` is
    /// what [`launch_info`](Self::launch_info) returned. Blocking.
    fn configure(
        _id: &ContainerId,
        _dirs: &CgroupDirs,
        _config: &ContainerConfig,
        _info: &LaunchInfo,
    ) -> Result<(), IsolatorError> {
        Ok(())
    }

    /// The figures this controller knows. Blocking.
    fn usage(_id: &ContainerId, _dirs: &CgroupDirs) -> Result<ResourceStatistics, IsolatorError> {
        Ok(ResourceStatistics::default())
    }

    /// Resolves when the container hits a limit it must die of.
    fn watch(_id: ContainerId, _dirs: CgroupDirs) -> BoxFuture<'static, Limitation> {
        Box::pin(futures::future::pending())
    }

    /// A limit already hit, read from the cgroup files (see
    /// [`Isolator::limitation`]).
    fn limitation(_id: &ContainerId, _dirs: &CgroupDirs) -> Option<Limitation> {
        None
    }

    /// Whether the cgroup files exist in this hierarchy version (v2 has
    /// no devices files: it attaches programs instead).
    fn has_files(_version: Version) -> bool {
        true
    }
}

/// The isolator for subsystem `S` (see the aliases [`Cpu`], [`Memory`],
/// [`Pids`], [`Devices`]).
pub struct CgroupIsolator<S: Subsystem> {
    hierarchies: Hierarchies,
    root: String,
    /// Configs kept from prepare for [`Subsystem::isolate`], by container.
    launching: HashMap<String, ContainerConfig>,
    _s: PhantomData<fn() -> S>,
}

impl<S: Subsystem> CgroupIsolator<S> {
    /// The isolator for `S`, keeping its cgroups under `cgroup_root` in
    /// each hierarchy.
    pub fn new(hierarchies: Hierarchies, cgroup_root: impl Into<String>) -> Self {
        CgroupIsolator {
            hierarchies,
            root: cgroup_root.into(),
            launching: HashMap::new(),
            _s: PhantomData,
        }
    }

    /// Where the container's cgroups are (whether or not they exist).
    pub fn dirs(&self, id: &ContainerId) -> CgroupDirs {
        CgroupDirs(
            S::CONTROLLERS
                .iter()
                .filter_map(|c| {
                    let p = self.hierarchies.place(c)?;
                    Some(CgroupDir {
                        controller: c,
                        version: p.version,
                        path: p.dir(&self.root, id),
                    })
                })
                .collect(),
        )
    }

    fn roots(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for c in S::CONTROLLERS {
            if let Some(p) = self.hierarchies.place(c) {
                let r = p.root_dir(&self.root);
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
        out
    }
}

pub(crate) fn io_err(id: &ContainerId, op: &str, path: &Path, e: io::Error) -> IsolatorError {
    IsolatorError::io(id, op, path, e)
}

/// Creates the cgroup; on v2, first enables the controller in every
/// ancestor's `cgroup.subtree_control` (the unified hierarchy only offers
/// a controller to children whose parent enabled it). `Ok(true)` when
/// this call made it, `Ok(false)` when it was there.
fn create(id: &ContainerId, d: &CgroupDir, mount: &Path) -> Result<bool, IsolatorError> {
    if d.version == Version::V2 {
        let v2_name = match d.controller {
            "cpuacct" => "cpu",
            c => c,
        };
        let rel = d.path.strip_prefix(mount).unwrap_or(&d.path);
        let mut dir = mount.to_path_buf();
        let comps: Vec<_> = rel.components().collect();
        for (i, c) in comps.iter().enumerate() {
            if v2_name != "devices" {
                enable_controller(id, &dir, v2_name)?;
            }
            dir.push(c);
            if i + 1 < comps.len() {
                mkdir(id, &dir)?;
            }
        }
    }
    mkdir(id, &d.path)
}

/// `Ok(true)` when this call made `dir`, `Ok(false)` when it was there.
fn mkdir(id: &ContainerId, dir: &Path) -> Result<bool, IsolatorError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(dir)
            .map(|()| true)
            .map_err(|e| io_err(id, "create cgroup", dir, e)),
        Err(e) => Err(io_err(id, "create cgroup", dir, e)),
    }
}

fn enable_controller(id: &ContainerId, dir: &Path, ctrl: &str) -> Result<(), IsolatorError> {
    let file = dir.join("cgroup.subtree_control");
    let now = fs::read_to_string(&file).unwrap_or_default();
    if now.split_whitespace().any(|c| c == ctrl) {
        return Ok(());
    }
    fs::write(&file, format!("+{ctrl}")).map_err(|e| {
        let why = if e.raw_os_error() == Some(libc::EBUSY) {
            format!(
                "enable {ctrl} in {} (cgroup v2 allows no processes in a cgroup whose children have controllers: \
                 a nested container cannot get its own {ctrl} limits while its parent's processes sit in the parent's cgroup): {e}",
                file.display()
            )
        } else {
            format!("enable {ctrl} in {}: {e}", file.display())
        };
        IsolatorError::failed(id, why)
    })
}

fn mount_of(h: &Hierarchies, d: &CgroupDir) -> Option<PathBuf> {
    h.place(d.controller).map(|p| p.mount)
}

/// Removes the cgroup trees, bottom-up, retrying EBUSY.
fn remove(id: &ContainerId, dirs: &CgroupDirs) -> Result<(), IsolatorError> {
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    for (p, _) in dirs.paths() {
        berth_state::cgroupfs::remove_tree(p, deadline)
            .map_err(|(path, e)| io_err(id, "remove cgroup", &path, e))?;
    }
    Ok(())
}

/// SIGKILLs whatever runs in `dir` (and below) until it is empty; for
/// orphan cgroups that no launcher freezer covers.
fn kill_all(dir: &Path, deadline: Instant) {
    loop {
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(berth_state::cgroupfs::subdirs_deepest_first(dir));
        let pids: Vec<i32> = dirs
            .iter()
            .flat_map(|d| {
                fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl<S: Subsystem> Isolator for CgroupIsolator<S> {
    fn name(&self) -> &str {
        S::NAME
    }

    fn supports_nesting(&self) -> bool {
        true
    }

    fn recover(
        &mut self,
        states: &[ContainerRecord],
        orphans: &[ContainerId],
    ) -> IsolatorFuture<()> {
        // Cgroups of recovered containers need nothing: their paths follow
        // from the id. Those of the launcher's orphans get `cleanup` from
        // the containerizer. What is left under our roots — a crash between
        // prepare and fork, or anything planted there — is removed here.
        let known: HashSet<String> = states
            .iter()
            .filter_map(|r| r.id.as_ref().map(|i| i.to_string()))
            .collect();
        let orphans: HashSet<String> = orphans.iter().map(|i| i.to_string()).collect();
        let roots = self.roots();
        Box::pin(async move {
            blocking(move || {
                for root in roots {
                    // Top level only: below a recorded container every
                    // dir is its own (nested containers, or sub-cgroups a
                    // privileged container made itself, whose processes
                    // must not be killed as orphans).
                    let ids = berth_state::runtime::list_top_ids(&root).unwrap_or_default();
                    for id in ids {
                        let covered = std::iter::successors(Some(&id), |i| i.parent.as_deref())
                            .any(|i| orphans.contains(&i.to_string()));
                        if known.contains(&id.to_string()) || covered {
                            continue;
                        }
                        let mut dir = root.clone();
                        for part in id.parts() {
                            dir.push(part);
                        }
                        if !dir.exists() {
                            continue; // removed with its parent
                        }
                        tracing::info!(container = %id, isolator = S::NAME, dir = %dir.display(), "removing orphan cgroup");
                        let deadline = Instant::now() + REMOVE_TIMEOUT;
                        kill_all(&dir, deadline);
                        berth_state::cgroupfs::remove_tree(&dir, deadline)
                            .map_err(|(path, e)| io_err(&id, "remove orphan cgroup", &path, e))?;
                    }
                }
                Ok(())
            })
            .await
        })
    }

    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        let id = req.id.clone();
        let config = req.config.clone();
        if S::isolates(&config) {
            // Dropped at isolate, or at the cleanup that follows a failure.
            self.launching.insert(id.to_string(), config.clone());
        }
        let res = config.resources.unwrap_or_default();
        let dirs = self.dirs(&id);
        let h = self.hierarchies.clone();
        Box::pin(async move {
            S::validate(&id, &res)?;
            S::validate_config(&id, &config)?;
            if dirs.0.is_empty() {
                if asks_for::<S>(&res) || S::needs_controller(&config) {
                    return Err(IsolatorError::failed(
                        &id,
                        format!(
                            "{} needs the {} cgroup controller, which this host does not have",
                            S::NAME,
                            S::CONTROLLERS.join("/")
                        ),
                    ));
                }
                return Ok(None);
            }
            blocking(move || {
                let mut info = S::launch_info(&id, &dirs, &config)?;
                // Co-mounted controllers (cpu,cpuacct) share one dir.
                let mut made = HashSet::new();
                for d in &dirs.0 {
                    let mount = mount_of(&h, d).unwrap_or_default();
                    if create(&id, d, &mount)? {
                        made.insert(d.path.clone());
                    }
                }
                let fresh = dirs.0.iter().all(|d| made.contains(&d.path));
                let applied = match fresh && S::fresh_suffices(&dirs, &res) {
                    true => Ok(()),
                    false => S::apply(&id, &dirs, &res, false),
                };
                let done = applied.and_then(|()| S::configure(&id, &dirs, &config, &info));
                if let Err(e) = done {
                    // Nothing may be left behind by a failed prepare.
                    let _ = remove(&id, &dirs);
                    return Err(e);
                }
                for (p, v) in dirs.paths() {
                    if S::has_files(v) {
                        let p = p.display().to_string();
                        if !info.cgroup_paths.contains(&p) {
                            info.cgroup_paths.push(p);
                        }
                    }
                }
                Ok(Some(info))
            })
            .await
        })
    }

    fn isolate(&mut self, id: &ContainerId, _pid: i32) -> IsolatorFuture<()> {
        let Some(config) = self.launching.remove(&id.to_string()) else {
            return Box::pin(async { Ok(()) });
        };
        let (id, dirs) = (id.clone(), self.dirs(id));
        Box::pin(async move { blocking(move || S::isolate(&id, &dirs, &config)).await })
    }

    fn watch(&mut self, id: &ContainerId) -> BoxFuture<'static, Limitation> {
        S::watch(id.clone(), self.dirs(id))
    }

    fn watches(&self) -> bool {
        S::WATCHES
    }

    fn isolates(&self) -> bool {
        S::ISOLATES
    }

    fn limitation(&mut self, id: &ContainerId) -> IsolatorFuture<Option<Limitation>> {
        let (id, dirs) = (id.clone(), self.dirs(id));
        Box::pin(async move { Ok(blocking(move || S::limitation(&id, &dirs)).await) })
    }

    fn update(&mut self, id: &ContainerId, resources: &Resources) -> IsolatorFuture<()> {
        let (id, res, dirs) = (id.clone(), *resources, self.dirs(id));
        Box::pin(async move {
            S::validate(&id, &res)?;
            blocking(move || S::apply(&id, &dirs, &res, true)).await
        })
    }

    fn usage(&mut self, id: &ContainerId) -> IsolatorFuture<ResourceStatistics> {
        let (id, dirs) = (id.clone(), self.dirs(id));
        Box::pin(async move { blocking(move || S::usage(&id, &dirs)).await })
    }

    fn cleanup(&mut self, id: &ContainerId) -> IsolatorFuture<()> {
        self.launching.remove(&id.to_string());
        let (id, dirs) = (id.clone(), self.dirs(id));
        Box::pin(async move { blocking(move || remove(&id, &dirs)).await })
    }
}

/// Whether `res` asks for something `S` enforces (a host without the
/// controller then cannot run the container).
fn asks_for<S: Subsystem>(res: &Resources) -> bool {
    match S::NAME {
        cpu::NAME => res.cpus > 0.0 || res.cpu_limit > 0.0,
        mem::NAME => res.memory_bytes > 0 || res.memory_soft_bytes > 0,
        pids::NAME => res.pids > 0,
        _ => false,
    }
}

/// Reads a cgroup file as text, naming the file on error.
pub(crate) fn read(id: &ContainerId, path: &Path) -> Result<String, IsolatorError> {
    fs::read_to_string(path).map_err(|e| io_err(id, "read", path, e))
}

/// Writes a cgroup file, naming the file and value on error.
pub(crate) fn write(id: &ContainerId, path: &Path, value: &str) -> Result<(), IsolatorError> {
    fs::write(path, value).map_err(|e| {
        IsolatorError::failed(id, format!("write {value:?} to {}: {e}", path.display()))
    })
}

/// `key value` lines (memory.stat, cpu.stat, memory.events) → the value of `key`.
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A cgroups-rs error as ours, naming the container and what was done.
pub(crate) fn cg_err(
    id: &ContainerId,
    what: &str,
    e: cgroups_rs::fs::error::Error,
) -> IsolatorError {
    IsolatorError::failed(id, format!("{what}: {e}"))
}
