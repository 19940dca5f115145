//! Pods: a nested container joins its parent's network, IPC and UTS
//! namespaces (the parent is the pod), and its pid namespace with
//! `--share-pid-namespace`; members talk over 127.0.0.1, see one hostname,
//! keep their own mount namespace, and come back after an agent SIGKILL.

use berth_tests::{import_busybox, Agent, TestEnv};
use serde_json::Value;
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn entry(env: &TestEnv, agent: &Agent, id: &str) -> Value {
    env.ps_json(agent)
        .into_iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in ps"))
}

fn init_pid(env: &TestEnv, agent: &Agent, id: &str) -> i32 {
    entry(env, agent, id)["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{id} has no pid")) as i32
}

/// The inode of `/proc/PID/ns/NS` as the host sees it.
fn ns(pid: i32, which: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{which}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/ns/{which}: {e}"))
        .display()
        .to_string()
}

/// The test's own namespace (the host's).
fn ns_self(which: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{which}"))
        .unwrap()
        .display()
        .to_string()
}

/// Waits until `file` in container `id`'s sandbox has content.
fn sandbox_file(env: &TestEnv, agent: &Agent, id: &str, file: &str) -> String {
    let dir = entry(env, agent, id)["sandbox_dir"]
        .as_str()
        .unwrap()
        .to_string();
    let path = std::path::Path::new(&dir).join(file);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(&path) {
            if !s.trim().is_empty() {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} stays empty; agent log:\n{}",
            path.display(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pod_members_share_network_ipc_uts_and_optionally_pid() {
    let env = TestEnv::new("pod-share");
    import_busybox(&env);
    let agent = env.start_agent("");
    let pod = format!("{}-p", env.name);
    // The pod: its own network namespace (loopback only), a hostname, and
    // a listener on 127.0.0.1 that writes what it gets to its sandbox.
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &pod,
            "--image",
            "busybox",
            "--network",
            "none",
            "--hostname",
            "podhost",
            "--",
            "sh",
            "-c",
            // Listens again after a connection that brought nothing (seen
            // on a loaded machine), so the test does not hang on nc's timing.
            "until [ -s $BERTH_SANDBOX/got ]; do busybox nc -l -p 7777 > $BERTH_SANDBOX/got; done; \
             exec sleep 601",
        ],
        0,
    );
    let a = format!("{pod}/a");
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &a,
            "--image",
            "busybox",
            "--",
            "sh",
            "-c",
            "hostname > $BERTH_SANDBOX/host; \
             while :; do echo hello-from-a | busybox nc 127.0.0.1 7777; sleep 0.2; done",
        ],
        0,
    );
    let b = format!("{pod}/b");
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &b,
            "--image",
            "busybox",
            "--share-pid-namespace",
            "--",
            "sh",
            "-c",
            "sleep 600",
        ],
        0,
    );

    // One hostname, and the message crossed 127.0.0.1.
    assert_eq!(sandbox_file(&env, &agent, &a, "host").trim(), "podhost");
    assert_eq!(
        sandbox_file(&env, &agent, &pod, "got").trim(),
        "hello-from-a"
    );

    let (p, pa, pb) = (
        init_pid(&env, &agent, &pod),
        init_pid(&env, &agent, &a),
        init_pid(&env, &agent, &b),
    );
    for which in ["net", "ipc", "uts"] {
        assert_eq!(ns(p, which), ns(pa, which), "{which}");
        assert_eq!(ns(p, which), ns(pb, which), "{which}");
        assert_ne!(ns(p, which), ns_self(which), "{which}: the pod's own");
    }
    // Own mount namespaces; pid shared only on request.
    assert_ne!(ns(p, "mnt"), ns(pa, "mnt"));
    assert_ne!(ns(p, "pid"), ns(pa, "pid"));
    assert_eq!(ns(p, "pid"), ns(pb, "pid"));

    // b sees the pod's processes (the listener's sleep and a's? no: a has
    // its own pid namespace); a sees only its own.
    let out = env
        .berth_client()
        .args([
            "launch",
            "--name",
            &format!("{pod}/c"),
            "--image",
            "busybox",
        ])
        .args(["--share-pid-namespace", "--", "sh", "-c"])
        .arg("busybox ps -o pid,args > $BERTH_SANDBOX/ps")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = sandbox_file(&env, &agent, &format!("{pod}/c"), "ps");
    assert!(seen.contains("sleep 601"), "{seen}");

    // A pod member cannot rename the pod.
    let out = env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &format!("{pod}/d"),
            "--image",
            "busybox",
            "--hostname",
            "x",
            "--",
            "true",
        ],
        125,
    );
    assert!(
        text(&out.stderr).contains("hostname"),
        "{}",
        text(&out.stderr)
    );

    // The agent dies; the pod and its members come back, namespaces kept.
    agent.kill9();
    let agent = env.start_agent("");
    for id in [&pod, &a, &b] {
        assert_eq!(entry(&env, &agent, id)["state"], "RUNNING", "{id}");
    }
    assert_eq!(init_pid(&env, &agent, &a), pa);
    assert_eq!(ns(init_pid(&env, &agent, &pod), "net"), ns(pa, "net"));

    // Destroying the pod destroys its members.
    env.client_expect(&agent, &["destroy", &pod], 0);
    for id in [&pod, &a, &b] {
        assert_eq!(entry(&env, &agent, id)["state"], "TERMINATED", "{id}");
    }
    drop(agent);
    assert_eq!(env.leaks(), Vec::<String>::new());
}

#[test]
fn a_nested_container_with_its_own_network_keeps_it() {
    let env = TestEnv::new("pod-ownnet");
    let agent = env.start_agent("");
    let pod = format!("{}-p", env.name);
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &pod,
            "--network",
            "none",
            "--",
            "sleep",
            "600",
        ],
        0,
    );
    let own = format!("{pod}/own");
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &own,
            "--network",
            "none",
            "--",
            "sleep",
            "600",
        ],
        0,
    );
    let (p, o) = (init_pid(&env, &agent, &pod), init_pid(&env, &agent, &own));
    assert_ne!(ns(p, "net"), ns(o, "net"));
    assert_eq!(ns(p, "uts"), ns(o, "uts"));

    // --share-pid-namespace needs a parent.
    let out = env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &format!("{}-top", env.name),
            "--share-pid-namespace",
            "--",
            "true",
        ],
        125,
    );
    assert!(
        text(&out.stderr).contains("share-pid-namespace"),
        "{}",
        text(&out.stderr)
    );
    env.client_expect(&agent, &["destroy", &pod], 0);
    drop(agent);
    assert_eq!(env.leaks(), Vec::<String>::new());
}

#[test]
fn a_pod_without_a_command_is_held_by_berths_init() {
    let env = TestEnv::new("pod-hold");
    import_busybox(&env);
    let agent = env.start_agent("");
    let pod = format!("{}-p", env.name);
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &pod,
            "--pod",
            "--network",
            "none",
            "--hostname",
            "held",
        ],
        0,
    );
    let p = init_pid(&env, &agent, &pod);
    let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap();
    assert_eq!(comm.trim(), "berth-pod");

    let (srv, cli, side) = (
        format!("{pod}/srv"),
        format!("{pod}/cli"),
        format!("{pod}/side"),
    );
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &srv,
            "--image",
            "busybox",
            "--",
            "sh",
            "-c",
            "until [ -s $BERTH_SANDBOX/got ]; do busybox nc -l -p 8080 > $BERTH_SANDBOX/got; done; \
             exec sleep 600",
        ],
        0,
    );
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &cli,
            "--image",
            "busybox",
            "--",
            "sh",
            "-c",
            "busybox hostname > $BERTH_SANDBOX/host; \
             while :; do echo over-loopback | busybox nc 127.0.0.1 8080; sleep 0.2; done",
        ],
        0,
    );
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &side,
            "--image",
            "busybox",
            "--share-pid-namespace",
            "--",
            "sh",
            "-c",
            "cat /proc/1/comm > $BERTH_SANDBOX/pid1; exec sleep 600",
        ],
        0,
    );
    assert_eq!(
        sandbox_file(&env, &agent, &srv, "got").trim(),
        "over-loopback"
    );
    assert_eq!(sandbox_file(&env, &agent, &cli, "host").trim(), "held");
    assert_eq!(
        sandbox_file(&env, &agent, &side, "pid1").trim(),
        "berth-pod"
    );
    let s = init_pid(&env, &agent, &side);
    assert_eq!(ns(p, "pid"), ns(s, "pid"));

    // A pod takes no command and no image.
    let out = env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &format!("{}-x", env.name),
            "--pod",
            "--",
            "sleep",
            "1",
        ],
        125,
    );
    assert!(text(&out.stderr).contains("pod"), "{}", text(&out.stderr));

    // Recovered with its members after an agent SIGKILL.
    agent.kill9();
    let agent = env.start_agent("");
    assert_eq!(init_pid(&env, &agent, &pod), p);
    for id in [&pod, &srv, &cli, &side] {
        assert_eq!(entry(&env, &agent, id)["state"], "RUNNING", "{id}");
    }
    // Its init ends on SIGTERM: a stop does not wait out the grace.
    let started = Instant::now();
    let out = env.client_expect(&agent, &["stop", &pod, "--grace", "30", "--json"], 0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["exit_code"], 0, "{t}");
    for id in [&pod, &srv, &cli, &side] {
        assert_eq!(entry(&env, &agent, id)["state"], "TERMINATED", "{id}");
    }
    drop(agent);
    assert_eq!(env.leaks(), Vec::<String>::new());
}

#[test]
fn a_pod_on_the_host_pid_namespace_shows_host_pids_to_its_members() {
    let env = TestEnv::new("pod-hostpid");
    import_busybox(&env);
    let agent = env.start_agent("");
    let pod = format!("{}-p", env.name);
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &pod,
            "--pod",
            "--host-pid",
            "--network",
            "none",
        ],
        0,
    );
    let p = init_pid(&env, &agent, &pod);
    assert_eq!(ns(p, "pid"), ns_self("pid"), "the pod has a pid namespace");
    let (shared, own) = (format!("{pod}/shared"), format!("{pod}/own"));
    // $$ is its pid as the host sees it; /proc/timer_list is masked as
    // ever (the host's is not empty).
    assert!(!std::fs::read("/proc/timer_list").unwrap().is_empty());
    let script = "echo $$ > $BERTH_SANDBOX/pid; cat /proc/1/comm > $BERTH_SANDBOX/comm1; \
                  busybox wc -c < /proc/timer_list > $BERTH_SANDBOX/masked; exec sleep 600";
    for (id, share) in [(&shared, true), (&own, false)] {
        let mut args = vec!["launch", "--name", id, "--image", "busybox"];
        if share {
            args.push("--share-pid-namespace");
        }
        args.extend(["--", "sh", "-c", script]);
        env.client_expect(&agent, &args, 0);
    }
    let host_pid: i32 = sandbox_file(&env, &agent, &shared, "pid")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(host_pid, init_pid(&env, &agent, &shared));
    assert_eq!(ns(host_pid, "pid"), ns_self("pid"));
    let host_init = std::fs::read_to_string("/proc/1/comm").unwrap();
    assert_eq!(sandbox_file(&env, &agent, &shared, "comm1"), host_init);
    assert_eq!(sandbox_file(&env, &agent, &shared, "masked").trim(), "0");
    // A member that does not share the pod's pid namespace has its own.
    assert_eq!(sandbox_file(&env, &agent, &own, "pid").trim(), "1");
    assert_ne!(ns(init_pid(&env, &agent, &own), "pid"), ns_self("pid"));

    // Only a top-level container may ask for the host's.
    let out = env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &format!("{pod}/nested"),
            "--host-pid",
            "--",
            "true",
        ],
        125,
    );
    assert!(
        text(&out.stderr).contains("host_pid"),
        "{}",
        text(&out.stderr)
    );
    env.client_expect(&agent, &["destroy", &pod], 0);
    drop(agent);
    assert_eq!(env.leaks(), Vec::<String>::new());
}

#[test]
fn host_pid_for_a_run_natively_and_under_runc() {
    let env = TestEnv::new("run-hostpid");
    import_busybox(&env);
    let host_init = std::fs::read_to_string("/proc/1/comm").unwrap();
    for rt in ["native", "runc"] {
        for host in [false, true] {
            let mut c = env.berth();
            c.args(["run", "--runtime", rt, "--image", "busybox"]);
            if host {
                c.arg("--host-pid");
            }
            let out = c
                .args(["--", "sh", "-c", "echo $$; cat /proc/1/comm"])
                .output()
                .unwrap();
            let o = text(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{rt} {host}: {o}{}",
                text(&out.stderr)
            );
            let mut lines = o.lines();
            let pid: i32 = lines.next().unwrap().parse().unwrap();
            let comm1 = format!("{}\n", lines.next().unwrap());
            if host {
                // Its own pid as the host sees it, the host's pid 1.
                assert!(pid > 1, "{rt}: {o}");
                assert_eq!(comm1, host_init, "{rt}");
            } else {
                assert_eq!(pid, 1, "{rt}: {o}");
                assert_ne!(comm1, host_init, "{rt}");
            }
        }
    }
}
