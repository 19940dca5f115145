//! ExecSync: a command run in a running CRI container as a DEBUG
//! container nested in it (berth's exec: all the container's namespaces,
//! its security settings), its output collected from pipes the agent
//! holds. The DEBUG container is destroyed at the timeout and removed in
//! every case.

use super::api;
use super::{status, Service};
use berth_launcher::Stdio;
use berth_state::{ContainerClass, ContainerConfig, ContainerState};
use std::os::fd::OwnedFd;
use tokio::io::AsyncReadExt;
use tonic::Status;

/// Output beyond this is dropped (as kubelet's exec probes cap theirs).
const MAX_OUTPUT: usize = 16 << 20;

fn pipe() -> Result<(OwnedFd, OwnedFd), Status> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Status::internal(format!("pipe for an exec: {e}")))
}

async fn drain(fd: OwnedFd) -> Vec<u8> {
    let Ok(mut r) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

impl Service {
    pub(crate) async fn exec_sync(
        &self,
        r: api::ExecSyncRequest,
    ) -> Result<api::ExecSyncResponse, Status> {
        let rec = self.container_of(&r.container_id)?;
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("ExecSync: no command given"));
        }
        let parent = Self::berth_id(&rec);
        let st = self.berth_status(&parent).await;
        if !rec.started || st.as_ref().map(|s| s.state) != Some(ContainerState::Running) {
            return Err(Status::failed_precondition(format!(
                "ExecSync: container {} is not running",
                rec.id
            )));
        }
        let id = parent.child(format!("exec-{:016x}", rand::random::<u64>()));
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let config = ContainerConfig {
            command: r.cmd.clone(),
            container_class: ContainerClass::Debug as i32,
            ..Default::default()
        };
        let stdio = Stdio::Fds {
            stdin: None,
            stdout: out_w,
            stderr: err_w,
        };
        // The launch consumes the write ends: EOF on ours means the
        // command (and whatever it started) closed them.
        if let Err(e) = self.c.launch_with_stdio(id.clone(), config, stdio).await {
            let _ = self.c.destroy(id.clone()).await;
            let _ = self.c.remove(id).await;
            return Err(status(e));
        }
        let c = self.c.clone();
        let id2 = id.clone();
        let run = async move {
            let (stdout, stderr) = tokio::join!(drain(out_r), drain(err_r));
            let t = c.wait(id2).await;
            (stdout, stderr, t)
        };
        let outcome = match r.timeout {
            t if t > 0 => tokio::time::timeout(std::time::Duration::from_secs(t as u64), run)
                .await
                .ok(),
            _ => Some(run.await),
        };
        let Some((stdout, stderr, t)) = outcome else {
            let _ = self.c.destroy(id.clone()).await;
            let _ = self.c.remove(id).await;
            return Err(Status::deadline_exceeded(format!(
                "ExecSync in {}: command {:?} timed out after {} s",
                rec.id, r.cmd, r.timeout
            )));
        };
        let t = t.map_err(status);
        let _ = self.c.remove(id).await;
        let t = t?;
        Ok(api::ExecSyncResponse {
            stdout,
            stderr,
            exit_code: if t.no_exit_status { 128 } else { t.exit_code },
        })
    }
}
