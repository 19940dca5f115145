//! `filesystem/linux`: the container's own mount namespace, its sandbox,
//! and its root filesystem when the provisioner made one.
//!
//! Without a rootfs the container sees the host's filesystem read-only
//! (recursively; `host_rootfs_rw` opts in to Mesos's writable host root)
//! with a private `/tmp`, and works in its sandbox, which stays writable;
//! berth's own state, runtime dir and binaries are hidden from it. With a
//! rootfs the sandbox is bind-mounted at `/mnt/sandbox` inside it, and
//! `read_only_rootfs` makes the rootfs read-only.

use crate::{Isolator, IsolatorFuture, PrepareRequest};
use berth_state::{LaunchInfo, Mount, Namespace};

/// Where the sandbox appears inside a container with its own rootfs.
pub const SANDBOX_IN_ROOTFS: &str = "/mnt/sandbox";

/// The `filesystem/linux` isolator.
///
/// ```
/// use berth_isolators::filesystem::LinuxFilesystem;
/// // Hide berth's state and runtime dirs from host-filesystem containers.
/// let fs = LinuxFilesystem::hiding(vec!["/var/lib/berth".into(), "/run/berth".into()]);
/// # let _ = fs;
/// ```
#[derive(Debug, Default)]
pub struct LinuxFilesystem {
    hidden: Vec<String>,
}

impl LinuxFilesystem {
    /// An isolator that hides these host paths (directories or files) from
    /// containers on the host filesystem: berth's root, runtime dir and
    /// binaries, so a container can neither read nor replace them.
    pub fn hiding(hidden: Vec<std::path::PathBuf>) -> Self {
        LinuxFilesystem {
            hidden: hidden
                .into_iter()
                .map(|p| p.display().to_string())
                .collect(),
        }
    }
}

impl Isolator for LinuxFilesystem {
    fn name(&self) -> &str {
        "filesystem/linux"
    }

    fn watches(&self) -> bool {
        false
    }

    fn isolates(&self) -> bool {
        false
    }

    fn supports_nesting(&self) -> bool {
        true
    }
    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        // A DEBUG container enters its parent's mount namespace as it is.
        if req.config.container_class == berth_state::ContainerClass::Debug as i32 {
            return Box::pin(async { Ok(None) });
        }
        let sandbox = req.sandbox_dir.display().to_string();
        let mut info = LaunchInfo {
            clone_namespaces: vec![Namespace::Mount as i32],
            masked_paths: req.config.masked_paths.clone(),
            readonly_paths: req.config.readonly_paths.clone(),
            ..Default::default()
        };
        match &req.rootfs {
            None => {
                info.working_dir = sandbox.clone();
                info.env.insert("BERTH_SANDBOX".into(), sandbox);
                info.readonly_root = !req.config.host_rootfs_rw;
                info.hidden_paths = self.hidden.clone();
            }
            Some(rootfs) => {
                info.readonly_root = req.config.read_only_rootfs;
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
