//! Runtimes by name: `native` (berth's own launcher) and the OCI runtimes
//! the agent registered. Each container runs under the one its config
//! names (else the default); every later call for it (release, kill,
//! destroy, recovery) goes to the same one, known from memory, from the
//! record at recovery, or from the `runtime` file in its runtime dir.

use crate::oci::{OciLauncher, RUNTIME_FILE};
use crate::{Forked, LaunchError, LaunchSpec, Launcher, ProcessStatus};
use berth_state::{ContainerId, ContainerRecord, ExitStatus, RuntimeDir};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

/// What one launcher's recovery finds: its orphans.
type Found = BoxFuture<'static, Result<Vec<ContainerId>, LaunchError>>;

/// The name of berth's own launcher.
pub const NATIVE: &str = "native";

/// A [`Launcher`] that hands each container to the launcher of its runtime.
pub struct Runtimes {
    native: Arc<dyn Launcher>,
    oci: BTreeMap<String, Arc<OciLauncher>>,
    default: String,
    runtime_dir: RuntimeDir,
    /// Container → runtime name, for the containers met since the start.
    chosen: Arc<Mutex<HashMap<String, String>>>,
}

impl Runtimes {
    /// `native` plus `oci` (by each runtime's name); `default` for
    /// containers that name none (must be one of them).
    pub fn new(
        native: Arc<dyn Launcher>,
        oci: Vec<OciLauncher>,
        default: &str,
        runtime_dir: RuntimeDir,
    ) -> Result<Runtimes, String> {
        let oci: BTreeMap<_, _> = oci
            .into_iter()
            .map(|l| (l.runtime().name.clone(), Arc::new(l)))
            .collect();
        let r = Runtimes {
            native,
            oci,
            default: NATIVE.to_string(),
            runtime_dir,
            chosen: Arc::default(),
        };
        let default = r
            .runtime_for(default)
            .map_err(|e| format!("default runtime: {e}"))?;
        Ok(Runtimes { default, ..r })
    }

    /// The names known, `native` first.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(NATIVE.to_string())
            .chain(self.oci.keys().cloned())
            .collect()
    }

    fn chosen(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.chosen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn by_name(&self, name: &str) -> Arc<dyn Launcher> {
        match self.oci.get(name) {
            Some(l) => l.clone(),
            None => self.native.clone(),
        }
    }

    /// The launcher of container `id`.
    fn of(&self, id: &ContainerId) -> Arc<dyn Launcher> {
        self.by_name(&self.name_of(id))
    }

    /// The name of container `id`'s launcher (NATIVE when none is known).
    fn name_of(&self, id: &ContainerId) -> String {
        let key = id.to_string();
        if let Some(name) = self.chosen().get(&key) {
            return name.clone();
        }
        let file = self.runtime_dir.container_dir(id).join(RUNTIME_FILE);
        match std::fs::read_to_string(file) {
            Ok(name) => {
                let name = name.trim().to_string();
                self.chosen().insert(key, name.clone());
                name
            }
            Err(_) => NATIVE.to_string(),
        }
    }
}

/// The runtime a record's container runs under.
fn record_runtime(r: &ContainerRecord) -> String {
    let from_info = r.launch_info.as_ref().map(|i| i.runtime.clone());
    let from_config = r.config.as_ref().map(|c| c.runtime.clone());
    let name = from_info
        .filter(|n| !n.is_empty())
        .or(from_config)
        .unwrap_or_default();
    if name.is_empty() {
        NATIVE.to_string()
    } else {
        name
    }
}

impl Launcher for Runtimes {
    fn name(&self) -> &'static str {
        "runtimes"
    }

    fn runtime_for(&self, requested: &str) -> Result<String, String> {
        let name = if requested.is_empty() {
            self.default.as_str()
        } else {
            requested
        };
        if name == NATIVE || self.oci.contains_key(name) {
            Ok(name.to_string())
        } else {
            Err(format!(
                "unknown runtime {name:?} (known: {})",
                self.names().join(", ")
            ))
        }
    }

    fn recover(
        &self,
        records: Vec<ContainerRecord>,
    ) -> BoxFuture<'static, Result<Vec<ContainerId>, LaunchError>> {
        let named: BTreeSet<String> = records
            .iter()
            .filter_map(|r| r.id.as_ref().map(|i| i.to_string()))
            .collect();
        let mut groups: BTreeMap<String, Vec<ContainerRecord>> = BTreeMap::new();
        for r in records {
            let name = record_runtime(&r);
            if let Some(id) = &r.id {
                self.chosen().insert(id.to_string(), name.clone());
            }
            groups.entry(name).or_default().push(r);
        }
        // The runtimes first: a container one of them holds is its orphan
        // (the native launcher also sees its cgroups under berth's root).
        // Their runtime-dir scans share one listing and skip every
        // recorded container (thousands, mostly native), not only their
        // own.
        let mut calls: Vec<(String, Found)> = Vec::new();
        let shared = Arc::new(named.clone());
        let listing: Arc<OnceLock<Result<Vec<ContainerId>, String>>> = Arc::default();
        for (name, l) in &self.oci {
            let (engine, group) = (l.engine.clone(), groups.remove(name).unwrap_or_default());
            let (recorded, listing) = (shared.clone(), listing.clone());
            calls.push((
                name.clone(),
                Box::pin(crate::engine::blocking(String::new(), move || {
                    let listed =
                        listing.get_or_init(|| engine.runtime.list().map_err(|e| e.to_string()));
                    let listed = listed.as_ref().map_err(|message| LaunchError::Other {
                        id: String::new(),
                        message: message.clone(),
                    })?;
                    engine.recover_among(group, Some(&recorded), Some(listed))
                })),
            ));
        }
        calls.push((
            NATIVE.to_string(),
            self.native
                .recover(groups.remove(NATIVE).unwrap_or_default()),
        ));
        // Records of a runtime no longer registered: no launcher can
        // re-attach them; their destroy goes to the native launcher.
        if !groups.is_empty() {
            tracing::warn!(
                runtimes = ?groups.keys().collect::<Vec<_>>(),
                "records name a runtime the agent has not registered"
            );
        }
        let chosen = self.chosen.clone();
        Box::pin(async move {
            // Side by side: each is its own blocking scan (and a runtime's
            // is mostly waiting on its `list`); results stay in order.
            let (names, calls): (Vec<_>, Vec<_>) = calls.into_iter().unzip();
            let results = futures::future::join_all(calls).await;
            let mut orphans = Vec::new();
            let mut have = BTreeSet::new();
            for (name, found) in names.into_iter().zip(results) {
                for id in found? {
                    let key = id.to_string();
                    if named.contains(&key) || !have.insert(key.clone()) {
                        continue;
                    }
                    // Found by a runtime: its destroy goes back there.
                    if name != NATIVE {
                        chosen
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(key, name.clone());
                    }
                    orphans.push(id);
                }
            }
            Ok(orphans)
        })
    }

    fn fork(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Forked, LaunchError>> {
        let name = match self.runtime_for(&spec.launch_info.runtime) {
            Ok(n) => n,
            Err(message) => {
                let id = spec.id.to_string();
                return Box::pin(async move { Err(LaunchError::Other { id, message }) });
            }
        };
        self.chosen().insert(spec.id.to_string(), name.clone());
        self.by_name(&name).fork(spec)
    }

    fn release(&self, id: ContainerId) -> BoxFuture<'static, Result<(), LaunchError>> {
        self.of(&id).release(id)
    }

    fn kill(&self, id: ContainerId, signal: i32) -> BoxFuture<'static, Result<(), LaunchError>> {
        self.of(&id).kill(id, signal)
    }

    fn destroy(&self, id: ContainerId) -> BoxFuture<'static, Result<(), LaunchError>> {
        self.of(&id).destroy(id)
    }

    fn status(&self, id: ContainerId) -> BoxFuture<'static, Result<ProcessStatus, LaunchError>> {
        self.of(&id).status(id)
    }

    fn statuses(
        &self,
        ids: Vec<ContainerId>,
    ) -> BoxFuture<'static, Vec<Result<ProcessStatus, LaunchError>>> {
        // One batch per launcher, each keeping its ids' places.
        let mut groups: BTreeMap<String, (Vec<usize>, Vec<ContainerId>)> = BTreeMap::new();
        let n = ids.len();
        for (i, id) in ids.into_iter().enumerate() {
            let name = self.name_of(&id);
            let g = groups.entry(name).or_default();
            g.0.push(i);
            g.1.push(id);
        }
        let calls: Vec<_> = groups
            .into_iter()
            .map(|(name, (places, ids))| (places, self.by_name(&name).statuses(ids)))
            .collect();
        Box::pin(async move {
            let (places, calls): (Vec<_>, Vec<_>) = calls.into_iter().unzip();
            let mut out: Vec<Option<Result<ProcessStatus, LaunchError>>> =
                (0..n).map(|_| None).collect();
            for (places, got) in places
                .into_iter()
                .zip(futures::future::join_all(calls).await)
            {
                for (i, r) in places.into_iter().zip(got) {
                    out[i] = Some(r);
                }
            }
            out.into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(LaunchError::Other {
                            id: String::new(),
                            message: "the launcher answered fewer statuses than asked".into(),
                        })
                    })
                })
                .collect()
        })
    }

    fn wait(&self, id: ContainerId) -> BoxFuture<'static, Result<ExitStatus, LaunchError>> {
        self.of(&id).wait(id)
    }

    fn remove(&self, id: ContainerId) -> BoxFuture<'static, Result<(), LaunchError>> {
        let l = self.of(&id);
        self.chosen().remove(&id.to_string());
        l.remove(id)
    }

    fn set_frozen(
        &self,
        id: ContainerId,
        frozen: bool,
    ) -> BoxFuture<'static, Result<(), LaunchError>> {
        self.of(&id).set_frozen(id, frozen)
    }

    fn checkpoint(
        &self,
        id: ContainerId,
        spec: crate::criu::DumpSpec,
    ) -> BoxFuture<'static, Result<crate::criu::Dumped, LaunchError>> {
        self.of(&id).checkpoint(id, spec)
    }
}
