//! The containerizer against the real kernel: destroy in every state, shared
//! terminations, a failing cleanup, many concurrent launches.

use berth::isolators::{Isolator, IsolatorError, IsolatorFuture, PrepareRequest};
use berth::state::LaunchInfo;
use berth::{
    ContainerConfig, ContainerId, ContainerState, Containerizer, ContainerizerBuilder, Fetcher,
    TerminationReason,
};
use berth_tests::TestEnv;
use futures::future::{join_all, BoxFuture};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};

type Log = Arc<Mutex<Vec<String>>>;

/// Which call a [`Probe`] holds until released.
#[derive(Clone, Copy, PartialEq)]
enum Hold {
    Nothing,
    Prepare,
    Isolate,
}

/// Records its calls in a shared log; may hold one call until released,
/// and may fail its first cleanup.
struct Probe {
    name: String,
    log: Log,
    hold: Hold,
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
    fail_cleanups: usize,
}

impl Probe {
    fn held(&self, call: Hold) -> BoxFuture<'static, ()> {
        let held = self.hold == call;
        let entered = self.entered.clone();
        let release = self.release.clone();
        Box::pin(async move {
            if held {
                let _ = entered.send(());
                release.notified().await;
            }
        })
    }
}

impl Isolator for Probe {
    fn name(&self) -> &str {
        &self.name
    }
    fn prepare(&mut self, _req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:prepare", self.name));
        let h = self.held(Hold::Prepare);
        Box::pin(async move {
            h.await;
            Ok(None)
        })
    }
    fn isolate(&mut self, _id: &ContainerId, pid: i32) -> IsolatorFuture<()> {
        assert!(pid > 0);
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:isolate", self.name));
        let h = self.held(Hold::Isolate);
        Box::pin(async move {
            h.await;
            Ok(())
        })
    }
    fn cleanup(&mut self, id: &ContainerId) -> IsolatorFuture<()> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:cleanup", self.name));
        if self.fail_cleanups > 0 {
            self.fail_cleanups -= 1;
            let e = IsolatorError::failed(id, "cleanup fails on purpose");
            return Box::pin(async move { Err(e) });
        }
        Box::pin(async { Ok(()) })
    }
}

/// A fetcher that holds the FETCHING state until released.
struct SlowFetch {
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
}

impl Fetcher for SlowFetch {
    fn supported(&self) -> bool {
        true
    }
    fn fetch(
        &mut self,
        _id: &ContainerId,
        _uris: &[berth::state::FetchUri],
        _sandbox: &Path,
    ) -> BoxFuture<'static, Result<(), String>> {
        let entered = self.entered.clone();
        let release = self.release.clone();
        Box::pin(async move {
            let _ = entered.send(());
            release.notified().await;
            Ok(())
        })
    }
}

struct Rig {
    c: Containerizer,
    log: Log,
    entered: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
}

/// A containerizer with the default isolators and probes `a`, `gate`, `b`
/// (in that order); `gate` holds `hold`.
fn rig(env: &TestEnv, hold: Hold, slow_fetch: bool, fail_cleanups: usize) -> Rig {
    let log: Log = Default::default();
    let (tx, entered) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let probe = |name: &str, hold: Hold, fail_cleanups: usize| Probe {
        name: name.into(),
        log: log.clone(),
        hold,
        entered: tx.clone(),
        release: release.clone(),
        fail_cleanups,
    };
    let mut b = builder(env)
        .default_isolators()
        .isolator(probe("a", Hold::Nothing, 0))
        .isolator(probe("gate", hold, fail_cleanups))
        .isolator(probe("b", Hold::Nothing, 0));
    if slow_fetch {
        b = b.fetcher(SlowFetch {
            entered: tx.clone(),
            release: release.clone(),
        });
    }
    Rig {
        c: b.build().expect("build containerizer"),
        log,
        entered,
        release,
    }
}

/// The test's containerizer, before its isolators: dirs, cgroup root
/// and the test supervisor.
fn builder(env: &TestEnv) -> ContainerizerBuilder {
    Containerizer::builder(&env.state_dir, &env.runtime_dir)
        .cgroup_root(&env.cgroup_root)
        .supervisor(env!("CARGO_BIN_EXE_berth-test-supervisor"))
}

fn sh(script: &str) -> ContainerConfig {
    ContainerConfig {
        command: vec![script.into()],
        shell: true,
        ..Default::default()
    }
}

/// A container destroyed before its command started has no exit status
/// (as Mesos's DestroyWhile* tests expect): the SIGKILL of its waiting
/// init, if one was forked, is not reported as the command's end.
fn assert_no_exit_status(t: &berth::ContainerTermination) {
    assert_eq!(t.reason(), TerminationReason::Destroyed, "{t:?}");
    assert!(t.no_exit_status, "{t:?}");
    assert_eq!(
        (t.exit_code, t.signal),
        (berth::NO_EXIT_CODE, None),
        "{t:?}"
    );
}

fn calls(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

async fn destroy_while_held(
    env: &TestEnv,
    hold: Hold,
    slow_fetch: bool,
) -> (Vec<String>, Vec<i32>) {
    let mut r = rig(env, hold, slow_fetch, 0);
    r.c.recover().await.unwrap();
    let id = ContainerId::new(&env.name);
    let c = r.c.clone();
    let launch = actix_rt::spawn({
        let id = id.clone();
        async move { c.launch(id, sh("sleep 1000")).await }
    });
    r.entered.recv().await.expect("the held call was entered");
    let c = r.c.clone();
    let destroy = actix_rt::spawn({
        let id = id.clone();
        async move { c.destroy(id).await }
    });
    // The destroy must wait for the in-flight step: let it start first.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        r.c.status(id.clone()).await.unwrap().state,
        ContainerState::Destroying
    );
    r.release.notify_waiters();
    let t = destroy.await.unwrap().expect("destroy");
    assert_no_exit_status(&t);
    let e = launch.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("destroyed during launch"), "{e}");
    assert_eq!(r.c.wait(id.clone()).await.unwrap(), t);
    let st = r.c.status(id.clone()).await.unwrap();
    let states: Vec<i32> = st.transitions.iter().map(|t| t.state).collect();
    r.c.remove(id).await.unwrap();
    (calls(&r.log), states)
}

#[actix_rt::test]
async fn destroy_while_preparing_cleans_only_what_prepared_in_reverse() {
    let env = TestEnv::new("cz-preparing");
    let (calls, _) = destroy_while_held(&env, Hold::Prepare, false).await;
    assert_eq!(
        calls,
        ["a:prepare", "gate:prepare", "gate:cleanup", "a:cleanup"],
        "b never prepared, so it is not cleaned; cleanup runs in reverse"
    );
}

#[actix_rt::test]
async fn destroy_while_isolating_kills_the_init_and_cleans_all() {
    let env = TestEnv::new("cz-isolating");
    let (calls, states) = destroy_while_held(&env, Hold::Isolate, false).await;
    assert!(states.contains(&(ContainerState::Isolating as i32)));
    let cleanups: Vec<&String> = calls.iter().filter(|c| c.ends_with("cleanup")).collect();
    assert_eq!(cleanups, ["b:cleanup", "gate:cleanup", "a:cleanup"]);
}

#[actix_rt::test]
async fn destroy_while_fetching() {
    let env = TestEnv::new("cz-fetching");
    let (calls, states) = destroy_while_held(&env, Hold::Nothing, true).await;
    assert!(states.contains(&(ContainerState::Fetching as i32)));
    assert!(!states.contains(&(ContainerState::Running as i32)));
    assert_eq!(calls.iter().filter(|c| c.ends_with("cleanup")).count(), 3);
}

#[actix_rt::test]
async fn destroy_while_starting() {
    let env = TestEnv::new("cz-starting");
    let r = rig(&env, Hold::Nothing, false, 0);
    r.c.recover().await.unwrap();
    let id = ContainerId::new(&env.name);
    // Both messages are queued before either is handled: the destroy lands
    // while the STARTING checkpoint is in flight.
    let (launched, destroyed) = futures::join!(
        r.c.launch(id.clone(), sh("sleep 1000")),
        r.c.destroy(id.clone())
    );
    assert!(launched.is_err());
    let t = destroyed.unwrap();
    assert_no_exit_status(&t);
    let st = r.c.status(id.clone()).await.unwrap();
    assert_eq!(st.transitions[0].state, ContainerState::Starting as i32);
    assert_eq!(st.transitions[1].state, ContainerState::Destroying as i32);
    assert!(
        calls(&r.log).is_empty(),
        "nothing prepared, nothing cleaned"
    );
    r.c.remove(id).await.unwrap();
}

#[actix_rt::test]
async fn destroy_running_and_ten_concurrent_destroys_share_one_termination() {
    let env = TestEnv::new("cz-running");
    let r = rig(&env, Hold::Nothing, false, 0);
    r.c.recover().await.unwrap();
    let id = ContainerId::new(&env.name);
    r.c.launch(id.clone(), sh("sleep 1000")).await.unwrap();
    assert_eq!(
        r.c.status(id.clone()).await.unwrap().state,
        ContainerState::Running
    );
    let waits = join_all((0..3).map(|_| r.c.wait(id.clone())));
    let destroys = join_all((0..10).map(|_| r.c.destroy(id.clone())));
    let (waits, destroys) = futures::join!(waits, destroys);
    let first = destroys[0].clone().unwrap();
    assert_eq!(first.reason(), TerminationReason::Destroyed);
    assert_eq!(first.signal, Some(9));
    assert_eq!(first.exit_code, 137);
    assert!(!first.no_exit_status, "{first:?}");
    for t in destroys.into_iter().chain(waits) {
        assert_eq!(t.unwrap(), first);
    }
    // Destroying a terminated container is fine and gives the same answer.
    assert_eq!(r.c.destroy(id.clone()).await.unwrap(), first);
    r.c.remove(id).await.unwrap();
}

#[actix_rt::test]
async fn failed_cleanup_keeps_destroying_counts_and_a_retry_finishes() {
    let env = TestEnv::new("cz-flaky");
    let r = rig(&env, Hold::Nothing, false, 1);
    r.c.recover().await.unwrap();
    let id = ContainerId::new(&env.name);
    r.c.launch(id.clone(), sh("sleep 1000")).await.unwrap();
    let e = r.c.destroy(id.clone()).await.unwrap_err();
    assert!(e.to_string().contains("cleanup fails on purpose"), "{e}");
    assert_eq!(
        r.c.status(id.clone()).await.unwrap().state,
        ContainerState::Destroying
    );
    assert_eq!(
        r.c.metrics()
            .container_destroy_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let t = r.c.destroy(id.clone()).await.unwrap();
    assert_eq!(t.reason(), TerminationReason::Destroyed);
    let cleanups: Vec<String> = calls(&r.log)
        .into_iter()
        .filter(|c| c.ends_with("cleanup"))
        .collect();
    // The second attempt retries only the isolator that failed.
    assert_eq!(
        cleanups,
        ["b:cleanup", "gate:cleanup", "a:cleanup", "gate:cleanup"]
    );
    r.c.remove(id).await.unwrap();
}

#[actix_rt::test]
async fn exit_codes_and_reasons() {
    let env = TestEnv::new("cz-exits");
    let r = rig(&env, Hold::Nothing, false, 0);
    r.c.recover().await.unwrap();
    let cases = [
        ("ok", sh("exit 0"), TerminationReason::Completed, 0),
        ("seven", sh("exit 7"), TerminationReason::Failed, 7),
        // The command is pid 1 of its pid namespace, and the kernel ignores
        // SIGKILL sent to a namespace's init from inside (as in Docker), so
        // the self-kill is by a child: sh reports 128+9 as its exit code.
        (
            "killed-child",
            sh("sh -c 'kill -9 $$'"),
            TerminationReason::Failed,
            137,
        ),
        (
            "noexec",
            ContainerConfig {
                command: vec!["/nonexistent".into()],
                ..Default::default()
            },
            TerminationReason::StartError,
            128,
        ),
    ];
    for (name, config, reason, code) in cases {
        let id = ContainerId::new(format!("{}-{name}", env.name));
        let _ = r.c.launch(id.clone(), config).await;
        let t = r.c.wait(id.clone()).await.unwrap();
        assert_eq!((t.reason(), t.exit_code), (reason, code), "{name}: {t:?}");
        if reason == TerminationReason::StartError {
            assert!(t.message.contains("/nonexistent"), "{t:?}");
        }
        r.c.remove(id).await.unwrap();
    }
    // A signal from outside (berth kill) ends the container with it.
    let id = ContainerId::new(format!("{}-sig", env.name));
    r.c.launch(id.clone(), sh("exec sleep 1000")).await.unwrap();
    r.c.kill(id.clone(), 9).await.unwrap();
    let t = r.c.wait(id.clone()).await.unwrap();
    assert_eq!(
        (t.reason(), t.exit_code, t.signal),
        (TerminationReason::Failed, 137, Some(9)),
        "{t:?}"
    );
    r.c.remove(id).await.unwrap();
}

#[actix_rt::test]
async fn a_hundred_concurrent_launches_all_complete() {
    let env = TestEnv::new("cz-hundred");
    let r = rig(&env, Hold::Nothing, false, 0);
    r.c.recover().await.unwrap();
    let ids: Vec<ContainerId> = (0..100)
        .map(|i| ContainerId::new(format!("{}-{i}", env.name)))
        .collect();
    let runs = ids.iter().map(|id| {
        let c = r.c.clone();
        let id = id.clone();
        async move {
            c.launch(id.clone(), sh("exit 3")).await?;
            let t = c.wait(id.clone()).await?;
            c.remove(id).await?;
            Ok::<_, berth::ContainerizerError>(t)
        }
    });
    for t in join_all(runs).await {
        let t = t.expect("launch, wait and remove");
        assert_eq!(t.exit_code, 3);
    }
    assert!(r.c.containers().await.unwrap().is_empty());
}

/// A provisioner that holds PROVISIONING until released, and logs calls.
struct SlowProvisioner {
    log: Log,
    rootfs: std::path::PathBuf,
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
}

impl berth::provisioner::Provisioner for SlowProvisioner {
    fn provision(
        &self,
        _id: ContainerId,
        image: String,
        _backend: Option<berth::provisioner::Backend>,
    ) -> BoxFuture<
        'static,
        Result<berth::provisioner::Provisioned, berth::provisioner::ProvisionError>,
    > {
        self.log.lock().unwrap().push(format!("provision:{image}"));
        let (entered, release, rootfs) = (
            self.entered.clone(),
            self.release.clone(),
            self.rootfs.clone(),
        );
        Box::pin(async move {
            let _ = entered.send(());
            release.notified().await;
            std::fs::create_dir_all(&rootfs).unwrap();
            Ok(berth::provisioner::Provisioned {
                rootfs,
                ..Default::default()
            })
        })
    }
    fn destroy(
        &self,
        _id: ContainerId,
    ) -> BoxFuture<'static, Result<(), berth::provisioner::ProvisionError>> {
        self.log.lock().unwrap().push("provisioner:destroy".into());
        let rootfs = self.rootfs.clone();
        Box::pin(async move {
            let _ = std::fs::remove_dir_all(&rootfs);
            Ok(())
        })
    }
    fn recover(
        &self,
        _known: Vec<ContainerId>,
    ) -> BoxFuture<'static, Result<(), berth::provisioner::ProvisionError>> {
        Box::pin(async { Ok(()) })
    }
}

#[actix_rt::test]
async fn destroy_while_provisioning_unwinds_the_rootfs_and_prepares_nothing() {
    let env = TestEnv::new("cz-provisioning");
    let log: Log = Default::default();
    let (tx, mut entered) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let rootfs = env.temp_dir.join("rootfs");
    let c = builder(&env)
        .provisioner(SlowProvisioner {
            log: log.clone(),
            rootfs: rootfs.clone(),
            entered: tx.clone(),
            release: release.clone(),
        })
        .default_isolators()
        .isolator(Probe {
            name: "a".into(),
            log: log.clone(),
            hold: Hold::Nothing,
            entered: tx,
            release: release.clone(),
            fail_cleanups: 0,
        })
        .build()
        .unwrap();
    c.recover().await.unwrap();
    let id = ContainerId::new(&env.name);
    let config = ContainerConfig {
        image: "example/busybox:latest".into(),
        command: vec!["true".into()],
        ..Default::default()
    };
    let launch = actix_rt::spawn({
        let (c, id) = (c.clone(), id.clone());
        async move { c.launch(id, config).await }
    });
    entered.recv().await.unwrap();
    assert_eq!(
        c.status(id.clone()).await.unwrap().state,
        ContainerState::Provisioning
    );
    let destroy = actix_rt::spawn({
        let (c, id) = (c.clone(), id.clone());
        async move { c.destroy(id).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    release.notify_waiters();
    let t = destroy.await.unwrap().unwrap();
    assert_no_exit_status(&t);
    assert!(launch.await.unwrap().is_err());
    assert_eq!(
        calls(&log),
        ["provision:example/busybox:latest", "provisioner:destroy"],
        "no isolator prepared, so none is cleaned; the rootfs is destroyed"
    );
    assert!(!rootfs.exists());
    c.remove(id).await.unwrap();
}

/// Reports a disk limitation shortly after the container starts running.
struct Limiter;

impl Isolator for Limiter {
    fn name(&self) -> &str {
        "test/limiter"
    }
    fn watch(&mut self, _id: &ContainerId) -> BoxFuture<'static, berth::isolators::Limitation> {
        Box::pin(async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            berth::isolators::Limitation {
                reason: TerminationReason::Limitation,
                resource: "disk".into(),
                message: "disk usage 2 MiB exceeds the limit of 1 MiB".into(),
            }
        })
    }
}

#[actix_rt::test]
async fn a_limitation_destroys_the_container_with_its_reason() {
    let env = TestEnv::new("cz-limit");
    let c = builder(&env)
        .default_isolators()
        .isolator(Limiter)
        .build()
        .unwrap();
    c.recover().await.unwrap();
    let id = ContainerId::new(&env.name);
    c.launch(id.clone(), sh("sleep 1000")).await.unwrap();
    let t = c.wait(id.clone()).await.unwrap();
    assert_eq!(t.reason(), TerminationReason::Limitation, "{t:?}");
    assert_eq!(t.limited_resource, "disk");
    assert!(t.message.contains("exceeds the limit"), "{t:?}");
    assert_eq!(t.signal, Some(9));
    c.remove(id).await.unwrap();
}

/// [`Limiter`], but saying its watch never resolves (`watches` false).
struct QuietLimiter(Limiter);

impl Isolator for QuietLimiter {
    fn name(&self) -> &str {
        "test/quiet-limiter"
    }
    fn watch(&mut self, id: &ContainerId) -> BoxFuture<'static, berth::isolators::Limitation> {
        self.0.watch(id)
    }
    fn watches(&self) -> bool {
        false
    }
}

#[actix_rt::test]
async fn an_isolator_that_says_it_never_watches_is_not_asked_to() {
    let env = TestEnv::new("cz-nowatch");
    let c = builder(&env)
        .default_isolators()
        .isolator(QuietLimiter(Limiter))
        .build()
        .unwrap();
    c.recover().await.unwrap();
    let id = ContainerId::new(&env.name);
    // Outlives the 200 ms after which the limiter's watch would fire.
    c.launch(id.clone(), sh("sleep 0.8")).await.unwrap();
    let t = c.wait(id.clone()).await.unwrap();
    assert_eq!(t.reason(), TerminationReason::Completed, "{t:?}");
    assert_eq!(t.exit_code, 0, "{t:?}");
    c.remove(id).await.unwrap();
}

/// A probe that says it never isolates: its `isolate`, were it called,
/// would show in the log.
struct NoIsolate(Probe);

impl Isolator for NoIsolate {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn isolate(&mut self, id: &ContainerId, pid: i32) -> IsolatorFuture<()> {
        self.0.isolate(id, pid)
    }
    fn isolates(&self) -> bool {
        false
    }
}

/// ISOLATING calls only the isolators that say they isolate; the others
/// are still prepared and cleaned up.
#[actix_rt::test]
async fn an_isolator_that_says_it_never_isolates_is_not_asked_to() {
    let env = TestEnv::new("cz-noisolate");
    let log: Log = Default::default();
    let (tx, _entered) = mpsc::unbounded_channel();
    let probe = |name: &str| Probe {
        name: name.into(),
        log: log.clone(),
        hold: Hold::Nothing,
        entered: tx.clone(),
        release: Arc::new(Notify::new()),
        fail_cleanups: 0,
    };
    let c = builder(&env)
        .default_isolators()
        .isolator(probe("a"))
        .isolator(NoIsolate(probe("quiet")))
        .build()
        .unwrap();
    c.recover().await.unwrap();
    let id = ContainerId::new(&env.name);
    c.launch(id.clone(), sh("true")).await.unwrap();
    let t = c.wait(id.clone()).await.unwrap();
    assert_eq!(t.exit_code, 0, "{t:?}");
    c.remove(id).await.unwrap();
    assert_eq!(calls(&log), ["a:prepare", "a:isolate", "a:cleanup"]);
}

/// A launch makes its top-level sandbox and writes its first record at
/// once: a crash between the two leaves a sandbox no record explains,
/// which the next recovery removes (its name at once, its files on the
/// trash thread). Names that are no container id are not berth's to take.
#[actix_rt::test]
async fn recovery_removes_a_top_level_sandbox_no_record_explains() {
    let env = TestEnv::new("orphan-sandbox");
    let sandboxes = env.state_dir.join("sandboxes");
    let orphan = sandboxes.join(format!("{}-o", env.name));
    std::fs::create_dir_all(orphan.join("sub")).unwrap();
    std::fs::write(orphan.join("sub").join("file"), "left").unwrap();
    let foreign = sandboxes.join("not a container id");
    std::fs::create_dir_all(&foreign).unwrap();
    let c = rig(&env, Hold::Nothing, false, 0).c;
    c.recover().await.unwrap();
    assert!(!orphan.exists(), "{} survived recovery", orphan.display());
    assert!(foreign.exists());
}
