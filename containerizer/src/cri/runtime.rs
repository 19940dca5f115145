//! The CRI RuntimeService: each call goes to its area's file; the calls
//! about the runtime itself (Version, Status, RuntimeConfig, …) are here;
//! the streaming calls (Exec, Attach, PortForward) answer with a URL of
//! the streaming server (streaming.rs).

use super::api::{self, runtime_service_server::RuntimeService};
use super::Service;
use futures::Stream;
use std::pin::Pin;
use tonic::{Request, Response, Status};

/// The CRI version this server speaks.
const CRI_VERSION: &str = "v1";

type Events = Pin<Box<dyn Stream<Item = Result<api::ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for Service {
    async fn version(
        &self,
        _: Request<api::VersionRequest>,
    ) -> Result<Response<api::VersionResponse>, Status> {
        Ok(Response::new(api::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "berth".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<api::RunPodSandboxRequest>,
    ) -> Result<Response<api::RunPodSandboxResponse>, Status> {
        Ok(Response::new(self.run_pod(r.into_inner()).await?))
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<api::StopPodSandboxRequest>,
    ) -> Result<Response<api::StopPodSandboxResponse>, Status> {
        self.stop_pod(&r.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(api::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<api::RemovePodSandboxRequest>,
    ) -> Result<Response<api::RemovePodSandboxResponse>, Status> {
        self.remove_pod(&r.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(api::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<api::PodSandboxStatusRequest>,
    ) -> Result<Response<api::PodSandboxStatusResponse>, Status> {
        Ok(Response::new(self.pod_status(r.into_inner()).await?))
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<api::ListPodSandboxRequest>,
    ) -> Result<Response<api::ListPodSandboxResponse>, Status> {
        Ok(Response::new(self.list_pods(r.into_inner()).await?))
    }

    async fn create_container(
        &self,
        r: Request<api::CreateContainerRequest>,
    ) -> Result<Response<api::CreateContainerResponse>, Status> {
        Ok(Response::new(
            Service::create_container(self, r.into_inner()).await?,
        ))
    }

    async fn start_container(
        &self,
        r: Request<api::StartContainerRequest>,
    ) -> Result<Response<api::StartContainerResponse>, Status> {
        Service::start_container(self, &r.into_inner().container_id).await?;
        Ok(Response::new(api::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        r: Request<api::StopContainerRequest>,
    ) -> Result<Response<api::StopContainerResponse>, Status> {
        let r = r.into_inner();
        Service::stop_container(self, &r.container_id, r.timeout).await?;
        Ok(Response::new(api::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        r: Request<api::RemoveContainerRequest>,
    ) -> Result<Response<api::RemoveContainerResponse>, Status> {
        Service::remove_container(self, &r.into_inner().container_id).await?;
        Ok(Response::new(api::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        r: Request<api::ListContainersRequest>,
    ) -> Result<Response<api::ListContainersResponse>, Status> {
        Ok(Response::new(
            Service::list_containers(self, r.into_inner()).await?,
        ))
    }

    async fn container_status(
        &self,
        r: Request<api::ContainerStatusRequest>,
    ) -> Result<Response<api::ContainerStatusResponse>, Status> {
        let r = r.into_inner();
        let resp = self.container_status_call(r).await?;
        // An ended container's log is complete before its status says so
        // (kubelet and critest read it once they see the exit).
        if let Some(s) = &resp.status {
            if s.state == api::ContainerState::ContainerExited as i32 {
                self.logs.finish(&s.id).await;
            }
        }
        Ok(Response::new(resp))
    }

    async fn update_container_resources(
        &self,
        r: Request<api::UpdateContainerResourcesRequest>,
    ) -> Result<Response<api::UpdateContainerResourcesResponse>, Status> {
        self.update_resources(r.into_inner()).await?;
        Ok(Response::new(api::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        r: Request<api::ReopenContainerLogRequest>,
    ) -> Result<Response<api::ReopenContainerLogResponse>, Status> {
        let rec = self.container_of(&r.into_inner().container_id)?;
        if !rec.log_path.is_empty() {
            // The new file exists when the call answers; the relay
            // writes on into it.
            super::logs::create_dest(&rec.log_path).await?;
        }
        if !self.logs.reopen(&rec.id) {
            return Err(Status::failed_precondition(format!(
                "ReopenContainerLog: container {} is not running (or has no log path)",
                rec.id
            )));
        }
        Ok(Response::new(api::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        r: Request<api::ExecSyncRequest>,
    ) -> Result<Response<api::ExecSyncResponse>, Status> {
        Ok(Response::new(
            Service::exec_sync(self, r.into_inner()).await?,
        ))
    }

    async fn exec(
        &self,
        r: Request<api::ExecRequest>,
    ) -> Result<Response<api::ExecResponse>, Status> {
        Ok(Response::new(
            Service::exec_url(self, r.into_inner()).await?,
        ))
    }

    async fn attach(
        &self,
        r: Request<api::AttachRequest>,
    ) -> Result<Response<api::AttachResponse>, Status> {
        Ok(Response::new(
            Service::attach_url(self, r.into_inner()).await?,
        ))
    }

    async fn port_forward(
        &self,
        r: Request<api::PortForwardRequest>,
    ) -> Result<Response<api::PortForwardResponse>, Status> {
        Ok(Response::new(
            Service::port_forward_url(self, r.into_inner()).await?,
        ))
    }

    async fn container_stats(
        &self,
        r: Request<api::ContainerStatsRequest>,
    ) -> Result<Response<api::ContainerStatsResponse>, Status> {
        Ok(Response::new(
            Service::container_stats(self, r.into_inner()).await?,
        ))
    }

    async fn list_container_stats(
        &self,
        r: Request<api::ListContainerStatsRequest>,
    ) -> Result<Response<api::ListContainerStatsResponse>, Status> {
        Ok(Response::new(
            Service::list_container_stats(self, r.into_inner()).await?,
        ))
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<api::PodSandboxStatsRequest>,
    ) -> Result<Response<api::PodSandboxStatsResponse>, Status> {
        Ok(Response::new(self.pod_stats(r.into_inner()).await?))
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<api::ListPodSandboxStatsRequest>,
    ) -> Result<Response<api::ListPodSandboxStatsResponse>, Status> {
        Ok(Response::new(self.list_pod_stats(r.into_inner()).await?))
    }

    async fn update_runtime_config(
        &self,
        _: Request<api::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<api::UpdateRuntimeConfigResponse>, Status> {
        // The pod CIDR kubelet hands down is the CNI config's to use.
        Ok(Response::new(api::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        _: Request<api::StatusRequest>,
    ) -> Result<Response<api::StatusResponse>, Status> {
        let network_ready = self.opts.network.is_some();
        let conditions = vec![
            api::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            api::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: network_ready,
                reason: if network_ready {
                    String::new()
                } else {
                    "NoCNINetwork".into()
                },
                message: if network_ready {
                    String::new()
                } else {
                    "the agent names no CNI network for pods (--cri-network)".into()
                },
            },
        ];
        Ok(Response::new(api::StatusResponse {
            status: Some(api::RuntimeStatus { conditions }),
            info: Default::default(),
        }))
    }

    async fn checkpoint_container(
        &self,
        _: Request<api::CheckpointContainerRequest>,
    ) -> Result<Response<api::CheckpointContainerResponse>, Status> {
        Err(Status::unimplemented(
            "CheckpointContainer: not supported by berth's CRI server",
        ))
    }

    type GetContainerEventsStream = Events;

    async fn get_container_events(
        &self,
        _: Request<api::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(Status::unimplemented(
            "GetContainerEvents: not supported by berth's CRI server (kubelet polls instead)",
        ))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<api::ListMetricDescriptorsRequest>,
    ) -> Result<Response<api::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(api::ListMetricDescriptorsResponse {
            descriptors: vec![],
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<api::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<api::ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(api::ListPodSandboxMetricsResponse {
            pod_metrics: vec![],
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<api::RuntimeConfigRequest>,
    ) -> Result<Response<api::RuntimeConfigResponse>, Status> {
        Ok(Response::new(api::RuntimeConfigResponse {
            linux: Some(api::LinuxRuntimeConfiguration {
                cgroup_driver: api::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}
