//! How a container's end becomes a [`ContainerTermination`] (reasons as
//! containerd's CRI helpers report them).

use berth_isolators::Limitation;
use berth_state::{ContainerTermination, DestroyCause, ExitStatus, TerminationReason};

/// The exit code of a termination without an exit status (the command
/// never started; `no_exit_status` says so).
pub const NO_EXIT_CODE: i32 = -1;

/// Why a destroy started. The first cause wins.
#[derive(Debug, Clone)]
pub(crate) enum Cause {
    /// The command exited by itself.
    Exited,
    /// Someone called destroy.
    Requested,
    /// An isolator reported a limitation.
    Limited(Limitation),
    /// A launch step failed.
    LaunchFailed(String),
    /// The agent restarted while the container was launching.
    AgentRestartedDuringLaunch(String),
    /// The exit status could not be learned.
    Lost(String),
}

impl Cause {
    /// The checkpointed form.
    pub(crate) fn to_record(&self) -> DestroyCause {
        use berth_state::destroy_cause::Kind;
        let (kind, message) = match self {
            Cause::Exited => (Kind::Exited, String::new()),
            Cause::Requested => (Kind::Requested, String::new()),
            Cause::Limited(l) => {
                return DestroyCause {
                    kind: Kind::Limited as i32,
                    message: l.message.clone(),
                    resource: l.resource.clone(),
                    limitation_reason: l.reason as i32,
                }
            }
            Cause::LaunchFailed(m) => (Kind::LaunchFailed, m.clone()),
            Cause::AgentRestartedDuringLaunch(m) => (Kind::AgentRestarted, m.clone()),
            Cause::Lost(m) => (Kind::Lost, m.clone()),
        };
        DestroyCause {
            kind: kind as i32,
            message,
            ..Default::default()
        }
    }

    /// Back from the checkpoint; `None` for a record without one.
    pub(crate) fn from_record(r: &DestroyCause) -> Option<Cause> {
        use berth_state::destroy_cause::Kind;
        Some(match Kind::try_from(r.kind).ok()? {
            Kind::Unspecified => return None,
            Kind::Exited => Cause::Exited,
            Kind::Requested => Cause::Requested,
            Kind::Limited => Cause::Limited(Limitation {
                reason: TerminationReason::try_from(r.limitation_reason)
                    .unwrap_or(TerminationReason::Limitation),
                resource: r.resource.clone(),
                message: r.message.clone(),
            }),
            Kind::LaunchFailed => Cause::LaunchFailed(r.message.clone()),
            Kind::AgentRestarted => Cause::AgentRestartedDuringLaunch(r.message.clone()),
            Kind::Lost => Cause::Lost(r.message.clone()),
        })
    }
}

/// The termination for a destroy with `cause` and the init's `exit` status;
/// `started`: the command may have run (its release was asked for). A
/// container destroyed on request before that has no exit status (as in
/// Mesos, a termination without one): exit code -1, no signal,
/// `no_exit_status`, reason DESTROYED — the SIGKILL of its waiting init is
/// not the command's end.
pub(crate) fn compose(
    cause: &Cause,
    exit: Option<&ExitStatus>,
    started: bool,
) -> ContainerTermination {
    let now = berth_state::time::now_unix_nanos();
    let mut t = ContainerTermination {
        finished_at_unix_nanos: exit.map(|e| e.at_unix_nanos()).unwrap_or(now),
        ..Default::default()
    };
    if let Some(ExitStatus::Signaled { signal, .. }) = exit {
        t.signal = Some(*signal);
    }
    t.exit_code = exit.map(|e| e.code()).unwrap_or(255);
    let reason = match (cause, exit) {
        (Cause::Requested, None | Some(ExitStatus::Signaled { .. })) if !started => {
            t.message = "destroyed on request before the command started".into();
            t.exit_code = NO_EXIT_CODE;
            t.signal = None;
            t.no_exit_status = true;
            TerminationReason::Destroyed
        }
        // A command that could not start is a start error whatever else happened.
        (_, Some(ExitStatus::StartError { message, .. })) => {
            t.message = message.clone();
            TerminationReason::StartError
        }
        (Cause::Exited, Some(ExitStatus::Exited { code: 0, .. })) => TerminationReason::Completed,
        (Cause::Exited, Some(ExitStatus::Exited { code, .. })) => {
            t.message = format!("exited with code {code}");
            TerminationReason::Failed
        }
        (Cause::Exited, Some(ExitStatus::Signaled { signal, .. })) => {
            t.message = format!("killed by signal {signal}");
            TerminationReason::Failed
        }
        (Cause::Requested, _) => {
            t.message = "destroyed on request".into();
            if exit.is_none() {
                // Nothing ever ran.
                t.exit_code = 137;
            }
            TerminationReason::Destroyed
        }
        (Cause::Limited(l), _) => {
            t.limited_resource = l.resource.clone();
            t.message = l.message.clone();
            if exit.is_none() {
                t.exit_code = 137;
            }
            if l.reason == TerminationReason::OomKilled {
                TerminationReason::OomKilled
            } else {
                TerminationReason::Limitation
            }
        }
        (Cause::LaunchFailed(m), _) | (Cause::AgentRestartedDuringLaunch(m), _) => {
            t.message = m.clone();
            t.exit_code = 128;
            TerminationReason::StartError
        }
        (Cause::Lost(_), _) | (Cause::Exited, None) => {
            t.message = match cause {
                Cause::Lost(m) => m.clone(),
                _ => "the exit status was lost".into(),
            };
            t.exit_code = 255;
            TerminationReason::Unknown
        }
    };
    t.reason = reason as i32;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        let ex = |code| ExitStatus::Exited {
            code,
            at_unix_nanos: 1,
        };
        let t = compose(&Cause::Exited, Some(&ex(0)), true);
        assert_eq!(
            (t.reason, t.exit_code),
            (TerminationReason::Completed as i32, 0)
        );
        let t = compose(&Cause::Exited, Some(&ex(7)), true);
        assert_eq!(
            (t.reason, t.exit_code),
            (TerminationReason::Failed as i32, 7)
        );
        let sig = ExitStatus::Signaled {
            signal: 9,
            at_unix_nanos: 1,
        };
        let t = compose(&Cause::Exited, Some(&sig), true);
        assert_eq!(
            (t.reason, t.exit_code, t.signal),
            (TerminationReason::Failed as i32, 137, Some(9))
        );
        let t = compose(&Cause::Requested, Some(&sig), true);
        assert_eq!(
            (t.reason, t.exit_code, t.signal, t.no_exit_status),
            (TerminationReason::Destroyed as i32, 137, Some(9), false)
        );
        // Destroyed before the command started: the init's SIGKILL is not
        // an exit status of the command.
        for exit in [Some(&sig), None] {
            let t = compose(&Cause::Requested, exit, false);
            assert_eq!(
                (t.reason, t.exit_code, t.signal, t.no_exit_status),
                (TerminationReason::Destroyed as i32, -1, None, true)
            );
            assert!(t.message.contains("before the command started"), "{t:?}");
        }
        let se = ExitStatus::StartError {
            errno: 2,
            message: "exec /x: ENOENT".into(),
            at_unix_nanos: 1,
        };
        let t = compose(&Cause::Exited, Some(&se), true);
        assert_eq!(
            (t.reason, t.exit_code),
            (TerminationReason::StartError as i32, 128)
        );
        let t = compose(&Cause::Lost("gone".into()), None, true);
        assert_eq!(
            (t.reason, t.exit_code),
            (TerminationReason::Unknown as i32, 255)
        );
        let oom = Limitation {
            reason: TerminationReason::OomKilled,
            resource: "memory".into(),
            message: "m".into(),
        };
        let t = compose(&Cause::Limited(oom), Some(&sig), true);
        assert_eq!(
            (t.reason, t.exit_code),
            (TerminationReason::OomKilled as i32, 137)
        );
    }
}
