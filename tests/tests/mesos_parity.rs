//! Behaviours Mesos's own containerizer tests expect (issue 18 item 4):
//! a rootfs backend chosen per container through the agent; a container
//! destroyed before its command started has no exit status
//! (`DestroyWhileFetching`); thread and process counts in `stats`
//! (`PidsAndTids`); a memory reservation (soft limit); a relative volume
//! destination mounted in the sandbox (`VolumeFromHostSandboxMountPoint`).

use berth_tests::{Agent, TestEnv};
use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Runs a client command; panics (with the agent's log) unless it exits
/// with `code`.
fn client(env: &TestEnv, agent: &Agent, args: &[&str], code: i32) -> Output {
    env.client_expect(agent, args, code)
}

fn json(out: &Output) -> Value {
    serde_json::from_str(text(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Destroys and removes container `id`.
fn finish(env: &TestEnv, agent: &Agent, id: &str) {
    client(env, agent, &["destroy", id], 0);
    client(env, agent, &["rm", id], 0);
}

/// A single-layer busybox image `single:1` holding its own mount points
/// (so the read-only bind backend can run it), imported into the test's
/// store.
fn single_layer_image(env: &TestEnv) {
    berth_tests::require_tool("umoci");
    let layout = env.path("single");
    let bundle = env.path("single-bundle");
    let umoci = |args: &[&str]| run(Command::new("umoci").args(args));
    umoci(&["init", "--layout", p(&layout)]);
    umoci(&["new", "--image", &format!("{}:1", p(&layout))]);
    umoci(&[
        "unpack",
        "--image",
        &format!("{}:1", p(&layout)),
        p(&bundle),
    ]);
    let r = bundle.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "mnt/sandbox"] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "cat", "touch", "ls"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
    }
    umoci(&[
        "repack",
        "--image",
        &format!("{}:1", p(&layout)),
        p(&bundle),
    ]);
    fs::remove_dir_all(&bundle).unwrap();
    run(env
        .berth()
        .args(["image", "import"])
        .arg(&layout)
        .args(["--name", "single"]));
}

/// Where the provisioner makes container `id`'s rootfs.
fn rootfs_of(env: &TestEnv, id: &str) -> PathBuf {
    env.state_dir
        .join("images/containers")
        .join(id)
        .join("rootfs")
}

fn mounted_at(path: &Path) -> Vec<berth_tests::MountInfo> {
    berth_tests::mountinfo()
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect()
}

#[actix_rt::test]
async fn the_rootfs_backend_is_chosen_per_container_through_the_agent() {
    let env = TestEnv::new("mp-backend");
    single_layer_image(&env);
    let agent = env.start_agent("");
    let script = "echo hi > /marker 2>/dev/null; sleep 1000";
    for (id, backend) in [("ov", None), ("cp", Some("copy")), ("bd", Some("bind"))] {
        let mut args = vec!["launch", "--name", id, "--image", "single:1"];
        if let Some(b) = backend {
            args.extend(["--rootfs-backend", b]);
        }
        args.extend(["--", "/bin/sh", "-c", script]);
        client(&env, &agent, &args, 0);
    }

    // overlay (this kernel has it): the default, a mount on the host.
    let ov = rootfs_of(&env, "ov");
    wait_until("ov writes its marker", Duration::from_secs(10), || {
        ov.join("marker").exists()
    });
    let m = mounted_at(&ov);
    assert!(
        m.iter().any(|m| m.fs_type == "overlay"),
        "{}: {m:?}",
        ov.display()
    );

    // copy: a plain directory of the container's own, no mount; the
    // container's writes land in it.
    let cp = rootfs_of(&env, "cp");
    wait_until("cp writes its marker", Duration::from_secs(10), || {
        fs::read_to_string(cp.join("marker")).is_ok_and(|s| s == "hi\n")
    });
    assert!(mounted_at(&cp).is_empty(), "{:?}", mounted_at(&cp));
    assert!(
        cp.join("bin/busybox").is_file(),
        "the image's files are in it"
    );
    let meta: Value =
        serde_json::from_slice(&fs::read(cp.parent().unwrap().join("container.json")).unwrap())
            .unwrap();
    assert_eq!(meta["backend"], "copy", "{meta}");

    // bind: the image's layer bound read-only; the command runs, its
    // write is refused.
    let bd = rootfs_of(&env, "bd");
    assert!(
        !mounted_at(&bd).is_empty(),
        "no bind mount at {}",
        bd.display()
    );
    let ps = json(&client(&env, &agent, &["ps", "--json"], 0));
    let row = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "bd")
        .cloned()
        .unwrap();
    assert_eq!(row["state"], "RUNNING", "{row}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!bd.join("marker").exists(), "a write in the bind rootfs");

    // Over the API: an unknown backend, and a backend without an image,
    // are refused at STARTING by name.
    let mut api = berth::agent::connect(&env.socket()).await.unwrap();
    for (backend, image, says) in [
        ("zfs", "single:1", "\"zfs\": expected overlay, copy or bind"),
        ("copy", "", "needs an image"),
    ] {
        let e = api
            .launch(berth::agent::api::LaunchRequest {
                id: Some(berth::ContainerId::new("bad")),
                config: Some(berth::ContainerConfig {
                    image: image.into(),
                    command: vec!["true".into()],
                    rootfs_backend: backend.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        assert!(e.message().contains(says), "{backend}: {e}");
    }

    for id in ["ov", "cp", "bd"] {
        finish(&env, &agent, id);
    }
    for id in ["ov", "cp", "bd"] {
        assert!(!rootfs_of(&env, id).exists(), "{id}'s rootfs stays");
    }
    agent.terminate();
}

/// An http server whose answers take `delay`: a fetch from it keeps a
/// launch in FETCHING that long.
fn slow_server(delay: Duration) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let mut r = BufReader::new(conn.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            std::thread::sleep(delay);
            let mut c = conn;
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhi\n",
            );
        }
    });
    format!("http://{addr}/slow.txt")
}

#[test]
fn a_container_destroyed_while_fetching_has_no_exit_status() {
    let env = TestEnv::new("mp-nostatus");
    let agent = env.start_agent("");
    let uri = slow_server(Duration::from_secs(4));
    let name = format!("{}-f", env.name);
    let launch = env
        .berth_client()
        .args(["launch", "--name", &name, "--fetch", &uri, "--", "true"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The init exists (forked, waiting to exec) while the fetch runs.
    wait_until(
        "the launch reaches FETCHING",
        Duration::from_secs(10),
        || {
            let ps = json(&client(&env, &agent, &["ps", "--json"], 0));
            ps.as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == name.as_str() && c["state"] == "FETCHING")
        },
    );
    let t = json(&client(&env, &agent, &["destroy", &name, "--json"], 0));
    assert_eq!(t["reason"], "DESTROYED", "{t}");
    assert_eq!(t["no_exit_status"], true, "{t}");
    assert_eq!(t["exit_code"], -1, "{t}");
    assert_eq!(t["signal"], Value::Null, "{t}");
    assert!(
        t["message"]
            .as_str()
            .unwrap()
            .contains("before the command started"),
        "{t}"
    );
    let out = launch.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("destroyed during launch"),
        "{}",
        text(&out.stderr)
    );
    // wait says the same, and exits 255 (no exit status to exit with).
    let out = client(&env, &agent, &["wait", &name], 255);
    assert!(
        text(&out.stdout).contains("DESTROYED no exit status"),
        "{}",
        text(&out.stdout)
    );
    client(&env, &agent, &["rm", &name], 0);

    // A command that ran and was destroyed keeps its signal and code.
    client(
        &env,
        &agent,
        &["launch", "--name", "ran", "--", "sleep", "1000"],
        0,
    );
    let t = json(&client(&env, &agent, &["destroy", "ran", "--json"], 0));
    assert_eq!(
        (
            &t["reason"],
            &t["exit_code"],
            &t["signal"],
            &t["no_exit_status"]
        ),
        (
            &Value::from("DESTROYED"),
            &Value::from(137),
            &Value::from(9),
            &Value::from(false)
        ),
        "{t}"
    );
    client(&env, &agent, &["rm", "ran"], 0);
    agent.terminate();
}

fn python3() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        panic!("test needs /usr/bin/python3 (a host-filesystem container runs it)")
    }
}

#[test]
fn stats_count_threads_and_processes() {
    let env = TestEnv::new("mp-threads");
    let agent = env.start_agent("");
    let script = "import threading,time\n\
                  [threading.Thread(target=time.sleep,args=(600,)).start() for _ in range(4)]\n\
                  print('started', flush=True)\n\
                  time.sleep(600)";
    client(
        &env,
        &agent,
        &["launch", "--name", "py", "--", python3(), "-c", script],
        0,
    );
    let mut last = Value::Null;
    wait_until("5 threads", Duration::from_secs(20), || {
        last = json(&client(&env, &agent, &["stats", "py", "--json"], 0));
        last["threads"].as_u64().unwrap_or(0) >= 5
    });
    assert_eq!(last["processes"], 1, "{last}");
    let out = client(&env, &agent, &["stats", "py"], 0);
    let line = text(&out.stdout);
    assert!(line.contains("1 processes, 5 threads"), "{line}");
    finish(&env, &agent, "py");
    agent.terminate();
}

#[test]
fn a_memory_reservation_sets_the_soft_limit_and_can_be_updated() {
    let env = TestEnv::new("mp-memres");
    let soft = env
        .cgroup_dir("memory")
        .join("res/memory.soft_limit_in_bytes");
    let agent = env.start_agent("");
    client(
        &env,
        &agent,
        &[
            "launch",
            "--name",
            "res",
            "--memory",
            "64M",
            "--memory-reservation",
            "16M",
            "--",
            "sleep",
            "1000",
        ],
        0,
    );
    let read = || fs::read_to_string(&soft).unwrap().trim().to_string();
    assert_eq!(read(), (16u64 << 20).to_string());
    client(
        &env,
        &agent,
        &["update", "res", "--memory-reservation", "32M"],
        0,
    );
    assert_eq!(read(), (32u64 << 20).to_string());
    // Above the hard limit: refused, the old value stays.
    let out = client(
        &env,
        &agent,
        &["update", "res", "--memory-reservation", "128M"],
        125,
    );
    assert!(
        text(&out.stderr).contains("above the hard limit"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(read(), (32u64 << 20).to_string());
    finish(&env, &agent, "res");
    agent.terminate();

    // berth run: the container's own cgroup shows it.
    let out = run(env.berth().args([
        "run",
        "--memory-reservation",
        "8M",
        "--",
        "cat",
        "/sys/fs/cgroup/memory/memory.soft_limit_in_bytes",
    ]));
    assert_eq!(text(&out.stdout).trim(), (8u64 << 20).to_string());
}

#[test]
fn a_relative_volume_destination_lies_in_the_sandbox() {
    let env = TestEnv::new("mp-relvol");
    let host = env.mkdir("hostdir");
    fs::write(host.join("file"), "from the host\n").unwrap();
    let volume = format!("{}:data:ro", p(&host));

    // On the host filesystem: <sandbox>/data, the working dir's `data`.
    let out = run(env
        .berth()
        .args(["run", "--volume-allow-ro", p(&host), "--volume", &volume])
        .args(["--", "sh", "-c"])
        .arg(
            "cat \"$PWD/data/file\"; test \"$PWD\" = \"$BERTH_SANDBOX\" && echo in-sandbox; \
             touch \"$PWD/data/x\" 2>/dev/null && echo writable || echo read-only",
        ));
    assert_eq!(
        text(&out.stdout),
        "from the host\nin-sandbox\nread-only\n",
        "{}",
        text(&out.stderr)
    );
    assert!(!host.join("x").exists());

    // In an image container: under the sandbox's mount point.
    single_layer_image(&env);
    let out = run(env
        .berth()
        .args(["run", "--volume-allow-ro", p(&host), "--image", "single:1"])
        .args(["--volume", &format!("{}:./sub/data:ro", p(&host))])
        .args(["--", "/bin/cat", "/mnt/sandbox/sub/data/file"]));
    assert_eq!(
        text(&out.stdout),
        "from the host\n",
        "{}",
        text(&out.stderr)
    );

    // `..` is refused by name, before anything runs.
    for dst in ["data/../../etc", "../data"] {
        let out = env
            .berth()
            .args(["run", "--volume-allow-ro", p(&host)])
            .args(["--volume", &format!("{}:{dst}:ro", p(&host))])
            .args(["--", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(128), "{dst}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(&format!("destination \"{dst}\" may not contain \"..\"")),
            "{dst}: {}",
            text(&out.stderr)
        );
    }
}
