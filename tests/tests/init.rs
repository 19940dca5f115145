//! `--init`: the container's pid 1 is berth's reaper, not the command. It
//! reaps orphans (without it they stay zombies), forwards signals (so a
//! handler-less command ends on `berth stop`'s SIGTERM at once, and a
//! trap sees `berth kill`), and exits with the command's code, 128+N for
//! a command killed by signal N, START_ERROR/128 for a missing command.

use berth_tests::{import_busybox, TestEnv};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// No client call may take longer: a hang is a failure, not a stuck suite.
const LIMIT: Duration = Duration::from_secs(40);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` for at most [`LIMIT`]; panics (after killing it) on a hang.
fn limited(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().expect("wait berth").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{cmd:?} hung; stderr: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A successful client call (`berth --socket … ARGS`).
fn ok(env: &TestEnv, args: &[&str]) -> Output {
    let mut c = env.berth_client();
    c.args(args);
    let out = limited(c);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    out
}

/// Container `id`'s entry in the agent's `ps --json`.
fn ps_entry(env: &TestEnv, id: &str) -> serde_json::Value {
    let out = ok(env, &["ps", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in {v}"))
}

/// Launches busybox `sh -c script` as `name`, with `--init` or not, and
/// returns its init's host pid.
fn launch(env: &TestEnv, name: &str, init: bool, script: &str) -> i32 {
    let mut args = vec!["launch", "--name", name, "--image", "busybox"];
    if init {
        args.push("--init");
    }
    args.extend(["--", "sh", "-c", script]);
    ok(env, &args);
    wait_until("the container runs", Duration::from_secs(20), || {
        ps_entry(env, name)["state"] == "RUNNING"
    });
    let c = ps_entry(env, name);
    assert_eq!(c["init"], init, "ps --json says whether --init: {c}");
    c["pid"].as_i64().expect("a running container's pid") as i32
}

fn destroy(env: &TestEnv, name: &str) {
    ok(env, &["destroy", name]);
    ok(env, &["rm", name]);
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One process as /proc/PID/stat shows it (also for a zombie).
#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    ppid: i32,
    state: char,
    comm: String,
}

fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) S ppid …": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        out.push(Proc {
            pid,
            ppid,
            state,
            comm: stat[open + 1..close].to_string(),
        });
    }
    out
}

/// The processes below `root` (not `root` itself): every process of the
/// container whose init is `root`, zombies included (a zombie stays its
/// parent's child until reaped).
fn descendants(root: i32) -> Vec<Proc> {
    let all = processes();
    let mut children: HashMap<i32, Vec<Proc>> = HashMap::new();
    for p in &all {
        children.entry(p.ppid).or_default().push(p.clone());
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for c in children.get(&p).into_iter().flatten() {
            todo.push(c.pid);
            out.push(c.clone());
        }
    }
    out
}

fn zombies(root: i32) -> usize {
    descendants(root).iter().filter(|p| p.state == 'Z').count()
}

/// 100 orphans that end 2 s later, then the command becomes a `sleep`
/// that never reaps (as pid 1 without --init, it gets them all).
const ORPHANS: &str = "i=0; while [ $i -lt 100 ]; do sh -c 'sleep 2 &'; i=$((i+1)); done; \
                       exec sleep 1000";

#[test]
fn init_reaps_a_hundred_orphans_and_without_it_they_stay_zombies() {
    let env = TestEnv::new("init-reap");
    import_busybox(&env);
    let agent = env.start_agent("");
    let (with, without) = (
        format!("{}-with", env.name),
        format!("{}-without", env.name),
    );
    let reaper = launch(&env, &with, true, ORPHANS);
    let plain = launch(&env, &without, false, ORPHANS);

    // The control: the workload does make zombies (≥ 50 of the 100: the
    // shell may reap a few itself while its loop runs).
    wait_until(
        "zombies under the plain container",
        Duration::from_secs(20),
        || zombies(plain) >= 50,
    );
    // Under --init: the orphans came to the reaper and were reaped; only
    // the command (now `sleep 1000`) is left, and it still runs.
    wait_until(
        "the --init container left with only its command",
        Duration::from_secs(20),
        || {
            let d = descendants(reaper);
            d.len() == 1 && d[0].comm == "sleep" && d[0].state != 'Z'
        },
    );
    assert_eq!(zombies(reaper), 0, "{:?}", descendants(reaper));
    assert_eq!(ps_entry(&env, &with)["state"], "RUNNING");
    assert!(zombies(plain) >= 50, "{:?}", descendants(plain));

    destroy(&env, &with);
    destroy(&env, &without);
    assert!(agent.terminate().success());
}

#[test]
fn stop_ends_a_handler_less_command_at_once_with_init_and_after_the_grace_without() {
    let env = TestEnv::new("init-stop");
    import_busybox(&env);
    let agent = env.start_agent("");
    let (with, without) = (
        format!("{}-with", env.name),
        format!("{}-without", env.name),
    );
    let reaper = launch(&env, &with, true, "exec sleep 1000");
    launch(&env, &without, false, "exec sleep 1000");
    // The reaper takes every signal once it has blocked them, right
    // before it forks the command: wait for the command, so the TERM
    // below is the reaper's to forward.
    wait_until(
        "the command runs under the reaper",
        Duration::from_secs(10),
        || descendants(reaper).iter().any(|p| p.comm == "sleep"),
    );

    let t0 = Instant::now();
    let out = ok(&env, &["stop", &with, "--grace", "30", "--json"]);
    let took = t0.elapsed();
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["exit_code"], 143, "TERM forwarded, 128+15: {t}");
    assert!(t["signal"].is_null(), "the reaper exited, not killed: {t}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} of a 30 s grace"
    );

    // Without --init, pid 1 `sleep` never sees the TERM: the grace runs out.
    let t0 = Instant::now();
    let out = ok(&env, &["stop", &without, "--grace", "1", "--json"]);
    let took = t0.elapsed();
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["signal"], 9, "SIGKILL after the grace: {t}");
    assert!(
        took >= Duration::from_millis(900),
        "took {took:?} with a 1 s grace"
    );

    ok(&env, &["rm", &with]);
    ok(&env, &["rm", &without]);
    assert!(agent.terminate().success());
}

#[test]
fn signals_reach_the_commands_traps_through_the_init() {
    let env = TestEnv::new("init-signal");
    import_busybox(&env);
    let agent = env.start_agent("");
    let name = format!("{}-c", env.name);
    launch(
        &env,
        &name,
        true,
        "trap 'echo got-usr1; exit 5' USR1; trap 'echo got-hup' HUP; echo ready; \
         while :; do sleep 0.1; done",
    );
    let stdout =
        PathBuf::from(ps_entry(&env, &name)["sandbox_dir"].as_str().unwrap()).join("stdout");
    let said = || std::fs::read_to_string(&stdout).unwrap_or_default();
    wait_until("the traps are set", Duration::from_secs(10), || {
        said().contains("ready")
    });
    ok(&env, &["kill", &name, "-s", "HUP"]);
    wait_until("the HUP trap ran", Duration::from_secs(10), || {
        said().contains("got-hup")
    });
    assert_eq!(ps_entry(&env, &name)["state"], "RUNNING", "{}", said());
    ok(&env, &["kill", &name, "-s", "USR1"]);
    let mut c = env.berth_client();
    c.args(["wait", &name, "--json"]);
    let out = limited(c);
    let t: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(t["exit_code"], 5, "{t} {}", said());
    assert!(said().contains("got-usr1"), "{}", said());
    destroy(&env, &name);
    assert!(agent.terminate().success());
}

#[test]
fn exit_codes_pass_through_the_init_and_a_missing_command_is_a_start_error() {
    let env = TestEnv::new("init-exit");
    let run = |args: &[&str]| {
        let mut c = env.berth();
        c.args(["run", "--init"]).args(args);
        limited(c)
    };
    // The command is not pid 1: the reaper is, named berth-init.
    let out = run(&["--", "sh", "-c", "echo $$; cat /proc/1/comm; exit 7"]);
    assert_eq!(
        text(&out.stdout),
        "2\nberth-init\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(7));

    // Killed by a signal: 128+N, as an exit code (the reaper's).
    let out = run(&["--json", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let t: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(t["exit_code"], 137, "{t}");

    let name = format!("{}-missing", env.name);
    let out = run(&["--json", "--name", &name, "--", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(128), "{}", text(&out.stderr));
    let t: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(t["reason"], "START_ERROR", "{t}");
    assert!(
        t["message"].as_str().unwrap().contains("/nonexistent"),
        "{t}"
    );
}
