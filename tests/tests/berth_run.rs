//! `berth run` as a user runs it: the binary, its exit codes and `--json`.

use berth_tests::TestEnv;
use std::process::{Command, Output};

fn berth(env: &TestEnv) -> Command {
    env.berth()
}

fn berth_run(env: &TestEnv, args: &[&str]) -> Output {
    berth(env)
        .arg("run")
        .args(args)
        .output()
        .expect("run berth")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn pid_one_and_exit_code() {
    let env = TestEnv::new("run-exit");
    let out = berth_run(&env, &["--", "sh", "-c", "echo $$; exit 7"]);
    assert_eq!(text(&out.stdout), "1\n", "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn runtime_dirs_go_by_the_trash_and_a_dead_runs_leftovers_are_swept() {
    let env = TestEnv::new("run-rttrash");
    // What a process killed before its trash thread finished left there.
    let left = env.runtime_dir.join("trash/run-x.999.0/containers/y");
    std::fs::create_dir_all(&left).unwrap();
    std::fs::write(left.join("exit-status"), "exited 0 1").unwrap();
    let out = berth_run(&env, &["--name", &env.name, "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    // The run's own container dir went too, and nothing waits in the trash.
    let containers: Vec<_> = std::fs::read_dir(env.runtime_dir.join("containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(containers.is_empty(), "{containers:?}");
    let trash: Vec<_> = std::fs::read_dir(env.runtime_dir.join("trash"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(trash.is_empty(), "{trash:?}");
}

#[test]
fn killed_by_signal_exits_128_plus_n_and_json_says_so() {
    let env = TestEnv::new("run-kill");
    // The command is pid 1 of its namespace (which the kernel shields from
    // SIGKILL sent from inside), so a child kills itself and sh reports it.
    let out = berth_run(&env, &["--json", "--", "sh", "-c", "sh -c 'kill -9 $$'"]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "stderr: {}",
        text(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(text(&out.stdout).trim()).expect("one JSON object on stdout");
    assert_eq!(json["exit_code"], 137);
    assert_eq!(json["reason"], "FAILED");
    assert!(json["id"].as_str().is_some_and(|s| s.starts_with("run-")));
}

#[test]
fn exec_failure_is_start_error_128_naming_the_path() {
    let env = TestEnv::new("run-noexec");
    let out = berth_run(&env, &["--json", "--name", &env.name, "--", "/nonexistent"]);
    assert_eq!(
        out.status.code(),
        Some(128),
        "stderr: {}",
        text(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(json["reason"], "START_ERROR");
    assert_eq!(json["id"], env.name.as_str());
    assert!(
        json["message"].as_str().unwrap().contains("/nonexistent"),
        "{json}"
    );
}

#[test]
fn bad_input_is_refused_by_name() {
    let env = TestEnv::new("run-refuse");
    let out = berth_run(&env, &["--memory", "1K", "--", "true"]);
    assert_eq!(out.status.code(), Some(128), "a start error");
    let err = text(&out.stderr);
    assert!(
        err.contains("invalid memory") && err.contains("below the minimum of 4.0 MiB"),
        "{err}"
    );
    let out = berth_run(&env, &["--hostname", "bad_host", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("bad_host"),
        "{}",
        text(&out.stderr)
    );
    let out = berth_run(&env, &["--volume", "/a", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(
        text(&out.stderr).contains("SRC:DST"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn hostname_and_env_reach_the_command() {
    let env = TestEnv::new("run-host");
    let out = berth_run(
        &env,
        &[
            "--hostname",
            "web-1",
            "--env",
            "GREETING=hi",
            "--",
            "sh",
            "-c",
            "echo $(hostname) $GREETING",
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "web-1 hi\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn ctrl_c_destroys_the_container() {
    let env = TestEnv::new("run-ctrlc");
    let mut child = berth(&env)
        .args([
            "run",
            "--json",
            "--name",
            &env.name,
            "--",
            "sh",
            "-c",
            "echo up; exec sleep 1000",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the command runs (it printed), then interrupt berth.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "up\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    // Read the rest on a thread, so a regression fails the test instead of
    // hanging it (the harness then kills what is left).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
        let _ = tx.send(rest);
    });
    let rest = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("berth did not end 30 s after SIGINT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137), "stdout: {rest}");
    let json: serde_json::Value = serde_json::from_str(rest.trim()).unwrap();
    assert_eq!(json["reason"], "DESTROYED");
    assert_eq!(json["signal"], 9);
}
