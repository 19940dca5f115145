//! Each isolator runs in its own actor: calls to one isolator are
//! serialized (its `&mut self` state needs no lock), a slow isolator never
//! blocks the containerizer's mailbox, and a panicking plugin becomes an
//! error instead of silently killing an actor.

use crate::{Isolator, IsolatorError, IsolatorFuture, Limitation, PrepareRequest, StatusFields};
use actix::prelude::*;
use berth_state::{ContainerId, ContainerRecord, LaunchInfo, ResourceStatistics, Resources};
use futures::future::{BoxFuture, FutureExt};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// The actor that owns one isolator.
pub struct IsolatorActor {
    name: String,
    inner: Box<dyn Isolator>,
}

impl Actor for IsolatorActor {
    type Context = Context<Self>;
}

type CallFn<T> = Box<dyn FnOnce(&mut dyn Isolator) -> IsolatorFuture<T> + Send>;

/// A call into the isolator, run inside its actor.
pub struct IsolatorCall<T: Send + 'static> {
    what: &'static str,
    f: CallFn<T>,
}

impl<T: Send + 'static> Message for IsolatorCall<T> {
    type Result = Result<T, IsolatorError>;
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl<T: Send + 'static> Handler<IsolatorCall<T>> for IsolatorActor {
    type Result = ResponseFuture<Result<T, IsolatorError>>;

    fn handle(&mut self, call: IsolatorCall<T>, _ctx: &mut Self::Context) -> Self::Result {
        let name = self.name.clone();
        let what = call.what;
        let inner = &mut *self.inner;
        let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| (call.f)(inner))) {
            Ok(fut) => fut,
            Err(p) => {
                let message = panic_message(p);
                return Box::pin(async move {
                    Err(IsolatorError::Panicked {
                        isolator: name,
                        call: what,
                        message,
                    })
                });
            }
        };
        Box::pin(async move {
            match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r,
                Err(p) => Err(IsolatorError::Panicked {
                    isolator: name,
                    call: what,
                    message: panic_message(p),
                }),
            }
        })
    }
}

/// The containerizer's handle to one isolator actor: the isolator's calls,
/// as messages.
#[derive(Clone)]
pub struct IsolatorHandle {
    name: String,
    addr: Addr<IsolatorActor>,
    watches: bool,
    isolates: bool,
}

impl IsolatorActor {
    /// Starts `isolator` in its own actor on the current arbiter.
    pub fn spawn(isolator: Box<dyn Isolator>) -> IsolatorHandle {
        let name = isolator.name().to_string();
        let watches = isolator.watches();
        let isolates = isolator.isolates();
        let addr = IsolatorActor {
            name: name.clone(),
            inner: isolator,
        }
        .start();
        IsolatorHandle {
            name,
            addr,
            watches,
            isolates,
        }
    }
}

impl IsolatorHandle {
    /// The isolator's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether its `watch` can ever resolve ([`Isolator::watches`]).
    pub fn watches(&self) -> bool {
        self.watches
    }

    /// Whether its `isolate` does anything ([`Isolator::isolates`]).
    pub fn isolates(&self) -> bool {
        self.isolates
    }

    fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut dyn Isolator) -> IsolatorFuture<T> + Send + 'static,
    ) -> IsolatorFuture<T> {
        let req = self.addr.send(IsolatorCall {
            what,
            f: Box::new(f),
        });
        let name = self.name.clone();
        Box::pin(async move {
            req.await
                .map_err(|_| IsolatorError::Gone { isolator: name })?
        })
    }

    /// Shared, not copied: every isolator is given the same (possibly
    /// thousands of) records.
    pub fn recover(
        &self,
        states: Arc<[ContainerRecord]>,
        orphans: Arc<[ContainerId]>,
    ) -> IsolatorFuture<()> {
        self.call("recover", move |i| i.recover(&states, &orphans))
    }

    pub fn prepare(&self, req: PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        self.call("prepare", move |i| i.prepare(&req))
    }

    pub fn isolate(&self, id: ContainerId, pid: i32) -> IsolatorFuture<()> {
        self.call("isolate", move |i| i.isolate(&id, pid))
    }

    /// Resolves with the limitation, or never. A panic in the plugin's
    /// watch is logged and the watch ends (never resolves).
    pub fn watch(&self, id: ContainerId) -> BoxFuture<'static, Limitation> {
        let started = self.call("watch", move |i| {
            let w = i.watch(&id);
            Box::pin(async move { Ok(w) })
        });
        let name = self.name.clone();
        Box::pin(async move {
            match started.await {
                Ok(w) => match AssertUnwindSafe(w).catch_unwind().await {
                    Ok(l) => l,
                    Err(p) => {
                        tracing::error!(isolator = %name, panic = %panic_message(p), "watch panicked");
                        futures::future::pending().await
                    }
                },
                Err(e) => {
                    tracing::error!(isolator = %name, error = %e, "watch could not start");
                    futures::future::pending().await
                }
            }
        })
    }

    pub fn limitation(&self, id: ContainerId) -> IsolatorFuture<Option<Limitation>> {
        self.call("limitation", move |i| i.limitation(&id))
    }

    pub fn update(&self, id: ContainerId, resources: Resources) -> IsolatorFuture<()> {
        self.call("update", move |i| i.update(&id, &resources))
    }

    pub fn usage(&self, id: ContainerId) -> IsolatorFuture<ResourceStatistics> {
        self.call("usage", move |i| i.usage(&id))
    }

    pub fn status(&self, id: ContainerId) -> IsolatorFuture<StatusFields> {
        self.call("status", move |i| i.status(&id))
    }

    pub fn cleanup(&self, id: ContainerId) -> IsolatorFuture<()> {
        self.call("cleanup", move |i| i.cleanup(&id))
    }
}
