//! CRI containers: nested berth containers of their pod (`POD/ID`).
//! CreateContainer checks the pod and the image and makes (and keeps) the
//! berth config, StartContainer launches it, Stop stops it with the grace
//! asked for, Remove forgets it; their state, times and exit are berth's.

use super::api::{self, ContainerState as CriState, NamespaceMode};
use super::records::ContainerRecord;
use super::sandbox::{namespaces, POD_FILES};
use super::{new_id, now_nanos, status, store_status, Service};
use crate::ContainerizerError;
use berth_state::{
    volume, ContainerConfig, ContainerId, ContainerState, Resources, TerminationReason, Volume,
};
use std::collections::HashMap;
use tonic::Status;

/// Berth's resources for the CRI's.
pub(crate) fn resources(r: &api::LinuxContainerResources) -> Resources {
    Resources {
        cpus: if r.cpu_shares > 0 {
            r.cpu_shares as f64 / 1024.0
        } else {
            0.0
        },
        cpu_limit: if r.cpu_quota > 0 && r.cpu_period > 0 {
            r.cpu_quota as f64 / r.cpu_period as f64
        } else {
            0.0
        },
        memory_bytes: r.memory_limit_in_bytes.max(0) as u64,
        ..Default::default()
    }
}

impl Service {
    pub(crate) fn container_of(&self, key: &str) -> Result<ContainerRecord, Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument(
                "the request names no container id",
            ));
        }
        self.store
            .find_container(key)
            .ok_or_else(|| Status::not_found(format!("container {key:?} not found")))
    }

    pub(crate) fn berth_id(r: &ContainerRecord) -> ContainerId {
        ContainerId::new(&r.pod_id).child(&r.id)
    }

    pub(crate) async fn create_container(
        &self,
        r: api::CreateContainerRequest,
    ) -> Result<api::CreateContainerResponse, Status> {
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("CreateContainer: no config"))?;
        let meta = config.metadata.clone().unwrap_or_default();
        if meta.name.is_empty() {
            return Err(Status::invalid_argument(
                "CreateContainer: the config's metadata has no name",
            ));
        }
        let pod = self.pod_of(&r.pod_sandbox_id)?;
        let _g = self.changes.lock().await;
        let pod_st = self.berth_status(&ContainerId::new(&pod.id)).await;
        if self.pod_state(pod_st.as_ref()) != api::PodSandboxState::SandboxReady {
            return Err(Status::failed_precondition(format!(
                "CreateContainer: pod sandbox {} is not ready",
                pod.id
            )));
        }
        if let Some(other) = self.store.containers().into_iter().find(|c| {
            c.pod_id == pod.id && c.config.as_ref().and_then(|c| c.metadata.as_ref()) == Some(&meta)
        }) {
            return Err(Status::already_exists(format!(
                "CreateContainer: pod {} has a container {:?} attempt {} already ({})",
                pod.id, meta.name, meta.attempt, other.id
            )));
        }
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_ref.is_empty() {
            return Err(Status::invalid_argument("CreateContainer: no image"));
        }
        let image = self.resolve_image(&image_ref).await?.ok_or_else(|| {
            Status::not_found(format!(
                "CreateContainer: image {image_ref:?} is not in the store (pull it first)"
            ))
        })?;
        let pod_config = pod.config.clone().unwrap_or_default();
        let ns = namespaces(&pod_config);
        let linux = config.linux.clone().unwrap_or_default();
        let sc = linux.security_context.as_ref();
        let mut berth = ContainerConfig {
            image: image.manifest.clone(),
            env: config
                .envs
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect(),
            working_dir: config.working_dir.clone(),
            tty: config.tty,
            stdin_open: config.stdin,
            log_format: "cri".into(),
            // The supervisor's file is copied to the CRI log path, which
            // kubelet rotates (ReopenContainerLog); it is never rotated.
            log_max_bytes: u64::MAX,
            log_max_files: 1,
            // In a pod on the host's pid namespace (NODE) a member joins
            // the pod's, which is the host's.
            share_pid_namespace: ns.pid == NamespaceMode::Pod as i32
                || ns.pid == NamespaceMode::Node as i32,
            resources: linux.resources.as_ref().map(resources),
            labels: [("io.berth.cri.container".to_string(), meta.name.clone())].into(),
            ..Default::default()
        };
        // The CRI's rule is Docker's: command replaces the entrypoint
        // (and the image's cmd), args the cmd.
        if !config.command.is_empty() {
            berth.entrypoint = config.command.clone();
        }
        berth.command = config.args.clone();
        super::security::apply(sc, &mut berth)?;
        for m in &config.mounts {
            if !m.container_path.starts_with('/') {
                return Err(Status::invalid_argument(format!(
                    "CreateContainer: mount {:?}: the container path must be absolute",
                    m.container_path
                )));
            }
            berth.volumes.push(Volume {
                host_path: m.host_path.clone(),
                container_path: m.container_path.clone(),
                mode: if m.readonly {
                    volume::Mode::Ro as i32
                } else {
                    volume::Mode::Rw as i32
                },
                propagation: match api::MountPropagation::try_from(m.propagation) {
                    Ok(api::MountPropagation::PropagationPrivate) => {
                        volume::Propagation::Private as i32
                    }
                    Ok(api::MountPropagation::PropagationHostToContainer) => {
                        volume::Propagation::Rslave as i32
                    }
                    Ok(api::MountPropagation::PropagationBidirectional) => {
                        volume::Propagation::Rshared as i32
                    }
                    Err(_) => {
                        return Err(Status::invalid_argument(format!(
                            "CreateContainer: mount {:?}: propagation {} is unknown",
                            m.container_path, m.propagation
                        )))
                    }
                },
            });
        }
        let dir = self.store.pod_dir(&pod.id);
        for (file, target) in POD_FILES {
            // The CRI's own mounts win (kubelet mounts /etc/hosts itself).
            if berth.volumes.iter().any(|v| v.container_path == target) {
                continue;
            }
            // A pod on the host's network keeps the host's names.
            if ns.network == NamespaceMode::Node as i32 && file != "resolv.conf" {
                continue;
            }
            berth.volumes.push(Volume {
                host_path: dir.join(file).display().to_string(),
                container_path: target.into(),
                mode: volume::Mode::Ro as i32,
                ..Default::default()
            });
        }
        let log_path = match (pod_config.log_directory.as_str(), config.log_path.as_str()) {
            (_, "") | ("", _) => String::new(),
            (d, p) => std::path::Path::new(d).join(p).display().to_string(),
        };
        let id = new_id();
        let record = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            config: Some(config),
            created_at_unix_nanos: now_nanos(),
            image_id: image.manifest.clone(),
            image_ref,
            launch: Some(berth),
            started: false,
            log_path,
        };
        self.store
            .put_container(record)
            .await
            .map_err(store_status)?;
        Ok(api::CreateContainerResponse { container_id: id })
    }

    pub(crate) async fn start_container(&self, key: &str) -> Result<(), Status> {
        let mut r = self.container_of(key)?;
        if r.started {
            return Err(Status::failed_precondition(format!(
                "StartContainer: container {} was started already",
                r.id
            )));
        }
        let config = r.launch.clone().unwrap_or_default();
        if !r.log_path.is_empty() {
            super::logs::create_dest(&r.log_path).await?;
        }
        r.started = true;
        self.store
            .put_container(r.clone())
            .await
            .map_err(store_status)?;
        let bid = Self::berth_id(&r);
        if let Err(e) = self.c.launch(bid.clone(), config).await {
            if self.c.status(bid).await.is_err() {
                // Refused at admission: nothing ran, it is still created.
                r.started = false;
                self.store.put_container(r).await.map_err(store_status)?;
            }
            return Err(status(e));
        }
        if !r.log_path.is_empty() {
            self.start_log(&r, false);
        }
        Ok(())
    }

    pub(crate) async fn stop_container(&self, key: &str, timeout_s: i64) -> Result<(), Status> {
        let r = self.container_of(key)?;
        if !r.started {
            return Ok(());
        }
        let bid = Self::berth_id(&r);
        match self.c.status(bid.clone()).await {
            Ok(s) if s.state != ContainerState::Terminated => {
                let grace = std::time::Duration::from_secs(timeout_s.max(0) as u64);
                match self.c.stop(bid, grace).await {
                    Ok(_) | Err(ContainerizerError::UnknownContainer(_)) => {}
                    Err(e) => return Err(status(e)),
                }
            }
            Ok(_) | Err(ContainerizerError::UnknownContainer(_)) => {}
            Err(e) => return Err(status(e)),
        }
        self.logs.finish(&r.id).await;
        Ok(())
    }

    pub(crate) async fn remove_container(&self, key: &str) -> Result<(), Status> {
        // Idempotent: an unknown container is already removed.
        let Some(r) = self.store.find_container(key) else {
            return Ok(());
        };
        let _g = self.changes.lock().await;
        let bid = Self::berth_id(&r);
        match self.c.status(bid.clone()).await {
            Ok(s) => {
                if s.state != ContainerState::Terminated {
                    self.c.destroy(bid.clone()).await.map_err(status)?;
                }
                match self.c.remove(bid).await {
                    Ok(()) | Err(ContainerizerError::UnknownContainer(_)) => {}
                    Err(e) => return Err(status(e)),
                }
            }
            Err(ContainerizerError::UnknownContainer(_)) => {}
            Err(e) => return Err(status(e)),
        }
        self.logs.finish(&r.id).await;
        self.logs.forget(&r.id);
        self.store
            .delete_container(&r.id)
            .await
            .map_err(store_status)?;
        Ok(())
    }

    /// The CRI state of `r` given its berth status.
    pub(crate) fn container_state(
        r: &ContainerRecord,
        st: Option<&crate::ContainerStatus>,
    ) -> CriState {
        if !r.started {
            return CriState::ContainerCreated;
        }
        match st.map(|s| s.state) {
            None => CriState::ContainerUnknown,
            Some(ContainerState::Terminated) => CriState::ContainerExited,
            Some(ContainerState::Running)
            | Some(ContainerState::Paused)
            | Some(ContainerState::Destroying) => CriState::ContainerRunning,
            Some(_) => CriState::ContainerCreated,
        }
    }

    pub(crate) async fn container_status(
        &self,
        r: &ContainerRecord,
    ) -> (api::ContainerStatus, Option<crate::ContainerStatus>) {
        let st = match r.started {
            true => self.berth_status(&Self::berth_id(r)).await,
            false => None,
        };
        let config = r.config.clone().unwrap_or_default();
        let state = Self::container_state(r, st.as_ref());
        let started_at = st
            .as_ref()
            .and_then(|s| {
                s.transitions
                    .iter()
                    .find(|t| t.state == ContainerState::Running as i32)
                    .map(|t| t.at_unix_nanos)
            })
            .unwrap_or(0);
        let t = st.as_ref().and_then(|s| s.termination.clone());
        let (exit_code, finished_at, reason, message) = match (&t, state) {
            (Some(t), CriState::ContainerExited) => {
                let reason = match t.reason() {
                    TerminationReason::OomKilled => "OOMKilled",
                    _ if t.exit_code == 0 && !t.no_exit_status => "Completed",
                    _ => "Error",
                };
                // A command that never started has no exit code; the CRI
                // wants one: 128 as berth's START_ERROR.
                let code = if t.no_exit_status { 128 } else { t.exit_code };
                (code, t.finished_at_unix_nanos, reason, t.message.clone())
            }
            _ => (0, 0, "", String::new()),
        };
        let status = api::ContainerStatus {
            id: r.id.clone(),
            metadata: config.metadata.clone(),
            state: state as i32,
            created_at: r.created_at_unix_nanos,
            started_at,
            finished_at,
            exit_code,
            image: config.image.clone(),
            image_ref: r.image_id.clone(),
            reason: reason.into(),
            message,
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            mounts: config.mounts.clone(),
            log_path: r.log_path.clone(),
            resources: config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|linux| api::ContainerResources {
                    linux: Some(linux),
                    windows: None,
                }),
        };
        (status, st)
    }

    pub(crate) async fn container_status_call(
        &self,
        r: api::ContainerStatusRequest,
    ) -> Result<api::ContainerStatusResponse, Status> {
        let rec = self.container_of(&r.container_id)?;
        let (status, st) = self.container_status(&rec).await;
        let mut info = HashMap::new();
        if r.verbose {
            let pid = st
                .as_ref()
                .filter(|s| s.state != ContainerState::Terminated)
                .and_then(|s| s.init.map(|p| p.pid))
                .unwrap_or(0);
            info.insert(
                "info".to_string(),
                serde_json::json!({
                    "pid": pid,
                    "sandboxID": rec.pod_id,
                    "sandbox_dir": st.as_ref().map(|s| s.sandbox_dir.display().to_string()),
                })
                .to_string(),
            );
        }
        Ok(api::ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }

    pub(crate) async fn list_containers(
        &self,
        r: api::ListContainersRequest,
    ) -> Result<api::ListContainersResponse, Status> {
        let f = r.filter.unwrap_or_default();
        let mut containers = Vec::new();
        for rec in self.store.containers() {
            if !f.id.is_empty() && !rec.id.starts_with(&f.id) {
                continue;
            }
            if !f.pod_sandbox_id.is_empty() && !rec.pod_id.starts_with(&f.pod_sandbox_id) {
                continue;
            }
            let config = rec.config.clone().unwrap_or_default();
            if !super::filter::labels_match(&f.label_selector, &config.labels) {
                continue;
            }
            let st = match rec.started {
                true => self.berth_status(&Self::berth_id(&rec)).await,
                false => None,
            };
            let state = Self::container_state(&rec, st.as_ref());
            if let Some(want) = &f.state {
                if want.state != state as i32 {
                    continue;
                }
            }
            containers.push(api::Container {
                id: rec.id.clone(),
                pod_sandbox_id: rec.pod_id.clone(),
                metadata: config.metadata.clone(),
                image: config.image.clone(),
                image_ref: rec.image_id.clone(),
                state: state as i32,
                created_at: rec.created_at_unix_nanos,
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
            });
        }
        Ok(api::ListContainersResponse { containers })
    }

    pub(crate) async fn update_resources(
        &self,
        r: api::UpdateContainerResourcesRequest,
    ) -> Result<(), Status> {
        let mut rec = self.container_of(&r.container_id)?;
        let Some(linux) = r.linux else {
            return Ok(());
        };
        let res = resources(&linux);
        if rec.started {
            self.c
                .update(Self::berth_id(&rec), res)
                .await
                .map_err(status)?;
        }
        // Kept, so a later start and ContainerStatus see them.
        if let Some(l) = rec.launch.as_mut() {
            l.resources = Some(res);
        }
        if let Some(c) = rec.config.as_mut() {
            c.linux.get_or_insert_with(Default::default).resources = Some(linux);
        }
        self.store.put_container(rec).await.map_err(store_status)
    }
}
