//! `berth run` through a running agent: with an agent serving --socket,
//! the container is the agent's (it shows in `ps` while it runs), its
//! stdio is relayed (stdout and stderr apart, stdin with -i, a terminal
//! with -t), the exit code, `--json` and START_ERROR are as in-process,
//! SIGINT destroys it, a client killed mid-run leaves nothing behind, and
//! the run is removed from the agent once it ends. Without an agent the
//! run stays in-process; a named socket nobody serves is an error.

use berth_tests::{import_busybox, on_pty, Agent, TestEnv};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `berth --socket S run ARGS` (only the socket: the agent's dirs are its
/// own), with stdin from `input`.
fn run(env: &TestEnv, args: &[&str], input: Option<&str>) -> Output {
    use std::io::Write;
    let mut c = run_cmd(env, args);
    c.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(i) = input {
        child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            panic!("berth run {args:?} hangs");
        }
    }
}

fn run_cmd(env: &TestEnv, args: &[&str]) -> Command {
    let mut c = Command::new(berth_tests::berth_bin());
    c.arg("--socket").arg(env.socket()).arg("run").args(args);
    c
}

fn ids(env: &TestEnv, agent: &Agent) -> Vec<String> {
    env.ps_json(agent)
        .into_iter()
        .map(|c| c["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until `id` runs in the agent; its pid.
fn wait_running(env: &TestEnv, agent: &Agent, id: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = env.ps_json(agent).into_iter().find(|c| c["id"] == id);
        if let Some(pid) = c.as_ref().and_then(|c| c["pid"].as_i64()) {
            if c.unwrap()["state"] == "RUNNING" {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{id} is not running in the agent:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_gone(env: &TestEnv, agent: &Agent, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while ids(env, agent).iter().any(|i| i == id) {
        assert!(
            Instant::now() < deadline,
            "{id} is still in the agent:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_through_an_agent_relays_stdio_exit_codes_and_start_errors() {
    let env = TestEnv::new("runag-stdio");
    import_busybox(&env);
    let agent = env.start_agent("");

    // stdout and stderr apart, the exit code, the image's rootfs.
    let out = run(
        &env,
        &[
            "--image",
            "busybox",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; test -f /bin/busybox && exit 3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}\n{}", agent.log());
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");

    // stdin with -i, to its end.
    let out = run(
        &env,
        &["-i", "--image", "busybox", "--", "sh", "-c", "tr a-z A-Z"],
        Some("hello\nagent\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "HELLO\nAGENT\n");

    // Killed by a signal: 128+N (under --init: pid 1 would ignore it).
    let out = run(
        &env,
        &[
            "--init",
            "--image",
            "busybox",
            "--",
            "sh",
            "-c",
            "kill -9 $$",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(137), "{out:?}");

    // A missing command: START_ERROR, 128, as in-process.
    let out = run(
        &env,
        &["--json", "--image", "busybox", "--", "/no/such/command"],
        None,
    );
    assert_eq!(out.status.code(), Some(128), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "START_ERROR", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("/no/such/command"),
        "{v}"
    );

    // Refused at admission: 125 and the reason; nothing made.
    let out = run(&env, &["--entrypoint", "/bin/sh", "--", "/bin/true"], None);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(text(&out.stderr).contains("entrypoint"), "{out:?}");

    // -t: a terminal of the container's own, sized as ours. The size
    // follows the release (the supervisor releases the command once the
    // agent is attached; the client's first resize frame comes right
    // after), hence the pause before reading it.
    let mut c = run_cmd(
        &env,
        &[
            "-t",
            "--image",
            "busybox",
            "--",
            "sh",
            "-c",
            "test -t 0 && test -t 1 && sleep 0.5 && stty size && exit 4",
        ],
    );
    c.stdin(Stdio::null());
    let (shown, code) = on_pty(c, 33, 101);
    assert_eq!(code, Some(4), "{shown}");
    assert!(shown.contains("33 101"), "{shown:?}");

    // Every run was removed from the agent once it ended.
    assert_eq!(ids(&env, &agent), Vec::<String>::new());
    assert!(
        agent.log().contains("streamed container started"),
        "the runs did not go through the agent:\n{}",
        agent.log()
    );
    drop(agent);
    assert_eq!(env.leaks(), Vec::<String>::new());
}

#[test]
fn sigint_destroys_and_a_killed_client_leaves_nothing() {
    let env = TestEnv::new("runag-signal");
    import_busybox(&env);
    let agent = env.start_agent("");

    // SIGINT: the container is destroyed and the run says so (137).
    let id = format!("{}-int", env.name);
    let mut child = run_cmd(
        &env,
        &["--name", &id, "--image", "busybox", "--", "sleep", "600"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = wait_running(&env, &agent, &id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "berth run ignored SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(137), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!("interrupted; destroying {id}")),
        "{out:?}"
    );
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    wait_gone(&env, &agent, &id);

    // The client SIGKILLed: the agent destroys what it was running.
    let id = format!("{}-kill", env.name);
    let mut child = run_cmd(
        &env,
        &["--name", &id, "--image", "busybox", "--", "sleep", "600"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let pid = wait_running(&env, &agent, &id);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_gone(&env, &agent, &id);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    drop(agent);
    assert_eq!(env.leaks(), Vec::<String>::new());
}

#[test]
fn without_an_agent_a_named_socket_is_an_error_and_in_process_still_runs() {
    let env = TestEnv::new("runag-none");
    // No agent: a run that names the socket fails and says why.
    let out = run(&env, &["--", "/bin/true"], None);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(text(&out.stderr).contains("no agent serves it"), "{out:?}");

    let agent = env.start_agent("");
    // Node options describe an in-process node: not with an agent's socket.
    let out = run(&env, &["--log-max-size", "1M", "--", "/bin/true"], None);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(text(&out.stderr).contains("--in-process"), "{out:?}");
    drop(agent);

    // --in-process runs here on the test's own dirs, agent or not.
    let out = env
        .berth()
        .args(["--socket"])
        .arg(env.socket())
        .args([
            "run",
            "--in-process",
            "--",
            "/bin/sh",
            "-c",
            "echo here; exit 5",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(text(&out.stdout), "here\n");
    assert_eq!(env.leaks(), Vec::<String>::new());
}
