//! `berth agent` and its CLI clients: recovery across agent crashes (the
//! container keeps its pid, an exit while the agent is down keeps its
//! status), a second agent refused, SIGTERM leaving containers running,
//! events in order, a corrupt record.

use berth_tests::{Agent, TestEnv};
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a client command; panics (with the agent's log) unless it exits
/// with `code`.
fn client(env: &TestEnv, agent: Option<&Agent>, args: &[&str], code: i32) -> Output {
    env.client_expect(agent, args, code)
}

fn json(out: &Output) -> Value {
    serde_json::from_str(text(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

fn ps(env: &TestEnv, agent: &Agent) -> Vec<Value> {
    let v = json(&client(env, Some(agent), &["ps", "--json"], 0));
    v.as_array().unwrap().clone()
}

fn find<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {list:?}"))
}

#[test]
fn a_running_container_survives_an_agent_crash_with_its_pid() {
    let env = TestEnv::new("ag-crash");
    let agent = env.start_agent("");
    let out = client(
        &env,
        Some(&agent),
        &["launch", "--name", "sleeper", "--", "sleep", "1000"],
        0,
    );
    assert_eq!(text(&out.stdout).trim(), "sleeper", "launch prints the id");
    let before = ps(&env, &agent);
    let pid = find(&before, "sleeper")["pid"].as_i64().unwrap();
    assert_eq!(find(&before, "sleeper")["state"], "RUNNING");

    agent.kill9();
    let agent = env.start_agent("");
    let after = ps(&env, &agent);
    let c = find(&after, "sleeper");
    assert_eq!(c["state"], "RUNNING", "{c}");
    assert_eq!(c["pid"].as_i64().unwrap(), pid, "same process");

    let stats = json(&client(
        &env,
        Some(&agent),
        &["stats", "sleeper", "--json"],
        0,
    ));
    assert!(stats["processes"].as_u64().unwrap() >= 1, "{stats}");
    client(&env, Some(&agent), &["stats", "sleeper"], 0);

    client(&env, Some(&agent), &["kill", "sleeper", "-s", "KILL"], 0);
    let out = client(&env, Some(&agent), &["wait", "sleeper", "--json"], 137);
    let t = json(&out);
    assert_eq!(t["signal"], 9, "{t}");
    assert_eq!(t["reason"], "FAILED", "{t}");
    client(&env, Some(&agent), &["rm", "sleeper"], 0);
    assert!(ps(&env, &agent).is_empty());
    agent.terminate();
}

#[test]
fn an_exit_while_the_agent_is_down_keeps_its_status() {
    let env = TestEnv::new("ag-exit");
    let agent = env.start_agent("");
    client(
        &env,
        Some(&agent),
        &[
            "launch",
            "--name",
            "seven",
            "--",
            "sh",
            "-c",
            "sleep 2; exit 7",
        ],
        0,
    );
    agent.kill9();
    std::thread::sleep(Duration::from_secs(4));
    let agent = env.start_agent("");
    let out = client(&env, Some(&agent), &["wait", "seven", "--json"], 7);
    let t = json(&out);
    assert_eq!(t["exit_code"], 7, "{t}");
    assert_eq!(t["reason"], "FAILED", "{t}");
    // Text output, and wait again: the termination stays until rm.
    let out = client(&env, Some(&agent), &["wait", "seven"], 7);
    assert!(text(&out.stdout).contains("FAILED exit_code=7"));
    client(&env, Some(&agent), &["rm", "seven"], 0);
    let out = client(&env, Some(&agent), &["wait", "seven"], 125);
    assert!(
        text(&out.stderr).contains("unknown"),
        "{}",
        text(&out.stderr)
    );
    agent.terminate();
}

#[test]
fn a_second_agent_on_the_same_root_is_refused() {
    let env = TestEnv::new("ag-second");
    let agent = env.start_agent("");
    let out = env
        .berth()
        .args(["--socket"])
        .arg(env.path("other.sock"))
        .arg("agent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("another berth agent holds the store") && err.contains("pid"),
        "{err}"
    );
    assert!(!env.path("other.sock").exists());
    // The first one still serves.
    assert!(ps(&env, &agent).is_empty());
    assert!(agent.terminate().success());
}

#[test]
fn sigterm_stops_the_agent_and_leaves_containers_running() {
    let env = TestEnv::new("ag-term");
    let agent = env.start_agent("");
    client(
        &env,
        Some(&agent),
        &["launch", "--name", "stay", "--", "sleep", "1000"],
        0,
    );
    let pid = find(&ps(&env, &agent), "stay")["pid"].as_i64().unwrap() as i32;
    // A client blocked in wait and one on the event stream must not keep
    // the agent from stopping.
    let waiter = env
        .berth_client()
        .args(["wait", "stay"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut events = env
        .berth_client()
        .args(["events"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let status = agent.terminate();
    assert!(status.success(), "{status}");
    let ev = events.wait().unwrap();
    assert!(ev.success(), "the event stream ends when the agent stops");
    let mut waiter = waiter;
    waiter.wait().unwrap();
    assert!(!env.socket().exists(), "socket removed");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(),
        "the container lives on"
    );
    let agent = env.start_agent("");
    assert_eq!(find(&ps(&env, &agent), "stay")["state"], "RUNNING");
    client(&env, Some(&agent), &["destroy", "stay"], 0);
    client(&env, Some(&agent), &["rm", "stay"], 0);
    agent.terminate();
}

#[test]
fn events_show_the_transitions_and_the_exit_in_order() {
    let env = TestEnv::new("ag-events");
    let agent = env.start_agent("");
    let events = env
        .berth_client()
        .args(["events", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The stream is open once the agent has a subscriber; a short wait
    // for the client to connect.
    std::thread::sleep(Duration::from_millis(500));
    client(
        &env,
        Some(&agent),
        &["launch", "--name", "ev", "--", "sh", "-c", "exit 3"],
        0,
    );
    client(&env, Some(&agent), &["wait", "ev"], 3);
    client(&env, Some(&agent), &["rm", "ev"], 0);
    agent.terminate();
    let out = events.wait_with_output().unwrap();
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let states: Vec<&str> = lines
        .iter()
        .filter(|e| e["id"] == "ev")
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "STARTING",
            "PROVISIONING",
            "PREPARING",
            "ISOLATING",
            "FETCHING",
            "RUNNING",
            "DESTROYING",
            "TERMINATED"
        ]
    );
    let last = lines.last().unwrap();
    assert_eq!(last["termination"]["exit_code"], 3, "{last}");
    assert_eq!(last["termination"]["reason"], "FAILED", "{last}");
    let times: Vec<i64> = lines
        .iter()
        .map(|e| e["at_unix_nanos"].as_i64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in order: {times:?}"
    );
}

#[test]
fn a_corrupt_record_is_reported_unknown_and_cleaned_the_others_recover() {
    let env = TestEnv::new("ag-corrupt");
    let agent = env.start_agent("");
    for name in ["good", "bad"] {
        client(
            &env,
            Some(&agent),
            &["launch", "--name", name, "--", "sleep", "1000"],
            0,
        );
    }
    let bad_pid = find(&ps(&env, &agent), "bad")["pid"].as_i64().unwrap() as i32;
    agent.kill9();
    {
        // Damage the record and its mirror in the runtime dir.
        let rt = berth::state::RuntimeDir::open(&env.runtime_dir).unwrap();
        let store =
            berth::state::Store::open_with_mirror(env.state_dir.join("state"), rt.clone()).unwrap();
        store.put_raw("bad", b"\x01junk").unwrap();
        let mirror = rt
            .container_dir(&berth::ContainerId::new("bad"))
            .join(berth::state::runtime::RECORD);
        std::fs::write(mirror, b"\x01junk").unwrap();
    }
    let agent = env.start_agent("");
    let list = ps(&env, &agent);
    assert_eq!(find(&list, "good")["state"], "RUNNING");
    let bad = find(&list, "bad");
    assert_eq!(bad["state"], "TERMINATED", "{bad}");
    assert_eq!(bad["termination"]["reason"], "UNKNOWN", "{bad}");
    assert!(
        bad["termination"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be read"),
        "{bad}"
    );
    // Its process and cgroups went with the orphan cleanup.
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(bad_pid), None).is_err());
    assert!(!env.cgroup_dir("memory").join("bad").exists());
    assert!(!env.cgroup_dir("freezer").join("bad").exists());
    client(&env, Some(&agent), &["destroy", "good"], 0);
    client(&env, Some(&agent), &["rm", "good"], 0);
    client(&env, Some(&agent), &["rm", "bad"], 0);
    agent.terminate();
}

#[test]
fn update_changes_limits_and_keeps_the_others() {
    let env = TestEnv::new("ag-update");
    let agent = env.start_agent("");
    client(
        &env,
        Some(&agent),
        &[
            "launch",
            "--name",
            "u",
            "--memory",
            "64M",
            "--pids",
            "40",
            "--",
            "sh",
            "-c",
            // pid 1 of its namespace: only signals it handles reach it.
            "trap 'exit 42' TERM; sleep 1000 & wait",
        ],
        0,
    );
    client(&env, Some(&agent), &["update", "u", "--memory", "128M"], 0);
    let mem = env.cgroup_dir("memory").join("u");
    let pids = env.cgroup_dir("pids").join("u");
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap().trim().to_string();
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")),
        (128u64 << 20).to_string()
    );
    assert_eq!(read(pids.join("pids.max")), "40", "untouched limits stay");
    let out = client(&env, Some(&agent), &["update", "u"], 125);
    assert!(
        text(&out.stderr).contains("at least one of"),
        "{}",
        text(&out.stderr)
    );
    let out = client(&env, Some(&agent), &["update", "u", "--memory", "1K"], 125);
    assert!(
        text(&out.stderr).contains("below the minimum"),
        "{}",
        text(&out.stderr)
    );
    // Signals by name, SIG-name and number.
    for sig in ["SIGCONT", "CONT", "18"] {
        client(&env, Some(&agent), &["kill", "u", "-s", sig], 0);
    }
    client(&env, Some(&agent), &["kill", "u"], 0);
    // The trap ran: the default signal is TERM.
    client(&env, Some(&agent), &["wait", "u"], 42);
    client(&env, Some(&agent), &["rm", "u"], 0);
    agent.terminate();
}

/// The agent's open fds.
fn fds(agent: &berth_tests::Agent) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", agent.child.id()))
        .unwrap()
        .count()
}

#[test]
fn more_containers_than_inotify_instances_all_run_and_recover() {
    // 128 is the default per-user limit of inotify instances; an earlier
    // agent used one per running container and lost the rest.
    const N: usize = 150;
    // Fds the agent holds per running container, each watched for its
    // exit: the supervisor's control socket (its exit notice, registered
    // with the reactor as it is), the init's mount namespace and the OOM
    // eventfd; a recovered one, its supervisor's pidfd and the eventfd.
    // Six were held before (a pidfd beside the socket, and a copy of each
    // for the wait): 5000 containers did not fit a 20000-fd limit.
    const FDS_PER_CONTAINER: usize = 3;
    let env = TestEnv::new("ag-many");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let agent = env.start_agent("");
    let idle_fds = fds(&agent);
    let sock = env.socket();
    let running = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let mut c = berth::agent::connect(&sock).await.unwrap();
            let list = c
                .list(berth::agent::api::ListRequest {})
                .await
                .unwrap()
                .into_inner()
                .containers;
            list.iter()
                .filter(|s| s.state == berth::ContainerState::Running as i32)
                .count()
        })
    };
    rt.block_on(async {
        let mut c = berth::agent::connect(&sock).await.unwrap();
        for i in 0..N {
            c.launch(berth::agent::api::LaunchRequest {
                id: Some(berth::ContainerId::new(format!("m{i}"))),
                config: Some(berth::ContainerConfig {
                    command: vec!["sleep".into(), "1000".into()],
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(running(&rt), N, "{}", agent.log());
    // A little slack for what the agent opens besides (a client's
    // connection, the blocking pool's work).
    let slack = 16;
    let launched = fds(&agent);
    assert!(
        launched <= idle_fds + N * FDS_PER_CONTAINER + slack,
        "{launched} fds for {N} containers (idle: {idle_fds})"
    );
    agent.kill9();
    let agent = env.start_agent("");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(running(&rt), N, "after the restart: {}", agent.log());
    let recovered = fds(&agent);
    assert!(
        recovered <= idle_fds + N * FDS_PER_CONTAINER + slack,
        "{recovered} fds for {N} recovered containers (idle: {idle_fds})"
    );
    rt.block_on(async {
        let mut c = berth::agent::connect(&sock).await.unwrap();
        for i in 0..N {
            let r = berth::agent::api::ContainerRef {
                id: Some(berth::ContainerId::new(format!("m{i}"))),
            };
            c.destroy(r.clone()).await.unwrap();
            c.remove(r).await.unwrap();
        }
    });
    agent.terminate();
}

/// A recorded container's cgroups may hold sub-cgroups it made itself
/// (systemd or a container engine inside a privileged container): they are
/// its processes, not orphans. Recovery killed and removed them.
#[test]
fn a_containers_own_sub_cgroups_survive_an_agent_crash() {
    let env = TestEnv::new("ag-subcg");
    let agent = env.start_agent("");
    client(
        &env,
        Some(&agent),
        &["launch", "--name", "holder", "--", "sleep", "1000"],
        0,
    );
    let pid = find(&ps(&env, &agent), "holder")["pid"].as_i64().unwrap();
    // As the container would: a sub-cgroup in its own cgroups, its
    // process moved there.
    let subs: Vec<_> = ["freezer", "memory"]
        .iter()
        .map(|h| env.cgroup_dir(h).join("holder").join("sub"))
        .collect();
    for sub in &subs {
        std::fs::create_dir(sub).unwrap();
        std::fs::write(sub.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    agent.kill9();
    let agent = env.start_agent("");
    let c = ps(&env, &agent);
    let c = find(&c, "holder");
    assert_eq!(c["state"], "RUNNING", "{c}");
    assert_eq!(c["pid"].as_i64().unwrap(), pid);
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None);
    assert!(
        alive.is_ok(),
        "the container's process was killed at recovery"
    );
    for sub in &subs {
        assert!(sub.is_dir(), "{} was removed at recovery", sub.display());
    }

    // Its destroy still takes the whole tree.
    client(&env, Some(&agent), &["destroy", "holder"], 0);
    client(&env, Some(&agent), &["rm", "holder"], 0);
    for sub in &subs {
        assert!(!sub.exists(), "{} outlived its container", sub.display());
    }
    agent.terminate();
    let leaks = env.leaks();
    assert!(leaks.is_empty(), "leaks: {leaks:#?}");
}
