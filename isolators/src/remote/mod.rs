//! Isolators out of process: a plugin in any language serves the
//! `berth.plugin.v1.Isolator` gRPC service (state/proto/berth/plugin/v1/
//! isolator.proto) on a Unix socket, and [`RemoteIsolator`] implements the
//! [`Isolator`] trait by calling it. The containerizer wraps it in the
//! same [`IsolatorActor`](crate::IsolatorActor) as a built-in isolator, so
//! the state machine, checkpoints, merge rules and destroy stages are the
//! same for both.
//!
//! - [`config`]: the plugin files of `--plugin-dir`;
//! - [`process`]: the supervision of a plugin program berth starts;
//! - `client`: the connection, handshake, deadlines and Recover.

mod client;
pub mod config;
pub mod process;

pub use config::{Endpoint, PluginConfig, PluginError};
pub use process::{PluginProcess, SOCKET_ENV};

use crate::{Isolator, IsolatorError, IsolatorFuture, Limitation, PrepareRequest, StatusFields};
use berth_state::{
    ContainerId, ContainerRecord, ContainerState, LaunchInfo, ResourceStatistics, Resources,
    TerminationReason,
};
use client::Client;
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The generated protocol: the client berth uses, and a server trait for
/// plugins written in Rust.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/berth.plugin.v1.rs"));
}

/// The isolator name of plugin `name`.
pub fn isolator_name(name: &str) -> String {
    format!("plugin/{name}")
}

/// An isolator served by a plugin, named `plugin/<name>`.
pub struct RemoteIsolator {
    isolator: String,
    client: Arc<Client>,
}

impl RemoteIsolator {
    /// The isolator of plugin `cfg`; a `command` plugin is started now,
    /// serving on `<runtime_dir>/plugins/<name>.sock`.
    pub fn start(cfg: &PluginConfig, runtime_dir: &Path) -> Result<RemoteIsolator, PluginError> {
        let (socket, process) = match &cfg.endpoint {
            Endpoint::Socket(s) => (s.clone(), None),
            Endpoint::Command(command) => {
                // Root's alone: whoever reaches a plugin's socket can ask it
                // to prepare or clean up any container.
                let dir = runtime_dir.join("plugins");
                let made = std::fs::create_dir_all(&dir).and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                });
                made.map_err(|e| PluginError::Start {
                    name: cfg.name.clone(),
                    command: command.clone(),
                    source: e,
                })?;
                let socket = dir.join(format!("{}.sock", cfg.name));
                let p = PluginProcess::start(&cfg.name, command, &cfg.dir, socket.clone())?;
                (socket, Some(p))
            }
        };
        Ok(RemoteIsolator {
            isolator: isolator_name(&cfg.name),
            client: Arc::new(Client::new(
                cfg.name.clone(),
                socket,
                process,
                cfg.timeout,
                cfg.start_timeout,
            )),
        })
    }

    /// Every plugin of `dir`, started, in isolator order.
    pub fn load_dir(dir: &Path, runtime_dir: &Path) -> Result<Vec<RemoteIsolator>, PluginError> {
        PluginConfig::load_dir(dir)?
            .iter()
            .map(|c| RemoteIsolator::start(c, runtime_dir))
            .collect()
    }

    /// Whether the plugin isolates this container (its handshake says
    /// whether it takes nested and standalone containers).
    fn applies(&self, id: &ContainerId) -> bool {
        let caps = match self.client.caps.lock() {
            Ok(c) => *c,
            Err(_) => return true,
        };
        if id.parent.is_some() {
            caps.nesting
        } else {
            caps.standalone
        }
    }

    fn fail(id: &ContainerId, message: String) -> IsolatorError {
        IsolatorError::failed(id, message)
    }
}

impl Isolator for RemoteIsolator {
    fn name(&self) -> &str {
        &self.isolator
    }

    fn supports_nesting(&self) -> bool {
        self.client.caps.lock().map(|c| c.nesting).unwrap_or(false)
    }

    fn supports_standalone(&self) -> bool {
        self.client
            .caps
            .lock()
            .map(|c| c.standalone)
            .unwrap_or(true)
    }

    fn recover(
        &mut self,
        states: &[ContainerRecord],
        orphans: &[ContainerId],
    ) -> IsolatorFuture<()> {
        // Only the containers whose prepare this plugin ran (or may have).
        let mine = states
            .iter()
            .filter(|r| r.prepared_isolators.iter().any(|n| n == &self.isolator))
            .filter_map(|r| Some((r.id.as_ref()?.to_string(), r.clone())));
        if let Ok(mut k) = self.client.known.lock() {
            *k = mine.collect();
        }
        let client = self.client.clone();
        let orphans = orphans.to_vec();
        Box::pin(async move {
            client
                .ready(Some(orphans))
                .await
                .map(|_| ())
                .map_err(|message| IsolatorError::Plugin { message })
        })
    }

    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        if !self.applies(&req.id) {
            return Box::pin(async { Ok(None) });
        }
        // Known before the call: a plugin that restarts mid-prepare is told
        // of this container in its Recover.
        let record = ContainerRecord {
            id: Some(req.id.clone()),
            config: Some(req.config.clone()),
            state: ContainerState::Preparing as i32,
            sandbox_dir: req.sandbox_dir.display().to_string(),
            rootfs: req
                .rootfs
                .as_ref()
                .map(|r| r.display().to_string())
                .unwrap_or_default(),
            prepared_isolators: vec![self.isolator.clone()],
            ..Default::default()
        };
        if let Ok(mut k) = self.client.known.lock() {
            k.insert(req.id.to_string(), record);
        }
        let msg = proto::PrepareRequest {
            id: Some(req.id.clone()),
            config: Some(req.config.clone()),
            sandbox_dir: req.sandbox_dir.display().to_string(),
            rootfs: req
                .rootfs
                .as_ref()
                .map(|r| r.display().to_string())
                .unwrap_or_default(),
            cgroup_root: req.cgroup_root.clone(),
        };
        let (client, id) = (self.client.clone(), req.id.clone());
        Box::pin(async move {
            let r = client.call("prepare", |mut c| {
                let req = client.request(msg.clone());
                async move { c.prepare(req).await }
            });
            let r = r.await.map_err(|m| Self::fail(&id, m))?;
            Ok(r.launch_info)
        })
    }

    fn isolate(&mut self, id: &ContainerId, pid: i32) -> IsolatorFuture<()> {
        if !self.applies(id) {
            return Box::pin(async { Ok(()) });
        }
        let (client, id) = (self.client.clone(), id.clone());
        Box::pin(async move {
            let msg = proto::IsolateRequest {
                id: Some(id.clone()),
                pid,
            };
            let r = client.call("isolate", |mut c| {
                let req = client.request(msg.clone());
                async move { c.isolate(req).await }
            });
            r.await.map(|_| ()).map_err(|m| Self::fail(&id, m))
        })
    }

    fn watch(&mut self, id: &ContainerId) -> BoxFuture<'static, Limitation> {
        if !self.applies(id) {
            return Box::pin(futures::future::pending());
        }
        let (client, id) = (self.client.clone(), id.clone());
        Box::pin(watch(client, id))
    }

    fn update(&mut self, id: &ContainerId, resources: &Resources) -> IsolatorFuture<()> {
        if !self.applies(id) {
            return Box::pin(async { Ok(()) });
        }
        let (client, id) = (self.client.clone(), id.clone());
        let msg = proto::UpdateRequest {
            id: Some(id.clone()),
            resources: Some(*resources),
        };
        Box::pin(async move {
            let r = client.call("update", |mut c| {
                let req = client.request(msg.clone());
                async move { c.update(req).await }
            });
            r.await.map(|_| ()).map_err(|m| Self::fail(&id, m))
        })
    }

    fn usage(&mut self, id: &ContainerId) -> IsolatorFuture<ResourceStatistics> {
        if !self.applies(id) {
            return Box::pin(async { Ok(ResourceStatistics::default()) });
        }
        let (client, id) = (self.client.clone(), id.clone());
        Box::pin(async move {
            let msg = proto::UsageRequest {
                id: Some(id.clone()),
            };
            let r = client.call("usage", |mut c| {
                let req = client.request(msg.clone());
                async move { c.usage(req).await }
            });
            let r = r.await.map_err(|m| Self::fail(&id, m))?;
            Ok(r.statistics.unwrap_or_default())
        })
    }

    fn status(&mut self, id: &ContainerId) -> IsolatorFuture<StatusFields> {
        if !self.applies(id) {
            return Box::pin(async { Ok(StatusFields::new()) });
        }
        let (client, id) = (self.client.clone(), id.clone());
        Box::pin(async move {
            let msg = proto::StatusRequest {
                id: Some(id.clone()),
            };
            let r = client.call("status", |mut c| {
                let req = client.request(msg.clone());
                async move { c.status(req).await }
            });
            let r = r.await.map_err(|m| Self::fail(&id, m))?;
            Ok(r.fields)
        })
    }

    fn cleanup(&mut self, id: &ContainerId) -> IsolatorFuture<()> {
        if !self.applies(id) {
            return Box::pin(async { Ok(()) });
        }
        let (client, id) = (self.client.clone(), id.clone());
        Box::pin(async move {
            let msg = proto::CleanupRequest {
                id: Some(id.clone()),
            };
            let r = client.call_through_restart("cleanup", |mut c| {
                let req = client.request(msg.clone());
                async move { c.cleanup(req).await }
            });
            r.await.map_err(|m| Self::fail(&id, m))?;
            // Known until its cleanup succeeds: a failed one is retried,
            // and a restarted plugin is told of it meanwhile.
            if let Ok(mut k) = client.known.lock() {
                k.remove(&id.to_string());
            }
            Ok(())
        })
    }
}

/// Watches until the plugin reports a limitation. A stream that breaks
/// (the plugin died) is opened again once the plugin is back; a stream
/// that ends cleanly means no limitation will come.
async fn watch(client: Arc<Client>, id: ContainerId) -> Limitation {
    let mut backoff = Duration::from_millis(250);
    loop {
        let opened = async {
            let mut c = client.ready(None).await?;
            let msg = proto::WatchRequest {
                id: Some(id.clone()),
            };
            // No deadline: a stream's headers may come with its first
            // event only (grpcio sends them lazily).
            c.watch(msg)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| client.fail("watch", s.message()))
        };
        match opened.await {
            Ok(mut stream) => loop {
                backoff = Duration::from_millis(250);
                match stream.message().await {
                    Ok(Some(proto::WatchEvent {
                        limitation: Some(l),
                    })) => return limitation(&client.name, l),
                    Ok(Some(_)) => continue,
                    Ok(None) => return futures::future::pending().await,
                    Err(s) => {
                        tracing::warn!(plugin = %client.name, container = %id, status = %s, "watch stream broke; watching again");
                        client.mark_broken().await;
                        break;
                    }
                }
            },
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "watch could not start; trying again");
                client.mark_broken().await;
            }
        }
        // A plugin that stays away is asked less and less often (one
        // watch per running container retries).
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// The plugin's limitation, its message naming the plugin.
fn limitation(plugin: &str, l: proto::Limitation) -> Limitation {
    let reason = match TerminationReason::try_from(l.reason) {
        Ok(TerminationReason::OomKilled) => TerminationReason::OomKilled,
        _ => TerminationReason::Limitation,
    };
    Limitation {
        reason,
        resource: l.resource,
        message: format!("plugin {plugin}: {}", l.message),
    }
}
