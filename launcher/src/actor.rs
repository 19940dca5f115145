//! `LauncherActor`: any [`Launcher`] as an actix actor, as the containerizer
//! talks to its components. Each handler only starts the launcher's
//! future (whose blocking parts already run on the blocking pool), so the
//! actor's thread never blocks and a slow destroy does not hold up a
//! status query.

use crate::{Forked, LaunchError, LaunchSpec, Launcher, ProcessStatus};
use actix::prelude::*;
use berth_state::{ContainerId, ContainerRecord, ExitStatus};
use std::sync::Arc;

/// The actor wrapping launcher `L`.
pub struct LauncherActor<L: Launcher> {
    launcher: Arc<L>,
}

impl<L: Launcher> LauncherActor<L> {
    /// Wraps `launcher`; start it with `.start()`.
    pub fn new(launcher: L) -> Self {
        LauncherActor {
            launcher: Arc::new(launcher),
        }
    }
}

impl<L: Launcher> Actor for LauncherActor<L> {
    type Context = Context<Self>;
}

/// [`Launcher::recover`].
#[derive(Message)]
#[rtype(result = "Result<Vec<ContainerId>, LaunchError>")]
pub struct Recover(pub Vec<ContainerRecord>);

/// [`Launcher::fork`].
#[derive(Message)]
#[rtype(result = "Result<Forked, LaunchError>")]
pub struct Fork(pub LaunchSpec);

/// [`Launcher::release`].
#[derive(Message)]
#[rtype(result = "Result<(), LaunchError>")]
pub struct Release(pub ContainerId);

/// [`Launcher::kill`].
#[derive(Message)]
#[rtype(result = "Result<(), LaunchError>")]
pub struct Kill(pub ContainerId, pub i32);

/// [`Launcher::destroy`].
#[derive(Message)]
#[rtype(result = "Result<(), LaunchError>")]
pub struct Destroy(pub ContainerId);

/// [`Launcher::status`].
#[derive(Message)]
#[rtype(result = "Result<ProcessStatus, LaunchError>")]
pub struct Status(pub ContainerId);

/// [`Launcher::wait`].
#[derive(Message)]
#[rtype(result = "Result<ExitStatus, LaunchError>")]
pub struct Wait(pub ContainerId);

/// [`Launcher::remove`].
#[derive(Message)]
#[rtype(result = "Result<(), LaunchError>")]
pub struct Remove(pub ContainerId);

macro_rules! forward {
    ($msg:ty, $out:ty, |$l:ident, $m:ident| $call:expr) => {
        impl<L: Launcher> Handler<$msg> for LauncherActor<L> {
            type Result = ResponseFuture<Result<$out, LaunchError>>;
            fn handle(&mut self, $m: $msg, _: &mut Context<Self>) -> Self::Result {
                let $l = &self.launcher;
                $call
            }
        }
    };
}

forward!(Recover, Vec<ContainerId>, |l, m| l.recover(m.0));
forward!(Fork, Forked, |l, m| l.fork(m.0));
forward!(Release, (), |l, m| l.release(m.0));
forward!(Kill, (), |l, m| l.kill(m.0, m.1));
forward!(Destroy, (), |l, m| l.destroy(m.0));
forward!(Status, ProcessStatus, |l, m| l.status(m.0));
forward!(Wait, ExitStatus, |l, m| l.wait(m.0));
forward!(Remove, (), |l, m| l.remove(m.0));
