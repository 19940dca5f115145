//! The launch: STARTING → PROVISIONING → PREPARING → ISOLATING → FETCHING
//! → RUNNING, one step at a time. Each step is checkpointed before its
//! side effects and resumes inside the actor; before every step the chain
//! checks whether a destroy was requested meanwhile and, if so, stops — the
//! destroy then unwinds exactly what was done.

use crate::actor::{bump, Container, ContainerizerActor};
use crate::error::{stage, state_name};
use crate::inflight::{timed, CallKind};
use crate::merge::merge;
use crate::metrics::LaunchStep;
use crate::termination::Cause;
use crate::validate::{validate, Backing};
use crate::ContainerizerError;
use actix::prelude::*;
use berth_isolators::PrepareRequest;
use berth_launcher::{LaunchSpec, Stdio};
use berth_state::{
    ContainerConfig, ContainerId, ContainerRecord, ContainerState, TerminationReason,
};
use futures::channel::oneshot;
use futures::future::{join_all, FutureExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Launches a container; resolves once it is RUNNING (its command exec'd).
#[derive(Message)]
#[rtype(result = "Result<(), ContainerizerError>")]
pub struct Launch {
    pub id: ContainerId,
    pub config: ContainerConfig,
    pub stdio: Stdio,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Start,
    Provision,
    Preparing,
    Prepare(usize),
    Fork,
    Isolate,
    Fetch,
    Release,
}

impl Step {
    /// The step's label in `berth_launch_step_duration_seconds`: the
    /// PREPARING checkpoint and every isolator's prepare are one.
    fn timed_as(self) -> LaunchStep {
        match self {
            Step::Start => LaunchStep::Starting,
            Step::Provision => LaunchStep::Provisioning,
            Step::Preparing | Step::Prepare(_) => LaunchStep::Preparing,
            Step::Fork => LaunchStep::Forking,
            Step::Isolate => LaunchStep::Isolating,
            Step::Fetch => LaunchStep::Fetching,
            Step::Release => LaunchStep::Releasing,
        }
    }
}

type Chain = ResponseActFuture<ContainerizerActor, Result<(), ContainerizerError>>;
type StepFuture = ResponseActFuture<ContainerizerActor, Result<Option<Step>, ContainerizerError>>;

fn ready<T: 'static>(v: T) -> ResponseActFuture<ContainerizerActor, T> {
    Box::pin(fut::ready(v))
}

impl Handler<Launch> for ContainerizerActor {
    type Result = ResponseActFuture<Self, Result<(), ContainerizerError>>;

    fn handle(&mut self, msg: Launch, _: &mut Context<Self>) -> Self::Result {
        let id = msg.id.clone();
        if let Err(e) = self.admit(msg) {
            return ready(Err(e));
        }
        self.launch_chain(id)
    }
}

impl ContainerizerActor {
    /// The launch steps of an admitted container, to RUNNING.
    pub(crate) fn launch_chain(
        &mut self,
        id: ContainerId,
    ) -> ResponseActFuture<Self, Result<(), ContainerizerError>> {
        bump(&self.metrics.containers_launched);
        let started = Instant::now();
        Box::pin(
            self.advance(id.clone(), Step::Start, started)
                .map(move |res, act, ctx| {
                    if res.is_ok() {
                        act.metrics.launch_duration.observe(started.elapsed());
                    }
                    act.launch_finished(&id, res, ctx)
                }),
        )
    }
}

impl ContainerizerActor {
    /// STARTING, the part that needs no waiting: validate and admit.
    pub(crate) fn admit(&mut self, msg: Launch) -> Result<(), ContainerizerError> {
        let Launch {
            id,
            mut config,
            stdio,
        } = msg;
        // A nested container without a network of its own shares its pod's.
        if config.network.is_none() && id.parent.is_none() {
            config.network = self.default_network.clone();
        }
        // The agent's log defaults, kept in the record so that status and
        // `berth logs` see what the supervisor writes.
        if config.log_format.is_empty() {
            config.log_format = self.default_logs.format.clone();
        }
        if config.log_max_bytes == 0 {
            config.log_max_bytes = self.default_logs.max_bytes;
        }
        if config.log_max_files == 0 {
            config.log_max_files = self.default_logs.max_files;
        }
        // The runtime, resolved (the agent's default for none) and kept
        // in the record: recovery and destroy go to the same one.
        config.runtime = self.launcher.runtime_for(&config.runtime).map_err(|why| {
            ContainerizerError::InvalidConfig {
                id: id.to_string(),
                why,
            }
        })?;
        let names: Vec<String> = self
            .isolators
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        validate(
            &id,
            &config,
            &Backing {
                isolators: &names,
                fetcher: self.fetcher.supported(),
                provisioner: self.provisioner.as_deref(),
            },
        )?;
        let key = id.to_string();
        if self.containers.contains_key(&key) {
            return Err(ContainerizerError::AlreadyExists(key));
        }
        if let Some(parent) = id.parent.as_deref() {
            let p = self.get(parent)?;
            if p.state() != ContainerState::Running || p.cause.is_some() {
                return Err(ContainerizerError::NotRunning {
                    id: parent.to_string(),
                    state: state_name(p.record.state),
                });
            }
            // Its frozen cgroups would hold the new container's init.
            if p.record.paused {
                return Err(ContainerizerError::NotRunning {
                    id: parent.to_string(),
                    state: "PAUSED".into(),
                });
            }
            crate::pod::adopt_parent(&p.record.config.clone().unwrap_or_default(), &mut config);
        }
        let sandbox = self.sandbox_dir(&id);
        let record = ContainerRecord {
            id: Some(id.clone()),
            config: Some(config),
            sandbox_dir: sandbox.display().to_string(),
            // In STARTING's (waited) write already, so PREPARING's need not
            // be waited for: after a crash every isolator that may have
            // prepared is cleaned (one that never saw the container
            // tolerates its cleanup, as after any crash).
            prepared_isolators: self
                .isolators
                .iter()
                .map(|i| i.name().to_string())
                .collect(),
            ..Default::default()
        };
        self.publish_state(&id, ContainerState::Starting, None);
        let mut c = Container::new(id, record, sandbox);
        c.enter(ContainerState::Starting);
        c.stdio = Some(stdio);
        let (tx, rx) = oneshot::channel();
        c.launch_done = Some(rx.shared());
        c.launch_done_tx = Some(tx);
        self.containers.insert(key, c);
        Ok(())
    }

    /// Runs `step`, then the next one, until the chain ends or fails.
    /// `since`: when the step's timed phase ([`Step::timed_as`]) began;
    /// a phase is observed once its last step succeeds.
    fn advance(&mut self, id: ContainerId, step: Step, since: Instant) -> Chain {
        let c = match self.get(&id) {
            Ok(c) => c,
            Err(e) => return ready(Err(e)),
        };
        if c.cause.is_some() {
            return ready(Err(ContainerizerError::DestroyedDuringLaunch {
                id: id.to_string(),
                state: state_name(c.record.state),
            }));
        }
        tracing::debug!(container = %id, ?step, "launch step");
        let next = self.step(&id, step);
        Box::pin(next.then(move |r, act, _| match r {
            Ok(Some(next)) if next.timed_as() == step.timed_as() => act.advance(id, next, since),
            Ok(Some(next)) => {
                let now = Instant::now();
                act.metrics
                    .launch_step(step.timed_as())
                    .observe(now - since);
                act.advance(id, next, now)
            }
            Ok(None) => {
                act.metrics
                    .launch_step(step.timed_as())
                    .observe(since.elapsed());
                ready(Ok(()))
            }
            Err(e) => ready(Err(e)),
        }))
    }

    fn step(&mut self, id: &ContainerId, step: Step) -> StepFuture {
        let id = id.clone();
        match step {
            Step::Start => {
                let sandbox = self.sandbox_dir(&id);
                let rec = match self.get(&id) {
                    Ok(c) => c.record.clone(),
                    Err(e) => return ready(Err(e)),
                };
                let cp = self.checkpoint(rec);
                let id2 = id.clone();
                let base = self.sandboxes.clone();
                // A nested sandbox lies in its parent's, which the parent
                // container writes: made component by component on fds,
                // and it must be new (not something the parent put there).
                let nested = id.parent.is_some();
                let create = move || {
                    let rel = sandbox.strip_prefix(&base).unwrap_or(&sandbox);
                    berth_state::safe_path::create_dirs(&base, rel, nested)
                };
                Box::pin(
                    async move {
                        let made = if nested {
                            // The record first: after a crash it says a
                            // sandbox may exist in the parent's.
                            cp.await?;
                            tokio::task::spawn_blocking(create).await
                        } else {
                            // Both at once: a top-level sandbox a crash
                            // leaves without its record is an orphan that
                            // recovery removes.
                            let (written, made) =
                                futures::join!(cp, tokio::task::spawn_blocking(create));
                            written?;
                            made
                        };
                        let made = made
                            .map_err(|e| stage(&id2, "create sandbox", e))?
                            .map_err(|e| stage(&id2, "create sandbox", e))?;
                        Ok(made.1)
                    }
                    .into_actor(self)
                    .map(move |r, act, _| {
                        let identity = r?;
                        if let Ok(c) = act.get_mut(&id) {
                            c.sandbox_identity = Some(identity);
                        }
                        Ok(Some(Step::Provision))
                    }),
                )
            }
            Step::Provision => {
                // Not waited for: a crash before PREPARING's (waited) write
                // is an unfinished launch either way, and destroy removes a
                // rootfs of any config with an image.
                self.transition_in_background(&id, ContainerState::Provisioning);
                let (image, backend) = self
                    .get(&id)
                    .ok()
                    .and_then(|c| c.record.config.as_ref())
                    .map(|c| (c.image.clone(), c.rootfs_backend.parse().ok()))
                    .unwrap_or_default();
                if let Some((rootfs, spec)) = self.debug_user_lookup(&id) {
                    // An exec's user is named in its parent's image, which
                    // the parent writes: read beneath its root, off the actor.
                    let id2 = id.clone();
                    let resolve = tokio::task::spawn_blocking(move || {
                        crate::user::resolve_in_rootfs(std::path::Path::new(&rootfs), &spec)
                    });
                    return Box::pin(
                        async move {
                            resolve
                                .await
                                .map_err(|e| stage(&id2, "resolve the user", e))?
                                .map_err(|why| ContainerizerError::InvalidConfig {
                                    id: id2.to_string(),
                                    why,
                                })
                        }
                        .into_actor(self)
                        .map(move |r, act, _| {
                            let user = r?;
                            act.get_mut(&id)?.debug_user = Some(user);
                            Ok(Some(Step::Preparing))
                        }),
                    );
                }
                // Configs with an image were refused at STARTING unless a
                // provisioner runs.
                let Some(p) = self.provisioner.clone().filter(|_| !image.is_empty()) else {
                    return ready(Ok(Some(Step::Preparing)));
                };
                if let Ok(c) = self.get_mut(&id) {
                    c.provisioning = true;
                }
                let id2 = id.clone();
                let config_user = self
                    .get(&id)
                    .ok()
                    .and_then(|c| c.record.config.as_ref())
                    .map(|c| c.user.clone())
                    .unwrap_or_default();
                let provision = timed(
                    &self.inflight,
                    &id,
                    CallKind::Provision,
                    "provisioner",
                    p.provision(id2.clone(), image, backend),
                );
                let saved_rootfs = self
                    .get(&id)
                    .ok()
                    .and_then(|c| c.restore.as_ref())
                    .and_then(|r| r.rootfs_tar());
                Box::pin(
                    async move {
                        let provisioned =
                            provision.await.map_err(|e| stage(&id2, "provision", e))?;
                        if let Some(tar) = saved_rootfs {
                            // A restore: the checkpointed rootfs changes go
                            // into the new (unused) upper dir first.
                            crate::checkpoint_criu::unpack_rootfs(&id2, tar, &provisioned.rootfs)
                                .await?;
                            crate::failpoint::hit("restore:after-rootfs");
                        }
                        // The user is resolved in the image's own passwd and
                        // group files (file I/O: on the blocking pool).
                        let spec = Some(config_user)
                            .filter(|u| !u.is_empty())
                            .unwrap_or_else(|| provisioned.user.clone());
                        let rootfs = provisioned.rootfs.clone();
                        let user = tokio::task::spawn_blocking(move || {
                            crate::user::resolve_in_rootfs(&rootfs, &spec)
                        })
                        .await
                        .map_err(|e| stage(&id2, "resolve the image user", e))?
                        // A stage error, not InvalidConfig: the rootfs
                        // exists now and the destroy must remove it.
                        .map_err(|why| stage(&id2, "resolve the image user", why))?;
                        Ok((provisioned, user))
                    }
                    .into_actor(self)
                    .map(move |r, act, _| {
                        let (provisioned, user) = r?;
                        let c = act.get_mut(&id)?;
                        c.record.rootfs = provisioned.rootfs.display().to_string();
                        c.image = Some((provisioned, user));
                        Ok(Some(Step::Preparing))
                    }),
                )
            }
            Step::Preparing => {
                // Waited for only before the fork: STARTING's write listed
                // every isolator as prepared (see `admit`).
                let w = self.transition(&id, ContainerState::Preparing);
                if let Ok(c) = self.get_mut(&id) {
                    c.preparing_written = Some(w);
                }
                ready(Ok(Some(Step::Prepare(0))))
            }
            Step::Prepare(i) if i == self.isolators.len() => ready(Ok(Some(Step::Fork))),
            Step::Prepare(i) => {
                let sandbox = self.sandbox_dir(&id);
                let cgroup_root = self.cgroup_root.clone();
                let c = match self.get_mut(&id) {
                    Ok(c) => c,
                    Err(e) => return ready(Err(e)),
                };
                c.prepared.push(i);
                let req = PrepareRequest {
                    id: id.clone(),
                    config: c.record.config.clone().unwrap_or_default(),
                    sandbox_dir: sandbox,
                    rootfs: Some(&c.record.rootfs)
                        .filter(|r| !r.is_empty())
                        .map(std::path::PathBuf::from),
                    cgroup_root,
                };
                let h = self.isolators[i].clone();
                let call = timed(
                    &self.inflight,
                    &id,
                    CallKind::Prepare,
                    h.name(),
                    h.prepare(req),
                );
                Box::pin(call.into_actor(self).map(move |r, act, _| {
                    let info = r.map_err(|e| stage(&id, &format!("prepare of {}", h.name()), e))?;
                    crate::failpoint::hit(&format!("launch:after-prepare:{}", h.name()));
                    if let Some(info) = info {
                        act.get_mut(&id)?.infos.push((h.name().to_string(), info));
                    }
                    Ok(Some(Step::Prepare(i + 1)))
                }))
            }
            Step::Fork => {
                let spec = match self.launch_spec(&id) {
                    Ok(s) => s,
                    Err(e) => return ready(Err(e)),
                };
                let written = self
                    .get_mut(&id)
                    .ok()
                    .and_then(|c| c.preparing_written.take());
                let (launcher, inflight, id2) =
                    (self.launcher.clone(), self.inflight.clone(), id.clone());
                let fork = async move {
                    if let Some(w) = written {
                        w.await.map_err(|e| e.to_string())?;
                    }
                    let fork = launcher.fork(spec);
                    timed(&inflight, &id2, CallKind::Launch, "launcher", fork).await
                };
                Box::pin(fork.into_actor(self).then(move |r, act, _| {
                    let forked = match r {
                        Ok(f) => f,
                        Err(e) => return ready(Err(stage(&id, "fork", e))),
                    };
                    crate::failpoint::hit("launch:after-fork");
                    let c = match act.get_mut(&id) {
                        Ok(c) => c,
                        Err(e) => return ready(Err(e)),
                    };
                    c.record.supervisor = Some(forked.supervisor);
                    c.record.init = Some(forked.init);
                    c.forked = Some(forked);
                    act.transition_in_background(&id, ContainerState::Isolating);
                    ready(Ok(Some(Step::Isolate)))
                }))
            }
            Step::Isolate => {
                let (pid, prepared) = match self.get(&id) {
                    Ok(c) => (
                        c.forked.as_ref().map(|f| f.init.pid).unwrap_or(0),
                        c.prepared.clone(),
                    ),
                    Err(e) => return ready(Err(e)),
                };
                let calls: Vec<_> = prepared
                    .into_iter()
                    // Each call is a round trip that this step waits on.
                    .filter(|&i| self.isolators[i].isolates())
                    .map(|i| {
                        let h = self.isolators[i].clone();
                        let f = timed(
                            &self.inflight,
                            &id,
                            CallKind::Isolate,
                            h.name(),
                            h.isolate(id.clone(), pid),
                        );
                        async move { f.await.map_err(|e| format!("{}: {e}", h.name())) }
                    })
                    .collect();
                Box::pin(
                    async move {
                        let errors: Vec<String> = join_all(calls)
                            .await
                            .into_iter()
                            .filter_map(Result::err)
                            .collect();
                        if errors.is_empty() {
                            Ok(Some(Step::Fetch))
                        } else {
                            Err(stage(&id, "isolate", errors.join("; ")))
                        }
                    }
                    .into_actor(self),
                )
            }
            Step::Fetch => {
                let uris = self
                    .get(&id)
                    .ok()
                    .and_then(|c| c.record.config.as_ref())
                    .map(|c| c.uris.clone())
                    .unwrap_or_default();
                let sandbox = self.sandbox_dir(&id);
                // A container running as root uses the sandbox as made
                // (root's); any other user is given it after the fetch.
                let owner = self
                    .get(&id)
                    .ok()
                    .and_then(|c| c.run_as)
                    .filter(|(uid, _)| *uid != 0);
                let identity = self.get(&id).ok().and_then(|c| c.sandbox_identity);
                self.transition_in_background(&id, ContainerState::Fetching);
                let fetch = timed(
                    &self.inflight,
                    &id,
                    CallKind::Fetch,
                    "fetcher",
                    self.fetcher.fetch(&id, &uris, &sandbox),
                );
                Box::pin(
                    async move {
                        fetch.await.map_err(|e| stage(&id, "fetch", e))?;
                        if let Some((uid, gid)) = owner {
                            tokio::task::spawn_blocking(move || {
                                crate::sandbox_owner::chown_sandbox(&sandbox, identity, uid, gid)
                            })
                            .await
                            .map_err(|e| stage(&id, "chown sandbox", e))?
                            .map_err(|e| stage(&id, "chown sandbox", e))?;
                        }
                        Ok(Some(Step::Release))
                    }
                    .into_actor(self),
                )
            }
            Step::Release => {
                // The command is released to exec before RUNNING is
                // checkpointed: a RUNNING record always means the command
                // ran. A crash in between leaves FETCHING, which recovery
                // destroys as a launch the agent did not finish.
                if let Ok(c) = self.get_mut(&id) {
                    c.released = true;
                }
                let release = timed(
                    &self.inflight,
                    &id,
                    CallKind::Launch,
                    "launcher",
                    self.launcher.release(id.clone()),
                );
                Box::pin(release.into_actor(self).then(move |r, act, _| {
                    if let Err(e) = r {
                        return ready(Err(stage(&id, "release", e)));
                    }
                    // A destroy that began meanwhile has checkpointed
                    // DESTROYING: the record must not go back to RUNNING.
                    if act.get(&id).map(|c| c.cause.is_some()).unwrap_or(true) {
                        return ready(Ok(None));
                    }
                    let t = act.transition(&id, ContainerState::Running);
                    Box::pin(t.map(|r| r.map(|_| None)).into_actor(act))
                }))
            }
        }
    }

    /// The launch chain stopped: release the destroy waiting on it, start
    /// watching a running container, or destroy one whose launch failed.
    fn launch_finished(
        &mut self,
        id: &ContainerId,
        res: Result<(), ContainerizerError>,
        ctx: &mut Context<Self>,
    ) -> Result<(), ContainerizerError> {
        let Ok(c) = self.get_mut(id) else {
            return res;
        };
        if let Some(tx) = c.launch_done_tx.take() {
            let _ = tx.send(());
        }
        c.stdio = None;
        match res {
            Ok(()) if c.cause.is_none() => {
                self.watch(id, ctx);
                Ok(())
            }
            Ok(()) => Err(ContainerizerError::DestroyedDuringLaunch {
                id: id.to_string(),
                state: state_name(c.record.state),
            }),
            Err(e) => {
                if c.cause.is_none() {
                    tracing::warn!(container = %id, error = %e, "launch failed; destroying");
                    let _ = self.start_destroy(id, Cause::LaunchFailed(e.to_string()), ctx);
                }
                Err(e)
            }
        }
    }

    /// The merged launch info and the resolved command, user and env.
    fn launch_spec(&mut self, id: &ContainerId) -> Result<LaunchSpec, ContainerizerError> {
        let sandbox = self.sandbox_dir(id);
        // What a nested container takes from its (running) parent.
        let parent = match id.parent.as_deref() {
            Some(p) => {
                let p = self.get(p)?;
                let init = p
                    .record
                    .init
                    .ok_or_else(|| ContainerizerError::NotRunning {
                        id: p.id.to_string(),
                        state: state_name(p.record.state),
                    })?;
                Some((init, p.record.launch_info.clone().unwrap_or_default()))
            }
            None => None,
        };
        let c = self.get_mut(id)?;
        let config = c.record.config.clone().unwrap_or_default();
        let mut info = merge(&c.infos).map_err(|why| ContainerizerError::Conflict {
            id: id.to_string(),
            why,
        })?;
        let debug = config.container_class == berth_state::ContainerClass::Debug as i32;
        if let Some((init, parent_info)) = &parent {
            info.join_namespaces
                .extend(crate::pod::parent_joins(id, &config, init, parent_info));
            if debug {
                crate::pod::debug_launch_info(&mut info, parent_info);
            }
        }
        let image = c.image.as_ref().map(|(p, _)| p);
        if !config.working_dir.is_empty() {
            info.working_dir = config.working_dir.clone();
        } else if let Some(wd) = image.map(|p| &p.working_dir).filter(|w| !w.is_empty()) {
            info.working_dir = wd.clone();
        }
        let argv = if config.shell {
            vec!["/bin/sh".into(), "-c".into(), config.command.join(" ")]
        } else if let Some(p) = image {
            image_argv(&config, p)
        } else {
            config.command.clone()
        };
        if argv.is_empty() && !config.pod {
            return Err(ContainerizerError::InvalidConfig {
                id: id.to_string(),
                why: format!(
                    "image {:?} has no entrypoint or cmd, and no command was given",
                    config.image
                ),
            });
        }
        let mut env: std::collections::BTreeMap<String, String> = info.env.clone();
        // The image's env over the isolators' (as Docker: image ENV, then -e).
        for kv in image.map(|p| p.env.as_slice()).unwrap_or_default() {
            if let Some((k, v)) = kv.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
        env.entry("PATH".into()).or_insert_with(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        env.insert("BERTH_CONTAINER_ID".into(), id.to_string());
        // The user's env overrides what isolators and the image contribute.
        env.extend(config.env.clone());
        let user = match (&c.image, &c.debug_user) {
            (Some((_, resolved)), _) | (None, Some(resolved)) => resolved.clone(),
            (None, None) => crate::user::resolve(&config.user).map_err(|why| {
                ContainerizerError::InvalidConfig {
                    id: id.to_string(),
                    why,
                }
            })?,
        };
        // The config's supplementary groups join the user's own.
        let user = match user {
            Some((uid, gid, mut groups)) => {
                for g in &config.supplemental_groups {
                    if !groups.contains(g) {
                        groups.push(*g);
                    }
                }
                Some((uid, gid, groups))
            }
            None if !config.supplemental_groups.is_empty() => {
                Some((0, 0, config.supplemental_groups.clone()))
            }
            None => None,
        };
        if let (Some((uid, gid, groups)), false) = (&user, info.uid_mappings.is_empty()) {
            // Ids the user namespace does not map cannot be taken inside.
            let unmapped = |maps: &[berth_state::IdMapping], id: u32| {
                !maps
                    .iter()
                    .any(|m| id >= m.container_id && id - m.container_id < m.size)
            };
            let bad = [
                (*uid, "uid", &info.uid_mappings),
                (*gid, "gid", &info.gid_mappings),
            ]
            .into_iter()
            .chain(groups.iter().map(|g| (*g, "group", &info.gid_mappings)))
            .find(|(v, _, maps)| unmapped(maps, *v));
            if let Some((v, what, maps)) = bad {
                let size: u32 = maps.iter().map(|m| m.size).sum();
                return Err(ContainerizerError::InvalidConfig {
                    id: id.to_string(),
                    why: format!(
                        "user: {what} {v} is outside the container's user namespace \
                         ({size} ids mapped, from 0)"
                    ),
                });
            }
        }
        if !config.cap_add.is_empty() || !config.cap_drop.is_empty() {
            // Over whatever the isolators set (e.g. no CAP_MKNOD on v2).
            info.capabilities = berth_state::capabilities::adjust(
                &info.capabilities,
                &config.cap_add,
                &config.cap_drop,
            )
            .map_err(|why| ContainerizerError::InvalidConfig {
                id: id.to_string(),
                why,
            })?;
        }
        info.shm_size_bytes = config.shm_size_bytes;
        info.sysctls = config.sysctls.clone();
        info.runtime = config.runtime.clone();
        info.allow_privilege_escalation = config.allow_privilege_escalation;
        // The checkpoint keeps what recovery needs; the seccomp program is
        // only for this launch (and would make every record kilobytes).
        // Its env is the command's whole env (the image's ENV, the
        // isolators', the config's): an exec into it starts from there.
        c.record.launch_info = Some(berth_state::LaunchInfo {
            seccomp_bpf: Vec::new(),
            seccomp_oci: String::new(),
            env: env.clone(),
            ..info.clone()
        });
        c.run_as = user.as_ref().map(|(uid, gid, _)| (*uid, *gid));
        let restore = match &c.restore {
            Some(plan) => Some(plan.spec(id, &c.record.rootfs, &info)?),
            None => None,
        };
        Ok(LaunchSpec {
            id: id.clone(),
            argv,
            env: env.into_iter().collect(),
            launch_info: info,
            user,
            sandbox_dir: sandbox,
            sandbox_identity: c.sandbox_identity,
            stdio: c.stdio.take().unwrap_or_default(),
            // A pod's pid 1 is berth's init, with no command.
            init: config.init || config.pod,
            io: berth_launcher::StdioOptions {
                tty: config.tty,
                stdin_open: config.stdin_open,
                logs: berth_state::LogSettings {
                    format: config.log_format.clone(),
                    max_bytes: config.log_max_bytes,
                    max_files: config.log_max_files,
                },
            },
            restore,
        })
    }

    /// A DEBUG container's parent rootfs and user name, when the user is
    /// to be resolved in the parent's image.
    fn debug_user_lookup(&self, id: &ContainerId) -> Option<(String, String)> {
        let config = self.get(id).ok()?.record.config.as_ref()?;
        if config.container_class != berth_state::ContainerClass::Debug as i32
            || config.user.is_empty()
        {
            return None;
        }
        let parent = self.get(id.parent.as_deref()?).ok()?;
        Some(parent.record.rootfs.clone())
            .filter(|r| !r.is_empty())
            .map(|r| (r, config.user.clone()))
    }

    /// A RUNNING container is watched for its exit (from the launcher) and
    /// for limitations (from the isolators). Each watch is a task of its
    /// own that sends the actor a message when it fires: actix polls every
    /// future spawned into an actor's context each time the actor wakes, so
    /// thousands of containers' watches there made every message cost
    /// O(containers) (most of a 1000-container recovery's CPU).
    pub(crate) fn watch(&mut self, id: &ContainerId, ctx: &mut Context<Self>) {
        static EPOCH: AtomicU64 = AtomicU64::new(1);
        let epoch = EPOCH.fetch_add(1, Ordering::Relaxed);
        let addr = ctx.address();
        let exit = self.launcher.wait(id.clone());
        let (a, i) = (addr.clone(), id.clone());
        actix_rt::spawn(async move {
            let r = exit.await;
            a.do_send(Exited { id: i, epoch, r });
        });
        let Ok(c) = self.get(id) else { return };
        // Only isolators whose watch can fire (of the default ones, the
        // memory and disk isolators), all in one task: the first
        // limitation is the one that counts (a later one finds the
        // container destroyed for the first).
        let watches: Vec<_> = c
            .prepared
            .iter()
            .filter(|&&i| self.isolators[i].watches())
            .map(|&i| self.isolators[i].watch(id.clone()))
            .collect();
        let handles = match watches.is_empty() {
            true => Vec::new(),
            false => {
                let (a, id) = (addr, id.clone());
                vec![actix_rt::spawn(async move {
                    let (limitation, _, _) = futures::future::select_all(watches).await;
                    a.do_send(Limited {
                        id,
                        epoch,
                        limitation,
                    });
                })
                .abort_handle()]
            }
        };
        if let Ok(c) = self.get_mut(id) {
            c.watches = handles;
            c.watch_epoch = epoch;
        }
    }

    /// Whether a watch's message is for the container now under `id`.
    fn watched(&self, id: &ContainerId, epoch: u64) -> bool {
        self.get(id).is_ok_and(|c| c.watch_epoch == epoch)
    }

    fn on_exit(
        &mut self,
        id: &ContainerId,
        r: Result<berth_state::ExitStatus, berth_launcher::LaunchError>,
        ctx: &mut Context<Self>,
    ) {
        let Ok(c) = self.get_mut(id) else { return };
        if c.state() == ContainerState::Terminated {
            return;
        }
        let cause = match r {
            Ok(status) => {
                tracing::debug!(container = %id, ?status, "exited");
                c.exit.get_or_insert(status);
                Cause::Exited
            }
            Err(e) => Cause::Lost(format!("waiting for the exit failed: {e}")),
        };
        let _ = self.start_destroy(id, cause, ctx);
    }
}

/// Docker's rule: the config's entrypoint replaces the image's (and then
/// drops the image's cmd); a command given by the user replaces the cmd.
pub(crate) fn image_argv(
    config: &berth_state::ContainerConfig,
    image: &berth_provisioner::Provisioned,
) -> Vec<String> {
    let (entrypoint, default_cmd) = if config.entrypoint.is_empty() {
        (&image.entrypoint, &image.cmd)
    } else {
        (&config.entrypoint, &Vec::new())
    };
    let cmd = if config.command.is_empty() {
        default_cmd
    } else {
        &config.command
    };
    entrypoint.iter().chain(cmd).cloned().collect()
}

#[cfg(test)]
mod image_tests {
    use super::image_argv;
    use berth_provisioner::Provisioned;
    use berth_state::ContainerConfig;

    #[test]
    fn entrypoint_and_cmd_merge_as_docker() {
        let img = Provisioned {
            entrypoint: vec!["/bin/ep".into()],
            cmd: vec!["default".into()],
            ..Default::default()
        };
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut c = ContainerConfig::default();
        assert_eq!(image_argv(&c, &img), v(&["/bin/ep", "default"]));
        c.command = v(&["mine"]);
        assert_eq!(image_argv(&c, &img), v(&["/bin/ep", "mine"]));
        c.entrypoint = v(&["/bin/other"]);
        assert_eq!(image_argv(&c, &img), v(&["/bin/other", "mine"]));
        c.command.clear();
        assert_eq!(image_argv(&c, &img), v(&["/bin/other"]));
    }
}

/// A watched container's init exited (or waiting for it failed).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Exited {
    id: ContainerId,
    epoch: u64,
    r: Result<berth_state::ExitStatus, berth_launcher::LaunchError>,
}

impl Handler<Exited> for ContainerizerActor {
    type Result = ();

    fn handle(&mut self, m: Exited, ctx: &mut Context<Self>) {
        // Not for a later container of the same id (nor once this one's
        // termination is composed, when its epoch is cleared).
        if self.watched(&m.id, m.epoch) {
            self.on_exit(&m.id, m.r, ctx);
        }
    }
}

/// An isolator's watch on a container resolved with a limitation.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Limited {
    id: ContainerId,
    epoch: u64,
    limitation: berth_isolators::Limitation,
}

impl Handler<Limited> for ContainerizerActor {
    type Result = ();

    fn handle(&mut self, m: Limited, ctx: &mut Context<Self>) {
        if !self.watched(&m.id, m.epoch) {
            return;
        }
        let (id, limitation) = (m.id, m.limitation);
        self.publish_limitation(&id, &limitation);
        if let Ok(c) = self.get_mut(&id) {
            let oom = limitation.reason == TerminationReason::OomKilled;
            if oom && matches!(c.cause, Some(Cause::Exited)) {
                // The init's exit was learned first, but the limitation
                // (an OOM kill) is why it exited.
                tracing::info!(container = %id, ?limitation, "limitation explains the exit");
                c.cause = Some(Cause::Limited(limitation));
                return;
            }
        }
        tracing::info!(container = %id, ?limitation, "limitation; destroying");
        let _ = self.start_destroy(&id, Cause::Limited(limitation), ctx);
    }
}
