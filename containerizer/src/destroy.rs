//! The destroy, in Mesos's stages:
//! nested containers first → wait for the in-flight launch step → the
//! launcher kills every process → the exit status → isolators' `cleanup`
//! in reverse order → provisioner → the TERMINATED record and the
//! termination for every `wait`.
//!
//! Callable in any state and idempotent; concurrent callers share one
//! attempt. A failing stage leaves the container DESTROYING, counts in
//! `container_destroy_errors`, and a later destroy retries what is left.

use crate::actor::{bump, Attempt, ContainerizerActor};
use crate::error::stage;
use crate::inflight::{timed, CallKind};
use crate::metrics::DestroyStage;
use crate::termination::{compose, Cause};
use crate::ContainerizerError;
use actix::prelude::*;
use berth_state::{ContainerId, ContainerState, ContainerTermination};
use futures::channel::oneshot;
use futures::future::{join_all, FutureExt};
use std::time::{Duration, Instant};

type Stage = ResponseActFuture<ContainerizerActor, Result<(), ContainerizerError>>;

fn done(r: Result<(), ContainerizerError>) -> Stage {
    Box::pin(fut::ready(r))
}

impl ContainerizerActor {
    /// Starts destroying `id` for `cause` (or joins the attempt under way)
    /// and returns the attempt's outcome.
    pub(crate) fn start_destroy(
        &mut self,
        id: &ContainerId,
        cause: Cause,
        ctx: &mut Context<Self>,
    ) -> Result<Attempt, ContainerizerError> {
        let c = self.get_mut(id)?;
        if let Some(a) = &c.attempt {
            return Ok(a.clone());
        }
        let (tx, rx) = oneshot::channel();
        let attempt = rx.shared();
        if c.state() == ContainerState::Terminated {
            let t = c.record.termination.clone().unwrap_or_default();
            let _ = tx.send(Ok(t));
            return Ok(attempt);
        }
        c.cause.get_or_insert(cause);
        c.attempt = Some(attempt.clone());
        // The limitation watches stay until the termination is composed:
        // an OOM kill of the init can be learned after its exit.
        let key = id.to_string();
        tracing::info!(container = %id, cause = ?c.cause, "destroying");
        ctx.spawn(self.destroy_stages(id.clone()).map(move |res, act, _| {
            if let Some(c) = act.containers.get_mut(&key) {
                c.attempt = None;
            }
            match &res {
                Ok(t) => act.metrics.destroyed(t.reason()),
                Err(e) => {
                    bump(&act.metrics.container_destroy_errors);
                    tracing::error!(container = %key, error = %e, "destroy failed; the container stays DESTROYING");
                }
            }
            let _ = tx.send(res);
        }));
        Ok(attempt)
    }

    fn destroy_stages(
        &mut self,
        id: ContainerId,
    ) -> ResponseActFuture<Self, Result<ContainerTermination, ContainerizerError>> {
        let (i1, i2, i3, i4, i5, i6) = (
            id.clone(),
            id.clone(),
            id.clone(),
            id.clone(),
            id.clone(),
            id.clone(),
        );
        use DestroyStage as S;
        Box::pin(
            self.timed_stage(S::MarkDestroying, |act| act.stage_mark_destroying(&id))
                .then(move |r, act, ctx| match r {
                    Ok(()) => act.timed_stage(S::Nested, |act| act.stage_nested(&i1, ctx)),
                    e => done(e),
                })
                .then(move |r, act, _| match r {
                    Ok(()) => act.timed_stage(S::WaitLaunch, |act| act.stage_wait_launch(&i2)),
                    e => done(e),
                })
                .then(move |r, act, _| match r {
                    Ok(()) => act.timed_stage(S::Kill, |act| act.stage_kill(&i3)),
                    e => done(e),
                })
                .then(move |r, act, _| match r {
                    Ok(()) => act.timed_stage(S::Cleanup, |act| act.stage_cleanup(&i4)),
                    e => done(e),
                })
                .then(move |r, act, _| match r {
                    Ok(()) => act.timed_stage(S::Provisioner, |act| act.stage_provisioner(&i6)),
                    e => done(e),
                })
                .then(move |r, act, _| match r {
                    Ok(()) => act.timed_stage(S::Terminate, |act| act.stage_terminate(&i5)),
                    Err(e) => Box::pin(fut::ready(Err(e))),
                }),
        )
    }

    /// Runs a stage and, when it succeeds, observes how long it took in
    /// `berth_destroy_stage_duration_seconds`.
    fn timed_stage<T: 'static>(
        &mut self,
        stage: DestroyStage,
        run: impl FnOnce(&mut Self) -> ResponseActFuture<Self, Result<T, ContainerizerError>>,
    ) -> ResponseActFuture<Self, Result<T, ContainerizerError>> {
        let started = Instant::now();
        Box::pin(run(self).map(move |r, act, _| {
            if r.is_ok() {
                act.metrics.destroy_stage(stage).observe(started.elapsed());
            }
            r
        }))
    }

    /// DESTROYING is checkpointed first: after a crash the destroy resumes
    /// with its cause. The destroy of a command that exited does not wait
    /// for that write: its cause is in the exit status the supervisor
    /// wrote in the runtime dir, which stays until TERMINATED is durable
    /// (the writer keeps the order), and a crash before the write leaves
    /// a record whose command is gone, which recovery destroys the same.
    fn stage_mark_destroying(&mut self, id: &ContainerId) -> Stage {
        match self.get(id) {
            Ok(c) if c.state() == ContainerState::Destroying => done(Ok(())),
            Ok(c) => {
                let exited = matches!(c.cause, Some(Cause::Exited));
                if let Ok(c) = self.get_mut(id) {
                    c.record.destroy_cause = c.cause.as_ref().map(Cause::to_record);
                }
                if exited {
                    self.transition_in_background(id, ContainerState::Destroying);
                    return done(Ok(()));
                }
                Box::pin(
                    self.transition(id, ContainerState::Destroying)
                        .into_actor(self),
                )
            }
            Err(e) => done(Err(e)),
        }
    }

    fn stage_nested(&mut self, id: &ContainerId, ctx: &mut Context<Self>) -> Stage {
        let children: Vec<ContainerId> = self
            .containers
            .values()
            .filter(|c| c.id.parent.as_deref() == Some(id))
            .map(|c| c.id.clone())
            .collect();
        let attempts: Vec<_> = children
            .iter()
            .filter_map(|child| {
                let a = self.start_destroy(child, Cause::Requested, ctx).ok()?;
                let child = child.clone();
                Some(async move { (child, a.await) })
            })
            .collect();
        let id = id.clone();
        Box::pin(
            async move {
                for (child, r) in join_all(attempts).await {
                    match r {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            return Err(stage(&id, &format!("destroy of nested {child}"), e))
                        }
                        Err(_) => return Err(ContainerizerError::Gone),
                    }
                }
                Ok(())
            }
            .into_actor(self),
        )
    }

    /// Waits until the launch chain's in-flight step has finished.
    fn stage_wait_launch(&mut self, id: &ContainerId) -> Stage {
        match self.get(id).map(|c| c.launch_done.clone()) {
            Ok(Some(done)) => Box::pin(done.map(|_| Ok(())).into_actor(self)),
            Ok(None) => done(Ok(())),
            Err(e) => done(Err(e)),
        }
    }

    /// Kills every process of the container and collects the exit status.
    fn stage_kill(&mut self, id: &ContainerId) -> Stage {
        let c = match self.get(id) {
            Ok(c) => c,
            Err(e) => return done(Err(e)),
        };
        if !c.may_have_forked() {
            return done(Ok(()));
        }
        // A stop's grace, else the config's.
        let grace = c.stop_grace_ms.unwrap_or_else(|| {
            c.record
                .config
                .as_ref()
                .map(|c| c.kill_grace_period_ms)
                .unwrap_or(0)
        });
        let polite = grace > 0 && c.exit.is_none() && matches!(c.cause, Some(Cause::Requested));
        // A paused container's processes could not act on SIGTERM.
        let thaw = polite && c.record.paused;
        let have_exit = c.exit.is_some();
        let launcher = self.launcher.clone();
        let inflight = self.inflight.clone();
        let id = id.clone();
        let id2 = id.clone();
        let work = async move {
            if thaw {
                let _ = launcher.set_frozen(id.clone(), false).await;
            }
            if polite {
                // Shutdown as the Nomad executor does it: a signal, a grace
                // period, then SIGKILL for whatever is left.
                if launcher.kill(id.clone(), libc::SIGTERM).await.is_ok() {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(grace),
                        launcher.wait(id.clone()),
                    )
                    .await;
                }
            }
            timed(
                &inflight,
                &id,
                CallKind::Cleanup,
                "launcher",
                launcher.destroy(id.clone()),
            )
            .await
            .map_err(|e| stage(&id, "kill", e))?;
            crate::failpoint::hit("destroy:after-kill");
            if have_exit {
                return Ok(None);
            }
            let wait = timed(
                &inflight,
                &id,
                CallKind::Cleanup,
                "launcher",
                launcher.wait(id.clone()),
            );
            match wait.await {
                Ok(status) => Ok(Some(status)),
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "exit status unknown");
                    Ok(None)
                }
            }
        };
        Box::pin(work.into_actor(self).map(move |r, act, _| {
            let status = r?;
            let c = act.get_mut(&id2)?;
            if let Some(s) = status {
                c.exit.get_or_insert(s);
            }
            Ok(())
        }))
    }

    /// Every prepared isolator's cleanup, in reverse order; all are tried
    /// even when one fails, and the ones that succeeded are not retried.
    fn stage_cleanup(&mut self, id: &ContainerId) -> Stage {
        let (order, exited) = match self.get(id) {
            Ok(c) => (
                c.prepared.iter().rev().copied().collect::<Vec<usize>>(),
                matches!(c.cause, Some(Cause::Exited)),
            ),
            Err(e) => return done(Err(e)),
        };
        let handles: Vec<_> = order
            .iter()
            .map(|&i| (i, self.isolators[i].clone()))
            .collect();
        let id2 = id.clone();
        let inflight = self.inflight.clone();
        let work = async move {
            // An exit may be an isolator's doing (an OOM kill) whose notice
            // has not arrived: ask before the cleanups remove the evidence.
            let mut limitation = None;
            if exited {
                // Only an isolator that watches can have limited it.
                for (_, h) in handles.iter().rev().filter(|(_, h)| h.watches()) {
                    let asked = timed(
                        &inflight,
                        &id2,
                        CallKind::Query,
                        h.name(),
                        h.limitation(id2.clone()),
                    );
                    if let Ok(Some(l)) = asked.await {
                        limitation = Some(l);
                        break;
                    }
                }
            }
            let mut cleaned = Vec::new();
            let mut failed = Vec::new();
            for (i, h) in handles {
                let call = timed(
                    &inflight,
                    &id2,
                    CallKind::Cleanup,
                    h.name(),
                    h.cleanup(id2.clone()),
                );
                match call.await {
                    Ok(()) => {
                        crate::failpoint::hit(&format!("destroy:after-cleanup:{}", h.name()));
                        cleaned.push(i)
                    }
                    Err(e) => failed.push(format!("{}: {e}", h.name())),
                }
            }
            if failed.is_empty() {
                crate::failpoint::hit("destroy:after-cleanup");
            }
            (cleaned, failed, limitation)
        };
        let id = id.clone();
        Box::pin(
            work.into_actor(self)
                .map(move |(cleaned, failed, limitation), act, _| {
                    if let Some(l) = limitation {
                        act.publish_limitation(&id, &l);
                        if let Ok(c) = act.get_mut(&id) {
                            if matches!(c.cause, Some(Cause::Exited)) {
                                tracing::info!(container = %id, ?l, "limitation explains the exit");
                                c.cause = Some(Cause::Limited(l));
                            }
                        }
                    }
                    let c = act.get_mut(&id)?;
                    c.prepared.retain(|i| !cleaned.contains(i));
                    if failed.is_empty() {
                        Ok(())
                    } else {
                        Err(stage(&id, "cleanup", failed.join("; ")))
                    }
                }),
        )
    }

    /// The provisioner removes the rootfs it made (if it was asked for one).
    fn stage_provisioner(&mut self, id: &ContainerId) -> Stage {
        let (asked, p) = match self.get(id) {
            // A config with an image may have a rootfs even when the record
            // does not say so yet (a crash during PROVISIONING); destroy
            // of a rootfs that was never made is a no-op.
            Ok(c) => (
                c.provisioning
                    || !c.record.rootfs.is_empty()
                    || c.record
                        .config
                        .as_ref()
                        .is_some_and(|k| !k.image.is_empty()),
                self.provisioner.clone(),
            ),
            Err(e) => return done(Err(e)),
        };
        let Some(p) = p.filter(|_| asked) else {
            return done(Ok(()));
        };
        let id = id.clone();
        let call = timed(
            &self.inflight,
            &id,
            CallKind::Cleanup,
            "provisioner",
            p.destroy(id.clone()),
        );
        Box::pin(
            async move {
                call.await
                    .map_err(|e| stage(&id, "provisioner destroy", e))?;
                crate::failpoint::hit("destroy:after-provisioner");
                Ok(())
            }
            .into_actor(self),
        )
    }

    /// The termination is checkpointed with the TERMINATED record (kept
    /// until `remove`) and delivered to every waiter.
    fn stage_terminate(
        &mut self,
        id: &ContainerId,
    ) -> ResponseActFuture<Self, Result<ContainerTermination, ContainerizerError>> {
        let launcher = self.launcher.clone();
        let c = match self.get_mut(id) {
            Ok(c) => c,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let forked = c.may_have_forked();
        let watches: Vec<tokio::task::AbortHandle> = c.watches.drain(..).collect();
        c.watch_epoch = 0;
        let cause = c.cause.clone().unwrap_or(Cause::Requested);
        let t = compose(&cause, c.exit.as_ref(), c.command_may_have_started());
        c.record.termination = Some(t.clone());
        c.record.prepared_isolators.clear();
        let rec = c.enter(ContainerState::Terminated);
        self.publish_state(id, ContainerState::Terminated, Some(t.clone()));
        for w in watches {
            w.abort();
        }
        let cp = self.checkpoint(rec);
        let id = id.clone();
        let id2 = id.clone();
        let work = async move {
            cp.await?;
            if forked {
                // The exit status now lives in the record.
                launcher
                    .remove(id.clone())
                    .await
                    .map_err(|e| stage(&id, "remove runtime dir", e))?;
                crate::failpoint::hit("destroy:after-remove-runtime-dir");
            }
            Ok(())
        };
        Box::pin(work.into_actor(self).map(move |r: Result<(), ContainerizerError>, act, _| {
            r?;
            let c = act.get_mut(&id2)?;
            if let Some(tx) = c.termination_tx.take() {
                let _ = tx.send(t.clone());
            }
            tracing::info!(container = %id2, reason = t.reason().as_str_name(), exit_code = t.exit_code, "terminated");
            Ok(t)
        }))
    }
}
