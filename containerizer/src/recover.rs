//! Recovery after an agent restart (Mesos's `recover`): every record is
//! read; the launcher re-attaches to live containers and names orphans;
//! isolators get the recovered and the orphaned containers; then running
//! containers are watched again, those that exited meanwhile keep their
//! real exit status, those caught mid-launch or mid-destroy are destroyed,
//! and orphans are cleaned up.

use crate::actor::{Container, ContainerizerActor};
use crate::error::{stage, state_name};
use crate::inflight::{timed, CallKind};
use crate::termination::Cause;
use crate::ContainerizerError;
use actix::prelude::*;
use berth_launcher::{Forked, ProcessStatus};
use berth_state::{
    ContainerId, ContainerRecord, ContainerState, ContainerTermination, TerminationReason,
};
use futures::future::join_all;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoverySummary {
    /// Containers still running, re-attached and watched.
    pub running: Vec<ContainerId>,
    /// Containers being destroyed now (exited meanwhile, caught mid-launch
    /// or mid-destroy).
    pub destroying: Vec<ContainerId>,
    /// Terminated containers whose termination is kept until removed.
    pub terminated: Vec<ContainerId>,
    /// Containers found on the host that no record explains; cleaned up.
    pub orphans: Vec<ContainerId>,
    /// Records that could not be read, with the reason; reported as UNKNOWN.
    pub corrupt: Vec<(String, String)>,
}

/// Recovers every checkpointed container. Run once, before any launch.
#[derive(Message)]
#[rtype(result = "Result<RecoverySummary, ContainerizerError>")]
pub struct Recover;

impl Handler<Recover> for ContainerizerActor {
    type Result = ResponseActFuture<Self, Result<RecoverySummary, ContainerizerError>>;

    fn handle(&mut self, _: Recover, _: &mut Context<Self>) -> Self::Result {
        let store = self.checkpoints.store().clone();
        let read = tokio::task::spawn_blocking(move || {
            let t0 = std::time::Instant::now();
            let r = store.list();
            tracing::info!(target: "berth::recovery", took_ms = t0.elapsed().as_secs_f64() * 1e3, "records read");
            r
        });
        Box::pin(
            async move {
                read.await
                    .map_err(|e| ContainerizerError::Setup(format!("reading checkpoints: {e}")))?
                    .map_err(|e| ContainerizerError::Setup(format!("reading checkpoints: {e}")))
            }
            .into_actor(self)
            .then(|loaded, act, _| {
                let loaded = match loaded {
                    Ok(l) => l,
                    Err(e) => return Box::pin(fut::ready(Err(e))) as ResponseActFuture<Self, _>,
                };
                let mut summary = RecoverySummary::default();
                let mut records = Vec::new();
                for r in loaded {
                    match r {
                        Ok(rec) => records.push(rec),
                        Err(e) => {
                            let key = match &e {
                                berth_state::StoreError::Corrupt { id, .. } => id.clone(),
                                _ => String::new(),
                            };
                            tracing::error!(container = %key, error = %e, "checkpoint unreadable");
                            summary.corrupt.push((key, e.to_string()));
                        }
                    }
                }
                let corrupt_ids: Vec<ContainerId> = summary
                    .corrupt
                    .iter()
                    .filter_map(|(k, _)| ContainerId::parse(k).ok())
                    .collect();
                let launcher = act.launcher.clone();
                let isolators = act.isolators.clone();
                let provisioner = act.provisioner.clone();
                // Two copies of the records, not more (thousands of them,
                // each with its config): the launcher's, and the one the
                // isolators share after it; `records` itself is adopted
                // at the end.
                let records_ids: Vec<Option<ContainerId>> =
                    records.iter().map(|r| r.id.clone()).collect();
                let for_launcher = records.clone();
                let for_isolators = records.clone();
                let mut known: std::collections::HashSet<String> = records
                    .iter()
                    .filter_map(|r| r.id.as_ref().map(|i| i.parts()[0].to_string()))
                    .collect();
                known.extend(
                    summary
                        .corrupt
                        .iter()
                        .map(|(k, _)| k.split('/').next().unwrap_or_default().to_string()),
                );
                let sandboxes = act.sandboxes.clone();
                let inflight = act.inflight.clone();
                let work = async move {
                    let t0 = std::time::Instant::now();
                    let phase = |what: &str| {
                        tracing::info!(target: "berth::recovery", took_ms = t0.elapsed().as_secs_f64() * 1e3, "{what}");
                    };
                    remove_orphan_sandboxes(sandboxes, known).await;
                    phase("orphan sandboxes scanned");
                    let all = String::new();
                    // The provisioner's recovery needs only the ids: it
                    // runs beside the launcher's and the isolators'.
                    let provisioned = async {
                        if let Some(p) = provisioner {
                            let known = records_ids.iter().flatten().cloned().collect();
                            timed(
                                &inflight,
                                &all,
                                CallKind::Recover,
                                "provisioner",
                                p.recover(known),
                            )
                            .await
                            .map_err(|e| {
                                ContainerizerError::Setup(format!("provisioner recover: {e}"))
                            })?;
                        }
                        phase("provisioner recovered");
                        Ok::<(), ContainerizerError>(())
                    };
                    let launched = async {
                    let mut orphans = timed(
                        &inflight,
                        &all,
                        CallKind::Recover,
                        "launcher",
                        launcher.recover(for_launcher),
                    )
                    .await
                    .map_err(|e| ContainerizerError::Setup(format!("launcher recover: {e}")))?;
                    phase("launcher recovered");
                    // A container whose record is unreadable is cleaned as an orphan.
                    for id in corrupt_ids {
                        if !orphans.contains(&id) {
                            orphans.push(id);
                        }
                    }
                    let (shared, orphaned): (Arc<[ContainerRecord]>, Arc<[ContainerId]>) =
                        (for_isolators.into(), orphans.clone().into());
                    let calls = isolators.iter().map(|h| {
                        timed(
                            &inflight,
                            &all,
                            CallKind::Recover,
                            h.name(),
                            h.recover(shared.clone(), orphaned.clone()),
                        )
                    });
                    for (h, r) in isolators.iter().zip(join_all(calls).await) {
                        r.map_err(|e| {
                            ContainerizerError::Setup(format!("isolator {} recover: {e}", h.name()))
                        })?;
                    }
                    phase("isolators recovered");
                    Ok::<_, ContainerizerError>(orphans)
                    };
                    let (orphans, provisioned) = futures::join!(launched, provisioned);
                    let orphans = orphans?;
                    provisioned?;
                    // In one batch per launcher: one trip to the blocking
                    // pool each, where one per container adds up over
                    // thousands.
                    // In the records' order, as `adopt` zips them below.
                    let ids: Vec<ContainerId> = records_ids
                        .iter()
                        .map(|i| i.clone().unwrap_or_default())
                        .collect();
                    let n = ids.len();
                    let asked = launcher.statuses(ids);
                    let statuses: Vec<ProcessStatus> = match timed(
                        &inflight,
                        &all,
                        CallKind::Recover,
                        "launcher",
                        async move { Ok::<_, ContainerizerError>(asked.await) },
                    )
                    .await
                    {
                        Ok(v) => v
                            .into_iter()
                            .map(|r| r.unwrap_or(ProcessStatus::Unknown))
                            .collect(),
                        Err(e) => {
                            tracing::error!(error = %e, "launcher statuses at recovery");
                            vec![ProcessStatus::Unknown; n]
                        }
                    };
                    phase("statuses read");
                    Ok((orphans, statuses))
                };
                Box::pin(work.into_actor(act).then(move |r, act, ctx| {
                    let (orphans, statuses) = match r {
                        Ok(v) => v,
                        Err(e) => {
                            return Box::pin(fut::ready(Err(e))) as ResponseActFuture<Self, _>
                        }
                    };
                    let t0 = std::time::Instant::now();
                    for (rec, st) in records.into_iter().zip(statuses) {
                        act.adopt(rec, st, &mut summary, ctx);
                    }
                    tracing::info!(target: "berth::recovery", took_ms = t0.elapsed().as_secs_f64() * 1e3, "adopted");
                    for (key, why) in &summary.corrupt {
                        act.adopt_corrupt(key, why);
                    }
                    summary.orphans = orphans.clone();
                    Box::pin(
                        act.clean_orphans(orphans)
                            .into_actor(act)
                            .map(move |r, act, _| {
                                r?;
                                let m = &act.metrics;
                                let n = |v: &[ContainerId]| v.len() as u64;
                                m.containers_recovered
                                    .store(n(&summary.running), Ordering::Relaxed);
                                m.orphans_cleaned
                                    .store(n(&summary.orphans), Ordering::Relaxed);
                                Ok(summary)
                            }),
                    )
                }))
            }),
        )
    }
}

impl ContainerizerActor {
    fn adopt(
        &mut self,
        rec: ContainerRecord,
        status: ProcessStatus,
        summary: &mut RecoverySummary,
        ctx: &mut Context<Self>,
    ) {
        let Some(id) = rec.id.clone() else { return };
        let sandbox = if rec.sandbox_dir.is_empty() {
            self.sandbox_dir(&id)
        } else {
            PathBuf::from(&rec.sandbox_dir)
        };
        let names = rec.prepared_isolators.clone();
        let mut rec = rec;
        let mut state = ContainerState::try_from(rec.state).unwrap_or(ContainerState::Unspecified);
        // A checkpoint the agent died in: the container is RUNNING again
        // (CRIU dumps with --leave-running; the image dir is the
        // operator's to retry), thawed below unless it was paused.
        let interrupted_checkpoint = state == ContainerState::Checkpointing;
        if interrupted_checkpoint {
            state = ContainerState::Running;
            rec.state = state as i32;
        }
        let mut c = Container::new(id.clone(), rec, sandbox);
        c.prepared = self
            .isolators
            .iter()
            .enumerate()
            .filter(|(_, h)| names.iter().any(|n| n == h.name()))
            .map(|(i, _)| i)
            .collect();
        if let (Some(supervisor), Some(init)) = (c.record.supervisor, c.record.init) {
            c.forked = Some(Forked { supervisor, init });
        }
        if state == ContainerState::Terminated {
            if let Some(tx) = c.termination_tx.take() {
                let _ = tx.send(c.record.termination.clone().unwrap_or_default());
            }
            self.containers.insert(id.to_string(), c);
            summary.terminated.push(id);
            return;
        }
        // A destroy under way resumes with the cause it began with.
        let began = c
            .record
            .destroy_cause
            .as_ref()
            .and_then(Cause::from_record)
            .filter(|_| state == ContainerState::Destroying);
        if let ProcessStatus::Exited(s) = &status {
            if matches!(state, ContainerState::Running | ContainerState::Destroying) {
                c.exit = Some(s.clone());
            }
        }
        let debug = c
            .record
            .config
            .as_ref()
            .is_some_and(|c| c.container_class == berth_state::ContainerClass::Debug as i32);
        let cause = match (&status, state) {
            (_, ContainerState::Destroying) if began.is_some() => began,
            // An exec lives no longer than the agent that streams its I/O
            // (as Mesos's DEBUG containers).
            (ProcessStatus::Running(_), ContainerState::Running) if debug => Some(Cause::Lost(
                "a DEBUG container (an exec) is destroyed when the agent restarts".into(),
            )),
            (ProcessStatus::Running(_), ContainerState::Running) => None,
            (ProcessStatus::Exited(_), ContainerState::Running | ContainerState::Destroying) => {
                Some(Cause::Exited)
            }
            (_, ContainerState::Running) => Some(Cause::Lost(
                "the agent restarted and the container's exit status was lost".into(),
            )),
            (_, ContainerState::Destroying) => Some(Cause::Requested),
            (_, s) => Some(Cause::AgentRestartedDuringLaunch(format!(
                "the agent restarted during launch (in {})",
                state_name(s as i32)
            ))),
        };
        self.containers.insert(id.to_string(), c);
        match cause {
            None => {
                tracing::info!(container = %id, "recovered running container");
                let paused = self.get(&id).is_ok_and(|c| c.record.paused);
                if interrupted_checkpoint && !paused {
                    let thaw = self.launcher.set_frozen(id.clone(), false);
                    let id2 = id.clone();
                    actix_rt::spawn(async move {
                        if let Err(e) = thaw.await {
                            tracing::error!(container = %id2, error = %e, "thaw after an interrupted checkpoint");
                        }
                    });
                }
                self.watch(&id, ctx);
                summary.running.push(id);
            }
            Some(cause) => {
                tracing::info!(container = %id, ?cause, "recovered container is destroyed");
                let _ = self.start_destroy(&id, cause, ctx);
                summary.destroying.push(id);
            }
        }
    }

    /// A record that cannot be read: its container is reported as UNKNOWN
    /// (its leftovers are cleaned as an orphan's).
    fn adopt_corrupt(&mut self, key: &str, why: &str) {
        let Ok(id) = ContainerId::parse(key) else {
            return;
        };
        let t = ContainerTermination {
            exit_code: 255,
            reason: TerminationReason::Unknown as i32,
            message: format!("its checkpoint could not be read: {why}"),
            finished_at_unix_nanos: berth_state::time::now_unix_nanos(),
            ..Default::default()
        };
        let rec = ContainerRecord {
            id: Some(id.clone()),
            termination: Some(t.clone()),
            ..Default::default()
        };
        let mut c = Container::new(id.clone(), rec, self.sandbox_dir(&id));
        c.enter(ContainerState::Terminated);
        if let Some(tx) = c.termination_tx.take() {
            let _ = tx.send(t);
        }
        self.containers.insert(id.to_string(), c);
    }

    /// Kills the orphans' processes and releases their isolators' resources.
    fn clean_orphans(
        &self,
        orphans: Vec<ContainerId>,
    ) -> impl std::future::Future<Output = Result<(), ContainerizerError>> {
        let launcher = self.launcher.clone();
        let isolators = self.isolators.clone();
        let inflight = self.inflight.clone();
        async move {
            for id in orphans {
                tracing::info!(container = %id, "cleaning up orphan");
                timed(
                    &inflight,
                    &id,
                    CallKind::Cleanup,
                    "launcher",
                    launcher.destroy(id.clone()),
                )
                .await
                .map_err(|e| stage(&id, "orphan kill", e))?;
                for h in isolators.iter().rev() {
                    timed(
                        &inflight,
                        &id,
                        CallKind::Cleanup,
                        h.name(),
                        h.cleanup(id.clone()),
                    )
                    .await
                    .map_err(|e| stage(&id, &format!("orphan cleanup of {}", h.name()), e))?;
                }
                launcher
                    .remove(id.clone())
                    .await
                    .map_err(|e| stage(&id, "orphan runtime dir", e))?;
            }
            Ok(())
        }
    }
}

/// Sandboxes that no record explains (a crash between a remove's record
/// delete and its sandbox removal, or between a launch's sandbox and its
/// first record, which are made at once) are removed. Nested containers'
/// sandboxes live inside their parent's, so top-level names suffice.
async fn remove_orphan_sandboxes(dir: PathBuf, known: std::collections::HashSet<String>) {
    let _ = tokio::task::spawn_blocking(move || {
        // What the last process discarded and did not get to remove.
        let trash = crate::actor::sandbox_trash(&dir);
        trash.sweep();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if known.contains(&name) || ContainerId::parse(&name).is_err() {
                continue;
            }
            tracing::info!(sandbox = %e.path().display(), "removing orphan sandbox");
            if let Err(err) = trash.discard(&e.path()) {
                tracing::warn!(sandbox = %e.path().display(), error = %err, "cannot remove orphan sandbox");
            }
        }
    })
    .await;
}
