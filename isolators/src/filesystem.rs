//! `filesystem/linux`: the container's own mount namespace, its sandbox,
//! and its root filesystem when the provisioner made one.
//!
//! Without a rootfs the container sees the host's filesystem (read-write,
//! as Mesos's host-filesystem containers do) with a private `/tmp`, and
//! works in its sandbox. With a rootfs the sandbox is bind-mounted at
//! `/mnt/sandbox` inside it.

use crate::{Isolator, IsolatorFuture, PrepareRequest};
use berth_state::{LaunchInfo, Mount, Namespace};

/// Where the sandbox appears inside a container with its own rootfs.
pub const SANDBOX_IN_ROOTFS: &str = "/mnt/sandbox";

/// The `filesystem/linux` isolator.
#[derive(Debug, Default)]
pub struct LinuxFilesystem;

impl Isolator for LinuxFilesystem {
    fn name(&self) -> &str {
        "filesystem/linux"
    }
    fn supports_nesting(&self) -> bool {
        true
    }
    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        let sandbox = req.sandbox_dir.display().to_string();
        let mut info = LaunchInfo {
            clone_namespaces: vec![Namespace::Mount as i32],
            ..Default::default()
        };
        match &req.rootfs {
            None => {
                info.working_dir = sandbox.clone();
                info.env.insert("BERTH_SANDBOX".into(), sandbox);
            }
            Some(rootfs) => {
                info.rootfs = rootfs.display().to_string();
                info.mounts.push(Mount {
                    source: sandbox,
                    target: SANDBOX_IN_ROOTFS.into(),
                    fs_type: String::new(),
                    options: vec!["rbind".into(), "private".into()],
                });
                info.env
                    .insert("BERTH_SANDBOX".into(), SANDBOX_IN_ROOTFS.into());
            }
        }
        Box::pin(async move { Ok(Some(info)) })
    }
}
