//! The supervisor owns the container's stdio: it copies the command's
//! pipes into the sandbox's log files (rotated by size, plain or CRI),
//! `berth logs` reads them back through the agent (tail, since, follow
//! across a rotation), and a container's planted links at the rotated
//! names are never followed.

use berth_tests::{on_pty, Agent, TestEnv};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a client command and checks its exit code.
fn client(env: &TestEnv, agent: &Agent, args: &[&str], code: i32) -> Output {
    env.client_expect(agent, args, code)
}

/// Launches `script` (sh -c) with `opts`, returns its id.
fn launch(env: &TestEnv, agent: &Agent, name: &str, opts: &[&str], script: &str) -> String {
    let id = format!("{}-{name}", env.name);
    let mut args = vec!["launch", "--name", &id];
    args.extend_from_slice(opts);
    args.extend(["--", "sh", "-c", script]);
    client(env, agent, &args, 0);
    id
}

fn sandbox_of(env: &TestEnv, agent: &Agent, id: &str) -> PathBuf {
    let out = client(env, agent, &["ps", "--json"], 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in {v}"));
    PathBuf::from(entry["sandbox_dir"].as_str().unwrap())
}

/// Waits for the container's end, then destroys and removes it.
fn finish(env: &TestEnv, agent: &Agent, id: &str, code: i32) {
    client(env, agent, &["wait", id], code);
}

fn remove(env: &TestEnv, agent: &Agent, id: &str) {
    client(env, agent, &["destroy", id], 0);
    client(env, agent, &["rm", id], 0);
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn logs_are_rotated_by_size_and_read_back_across_the_files() {
    let env = TestEnv::new("stdio-rotate");
    let agent = env.start_agent_with("", &["--log-max-size", "4k", "--log-max-files", "3"]);
    // 400 lines of 33 bytes: 13200 bytes, so three rotations at 4 KiB;
    // only the last three files stay.
    let id = launch(
        &env,
        &agent,
        "c",
        &[],
        "i=1000; while [ $i -lt 1400 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; echo to-err >&2",
    );
    finish(&env, &agent, &id, 0);
    let sandbox = sandbox_of(&env, &agent, &id);
    let mut sizes = Vec::new();
    for name in ["stdout", "stdout.1", "stdout.2"] {
        let len = std::fs::metadata(sandbox.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .len();
        assert!(len <= 4096, "{name} is {len} bytes");
        sizes.push(len);
    }
    assert!(!sandbox.join("stdout.3").exists(), "at most 3 files");
    assert_eq!(sizes[1], 4096, "a rotated file is full: {sizes:?}");
    assert_eq!(read(&sandbox.join("stderr")), "to-err\n");
    // The files, oldest first, are one stretch of the output ending with
    // its last line.
    let kept = [
        &sandbox.join("stdout.2"),
        &sandbox.join("stdout.1"),
        &sandbox.join("stdout"),
    ]
    .iter()
    .map(|p| read(p))
    .collect::<String>();
    assert_eq!(kept.len() as u64, sizes.iter().sum::<u64>());
    let all: String = (1000..1400)
        .map(|i| format!("line-{i}-xxxxxxxxxxxxxxxxxxxxxx\n"))
        .collect();
    let total = all.len();
    assert!(total > 3 * 4096, "enough to drop a file");
    assert_eq!(kept, all[total - kept.len()..]);

    // `berth logs` reads the rotated files too, in order.
    let out = client(&env, &agent, &["logs", &id], 0);
    assert_eq!(text(&out.stdout), kept);
    assert_eq!(text(&out.stderr), "to-err\n");
    let out = client(&env, &agent, &["logs", "--tail", "3", &id], 0);
    assert_eq!(
        text(&out.stdout),
        "line-1397-xxxxxxxxxxxxxxxxxxxxxx\nline-1398-xxxxxxxxxxxxxxxxxxxxxx\nline-1399-xxxxxxxxxxxxxxxxxxxxxx\n"
    );
    let out = client(&env, &agent, &["logs", "--stderr-only", &id], 0);
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), "to-err\n");
    // --since needs timestamps: refused for the plain format, saying why.
    let out = client(&env, &agent, &["logs", "--since", "5m", &id], 125);
    assert!(text(&out.stderr).contains("cri"), "{}", text(&out.stderr));
    remove(&env, &agent, &id);
}

#[test]
fn output_written_just_before_the_exit_is_all_in_the_log() {
    let env = TestEnv::new("stdio-drain");
    let agent = env.start_agent("");
    // More than a pipe holds (64 KiB), written as the command exits.
    let id = launch(
        &env,
        &agent,
        "c",
        &[],
        "head -c 300000 /dev/zero | tr '\\0' a; echo END; exit 3",
    );
    finish(&env, &agent, &id, 3);
    let sandbox = sandbox_of(&env, &agent, &id);
    let out = read(&sandbox.join("stdout"));
    assert_eq!(out.len(), 300_004);
    assert!(out.ends_with("aEND\n"));
    remove(&env, &agent, &id);
}

#[test]
fn cri_lines_parse_and_since_picks_the_later_ones() {
    let env = TestEnv::new("stdio-cri");
    let agent = env.start_agent("");
    // A line longer than 16 KiB comes in parts (P), the rest whole (F).
    let id = launch(
        &env,
        &agent,
        "c",
        &["--log-format", "cri"],
        "echo early; echo oops >&2; head -c 20000 /dev/zero | tr '\\0' b; echo; sleep 2; printf 'late\\nno-newline'",
    );
    let sandbox = sandbox_of(&env, &agent, &id);
    // Once the lines before the sleep are in the log, a time between
    // them and `late`.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(sandbox.join("container.log"))
        .unwrap_or_default()
        .lines()
        .count()
        < 4
    {
        assert!(Instant::now() < deadline, "no early line");
        std::thread::sleep(Duration::from_millis(50));
    }
    let between = berth::state::time::rfc3339_nanos(berth::state::time::now_unix_nanos());
    finish(&env, &agent, &id, 0);
    assert!(!sandbox.join("stdout").exists(), "cri writes one file");
    let log = read(&sandbox.join("container.log"));
    let mut parsed = Vec::new();
    for line in log.lines() {
        let mut p = line.splitn(4, ' ');
        let (ts, stream, tag, body) = (
            p.next().unwrap(),
            p.next().unwrap(),
            p.next().unwrap(),
            p.next().unwrap_or(""),
        );
        assert!(
            berth::state::time::parse_rfc3339(ts).is_some() && ts.ends_with('Z'),
            "{line}"
        );
        assert!(ts.len() == "2016-10-06T00:17:09.669794202Z".len(), "{ts}");
        assert!(matches!(stream, "stdout" | "stderr"), "{line}");
        assert!(matches!(tag, "F" | "P"), "{line}");
        parsed.push((stream.to_string(), tag.to_string(), body.to_string()));
    }
    let short: Vec<(String, String, String)> = parsed
        .iter()
        .map(|(s, t, b)| {
            (
                s.clone(),
                t.clone(),
                if b.len() > 20 {
                    format!("b*{}", b.len())
                } else {
                    b.clone()
                },
            )
        })
        .collect();
    // Two pipes carry no order between them: each stream's own order.
    let want = [
        ("stdout", "F", "early"),
        ("stdout", "P", "b*16384"),
        ("stdout", "F", "b*3616"),
        ("stdout", "F", "late"),
        ("stdout", "F", "no-newline"),
        ("stderr", "F", "oops"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    let mut by_stream = short.clone();
    by_stream.sort_by_key(|(s, _, _)| s != "stdout");
    assert_eq!(by_stream, want, "as written: {short:?}");

    // Read back: the parts joined, newlines restored.
    let out = client(&env, &agent, &["logs", &id], 0);
    let b = "b".repeat(20000);
    assert_eq!(text(&out.stdout), format!("early\n{b}\nlate\nno-newline\n"));
    assert_eq!(text(&out.stderr), "oops\n");
    let out = client(&env, &agent, &["logs", "--since", &between, &id], 0);
    assert_eq!(text(&out.stdout), "late\nno-newline\n");
    assert_eq!(text(&out.stderr), "");
    let out = client(
        &env,
        &agent,
        &["logs", "--since", "1h", "--tail", "2", &id],
        0,
    );
    assert_eq!(text(&out.stdout), "late\nno-newline\n");
    remove(&env, &agent, &id);
}

#[test]
fn logs_follow_a_counter_across_rotations_until_it_ends() {
    let env = TestEnv::new("stdio-follow");
    let agent = env.start_agent_with("", &["--log-max-size", "1k", "--log-max-files", "2"]);
    // 40 lines of 100 bytes over ~2 s: the live file rotates every 10
    // lines, while `logs -f` reads it.
    let id = launch(
        &env,
        &agent,
        "c",
        &[],
        "i=100; while [ $i -lt 140 ]; do printf '%099d\\n' $i; i=$((i+1)); sleep 0.05; done",
    );
    let started = Instant::now();
    let mut follow = env
        .berth_client()
        .args(["logs", "-f", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = follow.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = follow.kill();
            panic!("logs -f did not end with the container\n{}", agent.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = follow.wait_with_output().unwrap();
    assert!(status.success(), "{}", text(&out.stderr));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it followed the counter"
    );
    let want: String = (100..140).map(|i| format!("{i:099}\n")).collect();
    assert_eq!(text(&out.stdout), want, "every line once, in order");
    finish(&env, &agent, &id, 0);
    remove(&env, &agent, &id);
}

#[test]
fn links_planted_at_the_rotated_names_are_not_followed() {
    let env = TestEnv::new("stdio-attack");
    let canary = env.path("canary");
    std::fs::write(&canary, "host secret\n").unwrap();
    let before = std::fs::metadata(&canary).unwrap();
    let agent = env.start_agent_with("", &["--log-max-size", "1k", "--log-max-files", "4"]);
    // The container plants a link to the host file at each rotated name
    // (and a directory, a FIFO), then writes enough to rotate them all.
    let script = format!(
        "ln -s {c} stdout.1; mkdir stdout.2; echo x > stdout.2/f; mkfifo stdout.3; ln -s {c} stderr.1; \
         i=0; while [ $i -lt 100 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; \
         echo err-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx >&2; i=$((i+1)); done; \
         ln -sf {c} stdout.3",
        c = canary.display()
    );
    let id = launch(&env, &agent, "c", &[], &script);
    finish(&env, &agent, &id, 0);
    assert_eq!(read(&canary), "host secret\n", "the host file is untouched");
    let after = std::fs::metadata(&canary).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
    assert_eq!(after.nlink(), 1);
    let sandbox = sandbox_of(&env, &agent, &id);
    for name in ["stdout", "stdout.1", "stdout.2", "stderr", "stderr.1"] {
        let m = std::fs::symlink_metadata(sandbox.join(name)).unwrap();
        assert!(m.is_file(), "{name} is the supervisor's own file");
    }
    // The last planted link (after the output) is skipped by `logs`.
    let out = client(&env, &agent, &["logs", &id], 0);
    assert!(!text(&out.stdout).contains("secret"));
    assert!(text(&out.stdout)
        .ends_with("line-99-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"));
    assert!(!text(&out.stderr).contains("secret"));
    remove(&env, &agent, &id);
}

/// `berth attach ID` with `input` on its stdin (then closed).
fn attach(env: &TestEnv, id: &str, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = env
        .berth_client()
        .args(["attach", id])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth attach {id} did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn attach_gets_the_output_and_the_exit_code_and_feeds_stdin_with_i() {
    let env = TestEnv::new("stdio-attach");
    let agent = env.start_agent("");
    // Output after a moment, so the client is attached by then.
    let id = launch(
        &env,
        &agent,
        "out",
        &[],
        "sleep 1; echo hello; echo bad >&2; exit 7",
    );
    let out = attach(&env, &id, b"");
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\n");
    assert_eq!(text(&out.stderr), "bad\n");
    // It still went to the logs.
    let sandbox = sandbox_of(&env, &agent, &id);
    assert_eq!(read(&sandbox.join("stdout")), "hello\n");
    // Attached after the end: only the exit is left.
    let out = attach(&env, &id, b"");
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    remove(&env, &agent, &id);

    // -i: the client's stdin reaches `cat`; its end is cat's EOF.
    let id = launch(&env, &agent, "cat", &["-i"], "cat; echo cat-done");
    let out = attach(&env, &id, b"ping\npong\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ping\npong\ncat-done\n");
    remove(&env, &agent, &id);

    // Without -i the command's stdin is /dev/null.
    let id = launch(&env, &agent, "null", &[], "sleep 1; cat; echo eof");
    let out = attach(&env, &id, b"ignored\n");
    assert_eq!(text(&out.stdout), "eof\n");
    remove(&env, &agent, &id);
}

#[test]
fn attach_works_again_after_the_agent_is_killed_and_restarted() {
    let env = TestEnv::new("stdio-reattach");
    let agent = env.start_agent("");
    let id = launch(
        &env,
        &agent,
        "c",
        &["-i"],
        "echo before; read x; echo got-$x; exit 4",
    );
    agent.kill9();
    let agent = env.start_agent("");
    let out = attach(&env, &id, b"hi\n");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "got-hi\n");
    let sandbox = sandbox_of(&env, &agent, &id);
    assert_eq!(read(&sandbox.join("stdout")), "before\ngot-hi\n");
    finish(&env, &agent, &id, 4);
    remove(&env, &agent, &id);
}

#[test]
fn a_client_that_does_not_read_does_not_block_the_container() {
    let env = TestEnv::new("stdio-slow");
    let agent = env.start_agent("");
    let id = launch(
        &env,
        &agent,
        "c",
        &[],
        "sleep 1; head -c 30000000 /dev/zero; echo done >&2",
    );
    // Attached straight to the supervisor's socket, never reading.
    let sock = env
        .runtime_dir
        .join("containers")
        .join(&id)
        .join("attach.sock");
    let _stuck = berth::launcher::attach::connect(&sock).unwrap();
    let started = Instant::now();
    finish(&env, &agent, &id, 0);
    assert!(started.elapsed() < Duration::from_secs(20));
    let sandbox = sandbox_of(&env, &agent, &id);
    // Rotated at the default 10 MiB, and all of it kept.
    let len = |n: &str| std::fs::metadata(sandbox.join(n)).unwrap().len();
    assert_eq!(
        len("stdout.2") + len("stdout.1") + len("stdout"),
        30_000_000
    );
    assert_eq!(len("stdout.1"), 10 << 20);
    assert_eq!(read(&sandbox.join("stderr")), "done\n");
    remove(&env, &agent, &id);
}

#[test]
fn run_t_gives_the_command_a_tty_of_the_callers_size() {
    let env = TestEnv::new("stdio-tty-run");
    let mut cmd = env.berth();
    cmd.args([
        "run",
        "-t",
        "--",
        "sh",
        "-c",
        "tty; stty size; test -t 0 && echo stdin-is-a-tty; exit 5",
    ]);
    let (out, code) = on_pty(cmd, 33, 101);
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("/dev/pts/0"), "its own devpts: {out}");
    assert!(out.contains("33 101"), "the caller's size: {out}");
    assert!(out.contains("stdin-is-a-tty"), "{out}");
    // A tty turns \n into \r\n on the way out.
    assert!(out.contains("33 101\r\n"), "{out:?}");
}

#[test]
fn launch_t_then_attach_from_a_terminal_resizes_and_relays() {
    let env = TestEnv::new("stdio-tty-attach");
    let agent = env.start_agent("");
    let id = launch(
        &env,
        &agent,
        "c",
        &["-t"],
        "sleep 1; tty; stty size; exit 6",
    );
    let mut cmd = env.berth_client();
    cmd.args(["attach", &id]);
    let (out, code) = on_pty(cmd, 40, 120);
    assert_eq!(code, Some(6), "{out}");
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(
        out.contains("40 120"),
        "the attached terminal's size: {out}"
    );
    let log = read(&sandbox_of(&env, &agent, &id).join("stdout"));
    assert!(log.contains("40 120"), "the tty's output is logged: {log}");
    remove(&env, &agent, &id);
}

#[test]
fn run_i_forwards_its_stdin_through_the_attach_socket() {
    use std::io::Write;
    let env = TestEnv::new("stdio-run-i");
    let mut child = env
        .berth()
        .args([
            "run",
            "-i",
            "--",
            "sh",
            "-c",
            "echo first; cat; echo err >&2; exit 2",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"one\ntwo\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // Written before this process attached, and still not missed.
    assert_eq!(text(&out.stdout), "first\none\ntwo\n");
    assert_eq!(text(&out.stderr), "err\n");
}
