//! `berth exec`: a command run inside a running container as a DEBUG
//! container — its namespaces (hostname, pid 1, filesystem), its
//! capabilities, no_new_privs and seccomp; the exit code, env, user,
//! working dir and stdin pass through; it is forgotten when it ends, and
//! destroyed (never recovered) when the agent dies under it.

use berth_tests::{import_busybox, on_pty, Agent, TestEnv};
use serde_json::Value;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn execs(env: &TestEnv, agent: &Agent) -> Vec<Value> {
    env.ps_json(agent)
        .into_iter()
        .filter(|c| c["id"].as_str().unwrap_or("").contains("/exec-"))
        .collect()
}

/// A line of /proc/PID/status, e.g. "CapEff".
fn status_line(pid: i32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .to_string()
}

fn launch_parent(env: &TestEnv, agent: &Agent, name: &str, extra: &[&str]) -> i32 {
    let mut args = vec![
        "launch",
        "--name",
        name,
        "--image",
        "busybox",
        "--hostname",
        "inner",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--",
        "sh",
        "-c",
        "echo parent-data > /data.txt; exec sleep 600",
    ]);
    env.client_expect(agent, &args, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = env
            .ps_json(agent)
            .into_iter()
            .find(|c| c["id"] == name)
            .unwrap();
        if let Some(pid) = c["pid"].as_i64() {
            // The parent has written its file once it execs sleep.
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "sleep")
            {
                return pid as i32;
            }
        }
        assert!(Instant::now() < deadline, "{name} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exec_runs_inside_the_container_with_its_restrictions() {
    let env = TestEnv::new("exec-inside");
    import_busybox(&env);
    let agent = env.start_agent("");
    let c = format!("{}-c", env.name);
    let pid = launch_parent(&env, &agent, &c, &["--cap-drop", "NET_RAW"]);

    let out = env.client_expect(
        &agent,
        &[
            "exec",
            &c,
            "-e",
            "GREETING=hi",
            "--",
            "sh",
            "-c",
            "busybox hostname; cat /data.txt; busybox tr '\\0' ' ' < /proc/1/cmdline; echo; \
             echo $GREETING; busybox grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
             pwd; exit 7",
        ],
        7,
    );
    let o = text(&out.stdout);
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines[0], "inner", "{o}");
    assert_eq!(lines[1], "parent-data", "{o}");
    assert_eq!(lines[2], "sleep 600 ", "sees the container's pid 1: {o}");
    assert_eq!(lines[3], "hi", "{o}");
    // The container's own restrictions, not the agent's.
    for key in ["CapEff", "NoNewPrivs", "Seccomp"] {
        let parent = status_line(pid, key);
        assert!(
            o.lines().any(|l| l == parent),
            "{key}: parent {parent:?}, exec {o}"
        );
    }
    assert_ne!(
        status_line(pid, "CapEff"),
        status_line(std::process::id() as i32, "CapEff")
    );
    assert_eq!(lines.last(), Some(&"/"), "{o}");

    // User and working dir.
    let out = env.client_expect(
        &agent,
        &[
            "exec",
            "--user",
            "1000:1000",
            "--workdir",
            "/bin",
            &c,
            "--",
            "sh",
            "-c",
            "busybox id -u; pwd",
        ],
        0,
    );
    assert_eq!(text(&out.stdout), "1000\n/bin\n");

    // stdin with -i.
    let mut child = env
        .berth_client()
        .args(["exec", "-i", &c, "--", "busybox", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "THROUGH STDIN\n");

    // A missing command: 128 and why.
    let out = env.client_expect(&agent, &["exec", &c, "--", "/no/such/cmd"], 128);
    assert!(
        text(&out.stderr).contains("/no/such/cmd"),
        "{}",
        text(&out.stderr)
    );
    // An unknown container: an error naming it.
    let out = env
        .berth_client()
        .args(["exec", "nope", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));

    // Every exec is forgotten once it ends; the container runs on.
    assert_eq!(execs(&env, &agent), Vec::<Value>::new());
    let me = env
        .ps_json(&agent)
        .into_iter()
        .find(|x| x["id"] == c.as_str())
        .unwrap();
    assert_eq!(me["state"], "RUNNING");

    env.client_expect(&agent, &["destroy", &c], 0);
    drop(agent);
    assert_eq!(env.leaks(), Vec::<String>::new());
}

#[test]
fn an_exec_is_destroyed_not_recovered_after_an_agent_kill() {
    let env = TestEnv::new("exec-restart");
    import_busybox(&env);
    let agent = env.start_agent("");
    let c = format!("{}-c", env.name);
    launch_parent(&env, &agent, &c, &[]);
    let exec = env
        .berth_client()
        .args(["exec", &c, "--", "sleep", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (id, pid) = loop {
        if let Some(e) = execs(&env, &agent)
            .into_iter()
            .find(|e| e["state"] == "RUNNING")
        {
            break (
                e["id"].as_str().unwrap().to_string(),
                e["pid"].as_i64().unwrap() as i32,
            );
        }
        assert!(
            Instant::now() < deadline,
            "no exec running; {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    agent.kill9();
    // The client loses its stream and says so.
    let out = exec.wait_with_output().unwrap();
    assert!(!out.status.success());

    let agent = env.start_agent("");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = env
            .ps_json(&agent)
            .into_iter()
            .find(|x| x["id"] == id.as_str());
        if e.as_ref().is_some_and(|e| e["state"] == "TERMINATED") {
            break;
        }
        assert!(Instant::now() < deadline, "{id}: {e:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")),
        "the exec's process {pid} survived"
    );
    let me = env
        .ps_json(&agent)
        .into_iter()
        .find(|x| x["id"] == c.as_str())
        .unwrap();
    assert_eq!(me["state"], "RUNNING", "the container itself is recovered");

    env.client_expect(&agent, &["destroy", &c], 0);
    drop(agent);
    assert_eq!(env.leaks(), Vec::<String>::new());
}

#[test]
fn exec_enters_a_user_namespace_and_refuses_a_paused_container() {
    let env = TestEnv::new("exec-userns");
    import_busybox(&env);
    let agent = env.start_agent("");
    let c = format!("{}-c", env.name);
    launch_parent(&env, &agent, &c, &["--userns", "731072:65536"]);
    let out = env.client_expect(
        &agent,
        &[
            "exec",
            &c,
            "--",
            "sh",
            "-c",
            "busybox id -u; cat /proc/self/uid_map; cat /data.txt",
        ],
        0,
    );
    let o = text(&out.stdout);
    let words: Vec<&str> = o.split_whitespace().collect();
    assert_eq!(words, ["0", "0", "731072", "65536", "parent-data"], "{o}");

    env.client_expect(&agent, &["pause", &c], 0);
    let out = env.client_expect(&agent, &["exec", &c, "--", "true"], 125);
    assert!(
        text(&out.stderr).contains("PAUSED"),
        "{}",
        text(&out.stderr)
    );
    env.client_expect(&agent, &["resume", &c], 0);
    env.client_expect(&agent, &["exec", &c, "--", "sh", "-c", "exit 0"], 0);

    env.client_expect(&agent, &["destroy", &c], 0);
    drop(agent);
    assert_eq!(env.leaks(), Vec::<String>::new());
}

#[test]
fn exec_t_gives_the_command_a_terminal_in_the_containers_devpts() {
    let env = TestEnv::new("exec-tty");
    let agent = env.start_agent("");
    let c = format!("{}-c", env.name);
    env.client_expect(&agent, &["launch", "--name", &c, "--", "sleep", "600"], 0);
    let mut cmd = env.berth_client();
    cmd.args([
        "exec",
        "-t",
        &c,
        "--",
        "sh",
        "-c",
        "tty; stty size; test -t 0 && echo stdin-is-a-tty; exit 4",
    ]);
    let (out, code) = on_pty(cmd, 33, 101);
    assert_eq!(code, Some(4), "{out}");
    // The container's devpts (the host's has other numbers in use).
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(
        out.contains("33 101\r\n"),
        "the caller's size, through a tty: {out:?}"
    );
    assert!(out.contains("stdin-is-a-tty"), "{out}");
    assert_eq!(execs(&env, &agent), Vec::<Value>::new());
    env.client_expect(&agent, &["destroy", &c], 0);
    drop(agent);
    assert_eq!(env.leaks(), Vec::<String>::new());
}

/// Attack: `exec --user NAME` resolves NAME in the container's own
/// /etc/passwd, which the container writes. A container that makes it a
/// link to a host file must not get that file read: the link resolves
/// inside the container's root, where it leads nowhere.
#[test]
fn exec_user_names_never_resolve_through_a_link_out_of_the_container() {
    let env = TestEnv::new("exec-passwd-link");
    import_busybox(&env);
    let agent = env.start_agent("");
    // A host file a by-name read through the link would find.
    let canary = env.path("host-passwd");
    std::fs::write(&canary, "intruder:x:4242:4242::/:/bin/sh\n").unwrap();
    let c = format!("{}-c", env.name);
    let script = format!(
        "busybox mkdir -p /etc && busybox ln -sf {} /etc/passwd && exec sleep 600",
        canary.display()
    );
    env.client_expect(
        &agent,
        &[
            "launch", "--name", &c, "--image", "busybox", "--", "sh", "-c", &script,
        ],
        0,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pid = env
            .ps_json(&agent)
            .into_iter()
            .find(|x| x["id"] == c.as_str())
            .and_then(|x| x["pid"].as_i64());
        if pid.is_some_and(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|s| s.trim() == "sleep")
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "{c} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = env
        .berth_client()
        .args([
            "exec",
            "--user",
            "intruder",
            &c,
            "--",
            "sh",
            "-c",
            "busybox id -u",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!stdout.contains("4242"), "the host file was read: {stdout}");
    assert_ne!(out.status.code(), Some(0), "{stdout} {stderr}");
    assert!(stderr.contains("intruder"), "{stderr}");
    env.client_expect(&agent, &["destroy", &c], 0);
    drop(agent);
    assert_eq!(env.leaks(), Vec::<String>::new());
}

/// An exec starts from the container's whole environment: its image's ENV
/// (here set with umoci), its own `-e` and what berth set, under the
/// exec's own `-e`.
#[test]
fn exec_inherits_the_containers_environment_including_its_images() {
    let env = TestEnv::new("exec-env");
    let layout = berth_tests::busybox_layout(&env);
    let out = std::process::Command::new("umoci")
        .args(["config", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .args(["--config.env", "IMGVAR=from-image"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env
        .berth()
        .args(["image", "import"])
        .arg(&layout)
        .args(["--name", "bbenv"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let agent = env.start_agent("");
    let c = format!("{}-c", env.name);
    env.client_expect(
        &agent,
        &[
            "launch",
            "--name",
            &c,
            "--image",
            "bbenv",
            "-e",
            "MINE=parent",
            "-e",
            "OVER=parent",
            "--",
            "sleep",
            "600",
        ],
        0,
    );
    let out = env.client_expect(
        &agent,
        &[
            "exec",
            "-e",
            "OVER=exec",
            &c,
            "--",
            "sh",
            "-c",
            "echo $IMGVAR $MINE $OVER; echo $BERTH_CONTAINER_ID",
        ],
        0,
    );
    let o = text(&out.stdout);
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines[0], "from-image parent exec", "{o}");
    assert!(
        lines[1].starts_with(&format!("{c}/exec-")),
        "its own id: {o}"
    );
    env.client_expect(&agent, &["destroy", &c], 0);
    drop(agent);
    assert_eq!(env.leaks(), Vec::<String>::new());
}
