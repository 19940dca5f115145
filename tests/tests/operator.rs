//! What an operator sees: `berth retire` gives a root's node-wide traces
//! back only once it holds no container; `ps` shows no stale pid for a
//! terminated container; events read `ID STATE`; the agent says where it
//! serves; an error names its container and image once.

use berth_tests::{cgroup_mounts, TestEnv};
use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Container `id`'s entry in the agent's `ps --json`.
fn ps_entry(env: &TestEnv, id: &str) -> serde_json::Value {
    let out = env.berth_client().args(["ps", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in {v}"))
}

#[test]
fn retire_refuses_while_a_container_is_recorded_then_gives_everything_back() {
    let env = TestEnv::new("op-retire");
    let agent = env.start_agent("");
    let name = format!("{}-c", env.name);
    let out = env
        .berth_client()
        .args(["launch", "--name", &name, "--", "sleep", "60"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // While the agent runs: its store is locked.
    let out = env.berth().arg("retire").output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("using this --root"),
        "{}",
        text(&out.stderr)
    );

    // Agent stopped, container still recorded (and running).
    assert!(agent.terminate().success());
    let out = env.berth().arg("retire").output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("still recorded") && err.contains(&name),
        "{err}"
    );

    let agent = env.start_agent("");
    for args in [vec!["destroy", name.as_str()], vec!["rm", name.as_str()]] {
        let out = env.berth_client().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    assert!(agent.terminate().success());

    let out = env.berth().arg("retire").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    for m in cgroup_mounts() {
        let d = m.mount_point.join(&env.cgroup_root);
        assert!(!d.exists(), "{} stays", d.display());
    }
    assert!(
        !berth::cgroup_claim_path(&env.cgroup_root).exists(),
        "{said}"
    );
    assert!(!env.runtime_dir.join("owner").exists(), "{said}");
    assert!(env.state_dir.join("state").is_dir(), "the state dir stays");
}

#[test]
fn ps_events_and_the_agent_say_what_is_true() {
    let env = TestEnv::new("op-ps");
    let agent = env.start_agent("");
    let mut events = env
        .berth_client()
        .arg("events")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let name = format!("{}-c", env.name);
    let out = env
        .berth_client()
        .args(["launch", "--name", &name, "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = env.berth_client().args(["wait", &name]).output().unwrap();

    let c = ps_entry(&env, &name);
    assert_eq!(c["state"], "TERMINATED");
    assert!(c["pid"].is_null(), "a terminated container has no pid: {c}");
    let out = env.berth_client().arg("ps").output().unwrap();
    let line = text(&out.stdout)
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap()
        .to_string();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[1..3], ["TERMINATED", "-"], "{line}");

    assert!(agent.terminate().success());
    let lines: Vec<String> = std::io::BufReader::new(events.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.starts_with(&name))
        .collect();
    let _ = events.wait();
    assert!(
        lines.iter().any(|l| l == &format!("{name} RUNNING")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("state=")), "{lines:?}");
    assert!(
        agent_log_says_serving(&env),
        "the agent names its socket when it serves"
    );
    let out = env.berth_client().args(["rm", &name]).output().unwrap();
    assert!(!out.status.success(), "no agent now");
    let agent = env.start_agent("");
    let out = env.berth_client().args(["rm", &name]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(agent);
}

fn agent_log_says_serving(env: &TestEnv) -> bool {
    let want = format!("berth agent: serving on {}", env.socket().display());
    std::fs::read_dir(&env.temp_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("agent-"))
        .any(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains(&want)
        })
}

#[test]
fn an_error_names_its_container_and_image_once() {
    let env = TestEnv::new("op-err");
    let out = env
        .berth()
        .args(["run", "--name", "e1", "--image", "nope:1", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.matches("container e1").count(), 1, "{err}");
    assert_eq!(err.matches("nope:1").count(), 1, "{err}");
    assert!(err.contains("not in the store"), "{err}");
}

#[test]
fn stop_ends_a_handler_less_command_within_its_grace_and_a_handler_runs() {
    let env = TestEnv::new("op-stop");
    let agent = env.start_agent("");
    let (deaf, polite) = (format!("{}-deaf", env.name), format!("{}-polite", env.name));
    for (n, script) in [
        // pid 1 without a handler: the kernel drops SIGTERM.
        (&deaf, "exec sleep 60"),
        (&polite, "trap 'exit 3' TERM; while :; do sleep 0.1; done"),
    ] {
        let out = env
            .berth_client()
            .args(["launch", "--name", n, "--", "sh", "-c", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    std::thread::sleep(Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    let out = env
        .berth_client()
        .args(["stop", &deaf, "--grace", "1", "--json"])
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["signal"], 9, "SIGKILL after the grace: {t}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "took {took:?} with a 1 s grace"
    );

    let t0 = std::time::Instant::now();
    let out = env
        .berth_client()
        .args(["stop", &polite, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["exit_code"], 3, "its TERM handler ran: {t}");
    assert!(t0.elapsed() < Duration::from_secs(5), "well within 10 s");
    let out = env
        .berth_client()
        .args(["stop", &polite, "--grace=-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--grace"),
        "{}",
        text(&out.stderr)
    );
    for n in [&deaf, &polite] {
        let out = env.berth_client().args(["rm", n]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    drop(agent);
}

/// Cgroups standing for the agent's service cgroup under a service
/// manager; removed on drop.
struct ServiceCgroups(Vec<std::path::PathBuf>);

impl Drop for ServiceCgroups {
    fn drop(&mut self) {
        for d in &self.0 {
            for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            for _ in 0..100 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn killing_the_agents_cgroup_leaves_supervisors_and_containers_running() {
    let env = TestEnv::new("op-svc");
    // Where a service manager tracks (and on stop may kill) a service:
    // the named systemd hierarchy and the unified one; pids too.
    let svc = ServiceCgroups(
        cgroup_mounts()
            .into_iter()
            .filter(|m| {
                m.v2 || m
                    .controllers
                    .iter()
                    .any(|c| c == "name=systemd" || c == "pids")
            })
            .map(|m| m.mount_point.join(format!("{}-svc", env.cgroup_root)))
            .collect(),
    );
    assert!(
        !svc.0.is_empty(),
        "no cgroup hierarchy to stand for a service"
    );
    for d in &svc.0 {
        std::fs::create_dir(d).unwrap();
    }
    let dirs: Vec<String> = svc.0.iter().map(|d| d.display().to_string()).collect();
    let log = std::fs::File::create(env.path("svc-agent.log")).unwrap();
    let mut agent = std::process::Command::new("sh")
        .arg("-c")
        .arg("for d in $DIRS; do echo $$ > $d/cgroup.procs || exit 9; done; exec \"$@\"")
        .arg("sh")
        .arg(berth_tests::berth_bin())
        .arg("--root")
        .arg(&env.state_dir)
        .arg("--runtime-dir")
        .arg(&env.runtime_dir)
        .arg("--cgroup-root")
        .arg(&env.cgroup_root)
        .arg("--socket")
        .arg(env.socket())
        .arg("agent")
        .env("DIRS", dirs.join(" "))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(env.socket()).is_err() {
        assert!(agent.try_wait().unwrap().is_none(), "the agent exited");
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not serve"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let name = format!("{}-c", env.name);
    let out = env
        .berth_client()
        .args(["launch", "--name", &name, "--", "sleep", "60"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ps = |env: &TestEnv| ps_entry(env, &name);
    let c = ps(&env);
    let (pid, sup) = (
        c["pid"].as_i64().unwrap(),
        c["supervisor_pid"].as_i64().unwrap(),
    );
    let cg = std::fs::read_to_string(format!("/proc/{sup}/cgroup")).unwrap();
    let want = format!("/{}/.supervisors", env.cgroup_root);
    assert!(
        cg.lines()
            .all(|l| l.ends_with(&want) || l.contains(":/process_api") || !l.contains("-svc")),
        "{cg}"
    );
    assert!(cg.lines().any(|l| l.ends_with(&want)), "{cg}");

    // What a service manager does to a stopped service's cgroup.
    let mut killed = 0;
    for d in &svc.0 {
        for p in std::fs::read_to_string(d.join("cgroup.procs"))
            .unwrap()
            .split_whitespace()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.parse().unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed += 1;
        }
    }
    assert!(killed >= 1, "the agent was in its service cgroup");
    let _ = agent.wait();
    std::thread::sleep(Duration::from_millis(200));
    for p in [pid, sup] {
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), None).is_ok(),
            "{p} died with the agent's cgroup"
        );
    }
    // The next agent finds it running, same pid.
    let agent = env.start_agent("");
    let c = ps(&env);
    assert_eq!(c["state"], "RUNNING", "{c}");
    assert_eq!(c["pid"].as_i64(), Some(pid));
    for args in [vec!["destroy", name.as_str()], vec!["rm", name.as_str()]] {
        let out = env.berth_client().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    drop(agent);
    drop(svc);
}

#[test]
fn pause_stops_a_counter_resume_continues_it_and_both_survive_an_agent_restart() {
    let env = TestEnv::new("op-pause");
    let agent = env.start_agent("");
    let name = format!("{}-c", env.name);
    let out = env
        .berth_client()
        .args(["launch", "--name", &name, "--", "sh", "-c"])
        .arg("i=0; while :; do i=$((i+1)); echo $i > count; sleep 0.02; done")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = |env: &TestEnv| ps_entry(env, &name);
    let count_file =
        std::path::PathBuf::from(status(&env)["sandbox_dir"].as_str().unwrap()).join("count");
    let count = || -> u64 {
        std::fs::read_to_string(&count_file)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    std::thread::sleep(Duration::from_millis(300));
    let ok = |args: &[&str]| {
        let out = env.berth_client().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        out
    };
    ok(&["pause", &name]);
    assert_eq!(status(&env)["state"], "PAUSED");
    let frozen_at = count();
    assert!(frozen_at > 0, "the counter ran before the pause");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(count(), frozen_at, "the counter moved while paused");
    // Usage still answers while paused.
    ok(&["stats", &name]);

    // An agent restart keeps it paused.
    drop(agent);
    let agent = env.start_agent("");
    assert_eq!(status(&env)["state"], "PAUSED");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(count(), frozen_at);

    ok(&["resume", &name]);
    assert_eq!(status(&env)["state"], "RUNNING");
    // On a loaded machine the thawed loop may take a while to tick.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count() <= frozen_at && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        count() > frozen_at,
        "the counter did not go on after resume"
    );

    // Stop works on a paused container: thawed for the SIGTERM (which a
    // handler-less pid 1 ignores), killed at the end of the grace.
    ok(&["pause", &name]);
    let t0 = std::time::Instant::now();
    let out = ok(&["stop", &name, "--grace", "1", "--json"]);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["signal"], 9, "{t}");
    let out = env.berth_client().args(["pause", &name]).output().unwrap();
    assert!(
        !out.status.success(),
        "a terminated container cannot be paused"
    );
    ok(&["rm", &name]);
    drop(agent);
}
