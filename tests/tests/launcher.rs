//! The launchers against the real kernel (root): namespaces, the
//! container's filesystem, cgroups, the supervisor outliving its agent,
//! recovery, destroy. Every test uses its own `TestEnv` (cgroup root,
//! runtime dir, temp dir), whose drop fails the test if anything leaked.

use actix::Actor;
use berth_launcher::actor::{self, LauncherActor};
use berth_launcher::{
    LaunchError, LaunchSpec, Launcher, LauncherConfig, LinuxLauncher, PosixLauncher, ProcessStatus,
    Stdio,
};
use berth_state::{
    ContainerId, ContainerRecord, ExitStatus, LaunchInfo, Mount, Namespace, ProcessRef, Rlimit,
};
use berth_tests::TestEnv;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

fn config(env: &TestEnv) -> LauncherConfig {
    let mut c = LauncherConfig::new(&env.runtime_dir);
    c.cgroup_root = env.cgroup_root.clone();
    c.supervisor = Some(PathBuf::from(env!("CARGO_BIN_EXE_berth-test-supervisor")));
    c
}

fn linux(env: &TestEnv) -> LinuxLauncher {
    LinuxLauncher::new(config(env)).expect("create the linux launcher")
}

fn namespaces(ns: &[Namespace]) -> LaunchInfo {
    LaunchInfo {
        clone_namespaces: ns.iter().map(|n| *n as i32).collect(),
        ..Default::default()
    }
}

/// `/bin/sh -c script` in a fresh sandbox dir.
fn shell(env: &TestEnv, id: &str, script: &str, launch_info: LaunchInfo) -> LaunchSpec {
    LaunchSpec {
        id: ContainerId::new(id),
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), PATH.into())],
        launch_info,
        user: None,
        sandbox_dir: env.mkdir(format!("sandbox-{id}")),
        sandbox_identity: None,
        stdio: Stdio::SandboxFiles,
        init: false,
        io: Default::default(),
        restore: None,
    }
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p.as_ref()).unwrap_or_default()
}

/// Fork, release, wait; then destroy and remove. Returns the exit status
/// and the sandbox's stdout and stderr.
async fn run_to_end(l: &impl Launcher, spec: LaunchSpec) -> (ExitStatus, String, String) {
    let id = spec.id.clone();
    let sandbox = spec.sandbox_dir.clone();
    l.fork(spec).await.expect("fork");
    l.release(id.clone()).await.expect("release");
    let status = tokio::time::timeout(Duration::from_secs(30), l.wait(id.clone()))
        .await
        .expect("the container exits within 30 s")
        .expect("wait");
    l.destroy(id.clone()).await.expect("destroy");
    l.remove(id).await.expect("remove");
    (
        status,
        read(sandbox.join("stdout")),
        read(sandbox.join("stderr")),
    )
}

fn host_ns(kind: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

/// `key=value` lines of the container's report.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in output:\n{out}"))
        .trim()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !read(format!("/proc/{pid}/stat")).contains(") Z ")
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `p` is gone (an exited supervisor stays a zombie until
/// the host's init reaps it).
fn gone(p: &ProcessRef) {
    wait_until(
        &format!("process {} is gone", p.pid),
        Duration::from_secs(5),
        || !p.is_alive(),
    );
}

#[actix_rt::test]
async fn inside_the_container_everything_is_isolated() {
    let env = TestEnv::new("inside_the_container_everything_is_isolated");
    let addr = LauncherActor::new(linux(&env)).start();
    let id = format!("{}-c", env.name);
    let mut info = namespaces(&[
        Namespace::Pid,
        Namespace::Mount,
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::Net,
    ]);
    info.hostname = "inner-host".into();
    info.rlimits = vec![Rlimit {
        name: "nofile".into(),
        soft: 321,
        hard: 654,
    }];
    let script = r#"
        echo pid=$$
        for n in pid mnt uts ipc net; do echo ns_$n=$(readlink /proc/self/ns/$n); done
        echo hostname=$(hostname)
        echo procs=$(ls /proc | grep -c '^[0-9]')
        echo maxpid=$(ls /proc | grep '^[0-9]' | sort -n | tail -1)
        echo kcore=$(cat /proc/kcore | wc -c)
        echo acpi=$(ls -A /proc/acpi 2>/dev/null | wc -l)
        if echo x > /proc/sys/kernel/domainname 2>/dev/null; then echo procsys=rw; else echo procsys=ro; fi
        if touch /sys/berth-test 2>/dev/null; then echo sys=rw; else echo sys=ro; fi
        echo capbnd=$(grep CapBnd /proc/self/status | cut -f2)
        echo capeff=$(grep CapEff /proc/self/status | cut -f2)
        echo nnp=$(grep NoNewPrivs /proc/self/status | cut -f2)
        echo nofile=$(ulimit -n)
        echo nofile_hard=$(ulimit -Hn)
        echo freezer=$(grep ':freezer:' /proc/self/cgroup)
        echo pwd=$(pwd)
        echo stdin=$(readlink /proc/self/fd/0)
        echo dev=$(ls /dev | tr '\n' ' ')
        echo ptmx=$(readlink /dev/ptmx)
        echo tmp=$(stat -f -c %T /tmp)
        echo private > /tmp/berth-private-tmp-probe
        echo env=$(env | sort | tr '\n' ' ')
        echo done
    "#;
    let spec = shell(&env, &id, script, info);
    let sandbox = spec.sandbox_dir.clone();
    let cid = spec.id.clone();
    let forked = addr.send(actor::Fork(spec)).await.unwrap().expect("fork");
    // Blocked until released: it has not run the command yet.
    assert!(forked.init.is_alive() && forked.supervisor.is_alive());
    assert_eq!(read(sandbox.join("stdout")), "");
    // The supervisor is not the test's child and not in the freezer cgroup.
    assert_ne!(
        ppid_of(forked.supervisor.pid),
        std::process::id() as i32,
        "the supervisor must not be the agent's child"
    );
    // It sits in the root's supervisors cgroup, in none of the container's.
    let sup_cg = read(format!("/proc/{}/cgroup", forked.supervisor.pid));
    let under_root = format!("/{}/", env.cgroup_root);
    let supervisors = format!("{under_root}{}", berth_launcher::SUPERVISORS_CGROUP);
    assert!(
        sup_cg
            .lines()
            .all(|l| !l.contains(&under_root) || l.ends_with(&supervisors)),
        "{sup_cg}"
    );
    // On cgroup v2 too (where the supervisor starts a child of itself
    // there rather than moving; its init is then that child's).
    if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
        || Path::new("/sys/fs/cgroup/cgroup.procs").exists()
    {
        assert!(
            sup_cg
                .lines()
                .any(|l| l.starts_with("0::") && l.ends_with(&supervisors)),
            "the supervisor left the v2 hierarchy's cgroup of the test: {sup_cg}"
        );
        assert_eq!(
            ppid_of(forked.init.pid),
            forked.supervisor.pid,
            "the init is the supervisor's child"
        );
    }
    assert!(matches!(
        addr.send(actor::Status(cid.clone()))
            .await
            .unwrap()
            .unwrap(),
        ProcessStatus::Running(_)
    ));
    addr.send(actor::Release(cid.clone()))
        .await
        .unwrap()
        .expect("release");
    let status = addr
        .send(actor::Wait(cid.clone()))
        .await
        .unwrap()
        .expect("wait");
    let out = read(sandbox.join("stdout"));
    let err = read(sandbox.join("stderr"));
    assert!(
        matches!(status, ExitStatus::Exited { code: 0, .. }),
        "{status:?}\n{out}\n{err}"
    );
    assert!(out.contains("done"), "{out}\n{err}");

    assert_eq!(field(&out, "pid"), "1");
    for n in ["pid", "mnt", "uts", "ipc", "net"] {
        assert_ne!(field(&out, &format!("ns_{n}")), host_ns(n), "{n} namespace");
    }
    assert_eq!(field(&out, "hostname"), "inner-host");
    assert!(
        field(&out, "maxpid").parse::<i32>().unwrap() < 20,
        "host processes visible:\n{out}"
    );
    assert_eq!(field(&out, "kcore"), "0");
    assert_eq!(field(&out, "acpi"), "0");
    assert_eq!(field(&out, "procsys"), "ro");
    assert_eq!(field(&out, "sys"), "ro");
    assert_eq!(
        field(&out, "capbnd"),
        "00000000a80425fb",
        "Docker's 14 capabilities"
    );
    assert_eq!(field(&out, "capeff"), "00000000a80425fb");
    assert_eq!(field(&out, "nnp"), "1");
    assert_eq!(field(&out, "nofile"), "321");
    assert_eq!(field(&out, "nofile_hard"), "654");
    assert!(
        field(&out, "freezer").ends_with(&format!(":freezer:/{}/{}", env.cgroup_root, id)),
        "{out}"
    );
    assert_eq!(field(&out, "pwd"), sandbox.display().to_string());
    assert_eq!(field(&out, "stdin"), "/dev/null");
    let dev = field(&out, "dev");
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx",
    ] {
        assert!(dev.split(' ').any(|x| x == d), "/dev lacks {d}: {dev}");
    }
    assert_eq!(field(&out, "ptmx"), "pts/ptmx");
    assert_eq!(field(&out, "tmp"), "tmpfs");
    assert!(!Path::new("/tmp/berth-private-tmp-probe").exists());
    assert_eq!(
        field(&out, "env"),
        format!("PATH={PATH} PWD={}", sandbox.display())
    );

    // After exit the cgroup is still there until destroy removes it.
    addr.send(actor::Destroy(cid.clone()))
        .await
        .unwrap()
        .expect("destroy");
    assert!(!env.cgroup_dir("freezer").join(&id).exists());
    addr.send(actor::Remove(cid.clone()))
        .await
        .unwrap()
        .expect("remove");
    assert!(!env.runtime_dir.join("containers").join(&id).exists());
}

#[actix_rt::test]
async fn exec_failures_are_start_errors_with_the_errno() {
    let env = TestEnv::new("exec_failures_are_start_errors");
    let l = linux(&env);
    let mut spec = shell(
        &env,
        "missing",
        "",
        namespaces(&[Namespace::Pid, Namespace::Mount]),
    );
    spec.argv = vec!["/nonexistent".into()];
    let (status, ..) = run_to_end(&l, spec).await;
    match status {
        ExitStatus::StartError { errno, message, .. } => {
            assert_eq!(errno, libc::ENOENT);
            assert_eq!(
                message,
                "exec /nonexistent: No such file or directory (os error 2)"
            );
        }
        other => panic!("expected a start error, got {other:?}"),
    }
    assert_eq!(status_code(&l, "missing").await, None);

    let mut spec = shell(&env, "noexec", "", namespaces(&[Namespace::Mount]));
    let file = spec.sandbox_dir.join("not-executable");
    fs::write(&file, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    spec.argv = vec![file.display().to_string()];
    let (status, ..) = run_to_end(&l, spec).await;
    assert!(
        matches!(&status, ExitStatus::StartError { errno, message, .. }
            if *errno == libc::EACCES && message.contains("Permission denied")),
        "{status:?}"
    );
    assert_eq!(status.code(), 128);

    // A command not on PATH is looked up in the container's PATH.
    let mut spec = shell(&env, "notonpath", "", LaunchInfo::default());
    spec.argv = vec!["berth-no-such-command".into()];
    let (status, ..) = run_to_end(&l, spec).await;
    assert!(
        matches!(&status, ExitStatus::StartError { errno: libc::ENOENT, message, .. }
            if message == "exec berth-no-such-command: No such file or directory (os error 2)"),
        "{status:?}"
    );

    // A start error longer than the supervisor's exit message is peeked
    // (4 KiB) still arrives whole: from the exit status file.
    let long = "berth-no-such-command-".repeat(300);
    let mut spec = shell(&env, "longname", "", LaunchInfo::default());
    spec.argv = vec![long.clone()];
    let (status, ..) = run_to_end(&l, spec).await;
    assert!(
        matches!(&status, ExitStatus::StartError { message, .. } if message.contains(&long)),
        "{status:?}"
    );
}

async fn status_code(l: &impl Launcher, id: &str) -> Option<i32> {
    match l.status(ContainerId::new(id)).await.unwrap() {
        ProcessStatus::Exited(s) => Some(s.code()),
        _ => None,
    }
}

#[actix_rt::test]
async fn setup_failures_name_the_step_and_path() {
    let env = TestEnv::new("setup_failures_name_the_step");
    let l = linux(&env);
    let mut info = namespaces(&[Namespace::Mount]);
    info.mounts = vec![Mount {
        source: env.path("no-such-source").display().to_string(),
        target: "/mnt/berth-target".into(),
        fs_type: String::new(),
        options: vec!["bind".into()],
    }];
    let spec = shell(&env, "badmount", "true", info);
    let err = l
        .fork(spec)
        .await
        .expect_err("a bind of a missing source fails");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            LaunchError::StartFailed {
                errno: libc::ENOENT,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("no-such-source") && msg.contains("/mnt/berth-target"),
        "{msg}"
    );
    // The supervisor recorded the same, and nothing is left running.
    let status = l.wait(ContainerId::new("badmount")).await.unwrap();
    assert!(
        matches!(status, ExitStatus::StartError { .. }),
        "{status:?}"
    );
    l.destroy(ContainerId::new("badmount")).await.unwrap();
    l.remove(ContainerId::new("badmount")).await.unwrap();

    // Bad input is refused before anything starts.
    let mut info = namespaces(&[Namespace::Pid]);
    info.hostname = "needs-uts".into();
    let err = l
        .fork(shell(&env, "nouts", "true", info))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UTS"), "{err}");
    let info = LaunchInfo {
        capabilities: vec!["CAP_BOGUS".into()],
        ..Default::default()
    };
    let err = l
        .fork(shell(&env, "badcap", "true", info))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CAP_BOGUS"), "{err}");
    let mut cfg = config(&env);
    cfg.supervisor = Some(env.path("no-supervisor-here"));
    let err = LinuxLauncher::new(cfg)
        .unwrap()
        .fork(shell(&env, "nosup", "true", LaunchInfo::default()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-supervisor-here"), "{err}");
    for id in ["nouts", "badcap", "nosup"] {
        l.remove(ContainerId::new(id)).await.unwrap();
    }
}

#[actix_rt::test]
async fn destroy_kills_every_process_even_escaped_ones() {
    let env = TestEnv::new("destroy_kills_every_process");
    let l = linux(&env);
    let freezer = env.cgroup_dir("freezer");

    // 50 background processes under a pid namespace.
    let many = shell(
        &env,
        "many",
        "for i in $(seq 50); do sleep 1000 & done; wait",
        namespaces(&[Namespace::Pid, Namespace::Mount]),
    );
    // A double fork out of the init, no pid namespace: the grandchild is
    // reparented away from the init's tree.
    let escaped = shell(
        &env,
        "escaped",
        "(sleep 1000 &) ; sleep 1000",
        namespaces(&[Namespace::Mount]),
    );
    let mut forks = Vec::new();
    for spec in [many, escaped] {
        let id = spec.id.clone();
        forks.push((id.clone(), l.fork(spec).await.expect("fork")));
        l.release(id).await.expect("release");
    }
    let procs = |id: &str| berth_launcher::freezer::all_pids(&freezer.join(id));
    wait_until("51 processes run", Duration::from_secs(10), || {
        procs("many").len() == 51
    });
    wait_until("3 processes run", Duration::from_secs(10), || {
        procs("escaped").len() == 3
    });
    let all: Vec<i32> = procs("many").into_iter().chain(procs("escaped")).collect();
    // The escaped sleep's parent is no longer the container's init.
    let escaped_init = forks[1].1.init.pid;
    assert!(procs("escaped")
        .iter()
        .any(|p| *p != escaped_init && ppid_of(*p) != escaped_init));

    for (id, forked) in &forks {
        l.destroy(id.clone()).await.expect("destroy");
        assert!(!freezer.join(id.to_string()).exists());
        let status = l.wait(id.clone()).await.expect("wait after destroy");
        assert!(
            matches!(status, ExitStatus::Signaled { signal: 9, .. }),
            "{id}: {status:?}"
        );
        gone(&forked.supervisor);
        // Idempotent.
        l.destroy(id.clone()).await.expect("destroy again");
        l.remove(id.clone()).await.expect("remove");
        l.destroy(id.clone()).await.expect("destroy after remove");
    }
    for p in all {
        assert!(!alive(p), "process {p} survived destroy");
    }
}

#[actix_rt::test]
async fn a_blocked_init_is_destroyed_without_running_the_command() {
    let env = TestEnv::new("blocked_init_destroyed");
    let l = linux(&env);
    let spec = shell(
        &env,
        "blocked",
        "echo ran",
        namespaces(&[Namespace::Pid, Namespace::Mount]),
    );
    let sandbox = spec.sandbox_dir.clone();
    let f = l.fork(spec).await.unwrap();
    assert!(f.init.is_alive());
    l.destroy(ContainerId::new("blocked")).await.unwrap();
    gone(&f.init);
    gone(&f.supervisor);
    let s = l.wait(ContainerId::new("blocked")).await.unwrap();
    assert!(matches!(s, ExitStatus::Signaled { signal: 9, .. }), "{s:?}");
    assert_eq!(read(sandbox.join("stdout")), "");
    l.remove(ContainerId::new("blocked")).await.unwrap();
}

/// The fds of this process that name namespace `ns` (`mnt:[INODE]`).
fn fds_naming(ns: &str) -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == ns))
        .count()
}

/// The launcher holds the init's mount namespace from its fork until the
/// container is removed: neither the command's exit (ahead of its exit
/// status) nor the destroy tears its mounts down; another thread does,
/// once it is removed.
#[actix_rt::test]
async fn the_mounts_of_an_exited_command_go_once_it_is_removed() {
    let env = TestEnv::new("mounts_go_with_destroy");
    let l = linux(&env);
    let root = busybox_rootfs(&env);
    let mut info = namespaces(&[Namespace::Pid, Namespace::Mount]);
    info.rootfs = root.display().to_string();
    let spec = shell(&env, "mntns", "readlink /proc/self/ns/mnt", info);
    let sandbox = spec.sandbox_dir.clone();
    let id = ContainerId::new("mntns");
    l.fork(spec).await.unwrap();
    l.release(id.clone()).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), l.wait(id.clone()))
        .await
        .expect("the container exits within 30 s")
        .unwrap();
    assert!(
        matches!(status, ExitStatus::Exited { code: 0, .. }),
        "{status:?}"
    );
    let ns = read(sandbox.join("stdout")).trim().to_string();
    assert!(ns.starts_with("mnt:["), "{ns:?}");
    assert_ne!(ns, host_ns("mnt"));
    assert_eq!(
        fds_naming(&ns),
        1,
        "the exited container's mount namespace is held"
    );
    l.destroy(id.clone()).await.unwrap();
    assert_eq!(fds_naming(&ns), 1, "still held after the destroy");
    l.remove(id).await.unwrap();
    wait_until(
        "the removal lets the mount namespace go",
        Duration::from_secs(5),
        || fds_naming(&ns) == 0,
    );
}

/// Starts `launcher-holder` (a stand-in agent) for one container.
fn hold(
    env: &TestEnv,
    id: &str,
    pid_ns: bool,
    script: &str,
) -> (std::process::Child, ProcessRef, ProcessRef) {
    let sandbox = env.mkdir(format!("sandbox-{id}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_launcher-holder"))
        .args([
            env.runtime_dir.display().to_string(),
            env.cgroup_root.clone(),
            env!("CARGO_BIN_EXE_berth-test-supervisor").to_string(),
            sandbox.display().to_string(),
            id.to_string(),
            if pid_ns { "1" } else { "0" }.to_string(),
            script.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start launcher-holder");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let n: Vec<i64> = line
        .strip_prefix("forked ")
        .unwrap_or_else(|| panic!("launcher-holder said {line:?}"))
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let sup = ProcessRef {
        pid: n[0] as i32,
        start_time: n[1] as u64,
    };
    let init = ProcessRef {
        pid: n[2] as i32,
        start_time: n[3] as u64,
    };
    (child, sup, init)
}

fn record(id: &str, sup: ProcessRef, init: ProcessRef) -> ContainerRecord {
    ContainerRecord {
        id: Some(ContainerId::new(id)),
        supervisor: Some(sup),
        init: Some(init),
        ..Default::default()
    }
}

#[actix_rt::test]
async fn containers_outlive_their_agent_and_are_recovered() {
    let env = TestEnv::new("containers_outlive_their_agent");
    // In the sandbox: the container's /tmp is its own.
    let go = env.path("sandbox-exits7/go");
    // Exits 7 once the test says so (while no agent runs).
    let (mut a, sup_a, init_a) = hold(
        &env,
        "exits7",
        true,
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done; exit 7",
            go.display()
        ),
    );
    // No pid namespace, so SIGTERM to the init (a plain sleep) kills it.
    let (mut b, sup_b, init_b) = hold(&env, "termed", false, "exec sleep 1000");

    // The agent dies hard.
    for h in [&mut a, &mut b] {
        h.kill().unwrap();
        h.wait().unwrap();
    }
    assert!(
        sup_a.is_alive() && init_a.is_alive(),
        "container a died with its agent"
    );
    assert!(
        sup_b.is_alive() && init_b.is_alive(),
        "container b died with its agent"
    );

    // a exits while no agent runs.
    fs::write(&go, "").unwrap();
    wait_until("a's supervisor exits", Duration::from_secs(10), || {
        !sup_a.is_alive()
    });

    let l = linux(&env);
    let orphans = l
        .recover(vec![
            record("exits7", sup_a, init_a),
            record("termed", sup_b, init_b),
        ])
        .await
        .unwrap();
    // a's cgroup is still there (nobody destroyed it), but it is recorded.
    assert!(orphans.is_empty(), "{orphans:?}");
    let a_id = ContainerId::new("exits7");
    let b_id = ContainerId::new("termed");
    assert!(matches!(
        l.status(a_id.clone()).await.unwrap(),
        ProcessStatus::Exited(ExitStatus::Exited { code: 7, .. })
    ));
    assert_eq!(l.wait(a_id.clone()).await.unwrap().code(), 7);
    match l.status(b_id.clone()).await.unwrap() {
        ProcessStatus::Running(f) => assert_eq!((f.supervisor, f.init), (sup_b, init_b)),
        other => panic!("b should be running: {other:?}"),
    }
    // Re-attached: kill and wait work, and the exit is learned from the pidfd.
    let waiter = l.wait(b_id.clone());
    l.kill(b_id.clone(), libc::SIGTERM).await.unwrap();
    let s = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            s,
            ExitStatus::Signaled {
                signal: libc::SIGTERM,
                ..
            }
        ),
        "{s:?}"
    );
    for id in [a_id, b_id] {
        l.destroy(id.clone()).await.unwrap();
        l.remove(id).await.unwrap();
    }
}

#[actix_rt::test]
async fn a_reused_pid_is_not_mistaken_for_the_container() {
    let env = TestEnv::new("a_reused_pid_is_not_mistaken");
    let l = linux(&env);
    // A live process with the recorded pid, but not the one that was recorded.
    let mut impostor = Command::new("sleep").arg("1000").spawn().unwrap();
    let real = ProcessRef::of(impostor.id() as i32).unwrap().unwrap();
    let fake = ProcessRef {
        start_time: real.start_time.wrapping_sub(7),
        ..real
    };
    let id = ContainerId::new("reused");
    // Its runtime dir says the same (the supervisor wrote it before dying).
    let dir = env.runtime_dir.join("containers/reused");
    fs::create_dir_all(&dir).unwrap();
    berth_state::runtime::write_pid_file(&dir.join("supervisor.pid"), &fake).unwrap();
    let orphans = l.recover(vec![record("reused", fake, fake)]).await.unwrap();
    assert!(orphans.is_empty(), "{orphans:?}");
    assert_eq!(l.status(id.clone()).await.unwrap(), ProcessStatus::Unknown);
    assert!(matches!(
        l.wait(id.clone()).await,
        Err(LaunchError::ExitStatusLost { .. })
    ));
    // Destroy must not touch the impostor.
    l.destroy(id.clone()).await.unwrap();
    l.kill(id.clone(), libc::SIGKILL).await.unwrap();
    assert!(real.is_alive(), "the impostor was killed");
    l.remove(id).await.unwrap();
    impostor.kill().unwrap();
    impostor.wait().unwrap();
}

#[actix_rt::test]
async fn recover_reports_containers_no_record_names() {
    let env = TestEnv::new("recover_reports_orphans");
    let first = linux(&env);
    let mut forks = Vec::new();
    for id in ["known", "orphan-running", "orphan-blocked"] {
        let spec = shell(
            &env,
            id,
            "sleep 1000",
            namespaces(&[Namespace::Pid, Namespace::Mount]),
        );
        forks.push(first.fork(spec).await.unwrap());
        if id != "orphan-blocked" {
            first.release(ContainerId::new(id)).await.unwrap();
        }
    }
    // A stale cgroup with no process and no runtime dir.
    fs::create_dir(env.cgroup_dir("freezer").join("orphan-cgroup")).unwrap();

    // A new launcher, as after an agent restart (the old one is dropped,
    // but its blocked init goes only when its control socket closes).
    let second = linux(&env);
    let orphans: Vec<String> = second
        .recover(vec![record("known", forks[0].supervisor, forks[0].init)])
        .await
        .unwrap()
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(
        orphans,
        vec!["orphan-blocked", "orphan-cgroup", "orphan-running"]
    );
    drop(first);
    for id in ["known", "orphan-running", "orphan-blocked", "orphan-cgroup"] {
        second.destroy(ContainerId::new(id)).await.unwrap();
        second.remove(ContainerId::new(id)).await.unwrap();
    }
    for f in &forks {
        gone(&f.supervisor);
        gone(&f.init);
    }
    assert!(second.recover(vec![]).await.unwrap().is_empty());
}

/// A rootfs with busybox as every tool.
fn busybox_rootfs(env: &TestEnv) -> PathBuf {
    let root = env.mkdir("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let bb = Path::new("/usr/bin/busybox");
    assert!(
        bb.exists(),
        "the rootfs test needs busybox-static (/usr/bin/busybox)"
    );
    fs::copy(bb, root.join("bin/busybox")).unwrap();
    for tool in [
        "sh", "ls", "cat", "echo", "pwd", "grep", "id", "hostname", "readlink", "wc", "touch",
        "mount",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    fs::write(root.join("etc/marker"), "inside the rootfs\n").unwrap();
    root
}

#[actix_rt::test]
async fn a_rootfs_container_sees_only_its_rootfs() {
    let env = TestEnv::new("a_rootfs_container");
    let l = linux(&env);
    let root = busybox_rootfs(&env);
    let mut info = namespaces(&[Namespace::Pid, Namespace::Mount, Namespace::Uts]);
    info.rootfs = root.display().to_string();
    let sandbox_mount = Mount {
        source: String::new(), // set below
        target: "/mnt/sandbox".into(),
        fs_type: String::new(),
        options: vec!["rbind".into(), "private".into()],
    };
    let script = r#"
        echo pid=$$
        echo marker=$(cat /etc/marker)
        echo root=$(ls / | tr '\n' ' ')
        echo pwd=$(pwd)
        echo kcore=$(cat /proc/kcore | wc -c)
        if touch /proc/sysrq-trigger 2>/dev/null; then echo sysrq=rw; else echo sysrq=ro; fi
        echo null=$(echo hi > /dev/null && echo ok)
        echo sandbox=$(cat /mnt/sandbox/input)
        echo written > /mnt/sandbox/output
        echo host=$(ls /usr 2>&1 | head -1)
    "#;
    let mut spec = shell(&env, "rootfs", script, info);
    let mut m = sandbox_mount;
    m.source = spec.sandbox_dir.display().to_string();
    spec.launch_info.mounts = vec![m];
    spec.argv[0] = "/bin/sh".into();
    fs::write(spec.sandbox_dir.join("input"), "from the host").unwrap();
    let sandbox = spec.sandbox_dir.clone();
    let (status, out, err) = run_to_end(&l, spec).await;
    assert!(
        matches!(status, ExitStatus::Exited { code: 0, .. }),
        "{status:?}\n{out}\n{err}"
    );
    assert_eq!(field(&out, "pid"), "1");
    assert_eq!(field(&out, "marker"), "inside the rootfs");
    assert_eq!(field(&out, "root"), "bin dev etc mnt proc sys tmp");
    assert_eq!(field(&out, "pwd"), "/");
    assert_eq!(field(&out, "kcore"), "0");
    assert_eq!(field(&out, "sysrq"), "ro");
    assert_eq!(field(&out, "null"), "ok");
    assert_eq!(field(&out, "sandbox"), "from the host");
    assert!(field(&out, "host").contains("No such file"), "{out}");
    assert_eq!(read(sandbox.join("output")), "written\n");
}

#[actix_rt::test]
async fn the_command_runs_as_the_given_user_without_capabilities() {
    let env = TestEnv::new("runs_as_the_given_user");
    let l = linux(&env);
    let mut spec = shell(
        &env,
        "user",
        "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); grep -E 'Cap(Eff|Prm|Bnd)' /proc/self/status",
        namespaces(&[Namespace::Pid, Namespace::Mount]),
    );
    spec.user = Some((65534, 65534, vec![65534, 100]));
    fs::set_permissions(&spec.sandbox_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let (status, out, err) = run_to_end(&l, spec).await;
    assert_eq!(status.code(), 0, "{out}\n{err}");
    assert!(
        out.contains("uid=65534 gid=65534 groups=65534 100"),
        "{out}"
    );
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapPrm:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");

    // Capabilities asked for replace the default set.
    let mut info = namespaces(&[Namespace::Mount]);
    info.capabilities = vec!["CAP_KILL".into(), "CAP_NET_RAW".into()];
    let spec = shell(&env, "caps", "grep CapBnd /proc/self/status", info);
    let (_, out, _) = run_to_end(&l, spec).await;
    assert_eq!(
        out.trim(),
        format!("CapBnd:\t{:016x}", (1u64 << 5) | (1 << 13))
    );
}

#[actix_rt::test]
async fn stdio_can_be_the_callers_fds() {
    let env = TestEnv::new("stdio_can_be_the_callers_fds");
    let l = linux(&env);
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (err_r, err_w) = nix::unistd::pipe().unwrap();
    let mut spec = shell(
        &env,
        "fds",
        "echo to-out; echo to-err >&2; exit 3",
        LaunchInfo::default(),
    );
    spec.stdio = Stdio::Fds {
        stdin: None,
        stdout: out_w,
        stderr: err_w,
    };
    let sandbox = spec.sandbox_dir.clone();
    let (status, file_out, _) = run_to_end(&l, spec).await;
    assert_eq!(status.code(), 3);
    assert_eq!(file_out, "");
    assert!(!sandbox.join("stdout").exists());
    let mut s = String::new();
    use std::io::Read;
    fs::File::from(out_r).read_to_string(&mut s).unwrap();
    assert_eq!(s, "to-out\n");
    s.clear();
    fs::File::from(err_r).read_to_string(&mut s).unwrap();
    assert_eq!(s, "to-err\n");
}

#[actix_rt::test]
async fn the_supervisor_stays_small() {
    let env = TestEnv::new("the_supervisor_stays_small");
    let l = linux(&env);
    let mut spec = shell(
        &env,
        "small",
        "",
        namespaces(&[Namespace::Pid, Namespace::Mount]),
    );
    spec.argv = vec!["sleep".into(), "1000".into()];
    let sandbox = spec.sandbox_dir.clone();
    let f = l.fork(spec).await.unwrap();
    l.release(ContainerId::new("small")).await.unwrap();
    wait_until("the init execs sleep", Duration::from_secs(5), || {
        read(format!("/proc/{}/comm", f.init.pid)).trim() == "sleep"
    });
    // Only stdio reaches the command (every other fd was close-on-exec).
    let mut fds: Vec<(String, PathBuf)> = fs::read_dir(format!("/proc/{}/fd", f.init.pid))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read_link(e.path()).unwrap(),
            )
        })
        .collect();
    fds.sort();
    // stdout and stderr are the supervisor's pipes (it writes the logs).
    let shown: Vec<(String, String)> = fds
        .iter()
        .map(|(n, p)| (n.clone(), p.display().to_string()))
        .collect();
    assert_eq!(shown.len(), 3, "{shown:?}");
    assert_eq!(shown[0], ("0".to_string(), "/dev/null".to_string()));
    assert!(shown[1].1.starts_with("pipe:") && shown[2].1.starts_with("pipe:"));
    assert_ne!(shown[1].1, shown[2].1);
    assert!(sandbox.join("stdout").is_file() && sandbox.join("stderr").is_file());
    // A binary cargo just linked sits in dirty page-cache pages, which
    // smaps counts as the mapping process's private dirty memory: write
    // them back so that only the supervisor's own memory is measured.
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    // The supervisor runs from the launcher's sealed memfd copy, whose
    // pages (shmem, always dirty) are shared by every supervisor but count
    // as private while one maps them: they are the launcher's one copy,
    // not this supervisor's memory.
    let exe = fs::read_link(format!("/proc/{}/exe", f.supervisor.pid)).unwrap();
    assert!(
        exe.to_string_lossy().starts_with("/memfd:berth-supervisor"),
        "the supervisor runs from {exe:?}, not its sealed copy"
    );
    let smaps = read(format!("/proc/{}/smaps", f.supervisor.pid));
    let mut private_dirty = 0u64;
    let mut in_copy = false;
    for l in smaps.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: "start-end perms offset dev inode [path]".
            in_copy = l.contains("/memfd:berth-supervisor");
        } else if let Some(r) = l.strip_prefix("Private_Dirty:") {
            if !in_copy {
                private_dirty += r
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("bad smaps line {l:?}"));
            }
        }
    }

    eprintln!("supervisor private dirty: {private_dirty} KiB");
    assert!(
        private_dirty <= 256,
        "supervisor uses {private_dirty} KiB private dirty memory"
    );
    l.destroy(ContainerId::new("small")).await.unwrap();
    l.remove(ContainerId::new("small")).await.unwrap();
}

#[actix_rt::test]
async fn posix_launcher_kills_the_process_group() {
    let env = TestEnv::new("posix_launcher_kills_the_group");
    let l = PosixLauncher::new(config(&env)).unwrap();
    let spec = shell(
        &env,
        "posix",
        "for i in 1 2 3; do sleep 1000 & done; echo started; wait",
        LaunchInfo::default(),
    );
    let sandbox = spec.sandbox_dir.clone();
    let f = l.fork(spec).await.unwrap();
    l.release(ContainerId::new("posix")).await.unwrap();
    wait_until("it started", Duration::from_secs(10), || {
        read(sandbox.join("stdout")).contains("started")
    });
    let pgid = f.init.pid;
    let members = || {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| {
                nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(*p))).map(|g| g.as_raw())
                    == Ok(pgid)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(members().len(), 4, "init and 3 sleeps");
    l.destroy(ContainerId::new("posix")).await.unwrap();
    assert!(members().is_empty());
    let s = l.wait(ContainerId::new("posix")).await.unwrap();
    assert!(matches!(s, ExitStatus::Signaled { signal: 9, .. }), "{s:?}");
    l.destroy(ContainerId::new("posix")).await.unwrap();
    l.remove(ContainerId::new("posix")).await.unwrap();

    // Exit codes and exec failures as with the linux launcher.
    let (s, out, _) = run_to_end(
        &l,
        shell(&env, "posix2", "echo $$; exit 5", LaunchInfo::default()),
    )
    .await;
    assert_eq!(s.code(), 5);
    assert_ne!(out.trim(), "1");
    let err = l
        .fork(shell(&env, "posix3", "true", namespaces(&[Namespace::Pid])))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("posix launcher does not support namespaces"),
        "{err}"
    );
    l.remove(ContainerId::new("posix3")).await.unwrap();
}

#[actix_rt::test]
async fn on_cgroup2_destroy_uses_cgroup_kill() {
    let env = TestEnv::new("on_cgroup2_destroy_uses_cgroup_kill");
    let unified = env.cgroup_dir("unified");
    let mount = unified.parent().unwrap().to_path_buf();
    assert!(
        mount.join("cgroup.kill").exists() || fs::read_dir(&mount).is_ok(),
        "cgroup2 is not usable at {}",
        mount.display()
    );
    let mut cfg = config(&env);
    cfg.cgroup_mount = Some(mount.clone());
    let l = LinuxLauncher::new(cfg).unwrap();
    let id = ContainerId::new("v2");
    assert_eq!(l.cgroup_dir(&id), unified.join("v2"));
    let spec = shell(
        &env,
        "v2",
        "grep '^0::' /proc/self/cgroup; (sleep 1000 &); for i in 1 2 3; do sleep 1000 & done; wait",
        namespaces(&[Namespace::Mount]),
    );
    let sandbox = spec.sandbox_dir.clone();
    l.fork(spec).await.unwrap();
    l.release(id.clone()).await.unwrap();
    let procs = || berth_launcher::freezer::all_pids(&unified.join("v2"));
    wait_until("5 processes run", Duration::from_secs(10), || {
        procs().len() == 5
    });
    let pids = procs();
    assert_eq!(
        read(sandbox.join("stdout")).trim(),
        format!("0::/{}/v2", env.cgroup_root)
    );
    l.destroy(id.clone()).await.unwrap();
    assert!(!unified.join("v2").exists());
    // The cgroup is empty once each task has left it, a moment in its
    // exit before it is a zombie (seen once in CI: still "R" right after
    // the destroy returned).
    wait_until("every process is gone", Duration::from_secs(5), || {
        pids.iter().all(|p| !alive(*p))
    });
    let s = l.wait(id.clone()).await.unwrap();
    assert!(matches!(s, ExitStatus::Signaled { signal: 9, .. }), "{s:?}");
    l.destroy(id.clone()).await.unwrap();
    l.remove(id).await.unwrap();
}

#[actix_rt::test]
async fn wait_resolves_when_the_init_exits_even_if_others_live_on() {
    let env = TestEnv::new("wait_resolves_when_the_init_exits");
    let l = linux(&env);
    // No pid namespace: the escaped sleep outlives the init (and is
    // reparented to the supervisor, a child subreaper, not to the host's init).
    let spec = shell(
        &env,
        "leftover",
        "(sleep 1000 &) ; exit 3",
        namespaces(&[Namespace::Mount]),
    );
    let id = spec.id.clone();
    let f = l.fork(spec).await.unwrap();
    l.release(id.clone()).await.unwrap();
    let s = tokio::time::timeout(Duration::from_secs(10), l.wait(id.clone()))
        .await
        .expect("wait resolves at the init's exit")
        .unwrap();
    assert_eq!(s.code(), 3);
    assert!(matches!(
        l.status(id.clone()).await.unwrap(),
        ProcessStatus::Exited(_)
    ));
    let left = berth_launcher::freezer::all_pids(&env.cgroup_dir("freezer").join("leftover"));
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        ppid_of(left[0]),
        f.supervisor.pid,
        "the escaped process belongs to the supervisor"
    );
    assert!(
        f.supervisor.is_alive(),
        "the supervisor stays while a child lives"
    );
    l.destroy(id.clone()).await.unwrap();
    gone(&f.supervisor);
    assert_eq!(
        l.wait(id.clone()).await.unwrap().code(),
        3,
        "the init's status is kept"
    );
    l.remove(id).await.unwrap();
}

/// The direct children of `pid` as (comm, state), zombies included.
fn children(pid: i32) -> Vec<(String, char)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let stat = read(e.path().join("stat"));
        // "pid (comm) S ppid …": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if rest.next().and_then(|s| s.parse::<i32>().ok()) == Some(pid) {
            out.push((stat[open + 1..close].to_string(), state));
        }
    }
    out
}

/// `--init` without a pid namespace: the reaper is no pid 1, but as a
/// child subreaper the command's orphans still come to it (not to the
/// supervisor, the next subreaper up) and are reaped; a signal to the
/// init reaches the command, and the exit code is 128+N.
#[actix_rt::test]
async fn init_without_a_pid_namespace_reaps_as_a_subreaper() {
    let env = TestEnv::new("init_without_a_pid_namespace");
    let l = linux(&env);
    let mut spec = shell(
        &env,
        "subreaper",
        "i=0; while [ $i -lt 20 ]; do sh -c 'sleep 2 &'; i=$((i+1)); done; exec sleep 1000",
        namespaces(&[]),
    );
    spec.init = true;
    let id = ContainerId::new("subreaper");
    let f = l.fork(spec).await.unwrap();
    l.release(id.clone()).await.unwrap();
    let sleeps = || {
        children(f.init.pid)
            .iter()
            .filter(|(c, s)| c == "sleep" && *s != 'Z')
            .count()
    };
    // The 20 orphans and the command itself, all the reaper's children.
    wait_until(
        "the orphans come to the reaper",
        Duration::from_secs(10),
        || sleeps() == 21,
    );
    assert_eq!(
        read(format!("/proc/{}/comm", f.init.pid)).trim(),
        "berth-init"
    );
    wait_until("the orphans are reaped", Duration::from_secs(10), || {
        children(f.init.pid) == vec![("sleep".to_string(), 'S')]
    });
    l.kill(id.clone(), libc::SIGTERM).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), l.wait(id.clone()))
        .await
        .expect("the command ends on the forwarded SIGTERM")
        .unwrap();
    assert!(
        matches!(status, ExitStatus::Exited { code: 143, .. }),
        "{status:?}"
    );
    l.destroy(id.clone()).await.unwrap();
    l.remove(id).await.unwrap();
}

/// The parent of the live process `pid`.
fn ppid_of(pid: i32) -> i32 {
    read(format!("/proc/{pid}/stat"))
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether the supervisor `sup` was started ahead, by a pool: its command
/// line says so (`--pooled`, `--pooled-idle`; one spawned for its launch
/// has `--id`). Not its start time: on cgroup v2 a supervisor forks
/// itself into `.supervisors` once it has its request.
fn pooled(sup: &ProcessRef) -> bool {
    let cmdline = fs::read(format!("/proc/{}/cmdline", sup.pid)).expect("the supervisor runs");
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let pooled = args.iter().any(|a| a.starts_with(b"--pooled"));
    assert_ne!(
        pooled,
        args.iter().any(|a| *a == b"--id"),
        "a supervisor is either pooled or spawned for its launch: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    pooled
}

/// Launches `id` with the caller's pipes as its stdio (stdin too) and
/// returns whether its supervisor was pooled, its exit code and what it
/// wrote.
async fn fork_with_pipes(
    l: &LinuxLauncher,
    env: &TestEnv,
    id: &str,
) -> (bool, i32, String, String) {
    let (in_r, in_w) = nix::unistd::pipe().unwrap();
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (err_r, err_w) = nix::unistd::pipe().unwrap();
    let mut spec = shell(
        env,
        id,
        "read x; echo got-$x; echo to-err >&2; exit 3",
        LaunchInfo::default(),
    );
    spec.stdio = Stdio::Fds {
        stdin: Some(in_r),
        stdout: out_w,
        stderr: err_w,
    };
    let cid = spec.id.clone();
    let forked = l.fork(spec).await.expect("fork");
    let was_pooled = pooled(&forked.supervisor);
    use std::io::{Read, Write};
    let mut w = fs::File::from(in_w);
    w.write_all(b"hello\n").unwrap();
    drop(w);
    l.release(cid.clone()).await.expect("release");
    let status = tokio::time::timeout(Duration::from_secs(30), l.wait(cid.clone()))
        .await
        .expect("the container exits within 30 s")
        .expect("wait");
    l.destroy(cid.clone()).await.expect("destroy");
    l.remove(cid).await.expect("remove");
    let (mut out, mut err) = (String::new(), String::new());
    fs::File::from(out_r).read_to_string(&mut out).unwrap();
    fs::File::from(err_r).read_to_string(&mut err).unwrap();
    (was_pooled, status.code(), out, err)
}

#[actix_rt::test]
async fn a_launch_takes_a_supervisor_started_ahead_and_hands_it_the_stdio() {
    let env = TestEnv::new("supervisor_pool");
    for pool in [0, 2] {
        let mut cfg = config(&env);
        cfg.supervisor_pool = pool;
        let l = LinuxLauncher::new(cfg).unwrap();
        // The first launch spawns its own and starts the pool filling.
        let (status, out, _) = run_to_end(
            &l,
            shell(
                &env,
                &format!("first-{pool}"),
                "echo one",
                LaunchInfo::default(),
            ),
        )
        .await;
        assert_eq!((status.code(), out.as_str()), (0, "one\n"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        for n in 0..3 {
            let (pooled, code, out, err) = fork_with_pipes(&l, &env, &format!("p{pool}-{n}")).await;
            assert_eq!(
                (code, out.as_str(), err.as_str()),
                (3, "got-hello\n", "to-err\n")
            );
            if pool == 0 {
                assert!(!pooled, "no pool, yet a pooled supervisor");
            } else if n == 0 {
                // Waiting since before this launch: a pooled one.
                assert!(pooled, "pool of {pool}: a supervisor spawned at the launch");
            }
        }
        // A sandbox-files launch from the pool too.
        let (status, out, _) = run_to_end(
            &l,
            shell(
                &env,
                &format!("last-{pool}"),
                "echo two",
                LaunchInfo::default(),
            ),
        )
        .await;
        assert_eq!((status.code(), out.as_str()), (0, "two\n"));
    }
}

#[actix_rt::test]
async fn a_one_shot_pool_starts_before_the_first_launch_and_is_not_topped_up() {
    let env = TestEnv::new("supervisor_pool_once");
    let mut cfg = config(&env);
    cfg.supervisor_pool = 1;
    cfg.supervisor_pool_once = true;
    let l = LinuxLauncher::new(cfg).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The first launch finds one waiting (a topped-up pool fills only
    // after its first launch).
    let (pooled, code, out, err) = fork_with_pipes(&l, &env, "once-1").await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (3, "got-hello\n", "to-err\n")
    );
    assert!(
        pooled,
        "the first launch's supervisor was not started ahead"
    );
    // Taken, not replaced: the next launch spawns its own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pooled, code, _, _) = fork_with_pipes(&l, &env, "once-2").await;
    assert_eq!(code, 3);
    assert!(
        !pooled,
        "the second supervisor was pooled: the pool was topped up"
    );
}

/// Pids of the pooled supervisors started for `env` (their command line
/// names its cgroup root, in `--placed-in`).
fn placed_members(env: &TestEnv) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("--placed-in") && cmdline.contains(&format!("/{}/", env.cgroup_root))
        })
        .collect()
}

/// A placed pool's member moves into `.supervisors` as it starts: it
/// waits there (at SCHED_IDLE), and the launch that takes it moves it
/// nowhere (on v2 it is not even forked again: its pid stays the
/// supervisor's). Once the launcher is gone, so are its members.
#[actix_rt::test]
async fn a_placed_pool_member_waits_in_the_supervisors_cgroup() {
    let env = TestEnv::new("supervisor_pool_placed");
    let mut cfg = config(&env);
    cfg.supervisor_pool = 1;
    cfg.supervisor_pool_placed = true;
    let l = LinuxLauncher::new(cfg).unwrap();
    // The first launch spawns its own and starts the pool filling.
    let (status, out, _) = run_to_end(
        &l,
        shell(&env, "placed-first", "echo one", LaunchInfo::default()),
    )
    .await;
    assert_eq!((status.code(), out.as_str()), (0, "one\n"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let member = loop {
        if let [pid] = placed_members(&env)[..] {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "no placed member");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Every hierarchy it is in (v1 controllers, v2's "0::", named ones):
    // the supervisors' cgroup under this test's root.
    let want = format!(
        "/{}/{}",
        env.cgroup_root,
        berth_launcher::SUPERVISORS_CGROUP
    );
    let cgroups = read(format!("/proc/{member}/cgroup"));
    for line in cgroups.lines() {
        let (hierarchy, path) = line.split_once(':').unwrap().1.split_once(':').unwrap();
        if hierarchy.contains("cpuset") {
            continue; // its `.supervisors` has no cpus to join
        }
        assert_eq!(path, want, "{line} (all: {cgroups})");
    }
    // SAFETY: a plain syscall.
    let policy = unsafe { libc::sched_getscheduler(member) };
    assert_eq!(policy, libc::SCHED_IDLE);

    let spec = shell(&env, "placed-claim", "echo two", LaunchInfo::default());
    let cid = spec.id.clone();
    let forked = l.fork(spec).await.expect("fork");
    assert!(pooled(&forked.supervisor));
    assert_eq!(forked.supervisor.pid, member, "the claim moved the member");
    l.release(cid.clone()).await.expect("release");
    let status = tokio::time::timeout(Duration::from_secs(30), l.wait(cid.clone()))
        .await
        .expect("the container exits within 30 s")
        .expect("wait");
    assert_eq!(status.code(), 0);
    l.destroy(cid.clone()).await.expect("destroy");
    l.remove(cid).await.expect("remove");

    drop(l);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !placed_members(&env).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "pool members outlived their launcher: {:?}",
            placed_members(&env)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
