//! The containerizer actor (Mesos's MesosContainerizerProcess): it alone
//! owns the map of containers; every step that waits resumes inside it.
//! The launch steps live in `launch.rs`, the destroy stages in
//! `destroy.rs`, recovery in `recover.rs`; this file holds the state and
//! the small request handlers.

use crate::checkpoint::Checkpointer;
use crate::error::{stage, state_name};
use crate::fetcher::FetcherHandle;
use crate::inflight::{timed, CallKind};
use crate::metrics::Metrics;
use crate::termination::Cause;
use crate::ContainerizerError;
use actix::prelude::*;
use berth_isolators::{IsolatorHandle, StatusFields};
use berth_launcher::{Forked, Launcher, Stdio};
use berth_state::{
    ContainerConfig, ContainerId, ContainerRecord, ContainerState, ContainerTermination,
    ExitStatus, LaunchInfo, ProcessRef, ResourceStatistics, Resources, Transition,
};
use futures::channel::oneshot;
use futures::future::{join_all, FutureExt, Shared};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub(crate) type Attempt =
    Shared<oneshot::Receiver<Result<ContainerTermination, ContainerizerError>>>;

/// One container, as the actor tracks it.
/// uid, gid and supplementary gids.
pub(crate) type ResolvedUser = (u32, u32, Vec<u32>);

pub(crate) struct Container {
    pub id: ContainerId,
    /// The checkpoint; `record.state` is the container's state.
    pub record: ContainerRecord,
    /// Indices of the isolators whose `prepare` ran, in order; `cleanup`
    /// runs for exactly these, in reverse.
    pub prepared: Vec<usize>,
    /// Launch infos returned so far, with the isolator's name.
    pub infos: Vec<(String, LaunchInfo)>,
    pub forked: Option<Forked>,
    /// Whether the launcher was asked to let the command exec (from then
    /// on the command may have run, whatever the record says).
    pub released: bool,
    /// Whether the provisioner was asked for a rootfs (so destroy asks it
    /// to remove one).
    pub provisioning: bool,
    /// The image's run config (from the provisioner) and the user resolved
    /// through the image's /etc/passwd and /etc/group; merged at fork.
    pub image: Option<(berth_provisioner::Provisioned, Option<ResolvedUser>)>,
    /// A DEBUG container's user, resolved in its parent's image at
    /// PROVISIONING (file I/O, on the blocking pool); merged at fork.
    pub debug_user: Option<Option<ResolvedUser>>,
    /// Where the command's output goes, until fork takes it.
    pub stdio: Option<Stdio>,
    /// The uid and gid the command runs as, once resolved at fork; the
    /// sandbox is given to them after the fetch.
    pub run_as: Option<(u32, u32)>,
    /// Resolves when the launch chain has stopped (finished or aborted):
    /// destroy waits for it, so an in-flight step is never raced.
    pub launch_done: Option<Shared<oneshot::Receiver<()>>>,
    pub launch_done_tx: Option<oneshot::Sender<()>>,
    /// Why the destroy started; set once.
    pub cause: Option<Cause>,
    pub exit: Option<ExitStatus>,
    /// The destroy attempt in progress, shared by concurrent callers.
    pub attempt: Option<Attempt>,
    pub termination_tx: Option<oneshot::Sender<ContainerTermination>>,
    pub termination: Shared<oneshot::Receiver<ContainerTermination>>,
    /// Limitation watches (tasks of their own) to abort when the
    /// termination is composed.
    pub watches: Vec<tokio::task::AbortHandle>,
    /// Names this container's watches in the messages they send: a late
    /// one from an earlier container of the same id is dropped.
    pub watch_epoch: u64,
    pub sandbox: PathBuf,
    /// The sandbox directory berth made at STARTING (dev, ino): opened
    /// again, it must still be that one (a parent container may swap a
    /// nested sandbox by rename).
    pub sandbox_identity: Option<berth_state::safe_path::Identity>,
    /// A `stop`'s grace between SIGTERM and SIGKILL, over the config's.
    pub stop_grace_ms: Option<u64>,
    /// Set for a container made by `berth restore`.
    pub restore: Option<crate::checkpoint_criu::RestorePlan>,
    /// PREPARING's write, queued when the prepares began and waited for
    /// only before the fork (a record that never reached PREPARING says
    /// no supervisor can exist).
    pub preparing_written:
        Option<futures::future::BoxFuture<'static, Result<(), ContainerizerError>>>,
}

impl Container {
    pub fn new(id: ContainerId, record: ContainerRecord, sandbox: PathBuf) -> Self {
        let (termination_tx, rx) = oneshot::channel();
        Container {
            id,
            record,
            prepared: Vec::new(),
            infos: Vec::new(),
            forked: None,
            released: false,
            provisioning: false,
            image: None,
            debug_user: None,
            stdio: None,
            run_as: None,
            launch_done: None,
            launch_done_tx: None,
            cause: None,
            exit: None,
            attempt: None,
            termination_tx: Some(termination_tx),
            termination: rx.shared(),
            watches: Vec::new(),
            watch_epoch: 0,
            sandbox,
            sandbox_identity: None,
            stop_grace_ms: None,
            restore: None,
            preparing_written: None,
        }
    }

    pub fn state(&self) -> ContainerState {
        ContainerState::try_from(self.record.state).unwrap_or(ContainerState::Unspecified)
    }

    /// Records that the container entered `state` (in memory; the caller
    /// checkpoints) and returns the record to write.
    /// Whether a supervisor may exist: one was recorded, or the launch
    /// got as far as PREPARING, whose fork a crash may have kept from the
    /// record.
    pub fn may_have_forked(&self) -> bool {
        self.forked.is_some()
            || self.record.supervisor.is_some()
            || self
                .record
                .transitions
                .iter()
                .any(|t| t.state == ContainerState::Preparing as i32)
    }

    /// Whether the command may have started: its release was asked for
    /// in this life, or the record reached RUNNING (in an earlier one).
    /// Until then the init waits before exec and nothing of the user's ran.
    pub fn command_may_have_started(&self) -> bool {
        self.released
            || self
                .record
                .transitions
                .iter()
                .any(|t| t.state == ContainerState::Running as i32)
    }

    pub fn enter(&mut self, state: ContainerState) -> ContainerRecord {
        self.record.state = state as i32;
        self.record.transitions.push(Transition {
            state: state as i32,
            at_unix_nanos: berth_state::time::now_unix_nanos(),
        });
        self.record.clone()
    }
}

/// The containerizer actor. Build it with [`crate::Containerizer::builder`].
pub struct ContainerizerActor {
    pub(crate) checkpoints: Checkpointer,
    pub(crate) sandboxes: PathBuf,
    pub(crate) cgroup_root: String,
    pub(crate) launcher: Arc<dyn Launcher>,
    pub(crate) provisioner: Option<Arc<dyn berth_provisioner::Provisioner>>,
    pub(crate) isolators: Vec<IsolatorHandle>,
    pub(crate) fetcher: FetcherHandle,
    pub(crate) containers: BTreeMap<String, Container>,
    pub(crate) metrics: Arc<Metrics>,
    /// Every transition and limitation, for `events()` subscribers.
    pub(crate) events: tokio::sync::broadcast::Sender<crate::agent::api::Event>,
    /// The network of containers whose config names none (the agent's
    /// `--default-network`); `None` = the host's.
    pub(crate) default_network: Option<berth_state::Network>,
    /// The log format and rotation of containers that set none (the
    /// agent's `--log-*` options, else berth's defaults).
    pub(crate) default_logs: berth_state::LogSettings,
    /// Calls into isolators, provisioner, fetcher and launcher under way,
    /// with their deadlines.
    pub(crate) inflight: Arc<crate::inflight::InFlight>,
    /// The agent's `--criu-path` (else `criu` on PATH).
    pub(crate) criu_path: Option<PathBuf>,
}

impl Actor for ContainerizerActor {
    type Context = Context<Self>;
}

impl ContainerizerActor {
    pub(crate) fn get(&self, id: &ContainerId) -> Result<&Container, ContainerizerError> {
        self.containers
            .get(&id.to_string())
            .ok_or_else(|| ContainerizerError::UnknownContainer(id.to_string()))
    }

    pub(crate) fn get_mut(
        &mut self,
        id: &ContainerId,
    ) -> Result<&mut Container, ContainerizerError> {
        self.containers
            .get_mut(&id.to_string())
            .ok_or_else(|| ContainerizerError::UnknownContainer(id.to_string()))
    }

    /// Moves `id` to `state` and checkpoints it; resolves once durable.
    pub(crate) fn transition(
        &mut self,
        id: &ContainerId,
        state: ContainerState,
    ) -> futures::future::BoxFuture<'static, Result<(), ContainerizerError>> {
        match self.get_mut(id) {
            Ok(c) => {
                let rec = c.enter(state);
                self.publish_state(id, state, None);
                self.checkpoint(rec)
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    /// Moves `id` to `state` and checkpoints it without waiting for the
    /// write: for the launch's middle states (ISOLATING, FETCHING). The
    /// writer keeps the order, and the launch waits for RUNNING's write,
    /// so RUNNING durable implies these are; a crash before that finds an
    /// earlier state, which recovery treats the same (an unfinished
    /// launch, destroyed). Saves a disk flush per state on the launch path.
    pub(crate) fn transition_in_background(&mut self, id: &ContainerId, state: ContainerState) {
        let w = self.transition(id, state);
        let id = id.clone();
        actix_rt::spawn(async move {
            if let Err(e) = w.await {
                tracing::error!(container = %id, error = %e, "checkpoint failed");
            }
        });
    }

    /// Writes `record`; resolves once durable.
    pub(crate) fn checkpoint(
        &self,
        record: ContainerRecord,
    ) -> futures::future::BoxFuture<'static, Result<(), ContainerizerError>> {
        let id = record.id.clone().unwrap_or_default().to_string();
        let w = self.checkpoints.put(record);
        Box::pin(async move {
            w.await
                .map_err(|message| ContainerizerError::Checkpoint { id, message })
        })
    }

    /// Tells subscribers that `id` entered `state` (with its termination
    /// once TERMINATED). Nobody listening is fine.
    pub(crate) fn publish_state(
        &self,
        id: &ContainerId,
        state: ContainerState,
        termination: Option<ContainerTermination>,
    ) {
        let _ = self.events.send(crate::agent::api::Event {
            id: Some(id.clone()),
            at_unix_nanos: berth_state::time::now_unix_nanos(),
            kind: Some(crate::agent::api::event::Kind::State(state as i32)),
            termination,
        });
    }

    /// Tells subscribers that `id` hit a limit.
    pub(crate) fn publish_limitation(&self, id: &ContainerId, l: &berth_isolators::Limitation) {
        let _ = self.events.send(crate::agent::api::Event {
            id: Some(id.clone()),
            at_unix_nanos: berth_state::time::now_unix_nanos(),
            kind: Some(crate::agent::api::event::Kind::Limitation(
                crate::agent::api::Limitation {
                    reason: l.reason as i32,
                    resource: l.resource.clone(),
                    message: l.message.clone(),
                },
            )),
            termination: None,
        });
    }

    pub(crate) fn sandbox_dir(&self, id: &ContainerId) -> PathBuf {
        let mut p = self.sandboxes.clone();
        for (i, part) in id.parts().into_iter().enumerate() {
            if i > 0 {
                p.push("containers");
            }
            p.push(part);
        }
        p
    }

    fn running(&self, id: &ContainerId) -> Result<Forked, ContainerizerError> {
        let c = self.get(id)?;
        match (&c.forked, c.state()) {
            (Some(f), ContainerState::Running) if c.cause.is_none() => Ok(f.clone()),
            _ => Err(ContainerizerError::NotRunning {
                id: id.to_string(),
                state: state_name(c.record.state),
            }),
        }
    }
}

/// Waits for a container's termination.
#[derive(Message)]
#[rtype(result = "Result<ContainerTermination, ContainerizerError>")]
pub struct Wait(pub ContainerId);

impl Handler<Wait> for ContainerizerActor {
    type Result = ResponseFuture<Result<ContainerTermination, ContainerizerError>>;

    fn handle(&mut self, Wait(id): Wait, _: &mut Context<Self>) -> Self::Result {
        let t = self.get(&id).map(|c| c.termination.clone());
        Box::pin(async move {
            t?.await
                .map_err(|_| ContainerizerError::UnknownContainer(id.to_string()))
        })
    }
}

/// Sends a signal to a running container's init.
#[derive(Message)]
#[rtype(result = "Result<(), ContainerizerError>")]
pub struct Kill(pub ContainerId, pub i32);

impl Handler<Kill> for ContainerizerActor {
    type Result = ResponseFuture<Result<(), ContainerizerError>>;

    fn handle(&mut self, Kill(id, signal): Kill, _: &mut Context<Self>) -> Self::Result {
        let running = self.running(&id);
        let launcher = self.launcher.clone();
        Box::pin(async move {
            running?;
            launcher
                .kill(id.clone(), signal)
                .await
                .map_err(|e| stage(&id, "kill", e))
        })
    }
}

/// Changes the resources of a running container.
#[derive(Message)]
#[rtype(result = "Result<(), ContainerizerError>")]
pub struct Update(pub ContainerId, pub Resources);

impl Handler<Update> for ContainerizerActor {
    type Result = ResponseActFuture<Self, Result<(), ContainerizerError>>;

    fn handle(&mut self, Update(id, res): Update, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.running(&id) {
            return Box::pin(fut::ready(Err(e)));
        }
        let calls = self
            .get(&id)
            .map(|c| c.prepared.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|i| {
                let h = self.isolators[i].clone();
                let f = timed(
                    &self.inflight,
                    &id,
                    CallKind::Query,
                    h.name(),
                    h.update(id.clone(), res),
                );
                async move { f.await.map_err(|e| format!("{}: {e}", h.name())) }
            })
            .collect::<Vec<_>>();
        Box::pin(
            join_all(calls)
                .into_actor(self)
                .then(move |results, act, _| {
                    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
                    if !errors.is_empty() {
                        let e = stage(&id, "update", errors.join("; "));
                        return Box::pin(fut::ready(Err(e))) as ResponseActFuture<Self, _>;
                    }
                    // The new resources are what a recovered container keeps.
                    let rec = match act.get_mut(&id) {
                        Ok(c) => {
                            c.record
                                .config
                                .get_or_insert_with(Default::default)
                                .resources = Some(res);
                            c.record.clone()
                        }
                        Err(e) => return Box::pin(fut::ready(Err(e))),
                    };
                    Box::pin(act.checkpoint(rec).into_actor(act))
                }),
        )
    }
}

/// Resource usage of a container, merged from every isolator.
#[derive(Message)]
#[rtype(result = "Result<ResourceStatistics, ContainerizerError>")]
pub struct Usage(pub ContainerId);

impl Handler<Usage> for ContainerizerActor {
    type Result = ResponseFuture<Result<ResourceStatistics, ContainerizerError>>;

    fn handle(&mut self, Usage(id): Usage, _: &mut Context<Self>) -> Self::Result {
        let prepared = match self.get(&id) {
            Ok(c) => c.prepared.clone(),
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let calls: Vec<_> = prepared
            .into_iter()
            .map(|i| {
                let h = &self.isolators[i];
                timed(
                    &self.inflight,
                    &id,
                    CallKind::Query,
                    h.name(),
                    h.usage(id.clone()),
                )
            })
            .collect();
        Box::pin(async move {
            let mut total = ResourceStatistics {
                timestamp: berth_state::time::now_unix_nanos() as f64 / 1e9,
                ..Default::default()
            };
            for r in join_all(calls).await {
                merge_usage(&mut total, r.map_err(|e| stage(&id, "usage", e))?);
            }
            Ok(total)
        })
    }
}

/// Each isolator fills the figures it knows; a figure is taken from the
/// first isolator that reports it.
fn merge_usage(into: &mut ResourceStatistics, from: ResourceStatistics) {
    // A typed helper: a bare `== Default::default()` stops inferring once a
    // dependency adds `PartialEq<Other>` impls for the numeric types.
    fn is_default<T: Default + PartialEq>(v: &T) -> bool {
        *v == T::default()
    }
    macro_rules! take {
        ($($f:ident),*) => {$(
            if is_default(&into.$f) {
                into.$f = from.$f;
            }
        )*};
    }
    take!(
        cpus_user_time_secs,
        cpus_system_time_secs,
        cpus_limit,
        cpus_nr_periods,
        cpus_nr_throttled,
        cpus_throttled_time_secs,
        mem_rss_bytes,
        mem_cache_bytes,
        mem_swap_bytes,
        mem_max_usage_bytes,
        mem_limit_bytes,
        processes,
        threads,
        disk_used_bytes,
        disk_limit_bytes,
        mem_usage_bytes
    );
}

/// What `status` reports of a container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    pub id: ContainerId,
    pub state: ContainerState,
    pub supervisor: Option<ProcessRef>,
    pub init: Option<ProcessRef>,
    pub sandbox_dir: PathBuf,
    /// Every state entered, with its time.
    pub transitions: Vec<Transition>,
    pub termination: Option<ContainerTermination>,
    pub config: ContainerConfig,
    /// Facts from the isolators (e.g. `network.ip`).
    pub isolator_fields: StatusFields,
    /// The checkpoint image dir it was restored from (`berth restore`).
    pub restored_from: String,
}

/// The status of one container.
#[derive(Message)]
#[rtype(result = "Result<ContainerStatus, ContainerizerError>")]
pub struct Status(pub ContainerId);

impl Handler<Status> for ContainerizerActor {
    type Result = ResponseFuture<Result<ContainerStatus, ContainerizerError>>;

    fn handle(&mut self, Status(id): Status, _: &mut Context<Self>) -> Self::Result {
        let c = match self.get(&id) {
            Ok(c) => c,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let status = ContainerStatus {
            id: id.clone(),
            state: match c.state() {
                ContainerState::Running if c.record.paused => ContainerState::Paused,
                s => s,
            },
            supervisor: c.record.supervisor,
            init: c.record.init,
            sandbox_dir: c.sandbox.clone(),
            transitions: c.record.transitions.clone(),
            termination: c.record.termination.clone(),
            config: c.record.config.clone().unwrap_or_default(),
            isolator_fields: StatusFields::new(),
            restored_from: c.record.restored_from.clone(),
        };
        let live = !matches!(c.state(), ContainerState::Terminated);
        let calls: Vec<_> = if live {
            c.prepared
                .iter()
                .map(|&i| {
                    let h = &self.isolators[i];
                    timed(
                        &self.inflight,
                        &id,
                        CallKind::Query,
                        h.name(),
                        h.status(id.clone()),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        Box::pin(async move {
            let mut status = status;
            for fields in join_all(calls).await.into_iter().flatten() {
                status.isolator_fields.extend(fields);
            }
            Ok(status)
        })
    }
}

/// The ids of every container known (terminated ones until removed).
#[derive(Message)]
#[rtype(result = "Vec<ContainerId>")]
pub struct List;

impl Handler<List> for ContainerizerActor {
    type Result = Vec<ContainerId>;

    fn handle(&mut self, _: List, _: &mut Context<Self>) -> Self::Result {
        self.containers.values().map(|c| c.id.clone()).collect()
    }
}

/// What a metrics scrape reads of the containers: how many are in each
/// state, and the ids of the RUNNING ones (not being destroyed).
#[derive(Message)]
#[rtype(result = "(Vec<(ContainerState, u64)>, Vec<ContainerId>)")]
pub struct Census;

impl Handler<Census> for ContainerizerActor {
    type Result = MessageResult<Census>;

    fn handle(&mut self, _: Census, _: &mut Context<Self>) -> Self::Result {
        // Every state, zero included (STARTING … TERMINATED, CHECKPOINTING).
        let mut states: Vec<(ContainerState, u64)> = (ContainerState::Starting as i32
            ..=ContainerState::Terminated as i32)
            .chain([ContainerState::Checkpointing as i32])
            .filter_map(|v| ContainerState::try_from(v).ok())
            .map(|s| (s, 0))
            .collect();
        let mut running = Vec::new();
        for c in self.containers.values() {
            let state = c.state();
            if let Some((_, n)) = states.iter_mut().find(|(s, _)| *s == state) {
                *n += 1;
            }
            if state == ContainerState::Running && c.cause.is_none() {
                running.push(c.id.clone());
            }
        }
        MessageResult((states, running))
    }
}

/// Drops a terminated container's record and sandbox (and those of its
/// nested containers).
#[derive(Message)]
#[rtype(result = "Result<(), ContainerizerError>")]
pub struct Remove(pub ContainerId);

impl Handler<Remove> for ContainerizerActor {
    type Result = ResponseActFuture<Self, Result<(), ContainerizerError>>;

    fn handle(&mut self, Remove(id): Remove, _: &mut Context<Self>) -> Self::Result {
        let key = id.to_string();
        // The container and its nested ones, deepest first.
        let mut victims: Vec<ContainerId> = self
            .containers
            .values()
            .filter(|c| c.id.parts().starts_with(&id.parts()))
            .map(|c| c.id.clone())
            .collect();
        if victims.is_empty() {
            return Box::pin(fut::ready(Err(ContainerizerError::UnknownContainer(key))));
        }
        if let Some(live) = victims
            .iter()
            .filter_map(|v| self.containers.get(&v.to_string()))
            .find(|c| c.state() != ContainerState::Terminated)
        {
            return Box::pin(fut::ready(Err(ContainerizerError::NotTerminated {
                id: live.id.to_string(),
                state: state_name(live.record.state),
            })));
        }
        victims.sort_by_key(|v| std::cmp::Reverse(v.parts().len()));
        let checkpoints = self.checkpoints.clone();
        let launcher = self.launcher.clone();
        let sandbox = self.sandbox_dir(&id);
        let nested = id.parent.is_some();
        let id2 = id.clone();
        let ids = victims.clone();
        let work = async move {
            for v in ids {
                // The runtime dir first (a destroy cut short by a crash may
                // have left it), then the record: a crash in between
                // leaves a record, which a later remove finishes.
                launcher
                    .remove(v.clone())
                    .await
                    .map_err(|e| stage(&v, "remove runtime dir", e))?;
                checkpoints.delete(v.clone()).await.map_err(|message| {
                    ContainerizerError::Checkpoint {
                        id: v.to_string(),
                        message,
                    }
                })?;
            }
            tokio::task::spawn_blocking(move || match nested {
                // A top-level sandbox leaves its name now; its files go on
                // the trash thread (an unlink each, on disk).
                false => sandbox_trash(sandbox.parent().unwrap_or(&sandbox))
                    .discard(&sandbox)
                    .map_err(|e| format!("remove sandbox: {e}")),
                true => remove_sandbox(&sandbox, nested),
            })
            .await
            .map_err(|e| stage(&id2, "remove", e))?
            .map_err(|e| stage(&id2, "remove", e))
        };
        Box::pin(work.into_actor(self).map(move |r, act, _| {
            if r.is_ok() {
                for v in victims {
                    act.containers.remove(&v.to_string());
                }
            }
            r
        }))
    }
}

/// Destroys a container (any state); concurrent calls share one attempt.
#[derive(Message)]
#[rtype(result = "Result<ContainerTermination, ContainerizerError>")]
pub struct Destroy(pub ContainerId);

impl Handler<Destroy> for ContainerizerActor {
    type Result = ResponseFuture<Result<ContainerTermination, ContainerizerError>>;

    fn handle(&mut self, Destroy(id): Destroy, ctx: &mut Context<Self>) -> Self::Result {
        self.requested_destroy(&id, None, ctx)
    }
}

impl ContainerizerActor {
    /// A destroy someone asked for; `grace` (a stop's) replaces the
    /// config's between SIGTERM and SIGKILL unless a destroy is under way.
    fn requested_destroy(
        &mut self,
        id: &ContainerId,
        grace: Option<std::time::Duration>,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<ContainerTermination, ContainerizerError>> {
        if let (Some(g), Ok(c)) = (grace, self.get_mut(id)) {
            if c.attempt.is_none() {
                c.stop_grace_ms = Some(g.as_millis() as u64);
            }
        }
        let attempt = self.start_destroy(id, Cause::Requested, ctx);
        Box::pin(async move { attempt?.await.map_err(|_| ContainerizerError::Gone)? })
    }
}

/// Freezes (`true`, `berth pause`) or thaws a RUNNING container's
/// processes; the record keeps it (and the freezer does across a restart).
pub struct SetPaused(pub ContainerId, pub bool);

impl Message for SetPaused {
    type Result = Result<(), ContainerizerError>;
}

impl Handler<SetPaused> for ContainerizerActor {
    type Result = ResponseActFuture<Self, Result<(), ContainerizerError>>;

    fn handle(&mut self, SetPaused(id, paused): SetPaused, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.running(&id) {
            return Box::pin(fut::ready(Err(e)));
        }
        let call = timed(
            &self.inflight,
            &id,
            CallKind::Query,
            "launcher",
            self.launcher.set_frozen(id.clone(), paused),
        );
        Box::pin(call.into_actor(self).then(move |r, act, _| {
            if let Err(e) = r {
                let what = if paused { "pause" } else { "resume" };
                return Box::pin(fut::ready(Err(stage(&id, what, e))))
                    as ResponseActFuture<Self, Result<(), ContainerizerError>>;
            }
            let rec = match act.get_mut(&id) {
                Ok(c) => {
                    c.record.paused = paused;
                    c.record.clone()
                }
                Err(e) => return Box::pin(fut::ready(Err(e))),
            };
            tracing::info!(container = %id, paused, "paused state changed");
            Box::pin(act.checkpoint(rec).into_actor(act))
        }))
    }
}

/// Destroy after a grace: SIGTERM, then SIGKILL for whatever is left
/// once the grace is over (a destroy under way is joined as it is).
pub struct Stop(pub ContainerId, pub std::time::Duration);

impl Message for Stop {
    type Result = Result<ContainerTermination, ContainerizerError>;
}

impl Handler<Stop> for ContainerizerActor {
    type Result = ResponseFuture<Result<ContainerTermination, ContainerizerError>>;

    fn handle(&mut self, Stop(id, grace): Stop, ctx: &mut Context<Self>) -> Self::Result {
        self.requested_destroy(&id, Some(grace), ctx)
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Where removed top-level sandboxes wait for the trash thread: beside
/// `sandboxes` (whose names are ids), on the same filesystem.
pub(crate) fn sandbox_trash(sandboxes: &std::path::Path) -> berth_state::trash::Trash {
    berth_state::trash::Trash::new(
        sandboxes
            .parent()
            .unwrap_or(sandboxes)
            .join("trash/sandboxes"),
    )
}

/// Removes a sandbox fd by fd, never through a link. A nested sandbox
/// whose path in its parent's sandbox is no longer a plain directory (the
/// parent container replaced `containers` or the child's dir by a link)
/// is out of berth's reach by that path; whatever berth made went with
/// the parent's tree, which is removed with the parent.
fn remove_sandbox(sandbox: &std::path::Path, nested: bool) -> Result<(), String> {
    use berth_state::safe_path;
    match safe_path::remove_tree(sandbox) {
        Err(e) if nested && matches!(e.errno(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
            tracing::warn!(sandbox = %sandbox.display(), error = %e,
                "nested sandbox path was replaced by its parent container; not following it");
            Ok(())
        }
        r => r.map_err(|e| format!("remove sandbox: {e}")),
    }
}
