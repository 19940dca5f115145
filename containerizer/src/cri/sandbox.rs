//! Pod sandboxes: RunPodSandbox makes a berth pod (berth's init alone,
//! holding the network, IPC, UTS and pid namespaces the members join) with
//! the CRI's hostname and network; its resolv.conf, hostname and hosts
//! files are written in the CRI server's own directory of the pod and
//! mounted read-only into each member. Stop destroys the pod (its members
//! first); Remove forgets it, its members and their records.

use super::api::{self, NamespaceMode, PodSandboxState};
use super::records::PodRecord;
use super::{new_id, now_nanos, status, store_status, Service};
use crate::ContainerizerError;
use berth_state::{ContainerConfig, ContainerId, ContainerState, Network};
use std::path::Path;
use tonic::Status;

/// The files of a pod's own directory mounted into every member.
pub(crate) const POD_FILES: [(&str, &str); 3] = [
    ("resolv.conf", "/etc/resolv.conf"),
    ("hostname", "/etc/hostname"),
    ("hosts", "/etc/hosts"),
];

pub(crate) fn namespaces(c: &api::PodSandboxConfig) -> api::NamespaceOption {
    c.linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

fn resolv_conf(dns: Option<&api::DnsConfig>) -> String {
    let Some(dns) = dns.filter(|d| !d.servers.is_empty() || !d.searches.is_empty()) else {
        // None asked for: the host's, as containerd does.
        return std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    };
    let mut s = String::new();
    if !dns.searches.is_empty() {
        s.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for n in &dns.servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !dns.options.is_empty() {
        s.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    s
}

/// A CRI hostname as berth takes it (RFC 1123, at most 64 characters).
fn check_hostname(h: &str) -> Result<(), Status> {
    let ok = h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "pod hostname {h:?} is not an RFC 1123 name of at most 64 characters"
        )))
    }
}

fn write_pod_files(
    dir: &Path,
    config: &api::PodSandboxConfig,
    hostname: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("resolv.conf"),
        resolv_conf(config.dns_config.as_ref()),
    )?;
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    std::fs::write(
        dir.join("hosts"),
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        ),
    )
}

impl Service {
    pub(crate) fn pod_state(&self, st: Option<&crate::ContainerStatus>) -> PodSandboxState {
        match st.map(|s| s.state) {
            Some(ContainerState::Running) | Some(ContainerState::Paused) => {
                PodSandboxState::SandboxReady
            }
            _ => PodSandboxState::SandboxNotready,
        }
    }

    pub(crate) async fn berth_status(&self, id: &ContainerId) -> Option<crate::ContainerStatus> {
        self.c.status(id.clone()).await.ok()
    }

    pub(crate) fn pod_of(&self, key: &str) -> Result<PodRecord, Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument(
                "the request names no pod sandbox id",
            ));
        }
        self.store
            .find_pod(key)
            .ok_or_else(|| Status::not_found(format!("pod sandbox {key:?} not found")))
    }

    pub(crate) async fn run_pod(
        &self,
        r: api::RunPodSandboxRequest,
    ) -> Result<api::RunPodSandboxResponse, Status> {
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("RunPodSandbox: no config"))?;
        let meta = config.metadata.clone().unwrap_or_default();
        if meta.name.is_empty() {
            return Err(Status::invalid_argument(
                "RunPodSandbox: the config's metadata has no name",
            ));
        }
        if !r.runtime_handler.is_empty() && r.runtime_handler != "berth" {
            return Err(Status::invalid_argument(format!(
                "RunPodSandbox: unknown runtime handler {:?} (berth serves only \"berth\" or the default)",
                r.runtime_handler
            )));
        }
        let _g = self.changes.lock().await;
        // One pod per name, namespace, uid and attempt, as kubelet expects.
        if let Some(other) = self
            .store
            .pods()
            .into_iter()
            .find(|p| p.config.as_ref().and_then(|c| c.metadata.as_ref()) == Some(&meta))
        {
            return Err(Status::already_exists(format!(
                "pod sandbox {}/{} (uid {:?}, attempt {}) exists already as {}",
                meta.namespace, meta.name, meta.uid, meta.attempt, other.id
            )));
        }
        let hostname = if config.hostname.is_empty() {
            meta.name.chars().take(63).collect::<String>()
        } else {
            config.hostname.clone()
        };
        check_hostname(&hostname)?;
        let ns = namespaces(&config);
        let network = if ns.network == NamespaceMode::Node as i32 {
            Network {
                mode: berth_state::network::Mode::Host as i32,
                ..Default::default()
            }
        } else {
            match &self.opts.network {
                Some(name) => Network {
                    mode: berth_state::network::Mode::Cni as i32,
                    cni_network: name.clone(),
                },
                None => Network {
                    mode: berth_state::network::Mode::None as i32,
                    ..Default::default()
                },
            }
        };
        let id = new_id();
        let dir = self.store.pod_dir(&id);
        {
            let (d, config, hostname) = (dir.clone(), config.clone(), hostname.clone());
            tokio::task::spawn_blocking(move || write_pod_files(&d, &config, &hostname))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| {
                    Status::internal(format!(
                        "pod {id}: writing its files in {}: {e}",
                        dir.display()
                    ))
                })?;
        }
        let port_mappings = config
            .port_mappings
            .iter()
            .map(|m| {
                let protocol = match api::Protocol::try_from(m.protocol) {
                    Ok(api::Protocol::Tcp) => "tcp",
                    Ok(api::Protocol::Udp) => "udp",
                    Ok(api::Protocol::Sctp) => "sctp",
                    Err(_) => {
                        return Err(Status::invalid_argument(format!(
                            "RunPodSandbox: port mapping protocol {} is unknown",
                            m.protocol
                        )))
                    }
                };
                let port_ok = |p: i32| (1..=65535).contains(&p);
                if !port_ok(m.container_port) || (m.host_port != 0 && !port_ok(m.host_port)) {
                    return Err(Status::invalid_argument(format!(
                        "RunPodSandbox: port mapping {}:{} is not within 1-65535",
                        m.host_port, m.container_port
                    )));
                }
                Ok(berth_state::PortMapping {
                    protocol: protocol.into(),
                    container_port: m.container_port,
                    host_port: m.host_port,
                    host_ip: m.host_ip.clone(),
                })
            })
            // A mapping without a host port forwards nothing (kubelet
            // sends them for the record).
            .filter(|m| m.as_ref().map_or(true, |m| m.host_port != 0))
            .collect::<Result<Vec<_>, _>>()?;
        let berth = ContainerConfig {
            pod: true,
            host_ipc: ns.ipc == NamespaceMode::Node as i32,
            host_pid: ns.pid == NamespaceMode::Node as i32,
            port_mappings: if network.mode == berth_state::network::Mode::Cni as i32 {
                port_mappings
            } else {
                // On the host's network (or none) the ports are the
                // host's already (or unreachable).
                Vec::new()
            },
            hostname: if ns.network == NamespaceMode::Node as i32 {
                String::new()
            } else {
                hostname
            },
            network: Some(network),
            labels: [("io.berth.cri.pod".to_string(), meta.name.clone())].into(),
            sysctls: config
                .linux
                .as_ref()
                .map(|l| l.sysctls.clone().into_iter().collect())
                .unwrap_or_default(),
            ..Default::default()
        };
        let record = PodRecord {
            id: id.clone(),
            config: Some(config),
            created_at_unix_nanos: now_nanos(),
            runtime_handler: r.runtime_handler,
        };
        self.store.put_pod(record).await.map_err(store_status)?;
        let bid = ContainerId::new(&id);
        if let Err(e) = self.c.launch(bid.clone(), berth).await {
            // Nothing of a pod that did not start is kept.
            let _ = self.c.destroy(bid.clone()).await;
            let _ = self.c.remove(bid).await;
            let _ = self.store.delete_pod(&id).await;
            return Err(status(e));
        }
        Ok(api::RunPodSandboxResponse { pod_sandbox_id: id })
    }

    pub(crate) async fn stop_pod(&self, key: &str) -> Result<(), Status> {
        let pod = self.pod_of(key)?;
        let _g = self.changes.lock().await;
        let bid = ContainerId::new(&pod.id);
        match self.c.status(bid.clone()).await {
            Ok(s) if s.state != ContainerState::Terminated => {
                // Its members are destroyed first (SIGKILL: the CRI asks
                // for a forced stop of whatever still runs).
                self.c.destroy(bid).await.map_err(status)?;
            }
            Ok(_) | Err(ContainerizerError::UnknownContainer(_)) => {}
            Err(e) => return Err(status(e)),
        }
        for r in self.store.containers() {
            if r.pod_id == pod.id {
                self.logs.finish(&r.id).await;
            }
        }
        Ok(())
    }

    pub(crate) async fn remove_pod(&self, key: &str) -> Result<(), Status> {
        // Idempotent: an unknown pod is already removed.
        let Some(pod) = self.store.find_pod(key) else {
            return Ok(());
        };
        self.stop_pod(&pod.id).await?;
        let _g = self.changes.lock().await;
        match self.c.remove(ContainerId::new(&pod.id)).await {
            Ok(()) | Err(ContainerizerError::UnknownContainer(_)) => {}
            Err(e) => return Err(status(e)),
        }
        for r in self.store.containers() {
            if r.pod_id == pod.id {
                self.logs.forget(&r.id);
                self.store
                    .delete_container(&r.id)
                    .await
                    .map_err(store_status)?;
            }
        }
        self.store.delete_pod(&pod.id).await.map_err(store_status)?;
        Ok(())
    }

    fn pod_ip(st: Option<&crate::ContainerStatus>) -> String {
        st.and_then(|s| s.isolator_fields.get("network.ip").cloned())
            .map(|ip| ip.split('/').next().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    pub(crate) async fn pod_status(
        &self,
        r: api::PodSandboxStatusRequest,
    ) -> Result<api::PodSandboxStatusResponse, Status> {
        let pod = self.pod_of(&r.pod_sandbox_id)?;
        let st = self.berth_status(&ContainerId::new(&pod.id)).await;
        let config = pod.config.clone().unwrap_or_default();
        let ns = namespaces(&config);
        let status = api::PodSandboxStatus {
            id: pod.id.clone(),
            metadata: config.metadata.clone(),
            state: self.pod_state(st.as_ref()) as i32,
            created_at: pod.created_at_unix_nanos,
            network: Some(api::PodSandboxNetworkStatus {
                ip: Self::pod_ip(st.as_ref()),
                additional_ips: vec![],
            }),
            linux: Some(api::LinuxPodSandboxStatus {
                namespaces: Some(api::Namespace { options: Some(ns) }),
            }),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            runtime_handler: pod.runtime_handler.clone(),
        };
        let mut info = std::collections::HashMap::new();
        if r.verbose {
            if let Some(s) = &st {
                let pid = s.init.map(|p| p.pid).unwrap_or(0);
                info.insert(
                    "info".to_string(),
                    serde_json::json!({"pid": pid, "sandbox_dir": s.sandbox_dir}).to_string(),
                );
            }
        }
        Ok(api::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses: vec![],
            timestamp: now_nanos(),
        })
    }

    pub(crate) async fn list_pods(
        &self,
        r: api::ListPodSandboxRequest,
    ) -> Result<api::ListPodSandboxResponse, Status> {
        let f = r.filter.unwrap_or_default();
        let mut items = Vec::new();
        for pod in self.store.pods() {
            if !f.id.is_empty() && !pod.id.starts_with(&f.id) {
                continue;
            }
            let config = pod.config.clone().unwrap_or_default();
            if !super::filter::labels_match(&f.label_selector, &config.labels) {
                continue;
            }
            let st = self.berth_status(&ContainerId::new(&pod.id)).await;
            let state = self.pod_state(st.as_ref());
            if let Some(want) = &f.state {
                if want.state != state as i32 {
                    continue;
                }
            }
            items.push(api::PodSandbox {
                id: pod.id.clone(),
                metadata: config.metadata.clone(),
                state: state as i32,
                created_at: pod.created_at_unix_nanos,
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
                runtime_handler: pod.runtime_handler.clone(),
            });
        }
        Ok(api::ListPodSandboxResponse { items })
    }
}
