//! Calls into berth's parts — isolators, the provisioner, the fetcher, the
//! launcher — each under a deadline, and listed while they run (what
//! `berth debug` shows, as Mesos's `/containerizer/debug`).
//!
//! A plugin that never answers must not hold a container (or the agent)
//! for good: a launch call past its deadline fails the launch (the
//! container ends START_ERROR, the message naming the call and the part);
//! a destroy call past its deadline fails that destroy stage, which counts
//! in `container_destroy_errors` and is retried by the next destroy. The
//! call itself is not stopped (a blocked syscall cannot be): it is only no
//! longer waited for.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The kinds of call, each with its own deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallKind {
    /// Recovery after a start (launcher, isolators, provisioner).
    Recover,
    /// The provisioner making a rootfs (an image pull may be part of it).
    Provision,
    /// An isolator's `prepare`.
    Prepare,
    /// An isolator's `isolate`.
    Isolate,
    /// The fetcher.
    Fetch,
    /// The launcher's fork and release of the init.
    Launch,
    /// An isolator's `cleanup`, the provisioner's rootfs removal.
    Cleanup,
    /// `usage`, `status`, `update`, `limitation`.
    Query,
}

impl CallKind {
    /// Every kind, in the order of a container's life.
    pub const ALL: [CallKind; 8] = [
        CallKind::Recover,
        CallKind::Provision,
        CallKind::Prepare,
        CallKind::Isolate,
        CallKind::Fetch,
        CallKind::Launch,
        CallKind::Cleanup,
        CallKind::Query,
    ];

    /// The name used in options and messages.
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Recover => "recover",
            CallKind::Provision => "provision",
            CallKind::Prepare => "prepare",
            CallKind::Isolate => "isolate",
            CallKind::Fetch => "fetch",
            CallKind::Launch => "launch",
            CallKind::Cleanup => "cleanup",
            CallKind::Query => "query",
        }
    }

    fn index(self) -> usize {
        CallKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

impl std::fmt::Display for CallKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The deadline of each kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts([Duration; 8]);

impl Default for Timeouts {
    /// Generous: a deadline is for a part that hangs, not a slow one
    /// (an image pull or a large fetch may take minutes).
    fn default() -> Self {
        let s = Duration::from_secs;
        let mut t = [Duration::ZERO; 8];
        for k in CallKind::ALL {
            t[k.index()] = match k {
                CallKind::Recover => s(120),
                CallKind::Provision => s(600),
                CallKind::Prepare => s(60),
                CallKind::Isolate => s(30),
                CallKind::Fetch => s(600),
                CallKind::Launch => s(60),
                CallKind::Cleanup => s(60),
                CallKind::Query => s(10),
            };
        }
        Timeouts(t)
    }
}

impl Timeouts {
    /// The deadline of `kind`.
    pub fn get(&self, kind: CallKind) -> Duration {
        self.0[kind.index()]
    }

    /// Sets the deadline of `kind`.
    pub fn set(&mut self, kind: CallKind, d: Duration) {
        self.0[kind.index()] = d;
    }

    /// Parses `NAME=DURATION` (`prepare=30s`, `fetch=10m`, `query=500ms`).
    pub fn parse_one(s: &str) -> Result<(CallKind, Duration), String> {
        let names = || {
            CallKind::ALL
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (name, dur) = s
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=DURATION (e.g. prepare=30s), got {s:?}"))?;
        let kind = CallKind::ALL
            .into_iter()
            .find(|k| k.name() == name.trim())
            .ok_or_else(|| format!("{name:?} is not a call kind (one of {})", names()))?;
        let d = parse_duration(dur.trim())
            .ok_or_else(|| format!("{dur:?}: expected a duration such as 500ms, 30s, 10m"))?;
        if d.is_zero() {
            return Err(format!("{s:?}: a deadline must be longer than zero"));
        }
        Ok((kind, d))
    }
}

/// `500ms`, `30s`, `10m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

/// One call under way.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// The container it is for (empty for a call about all of them).
    pub container: String,
    /// What kind of call.
    pub kind: CallKind,
    /// The part called: an isolator's name, `provisioner`, `fetcher`,
    /// `launcher`.
    pub component: String,
    /// When it started.
    pub started: Instant,
}

/// A call that missed its deadline.
#[derive(Debug, Clone)]
pub struct TimedOut {
    pub kind: CallKind,
    pub component: String,
    pub after: Duration,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The caller's error names the call and the part already.
        write!(
            f,
            "did not finish within {:?} (the agent's deadline; see --step-timeout {}=DURATION)",
            self.after, self.kind
        )
    }
}

/// Runs `fut` (a call that may fail with `E`) under `list`'s deadline;
/// either failure as text.
pub fn timed<T, E: std::fmt::Display>(
    list: &Arc<InFlight>,
    container: &impl ToString,
    kind: CallKind,
    component: &str,
    fut: impl Future<Output = Result<T, E>> + 'static,
) -> impl Future<Output = Result<T, String>> + 'static {
    let f = list.run(container, kind, component, fut);
    async move {
        match f.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(t) => Err(t.to_string()),
        }
    }
}

/// The calls under way, and their deadlines.
#[derive(Debug, Default)]
pub struct InFlight {
    next: AtomicU64,
    calls: Mutex<BTreeMap<u64, CallInfo>>,
    timeouts: Timeouts,
}

/// Removes its call from the list when the call ends or is dropped.
struct Registered {
    list: Arc<InFlight>,
    key: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.list.lock().remove(&self.key);
    }
}

impl InFlight {
    /// An empty list with these deadlines.
    pub fn new(timeouts: Timeouts) -> InFlight {
        InFlight {
            timeouts,
            ..Default::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, CallInfo>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The deadlines.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The calls under way, oldest first.
    pub fn list(&self) -> Vec<CallInfo> {
        let mut v: Vec<CallInfo> = self.lock().values().cloned().collect();
        v.sort_by_key(|c| c.started);
        v
    }

    /// Runs `fut` as a `kind` call of `component` for `container`: listed
    /// while it runs, and given up (`Err(TimedOut)`) past its deadline.
    pub fn run<F>(
        self: &Arc<Self>,
        container: &impl ToString,
        kind: CallKind,
        component: &str,
        fut: F,
    ) -> impl Future<Output = Result<F::Output, TimedOut>> + 'static
    where
        F: Future + 'static,
    {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            key,
            CallInfo {
                container: container.to_string(),
                kind,
                component: component.to_string(),
                started: Instant::now(),
            },
        );
        let guard = Registered {
            list: self.clone(),
            key,
        };
        let after = self.timeouts.get(kind);
        let component = component.to_string();
        async move {
            let r = tokio::time::timeout(after, fut).await;
            drop(guard);
            r.map_err(|_| {
                tracing::warn!(%kind, %component, ?after, "call timed out");
                TimedOut {
                    kind,
                    component,
                    after,
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_bad_ones_are_named() {
        assert_eq!(
            Timeouts::parse_one("prepare=30s"),
            Ok((CallKind::Prepare, Duration::from_secs(30)))
        );
        assert_eq!(
            Timeouts::parse_one("query=500ms"),
            Ok((CallKind::Query, Duration::from_millis(500)))
        );
        assert_eq!(
            Timeouts::parse_one("fetch=10m"),
            Ok((CallKind::Fetch, Duration::from_secs(600)))
        );
        assert!(Timeouts::parse_one("bogus=1s")
            .unwrap_err()
            .contains("not a call kind"));
        assert!(Timeouts::parse_one("prepare")
            .unwrap_err()
            .contains("NAME=DURATION"));
        assert!(Timeouts::parse_one("prepare=5x")
            .unwrap_err()
            .contains("duration"));
        assert!(Timeouts::parse_one("prepare=0s")
            .unwrap_err()
            .contains("zero"));
    }

    #[actix_rt::test]
    async fn a_call_is_listed_while_it_runs_and_given_up_past_its_deadline() {
        let mut t = Timeouts::default();
        t.set(CallKind::Prepare, Duration::from_millis(50));
        let list = Arc::new(InFlight::new(t));
        let hung = list.run(
            &"c1",
            CallKind::Prepare,
            "network/cni",
            futures::future::pending::<()>(),
        );
        let quick = list.run(&"c1", CallKind::Query, "cgroups/mem", async { 7 });
        assert_eq!(list.list().len(), 2);
        assert_eq!(quick.await.unwrap(), 7);
        let listed = list.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].component, "network/cni");
        let e = hung.await.unwrap_err();
        assert_eq!(e.kind, CallKind::Prepare);
        assert_eq!(
            (e.component.as_str(), e.after),
            ("network/cni", Duration::from_millis(50))
        );
        assert!(e.to_string().contains("did not finish within 50ms"));
        assert!(list.list().is_empty());
    }
}
