//! Isolator plugins out of process, through a real `berth agent
//! --plugin-dir`: the Python example (examples/plugins/greeting) gives the
//! container an env var and a sandbox file; the Python test plugin
//! (tests/plugins/testplugin.py) raises a limitation through Watch,
//! crashes, hangs and answers garbage at prepare (each a START_ERROR naming
//! it, with nothing left and the agent still launching), and holds state
//! across an agent SIGKILL (Recover drops the orphan's). No plugin process
//! outlives its agent.

use berth_tests::{Agent, TestEnv};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// The interpreter scripts/test prepares (a venv of /usr/bin/python3 with
/// grpcio and grpcio-tools); BERTH_TEST_PYTHON names another.
fn python() -> String {
    let p = std::env::var("BERTH_TEST_PYTHON")
        .unwrap_or_else(|_| "/opt/berth-python/bin/python3".to_string());
    let ok = std::process::Command::new(&p)
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{p} with grpcio and grpcio-tools is missing: run scripts/test, which makes it"
    );
    p
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(text(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

/// A plugin dir holding `name.json` with this config.
fn plugin_dir(env: &TestEnv, name: &str, config: Value) -> PathBuf {
    let dir = env.mkdir("plugins");
    std::fs::write(dir.join(format!("{name}.json")), config.to_string()).unwrap();
    dir
}

/// The test plugin, keeping its state in `<temp>/pstate`.
fn test_plugin(env: &TestEnv, timeout_ms: u64) -> (PathBuf, PathBuf) {
    let state = env.mkdir("pstate");
    let script = repo().join("tests/plugins/testplugin.py");
    let dir = plugin_dir(
        env,
        "tester",
        serde_json::json!({
            "name": "tester",
            "command": [python(), script, "--state-dir", state],
            "timeout_ms": timeout_ms,
        }),
    );
    (dir, state)
}

fn start(env: &TestEnv, dir: &Path) -> Agent {
    env.start_agent_with("", &["--plugin-dir", dir.to_str().unwrap()])
}

/// Processes serving this test's plugins (their socket is in its runtime dir).
fn plugin_pids(env: &TestEnv) -> Vec<i32> {
    let want = format!(
        "BERTH_PLUGIN_SOCKET={}",
        env.runtime_dir.join("plugins").display()
    );
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if environ
            .split(|b| *b == 0)
            .any(|v| v.starts_with(want.as_bytes()))
        {
            out.push(pid);
        }
    }
    out
}

/// A plugin dies with its agent (SIGTERM or SIGKILL).
fn assert_plugins_gone(env: &TestEnv) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = plugin_pids(env);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "plugin processes outlived the agent: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref())
        .unwrap_or_else(|e| panic!("read {}: {e}", p.as_ref().display()))
}

/// The names of the containers the test plugin holds state for.
fn held(state: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(state.join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn the_python_example_plugin_sets_env_and_writes_into_the_sandbox() {
    let env = TestEnv::new("plugin-greeting");
    let script = repo().join("examples/plugins/greeting/plugin.py");
    let dir = plugin_dir(
        &env,
        "greeting",
        serde_json::json!({"name": "greeting", "command": [python(), script], "timeout_ms": 5000}),
    );
    let agent = start(&env, &dir);
    assert_eq!(plugin_pids(&env).len(), 1, "the agent started the plugin");
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            "greet",
            "--",
            "sh",
            "-c",
            "echo \"$PLUGIN_GREETING\"; cat plugin.txt",
        ],
        0,
    );
    env.client_expect(&agent, &["wait", "greet"], 0);
    let sandbox = env.state_dir.join("sandboxes/greet");
    assert_eq!(
        read(sandbox.join("plugin.txt")),
        "written by the greeting plugin\n"
    );
    let out = env.client_expect(&agent, &["logs", "greet"], 0);
    assert_eq!(
        text(&out.stdout),
        "hello\nwritten by the greeting plugin\n",
        "the command saw the plugin's env and file"
    );
    env.client_expect(&agent, &["rm", "greet"], 0);
    assert!(agent.terminate().success());
    assert_plugins_gone(&env);
}

#[test]
fn a_plugin_limitation_through_watch_ends_the_container_naming_the_plugin() {
    let env = TestEnv::new("plugin-limit");
    let (dir, state) = test_plugin(&env, 5000);
    let agent = start(&env, &dir);
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            "limited",
            "-e",
            "PLUGIN_TEST_MODE=limit",
            "--",
            "sleep",
            "1000",
        ],
        0,
    );
    let out = env.client_expect(&agent, &["wait", "limited", "--json"], 137);
    let t = json(&out);
    assert_eq!(t["reason"], "LIMITATION", "{t}");
    assert_eq!(t["limited_resource"], "widgets", "{t}");
    assert_eq!(t["message"], "plugin tester: too many widgets", "{t}");
    assert!(held(&state).is_empty(), "cleanup ran: {:?}", held(&state));
    env.client_expect(&agent, &["rm", "limited"], 0);
    assert!(agent.terminate().success());
    assert_plugins_gone(&env);
}

/// Launches `name` with the test plugin in `mode`; the launch fails and
/// the termination is a START_ERROR whose message names the plugin and
/// says `why`. Then the plugin holds nothing and the agent launches again.
fn fails_the_launch(env: &TestEnv, agent: &Agent, state: &Path, mode: &str, why: &str) {
    let name = format!("bad-{mode}");
    let mode_env = format!("PLUGIN_TEST_MODE={mode}");
    let out = env.client_expect(
        agent,
        &["launch", "--name", &name, "-e", &mode_env, "--", "true"],
        125,
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("prepare of plugin/tester") && err.contains("plugin tester: prepare"),
        "{err}"
    );
    let t = json(&env.client_expect(agent, &["wait", &name, "--json"], 128));
    assert_eq!(t["reason"], "START_ERROR", "{t}");
    let message = t["message"].as_str().unwrap();
    assert!(
        message.contains("plugin tester: prepare: ") && message.contains(why),
        "{mode}: {message}"
    );
    env.client_expect(agent, &["rm", &name], 0);
    assert!(
        held(state).is_empty(),
        "{mode}: the plugin still holds {:?}",
        held(state)
    );
    // The agent (and the plugin, restarted if it died) serve the next one.
    let ok = format!("ok-{mode}");
    env.client_expect(
        agent,
        &[
            "launch",
            "--name",
            &ok,
            "--",
            "sh",
            "-c",
            "echo $PLUGIN_TEST",
        ],
        0,
    );
    env.client_expect(agent, &["wait", &ok], 0);
    let out = env.client_expect(agent, &["logs", &ok], 0);
    assert_eq!(text(&out.stdout), "yes\n", "{mode}");
    env.client_expect(agent, &["rm", &ok], 0);
}

#[test]
fn a_plugin_that_crashes_hangs_or_answers_garbage_fails_the_launch_naming_it() {
    let env = TestEnv::new("plugin-bad");
    let (dir, state) = test_plugin(&env, 1500);
    let agent = start(&env, &dir);
    fails_the_launch(
        &env,
        &agent,
        &state,
        "crash",
        "the plugin is unreachable or died",
    );
    // The crashed plugin was started again and, being a new instance,
    // told of the container it held before the cleanup came.
    let pids = read(state.join("pids"));
    assert_eq!(pids.lines().count(), 2, "restarted once: {pids}");
    let recovers = read(state.join("recover.log"));
    assert!(
        recovers
            .lines()
            .any(|l| l.contains("\"containers\": [\"bad-crash\"]")),
        "{recovers}"
    );
    fails_the_launch(
        &env,
        &agent,
        &state,
        "hang",
        "no reply within 1500 ms (the plugin's timeout_ms)",
    );
    fails_the_launch(
        &env,
        &agent,
        &state,
        "garbage",
        "a reply that is not a valid message",
    );
    assert!(agent.terminate().success());
    assert_plugins_gone(&env);
}

#[test]
fn after_an_agent_sigkill_the_plugin_is_given_recover_and_drops_orphans() {
    let env = TestEnv::new("plugin-recover");
    let (dir, state) = test_plugin(&env, 5000);
    let agent = start(&env, &dir);
    env.client_expect(
        &agent,
        &["launch", "--name", "keeper", "--", "sleep", "1000"],
        0,
    );
    assert_eq!(held(&state), ["keeper"]);
    let first = read(state.join("pids"));
    // State the plugin holds for a container berth no longer knows (as if
    // its record were lost): an orphan of the plugin's.
    std::fs::write(state.join("containers/ghost"), "").unwrap();

    agent.kill9();
    // The plugin dies with the agent (PR_SET_PDEATHSIG).
    assert_plugins_gone(&env);
    let agent = start(&env, &dir);
    let recovers = read(state.join("recover.log"));
    let last: Value = serde_json::from_str(recovers.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["containers"],
        serde_json::json!(["keeper"]),
        "{recovers}"
    );
    assert_eq!(held(&state), ["keeper"], "the orphan's state was dropped");
    assert_ne!(read(state.join("pids")), first, "a new plugin process");

    // The recovered container is still the plugin's to clean up.
    env.client_expect(&agent, &["destroy", "keeper"], 0);
    assert!(held(&state).is_empty(), "{:?}", held(&state));
    let calls = read(state.join("calls.log"));
    assert!(calls.contains("cleanup keeper"), "{calls}");
    env.client_expect(&agent, &["rm", "keeper"], 0);
    assert!(agent.terminate().success());
    assert_plugins_gone(&env);
}

/// The test plugin run by the test itself, serving on `socket`; killed
/// when dropped.
struct Served(std::process::Child);

impl Served {
    fn start(state: &Path, socket: &Path) -> Served {
        let _ = std::fs::remove_file(socket);
        let child = std::process::Command::new(python())
            .arg(repo().join("tests/plugins/testplugin.py"))
            .arg("--state-dir")
            .arg(state)
            .env("BERTH_PLUGIN_SOCKET", socket)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(Instant::now() < deadline, "the plugin never served");
            std::thread::sleep(Duration::from_millis(20));
        }
        Served(child)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_socket_plugin_restarted_mid_life_is_given_recover_before_any_other_call() {
    let env = TestEnv::new("plugin-socket");
    let state = env.mkdir("pstate");
    let socket = env.path("tester.sock");
    let served = Served::start(&state, &socket);
    let dir = plugin_dir(
        &env,
        "tester",
        serde_json::json!({"name": "tester", "socket": socket, "timeout_ms": 5000}),
    );
    let agent = start(&env, &dir);
    assert!(
        plugin_pids(&env).is_empty(),
        "berth starts no socket plugin"
    );
    env.client_expect(
        &agent,
        &["launch", "--name", "one", "--", "sleep", "1000"],
        0,
    );
    assert_eq!(held(&state), ["one"]);

    // The plugin restarts behind berth's back, between two calls.
    drop(served);
    let calls_before = read(state.join("calls.log")).lines().count();
    let recovers_before = read(state.join("recover.log")).lines().count();
    let served = Served::start(&state, &socket);
    env.client_expect(
        &agent,
        &["launch", "--name", "two", "--", "sleep", "1000"],
        0,
    );
    // What the new instance was asked, in order. (The watch of "one",
    // broken by the restart, may reconnect before or after the launch.)
    let calls = read(state.join("calls.log"));
    let fresh: Vec<&str> = calls.lines().skip(calls_before).collect();
    assert!(
        fresh.len() >= 3 && fresh[0] == "handshake" && fresh[1] == "recover",
        "a new connection begins with Handshake, then Recover: {fresh:?}"
    );
    assert!(
        fresh.iter().any(|l| l.starts_with("prepare two")),
        "{fresh:?}"
    );
    let recovers = read(state.join("recover.log"));
    let first: Value =
        serde_json::from_str(recovers.lines().nth(recovers_before).unwrap()).unwrap();
    // "two" as well when the launch came first: berth counts a container
    // as the plugin's from just before its Prepare is sent.
    let known = first["containers"].as_array().unwrap();
    assert!(
        known.first() == Some(&Value::from("one")) && known.len() <= 2,
        "{recovers}"
    );
    assert_eq!(held(&state), ["one", "two"]);

    for id in ["one", "two"] {
        env.client_expect(&agent, &["destroy", id], 0);
        env.client_expect(&agent, &["rm", id], 0);
    }
    assert!(held(&state).is_empty(), "{:?}", held(&state));
    assert!(agent.terminate().success());
    drop(served);
}

#[test]
fn berth_run_takes_plugins_too() {
    let env = TestEnv::new("plugin-run");
    let (dir, _state) = test_plugin(&env, 5000);
    let out = env
        .berth()
        .args(["run", "--plugin-dir", dir.to_str().unwrap()])
        .args(["--", "sh", "-c", "echo $PLUGIN_TEST"])
        .output()
        .unwrap();
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("yes\n", Some(0)),
        "stderr: {}",
        text(&out.stderr)
    );
    assert_plugins_gone(&env);
}

#[test]
fn a_failed_plugin_cleanup_is_retried_like_any_failed_destroy_stage() {
    let env = TestEnv::new("plugin-cleanup");
    let (dir, state) = test_plugin(&env, 5000);
    let agent = start(&env, &dir);
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            "sticky",
            "-e",
            "PLUGIN_TEST_MODE=badcleanup",
            "--",
            "sleep",
            "1000",
        ],
        0,
    );
    let out = env.client_expect(&agent, &["destroy", "sticky"], 125);
    let err = text(&out.stderr);
    assert!(
        err.contains("plugin tester: cleanup: Internal: the widget is stuck"),
        "{err}"
    );
    let c = env
        .ps_json(&agent)
        .into_iter()
        .find(|c| c["id"] == "sticky")
        .unwrap();
    assert_eq!(c["state"], "DESTROYING", "{c}");
    assert_eq!(held(&state), ["sticky"]);
    // The next destroy retries the cleanup, which now succeeds.
    let t = json(&env.client_expect(&agent, &["destroy", "sticky", "--json"], 0));
    assert_eq!(t["reason"], "DESTROYED", "{t}");
    assert!(held(&state).is_empty(), "{:?}", held(&state));
    env.client_expect(&agent, &["rm", "sticky"], 0);
    assert!(agent.terminate().success());
    assert_plugins_gone(&env);
}

#[test]
fn an_agent_whose_plugin_never_serves_or_whose_plugin_file_is_bad_does_not_start() {
    let env = TestEnv::new("plugin-nostart");
    let dir = plugin_dir(
        &env,
        "mute",
        serde_json::json!({"name": "mute", "command": ["false"], "start_timeout_ms": 1000}),
    );
    let run = |dir: &Path| {
        env.berth_client()
            .args(["agent", "--plugin-dir", dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = run(&dir);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("isolator plugin/mute recover: plugin mute: connect: cannot connect to")
            && err.contains("within 1000 ms"),
        "{err}"
    );
    assert_plugins_gone(&env);

    std::fs::write(
        dir.join("mute.json"),
        r#"{"name": "mute", "command": ["false"], "timeout": 5}"#,
    )
    .unwrap();
    let out = run(&dir);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("isolator plugins: plugin file") && err.contains("unknown field `timeout`"),
        "{err}"
    );
}
