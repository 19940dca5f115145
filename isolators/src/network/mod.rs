//! `network/cni`: a network namespace per container, and for a named
//! network its attachment by CNI plugins (bridge, host-local, loopback,
//! portmap from Debian's containernetworking-plugins).
//!
//! - `host`: nothing to do, the container shares the agent's netns.
//! - `none`: a fresh netns with only `lo`, up.
//! - a CNI network: the same fresh netns, then at ISOLATING the network's
//!   plugins ADD it (the init exists but has not exec'd); at cleanup they
//!   DEL it, and at recovery every netns that no live record explains is
//!   DEL'd and removed.
//!
//! The netns is a file `<runtime>/netns/<id>` with the namespace
//! bind-mounted on it (as `ip netns add` does); the container joins it by
//! path. Beside it, `<id>.json` keeps the network config used and the ADD
//! result (written before the ADD, so that a crash mid-ADD still DELs).

pub mod cni;
pub mod netns;

use crate::{Isolator, IsolatorError, IsolatorFuture, PrepareRequest, StatusFields};
use berth_state::{network, ContainerId, ContainerRecord, LaunchInfo, Namespace, NamespaceJoin};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Where the CNI configs are by default.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/berth/cni";
/// Where the CNI plugins are by default (Debian's package).
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/cni";
/// The container's interface name.
pub const IFNAME: &str = "eth0";

/// The operator's CNI options.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// Network configs (`*.conflist`, `*.conf`, `*.json`).
    pub config_dir: PathBuf,
    /// Plugin executables.
    pub plugin_dir: PathBuf,
    /// Where the netns files live (`<runtime dir>/netns`).
    pub netns_dir: PathBuf,
}

impl CniConfig {
    /// The defaults, with netns files under `runtime_dir`.
    pub fn new(runtime_dir: &Path) -> Self {
        CniConfig {
            config_dir: DEFAULT_CONFIG_DIR.into(),
            plugin_dir: DEFAULT_PLUGIN_DIR.into(),
            netns_dir: runtime_dir.join("netns"),
        }
    }
}

/// The `network/cni` isolator.
#[derive(Debug, Clone)]
pub struct CniNetwork {
    config: CniConfig,
    /// Containers prepared for a CNI network and not yet isolated (the
    /// attach happens at isolate): any other launch's isolate has nothing
    /// to do, and returns without a trip to the blocking pool.
    attaching: HashSet<String>,
}

impl CniNetwork {
    pub fn new(config: CniConfig) -> Self {
        CniNetwork {
            config,
            attaching: HashSet::new(),
        }
    }
}

/// A container id as a file name (`/` of nested ids is not allowed in one).
fn key(id: &ContainerId) -> String {
    id.to_string().replace('/', "+")
}

/// The per-container paths and the plugin's view of it.
#[derive(Debug, Clone)]
struct Paths {
    id: ContainerId,
    netns: PathBuf,
    state: PathBuf,
    cni_id: String,
}

impl Paths {
    fn of_key(cfg: &CniConfig, id: ContainerId, key: &str) -> Self {
        Paths {
            id,
            netns: cfg.netns_dir.join(key),
            state: cfg.netns_dir.join(format!("{key}.json")),
            // CNI container ids: alphanumerics, `_`, `.`, `-`.
            cni_id: key.replace('+', "."),
        }
    }
    fn new(cfg: &CniConfig, id: &ContainerId) -> Self {
        Self::of_key(cfg, id.clone(), &key(id))
    }
    fn io(&self, op: &str, path: &Path, e: std::io::Error) -> IsolatorError {
        IsolatorError::io(&self.id, op, path, e)
    }
    fn read_state(&self) -> Result<Option<Value>, IsolatorError> {
        match std::fs::read_to_string(&self.state) {
            Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
                IsolatorError::failed(&self.id, format!("{}: {e}", self.state.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("read", &self.state, e)),
        }
    }
    fn write_state(&self, v: &Value) -> Result<(), IsolatorError> {
        berth_state::runtime::write_atomic(&self.state, v.to_string().as_bytes())
            .map_err(|e| IsolatorError::failed(&self.id, e.to_string()))
    }
    fn attachment<'a>(&'a self, cfg: &'a CniConfig) -> cni::Attachment<'a> {
        cni::Attachment {
            plugin_dir: &cfg.plugin_dir,
            container_id: &self.cni_id,
            netns: &self.netns,
            ifname: IFNAME,
        }
    }
}

/// DEL (when a network was attached), then the netns and the state file.
/// Tolerates repeats and half-done states.
fn release(cfg: &CniConfig, p: &Paths) -> Result<(), IsolatorError> {
    if let Some(state) = p.read_state()? {
        let list = cni::NetworkList(state["network"].clone());
        let result = state.get("result").filter(|r| !r.is_null());
        list.del(&p.attachment(cfg), result)
            .map_err(|e| IsolatorError::failed(&p.id, e))?;
    }
    netns::remove(&p.netns).map_err(|e| p.io("remove netns", &p.netns, e))?;
    match std::fs::remove_file(&p.state) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(p.io("remove", &p.state, e)),
        _ => Ok(()),
    }
}

impl Isolator for CniNetwork {
    fn name(&self) -> &str {
        "network/cni"
    }

    fn watches(&self) -> bool {
        false
    }

    fn recover(
        &mut self,
        states: &[ContainerRecord],
        _orphans: &[ContainerId],
    ) -> IsolatorFuture<()> {
        // Every netns that no recovered record explains is an orphan's
        // (the orphans named by the containerizer are among them).
        let keep: HashSet<String> = states
            .iter()
            .filter_map(|r| r.id.as_ref())
            .map(key)
            .collect();
        let cfg = self.config.clone();
        Box::pin(async move {
            crate::blocking(move || {
                let entries = match std::fs::read_dir(&cfg.netns_dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => {
                        return Err(IsolatorError::failed(
                            &ContainerId::new("-"),
                            format!("read {}: {e}", cfg.netns_dir.display()),
                        ))
                    }
                };
                let mut keys: Vec<String> = entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .map(|n| n.trim_end_matches(".json").to_string())
                    .filter(|k| !k.starts_with('.') && !keep.contains(k))
                    .collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let id = ContainerId::parse(&k.replace('+', "/"))
                        .unwrap_or_else(|_| ContainerId::new(&k));
                    let p = Paths::of_key(&cfg, id, &k);
                    tracing::info!(container = %p.id, "releasing an orphan's network");
                    release(&cfg, &p)?;
                }
                Ok(())
            })
            .await
        })
    }

    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        // A pod member (a nested container that asks for no network) and
        // a DEBUG container join their parent's.
        if crate::namespaces::shared_with_parent(&req.id, &req.config, Namespace::Net) {
            return Box::pin(async { Ok(None) });
        }
        let net = req.config.network.clone().unwrap_or_default();
        if network::Mode::try_from(net.mode) == Ok(network::Mode::Cni) {
            // Dropped at isolate, or at the cleanup that follows a failure.
            self.attaching.insert(key(&req.id));
        }
        let ports = req.config.port_mappings.clone();
        let cfg = self.config.clone();
        let p = Paths::new(&cfg, &req.id);
        Box::pin(async move {
            let mode = network::Mode::try_from(net.mode)
                .map_err(|_| IsolatorError::invalid(&p.id, "network", "unknown mode"))?;
            if mode != network::Mode::Cni && !ports.is_empty() {
                return Err(IsolatorError::invalid(
                    &p.id,
                    "network",
                    "port mappings need a CNI network (a plugin such as portmap forwards them)",
                ));
            }
            if mode == network::Mode::Host {
                return Ok(None);
            }
            if mode == network::Mode::Cni && net.cni_network.is_empty() {
                return Err(IsolatorError::invalid(
                    &p.id,
                    "network",
                    "a CNI network needs a name",
                ));
            }
            crate::blocking(move || {
                // A missing or bad config fails before anything exists.
                let list = match mode {
                    network::Mode::Cni => {
                        let mut list = cni::load(&cfg.config_dir, &net.cni_network)
                            .map_err(|e| IsolatorError::invalid(&p.id, "network", e))?;
                        // Kept in the state, so DEL gets them too.
                        list.set_port_mappings(&ports);
                        Some(list)
                    }
                    _ => None,
                };
                std::fs::create_dir_all(&cfg.netns_dir)
                    .map_err(|e| p.io("create dir", &cfg.netns_dir, e))?;
                if let Some(list) = list {
                    p.write_state(&json!({"network": list.0, "result": null}))?;
                }
                netns::create(&p.netns).map_err(|e| p.io("create netns", &p.netns, e))?;
                Ok(Some(LaunchInfo {
                    join_namespaces: vec![NamespaceJoin {
                        namespace: Namespace::Net as i32,
                        path: p.netns.display().to_string(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }))
            })
            .await
        })
    }

    fn isolate(&mut self, id: &ContainerId, _pid: i32) -> IsolatorFuture<()> {
        if !self.attaching.remove(&key(id)) {
            return Box::pin(async { Ok(()) }); // host, none, or the parent's
        }
        let cfg = self.config.clone();
        let p = Paths::new(&cfg, id);
        Box::pin(async move {
            crate::blocking(move || {
                let Some(mut state) = p.read_state()? else {
                    return Ok(()); // host or none
                };
                let list = cni::NetworkList(state["network"].clone());
                let result = list
                    .add(&p.attachment(&cfg))
                    .map_err(|e| IsolatorError::failed(&p.id, e))?;
                tracing::info!(container = %p.id, ip = ?cni::first_ip(&result), "attached to the CNI network");
                state["result"] = result;
                p.write_state(&state)
            })
            .await
        })
    }

    fn status(&mut self, id: &ContainerId) -> IsolatorFuture<StatusFields> {
        let p = Paths::new(&self.config, id);
        Box::pin(async move {
            crate::blocking(move || {
                let mut f = StatusFields::new();
                if let Some(state) = p.read_state()? {
                    if let Some(name) = state["network"]["name"].as_str() {
                        f.insert("network.name".into(), name.into());
                    }
                    if let Some(ip) = cni::first_ip(&state["result"]) {
                        f.insert("network.ip".into(), ip);
                    }
                }
                Ok(f)
            })
            .await
        })
    }

    fn cleanup(&mut self, id: &ContainerId) -> IsolatorFuture<()> {
        self.attaching.remove(&key(id));
        let cfg = self.config.clone();
        let p = Paths::new(&cfg, id);
        Box::pin(async move { crate::blocking(move || release(&cfg, &p)).await })
    }
}
