//! `berth checkpoint` and `berth restore`: a running container's processes
//! dumped by CRIU into an image dir, with its rootfs changes and berth's
//! manifest beside them, and a new container made from that dir (not to
//! be confused with `checkpoint.rs`, the sled record writer).
//!
//! Checkpoint: RUNNING → CHECKPOINTING (durable) → the launcher freezes the
//! container, the overlay upper dir is tarred, CRIU dumps
//! ([`berth_launcher::criu`]) → the manifest is written → RUNNING again
//! (`--leave-running`, thawed) or destroyed (still frozen, so nothing runs
//! past the dump). A failure thaws and returns to RUNNING.
//!
//! Restore: the manifest's config is admitted as a new container and
//! launched as any other (its record, sandbox, isolators, cgroups with the
//! new limits, network namespace), with two differences: the saved rootfs
//! changes are unpacked into its fresh upper dir after provisioning, and
//! its supervisor has CRIU restore the init instead of forking one.

use crate::actor::{Container, ContainerizerActor};
use crate::error::{stage, state_name};
use crate::termination::Cause;
use crate::ContainerizerError;
use actix::prelude::*;
use berth_launcher::criu::{self, DumpSpec};
use berth_launcher::{RestoreSpec, Stdio};
use berth_state::{ContainerId, ContainerState, CriuCheckpoint, LaunchInfo};
use prost::Message as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Checkpoints a running container into `image_dir`.
#[derive(Message)]
#[rtype(result = "Result<Checkpointed, ContainerizerError>")]
pub struct Checkpoint {
    pub id: ContainerId,
    pub image_dir: PathBuf,
    pub leave_running: bool,
}

/// What a checkpoint did.
#[derive(Debug, Clone)]
pub struct Checkpointed {
    pub image_dir: PathBuf,
    /// How long the container was frozen (rootfs saved, processes dumped).
    pub frozen: Duration,
}

/// Launches container `id` from a checkpoint's image dir (whose manifest
/// the caller read: [`read_manifest`]).
#[derive(Message)]
#[rtype(result = "Result<(), ContainerizerError>")]
pub struct Restore {
    pub id: ContainerId,
    pub image_dir: PathBuf,
    pub manifest: CriuCheckpoint,
}

/// What a restoring container's launch needs beyond a normal one.
#[derive(Debug, Clone)]
pub(crate) struct RestorePlan {
    pub image_dir: PathBuf,
    pub manifest: CriuCheckpoint,
    pub criu: PathBuf,
}

impl RestorePlan {
    /// The saved rootfs changes, if the checkpoint has them.
    pub fn rootfs_tar(&self) -> Option<PathBuf> {
        Some(&self.manifest.rootfs_tar)
            .filter(|t| !t.is_empty())
            .map(|t| self.image_dir.join(t))
    }

    /// The launcher's part, once the new container's rootfs and launch
    /// info are known.
    pub fn spec(
        &self,
        id: &ContainerId,
        rootfs: &str,
        info: &LaunchInfo,
    ) -> Result<RestoreSpec, ContainerizerError> {
        let args = criu::restore_args(
            Path::new(rootfs),
            &self.manifest.external_mounts,
            &bind_mounts(info),
        )
        .map_err(|why| ContainerizerError::InvalidConfig {
            id: id.to_string(),
            why,
        })?;
        Ok(RestoreSpec {
            criu: self.criu.clone(),
            image_dir: self.image_dir.clone(),
            args,
            stdio: self.manifest.stdio.clone(),
        })
    }
}

/// The launch info's bind mounts as (container path, host source): a
/// relative target lies in the sandbox, bound at `/mnt/sandbox` in an
/// image's rootfs.
fn bind_mounts(info: &LaunchInfo) -> Vec<(String, String)> {
    info.mounts
        .iter()
        .filter(|m| m.fs_type.is_empty() || m.fs_type == "bind")
        .map(|m| {
            let target = match m.target.starts_with('/') {
                true => m.target.clone(),
                false => Path::new(berth_isolators::filesystem::SANDBOX_IN_ROOTFS)
                    .join(&m.target)
                    .display()
                    .to_string(),
            };
            (target, m.source.clone())
        })
        .collect()
}

/// Reads a checkpoint's manifest (blocking).
pub fn read_manifest(image_dir: &Path) -> Result<CriuCheckpoint, String> {
    let p = image_dir.join(criu::MANIFEST);
    let bytes = std::fs::read(&p).map_err(|e| {
        format!(
            "{}: {e} (not an image dir of `berth checkpoint`?)",
            p.display()
        )
    })?;
    CriuCheckpoint::decode(bytes.as_slice()).map_err(|e| format!("{}: {e}", p.display()))
}

/// The overlay upper dir of a container's `rootfs` (`<dir>/rootfs` beside
/// `<dir>/upper`, the provisioner's overlay layout).
fn upper_of(rootfs: &Path) -> Option<PathBuf> {
    let upper = rootfs.parent()?.join("upper");
    // Not followed: the provisioner's dir, not the container's.
    std::fs::symlink_metadata(&upper)
        .ok()
        .filter(|m| m.is_dir())
        .map(|_| upper)
}

/// tar with overlay's whiteouts and opaque dirs (`trusted.overlay.*`)
/// kept, owners by number; never follows a symlink of the tree.
fn tar(args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = std::process::Command::new("tar")
        .args([
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=trusted.*",
            "--xattrs-include=user.*",
            "--xattrs-include=security.capability",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("run tar: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "tar failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Saves the upper dir into `tar_path` (the container is frozen: nothing
/// changes it meanwhile; `--one-file-system`, links archived as links).
fn save_upper(upper: &Path, tar_path: &Path) -> Result<(), String> {
    tar(&[
        "--create".as_ref(),
        "--one-file-system".as_ref(),
        "--file".as_ref(),
        tar_path.as_os_str(),
        "--directory".as_ref(),
        upper.as_os_str(),
        ".".as_ref(),
    ])
}

/// Unpacks a checkpoint's rootfs changes into the upper dir of the new
/// container's freshly mounted `rootfs` (no process of it exists yet).
/// GNU tar refuses members with `..` and defers links that point out of
/// the tree until the end, so the archive cannot write outside the dir.
pub(crate) async fn unpack_rootfs(
    id: &ContainerId,
    tar_path: PathBuf,
    rootfs: &Path,
) -> Result<(), ContainerizerError> {
    let rootfs = rootfs.to_path_buf();
    let id2 = id.clone();
    tokio::task::spawn_blocking(move || {
        let upper = upper_of(&rootfs).ok_or_else(|| {
            format!(
                "{} has no overlay upper dir beside it: only the overlay rootfs backend restores",
                rootfs.display()
            )
        })?;
        tar(&[
            "--extract".as_ref(),
            "--same-permissions".as_ref(),
            "--same-owner".as_ref(),
            "--file".as_ref(),
            tar_path.as_os_str(),
            "--directory".as_ref(),
            upper.as_os_str(),
        ])
    })
    .await
    .map_err(|e| stage(&id2, "restore the rootfs changes", e))?
    .map_err(|e| stage(&id2, "restore the rootfs changes", e))
}

impl ContainerizerActor {
    /// Why `c` cannot be checkpointed, if it cannot (before anything is done).
    fn refuse_checkpoint(&self, c: &Container) -> Result<(), ContainerizerError> {
        let id = c.id.to_string();
        let refuse = |why: &str| {
            Err(ContainerizerError::InvalidConfig {
                id: id.clone(),
                why: format!("cannot checkpoint: {why}"),
            })
        };
        if c.state() != ContainerState::Running || c.cause.is_some() || c.forked.is_none() {
            return Err(ContainerizerError::NotRunning {
                id,
                state: state_name(c.record.state),
            });
        }
        if c.record.paused {
            return refuse("it is paused (resume it first)");
        }
        if c.id.parent.is_some() {
            return refuse("it is a nested container (a pod member or an exec)");
        }
        let config = c.record.config.clone().unwrap_or_default();
        // runc drives CRIU itself (`runc checkpoint`/`restore`); gVisor's
        // checkpoints are its own, not CRIU's.
        if !["", berth_launcher::oci::NATIVE, "runc"].contains(&config.runtime.as_str()) {
            return refuse(&format!(
                "it runs under runtime {:?}; only berth's native launcher and runc checkpoint",
                config.runtime
            ));
        }
        if config.image.is_empty() || c.record.rootfs.is_empty() {
            return refuse("it runs on the host filesystem (only a container with an image)");
        }
        if config.tty {
            return refuse("it has a tty (-t)");
        }
        if config.init || config.pod {
            // Its pid 1 is berth's reaper, run from the supervisor's
            // sealed copy with the host's libraries mapped: CRIU cannot
            // look those up in the container's mounts.
            return refuse("its pid 1 is berth's init (--init or a pod)");
        }
        let info = c.record.launch_info.clone().unwrap_or_default();
        if !info.uid_mappings.is_empty() {
            return refuse("it has a user namespace of its own");
        }
        if self
            .containers
            .keys()
            .any(|k| k.starts_with(&format!("{id}/")))
        {
            return refuse("it has nested containers");
        }
        Ok(())
    }
}

impl Handler<Checkpoint> for ContainerizerActor {
    type Result = ResponseActFuture<Self, Result<Checkpointed, ContainerizerError>>;

    fn handle(&mut self, msg: Checkpoint, _: &mut Context<Self>) -> Self::Result {
        let Checkpoint {
            id,
            image_dir,
            leave_running,
        } = msg;
        let checked = self.get(&id).and_then(|c| {
            self.refuse_checkpoint(c)?;
            if !image_dir.is_absolute() {
                return Err(ContainerizerError::InvalidConfig {
                    id: id.to_string(),
                    why: format!(
                        "checkpoint image dir {} is not an absolute path",
                        image_dir.display()
                    ),
                });
            }
            let criu = criu::resolve(self.criu_path.as_deref())
                .map_err(|why| stage(&id, "criu checkpoint", why))?;
            Ok((c.record.clone(), criu))
        });
        let (record, criu_bin) = match checked {
            Ok(v) => v,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let rec = match self.get_mut(&id) {
            Ok(c) => c.enter(ContainerState::Checkpointing),
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        self.publish_state(&id, ContainerState::Checkpointing, None);
        let durable = self.checkpoint(rec);
        let launcher = self.launcher.clone();
        let config = record.config.clone().unwrap_or_default();
        let info = record.launch_info.clone().unwrap_or_default();
        let rootfs = PathBuf::from(&record.rootfs);
        let (id2, dir) = (id.clone(), image_dir.clone());
        let work = async move {
            durable.await?;
            crate::failpoint::hit("checkpoint:before-dump");
            // The image dir: made here, empty (CRIU would mix two dumps).
            let d = dir.clone();
            let upper = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
                let mut entries =
                    std::fs::read_dir(&d).map_err(|e| format!("read {}: {e}", d.display()))?;
                if entries.next().is_some() {
                    return Err(format!("image dir {} is not empty", d.display()));
                }
                upper_of(&rootfs).ok_or_else(|| {
                    format!(
                        "{} has no overlay upper dir beside it (only the overlay rootfs backend)",
                        rootfs.display()
                    )
                })
            })
            .await
            .map_err(|e| stage(&id2, "criu checkpoint", e))?
            .map_err(|e| stage(&id2, "criu checkpoint", e))?;
            let tar_path = dir.join(criu::ROOTFS_TAR);
            let spec = DumpSpec {
                criu: criu_bin,
                image_dir: dir.clone(),
                external_mounts: bind_mounts(&info).into_iter().map(|(t, _)| t).collect(),
                leave_running,
                while_frozen: Some(Box::new(move || {
                    save_upper(&upper, &tar_path)?;
                    // An agent killed here leaves the container frozen in
                    // CHECKPOINTING: recovery thaws it.
                    crate::failpoint::hit("checkpoint:frozen");
                    Ok(())
                })),
            };
            let dumped = launcher
                .checkpoint(id2.clone(), spec)
                .await
                .map_err(|e| stage(&id2, "criu checkpoint", e))?;
            let manifest = CriuCheckpoint {
                source_id: id2.to_string(),
                config: Some(config),
                stdio: dumped.stdio.clone(),
                external_mounts: bind_mounts(&info).into_iter().map(|(t, _)| t).collect(),
                external_netns: dumped.external_netns,
                rootfs_tar: criu::ROOTFS_TAR.into(),
                at_unix_nanos: berth_state::time::now_unix_nanos(),
            };
            let d = dir.clone();
            tokio::task::spawn_blocking(move || {
                let p = d.join(criu::MANIFEST);
                std::fs::write(&p, manifest.encode_to_vec())
                    .map_err(|e| format!("write {}: {e}", p.display()))
            })
            .await
            .map_err(|e| stage(&id2, "criu checkpoint", e))?
            .map_err(|e| stage(&id2, "criu checkpoint", e))?;
            Ok::<_, ContainerizerError>(dumped.frozen)
        };
        Box::pin(work.into_actor(self).then(move |r, act, ctx| {
            let still = act
                .get(&id)
                .is_ok_and(|c| c.state() == ContainerState::Checkpointing && c.cause.is_none());
            match r {
                Ok(frozen) if !leave_running && still => {
                    // Still frozen: destroyed without running on.
                    let _ = act.start_destroy(&id, Cause::Requested, ctx);
                    Box::pin(fut::ready(Ok(Checkpointed { image_dir, frozen })))
                }
                r => {
                    let back: futures::future::BoxFuture<'static, Result<(), ContainerizerError>> =
                        match still {
                            true => act.transition(&id, ContainerState::Running),
                            false => Box::pin(async { Ok(()) }),
                        };
                    Box::pin(
                        async move {
                            back.await?;
                            r.map(|frozen| Checkpointed { image_dir, frozen })
                        }
                        .into_actor(act),
                    ) as ResponseActFuture<Self, _>
                }
            }
        }))
    }
}

impl Handler<Restore> for ContainerizerActor {
    type Result = ResponseActFuture<Self, Result<(), ContainerizerError>>;

    fn handle(&mut self, msg: Restore, _: &mut Context<Self>) -> Self::Result {
        let Restore {
            id,
            image_dir,
            manifest,
        } = msg;
        let criu = match criu::resolve(self.criu_path.as_deref()) {
            Ok(c) => c,
            Err(why) => return Box::pin(fut::ready(Err(stage(&id, "criu restore", why)))),
        };
        let Some(config) = manifest.config.clone() else {
            return Box::pin(fut::ready(Err(ContainerizerError::InvalidConfig {
                id: id.to_string(),
                why: format!("checkpoint {} has no container config", image_dir.display()),
            })));
        };
        let launch = crate::launch::Launch {
            id: id.clone(),
            config,
            stdio: Stdio::SandboxFiles,
        };
        if let Err(e) = self.admit(launch) {
            return Box::pin(fut::ready(Err(e)));
        }
        if let Ok(c) = self.get_mut(&id) {
            c.record.restored_from = image_dir.display().to_string();
            c.restore = Some(RestorePlan {
                image_dir,
                manifest,
                criu,
            });
        }
        self.launch_chain(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_state::Mount;

    #[test]
    fn relative_mounts_lie_in_the_sandbox() {
        let info = LaunchInfo {
            mounts: vec![
                Mount {
                    source: "/sb".into(),
                    target: "/mnt/sandbox".into(),
                    ..Default::default()
                },
                Mount {
                    source: "/v".into(),
                    target: "data".into(),
                    ..Default::default()
                },
                Mount {
                    source: "tmpfs".into(),
                    target: "/t".into(),
                    fs_type: "tmpfs".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            bind_mounts(&info),
            vec![
                ("/mnt/sandbox".to_string(), "/sb".to_string()),
                ("/mnt/sandbox/data".to_string(), "/v".to_string()),
            ]
        );
    }
}
