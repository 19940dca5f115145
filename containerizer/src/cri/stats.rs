//! ContainerStats, ListContainerStats, PodSandboxStats and
//! ListPodSandboxStats from berth's usage (the containers' cgroups).

use super::api;
use super::records::ContainerRecord;
use super::{now_nanos, status, Service};
use berth_state::{ContainerId, ContainerState, ResourceStatistics};
use tonic::Status;

fn u64v(v: u64) -> Option<api::UInt64Value> {
    Some(api::UInt64Value { value: v })
}

fn cpu(s: &ResourceStatistics, at: i64) -> api::CpuUsage {
    let secs = s.cpus_user_time_secs + s.cpus_system_time_secs;
    api::CpuUsage {
        timestamp: at,
        usage_core_nano_seconds: u64v((secs * 1e9) as u64),
        usage_nano_cores: None,
    }
}

fn memory(s: &ResourceStatistics, at: i64) -> api::MemoryUsage {
    // The working set as cAdvisor counts it: usage less the page cache
    // the kernel can take back.
    let working = s.mem_usage_bytes.saturating_sub(s.mem_cache_bytes);
    api::MemoryUsage {
        timestamp: at,
        working_set_bytes: u64v(working),
        available_bytes: (s.mem_limit_bytes > 0).then(|| api::UInt64Value {
            value: s.mem_limit_bytes.saturating_sub(working),
        }),
        usage_bytes: u64v(s.mem_usage_bytes),
        rss_bytes: u64v(s.mem_rss_bytes),
        page_faults: None,
        major_page_faults: None,
    }
}

impl Service {
    /// The stats of a started, live container; `None` for one created or
    /// ended (it has no cgroup to read).
    async fn stats_of(&self, r: &ContainerRecord) -> Result<Option<api::ContainerStats>, Status> {
        let config = r.config.clone().unwrap_or_default();
        let attributes = Some(api::ContainerAttributes {
            id: r.id.clone(),
            metadata: config.metadata.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        });
        let bid = Self::berth_id(r);
        let live = r.started
            && matches!(
                self.berth_status(&bid).await.map(|s| s.state),
                Some(ContainerState::Running | ContainerState::Paused)
            );
        let at = now_nanos();
        if !live {
            return Ok(Some(api::ContainerStats {
                attributes,
                ..Default::default()
            }));
        }
        let s = match self.c.usage(bid).await {
            Ok(s) => s,
            // Ended in between.
            Err(crate::ContainerizerError::UnknownContainer(_)) => return Ok(None),
            Err(e) => return Err(status(e)),
        };
        Ok(Some(api::ContainerStats {
            attributes,
            cpu: Some(cpu(&s, at)),
            memory: Some(memory(&s, at)),
            writable_layer: Some(api::FilesystemUsage {
                timestamp: at,
                fs_id: Some(api::FilesystemIdentifier {
                    mountpoint: self.images.store().root().display().to_string(),
                }),
                used_bytes: u64v(s.disk_used_bytes),
                inodes_used: u64v(0),
            }),
            swap: None,
        }))
    }

    pub(crate) async fn container_stats(
        &self,
        r: api::ContainerStatsRequest,
    ) -> Result<api::ContainerStatsResponse, Status> {
        let rec = self.container_of(&r.container_id)?;
        Ok(api::ContainerStatsResponse {
            stats: self.stats_of(&rec).await?,
        })
    }

    pub(crate) async fn list_container_stats(
        &self,
        r: api::ListContainerStatsRequest,
    ) -> Result<api::ListContainerStatsResponse, Status> {
        let f = r.filter.unwrap_or_default();
        let mut stats = Vec::new();
        for rec in self.store.containers() {
            if !f.id.is_empty() && !rec.id.starts_with(&f.id) {
                continue;
            }
            if !f.pod_sandbox_id.is_empty() && !rec.pod_id.starts_with(&f.pod_sandbox_id) {
                continue;
            }
            let labels = rec
                .config
                .as_ref()
                .map(|c| c.labels.clone())
                .unwrap_or_default();
            if !super::filter::labels_match(&f.label_selector, &labels) {
                continue;
            }
            if let Some(s) = self.stats_of(&rec).await? {
                stats.push(s);
            }
        }
        Ok(api::ListContainerStatsResponse { stats })
    }

    async fn pod_stats_of(
        &self,
        pod: &super::records::PodRecord,
    ) -> Result<api::PodSandboxStats, Status> {
        let config = pod.config.clone().unwrap_or_default();
        let at = now_nanos();
        let attributes = Some(api::PodSandboxAttributes {
            id: pod.id.clone(),
            metadata: config.metadata.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        });
        let mut containers = Vec::new();
        for rec in self.store.containers() {
            if rec.pod_id == pod.id {
                if let Some(s) = self.stats_of(&rec).await? {
                    containers.push(s);
                }
            }
        }
        // The pod's own cgroup (its init) plus its members'.
        let own = self.c.usage(ContainerId::new(&pod.id)).await.ok();
        let mut total = own.unwrap_or_default();
        for c in &containers {
            let cpu_ns = c
                .cpu
                .as_ref()
                .and_then(|c| c.usage_core_nano_seconds.as_ref())
                .map(|v| v.value)
                .unwrap_or(0);
            total.cpus_user_time_secs += cpu_ns as f64 / 1e9;
            let m = c.memory.as_ref();
            let get = |f: fn(&api::MemoryUsage) -> Option<&api::UInt64Value>| {
                m.and_then(f).map(|v| v.value).unwrap_or(0)
            };
            total.mem_usage_bytes += get(|m| m.usage_bytes.as_ref());
            total.mem_rss_bytes += get(|m| m.rss_bytes.as_ref());
        }
        Ok(api::PodSandboxStats {
            attributes,
            linux: Some(api::LinuxPodSandboxStats {
                cpu: Some(cpu(&total, at)),
                memory: Some(memory(&total, at)),
                network: None,
                process: Some(api::ProcessUsage {
                    timestamp: at,
                    process_count: u64v(own.map(|s| s.processes).unwrap_or(0)),
                }),
                containers,
            }),
            windows: None,
        })
    }

    pub(crate) async fn pod_stats(
        &self,
        r: api::PodSandboxStatsRequest,
    ) -> Result<api::PodSandboxStatsResponse, Status> {
        let pod = self.pod_of(&r.pod_sandbox_id)?;
        Ok(api::PodSandboxStatsResponse {
            stats: Some(self.pod_stats_of(&pod).await?),
        })
    }

    pub(crate) async fn list_pod_stats(
        &self,
        r: api::ListPodSandboxStatsRequest,
    ) -> Result<api::ListPodSandboxStatsResponse, Status> {
        let f = r.filter.unwrap_or_default();
        let mut stats = Vec::new();
        for pod in self.store.pods() {
            if !f.id.is_empty() && !pod.id.starts_with(&f.id) {
                continue;
            }
            let labels = pod
                .config
                .as_ref()
                .map(|c| c.labels.clone())
                .unwrap_or_default();
            if !super::filter::labels_match(&f.label_selector, &labels) {
                continue;
            }
            stats.push(self.pod_stats_of(&pod).await?);
        }
        Ok(api::ListPodSandboxStatsResponse { stats })
    }
}
