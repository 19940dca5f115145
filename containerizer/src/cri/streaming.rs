//! Exec, Attach and PortForward: each checks what it names (a running
//! container, a ready pod) and the streams asked for, then answers with a
//! one-use URL of berth's streaming server (crate::streaming), where
//! kubelet's client (SPDY, remotecommand / portforward) does the rest.

use super::api;
use super::Service;
use crate::streaming::{AttachStream, ExecStream, PortForwardStream};
use berth_state::{ContainerId, ContainerState};
use tonic::Status;

/// The stream choices kubelet's clients may make (as containerd checks
/// them): at least one stream, and no stderr with a terminal (a terminal
/// has one output).
fn check_streams(
    call: &str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<(), Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument(format!(
            "{call}: one of stdin, stdout or stderr must be asked for"
        )));
    }
    if tty && stderr {
        return Err(Status::invalid_argument(format!(
            "{call}: tty and stderr cannot both be true (a terminal has one output)"
        )));
    }
    Ok(())
}

impl Service {
    /// The berth id of CRI container `key`, which must be running.
    async fn running_container(&self, call: &str, key: &str) -> Result<ContainerId, Status> {
        let rec = self.container_of(key)?;
        let id = Self::berth_id(&rec);
        let st = self.berth_status(&id).await;
        if !rec.started || st.map(|s| s.state) != Some(ContainerState::Running) {
            return Err(Status::failed_precondition(format!(
                "{call}: container {} is not running",
                rec.id
            )));
        }
        Ok(id)
    }

    pub(crate) async fn exec_url(&self, r: api::ExecRequest) -> Result<api::ExecResponse, Status> {
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("Exec: no command given"));
        }
        check_streams("Exec", r.stdin, r.stdout, r.stderr, r.tty)?;
        let container = self.running_container("Exec", &r.container_id).await?;
        let url = self.streaming.exec_url(ExecStream {
            container,
            cmd: r.cmd,
            tty: r.tty,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
        });
        Ok(api::ExecResponse { url })
    }

    pub(crate) async fn attach_url(
        &self,
        r: api::AttachRequest,
    ) -> Result<api::AttachResponse, Status> {
        check_streams("Attach", r.stdin, r.stdout, r.stderr, r.tty)?;
        let container = self.running_container("Attach", &r.container_id).await?;
        let url = self.streaming.attach_url(AttachStream {
            container,
            tty: r.tty,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
        });
        Ok(api::AttachResponse { url })
    }

    pub(crate) async fn port_forward_url(
        &self,
        r: api::PortForwardRequest,
    ) -> Result<api::PortForwardResponse, Status> {
        let pod = self.pod_of(&r.pod_sandbox_id)?;
        if let Some(bad) = r.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Status::invalid_argument(format!(
                "PortForward: port {bad} is not a TCP port (1-65535)"
            )));
        }
        let id = ContainerId::new(&pod.id);
        if self.berth_status(&id).await.map(|s| s.state) != Some(ContainerState::Running) {
            return Err(Status::failed_precondition(format!(
                "PortForward: pod sandbox {} is not ready",
                pod.id
            )));
        }
        let url = self.streaming.port_forward_url(PortForwardStream {
            pod: id,
            ports: r.port,
        });
        Ok(api::PortForwardResponse { url })
    }
}
