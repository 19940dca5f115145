//! User namespaces (`--userns`), seen from inside real containers and
//! from the host: the container's root is an unprivileged host uid while
//! its image's files look root-owned (an overlay of idmapped layers);
//! what it writes lands on disk as the image's own owners; binds (the
//! sandbox, volumes) are idmapped; `auto` ranges are disjoint and survive
//! an agent restart; bad ranges and users outside the range are refused.

use berth_tests::{berth_bin, import_busybox, Agent, TestEnv};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(env: &TestEnv, args: &[&str], script: &str) -> Output {
    env.berth()
        .arg("run")
        .args(args)
        .args(["--", "sh", "-c", script])
        .output()
        .expect("run berth")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The `Uid:` line of /proc/<pid>/status: real, effective, saved, fs.
fn host_uids(pid: i32) -> Vec<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect()
}

/// A process of the container `id` (found by its BERTH_CONTAINER_ID),
/// waiting up to 20 s for it to appear.
fn container_pid(id: &str) -> i32 {
    let want = format!("BERTH_CONTAINER_ID={id}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no process of {id} appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_image_containers_root_is_an_unprivileged_host_uid_and_its_files_look_root_owned() {
    let env = TestEnv::new("userns-image");
    import_busybox(&env);
    let name = format!("{}-c", env.name);
    let child = env
        .berth()
        .args(["run", "--name", &name, "--image", "busybox"])
        .args(["--userns", "231072:65536"])
        .args(["--", "sh", "-c"])
        .arg(
            "id -u; id -g; cat /proc/self/uid_map; stat -c %u:%g /bin/busybox; \
             mkdir -p /etc && echo x > /etc/made && stat -c %u:%g /etc/made; \
             chown 7:8 /bin/busybox && stat -c %u:%g /bin/busybox; \
             chmod 600 /proc/cpuinfo 2>&1; echo chmod=$?; \
             touch /sys/x 2>/dev/null; echo sys=$?; \
             ls -ln /dev/null | awk '{print $3\":\"$4}'; sleep 1",
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = container_pid(&name);
    // Seen from the host: every uid of the process is the mapped one.
    assert_eq!(host_uids(pid), vec![231072; 4]);
    let out = child.wait_with_output().unwrap();
    let o = ok(&out);
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines[0], "0", "{o}");
    assert_eq!(lines[1], "0", "{o}");
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["0", "231072", "65536"],
        "{o}"
    );
    assert_eq!(lines[3], "0:0", "the image's files are root's inside: {o}");
    assert_eq!(lines[4], "0:0", "{o}");
    assert_eq!(lines[5], "7:8", "chown inside the range works: {o}");
    assert!(lines[6].contains("Operation not permitted"), "{o}");
    assert_eq!(lines[7], "chmod=1", "{o}");
    assert_eq!(lines[8], "sys=1", "{o}");
    assert_eq!(lines[9], "0:0", "/dev is the container root's: {o}");
    // /proc/cpuinfo kept its mode on the host.
    let mode = std::fs::metadata("/proc/cpuinfo").unwrap().mode() & 0o777;
    assert_eq!(mode, 0o444);
}

#[test]
fn the_container_writes_its_rootfs_as_the_images_owners_on_disk() {
    let env = TestEnv::new("userns-disk");
    import_busybox(&env);
    // A host dir as a volume: a file the host's uid 1000 owns is uid
    // 1000's inside, and what the container's ids write is theirs on disk.
    let data = env.mkdir("data");
    std::fs::write(data.join("host-owned"), "h").unwrap();
    std::os::unix::fs::chown(data.join("host-owned"), Some(1000), Some(1000)).unwrap();
    let vol = format!("{}:/data:rw", data.display());
    let o = ok(&run(
        &env,
        &[
            "--image",
            "busybox",
            "--userns",
            "231072:65536",
            "--volume-allow-rw",
            &data.display().to_string(),
            "--volume",
            &vol,
        ],
        "stat -c %u:%g /data/host-owned; touch /data/made-inside; stat -c %u:%g /data/made-inside; \
         chown 42:43 /data/made-inside; id -u",
    ));
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines[0], "1000:1000", "an idmapped volume: {o}");
    assert_eq!(lines[1], "0:0", "{o}");
    // On disk, the container's root and ids are the host's 0.. again.
    let m = std::fs::metadata(data.join("made-inside")).unwrap();
    assert_eq!((m.uid(), m.gid()), (42, 43));
}

#[test]
fn a_user_in_the_range_runs_and_one_outside_is_refused() {
    let env = TestEnv::new("userns-user");
    import_busybox(&env);
    let o = ok(&run(
        &env,
        &[
            "--image",
            "busybox",
            "--userns",
            "231072:65536",
            "--user",
            "1000:1000",
        ],
        "id -u; id -g; cat /proc/self/uid_map",
    ));
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(&lines[..2], ["1000", "1000"], "{o}");

    let out = run(
        &env,
        &[
            "--image",
            "busybox",
            "--userns",
            "231072:1000",
            "--user",
            "1000",
        ],
        "true",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("uid 1000 is outside the container's user namespace"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_ranges_are_refused_by_name() {
    let env = TestEnv::new("userns-bad");
    for (arg, says) in [
        ("0:65536", "host's root"),
        ("bogus", "HOST_ID:COUNT"),
        ("5:0", "at least 1"),
        ("4294967295:2", "largest id"),
    ] {
        let out = run(&env, &["--userns", arg], "true");
        assert!(!out.status.success(), "--userns {arg} was accepted");
        assert!(
            text(&out.stderr).contains(says),
            "--userns {arg}: {}",
            text(&out.stderr)
        );
    }
    // `auto` with no range: neither /etc/subuid's berth line nor the
    // agent's --userns-range.
    let has_subids = berth_isolators::userns::subid_ranges().is_some();
    let out = run(&env, &["--userns", "auto"], "true");
    if has_subids {
        ok(&out);
    } else {
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("--userns-range"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// A berth root outside /tmp (a host-filesystem container gets a private
/// /tmp), removed on drop.
struct OutsideTmp(PathBuf);

impl Drop for OutsideTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_host_filesystem_container_writes_its_sandbox_as_root_and_not_the_host() {
    let env = TestEnv::new("userns-host");
    let base = OutsideTmp(Path::new("/var/tmp").join(&env.name));
    std::fs::create_dir(&base.0).unwrap();
    let out = Command::new(berth_bin())
        .arg("--root")
        .arg(base.0.join("root"))
        .arg("--runtime-dir")
        .arg(base.0.join("run"))
        .arg("--cgroup-root")
        .arg(&env.cgroup_root)
        .args(["run", "--userns", "231072:65536", "--", "sh", "-c"])
        .arg(
            "id -u; touch made && stat -c %u:%g made; stat -c %u:%g /tmp; \
             touch /var/tmp/escape 2>/dev/null; echo host=$?",
        )
        .output()
        .unwrap();
    let o = ok(&out);
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines, ["0", "0:0", "0:0", "host=1"], "{o}");
    assert!(!Path::new("/var/tmp/escape").exists());
}

fn client(env: &TestEnv, agent: &Agent, args: &[&str]) -> Output {
    let out = env.berth_client().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "berth {args:?}: {}\nagent log:\n{}",
        text(&out.stderr),
        agent.log()
    );
    out
}

fn uid_map_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/uid_map"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn auto_ranges_are_disjoint_and_survive_an_agent_restart() {
    let env = TestEnv::new("userns-auto");
    import_busybox(&env);
    // Room for two containers only.
    let opts = ["--userns-range", "400000:131072"];
    let agent = env.start_agent_with("", &opts);
    let names: Vec<String> = (0..2).map(|i| format!("{}-{i}", env.name)).collect();
    for n in &names {
        client(
            &env,
            &agent,
            &[
                "launch", "--name", n, "--image", "busybox", "--userns", "auto", "--", "sleep",
                "60",
            ],
        );
    }
    let maps: Vec<String> = names.iter().map(|n| uid_map_of(container_pid(n))).collect();
    let mut sorted = maps.clone();
    sorted.sort();
    assert_eq!(sorted, ["0 400000 65536", "0 465536 65536"], "{maps:?}");

    // After a crash and restart the agent knows both ranges are taken.
    agent.kill9();
    let agent = env.start_agent_with("", &opts);
    let third = format!("{}-2", env.name);
    let out = env
        .berth_client()
        .args([
            "launch", "--name", &third, "--image", "busybox", "--userns", "auto", "--", "true",
        ])
        .output()
        .unwrap();
    let wait = env
        .berth_client()
        .args(["wait", &third, "--json"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}{}",
        text(&out.stderr),
        text(&wait.stdout),
        text(&wait.stderr)
    );
    assert!(
        said.contains("is taken"),
        "a third range was allotted: {said}"
    );
    let _ = env.berth_client().args(["rm", &third]).output();
    // Freed by a destroy: the next one gets the first container's range.
    client(&env, &agent, &["kill", &names[0], "-s", "KILL"]);
    let _ = env.berth_client().args(["wait", &names[0]]).output();
    client(&env, &agent, &["rm", &names[0]]);
    client(
        &env,
        &agent,
        &[
            "launch", "--name", &third, "--image", "busybox", "--userns", "auto", "--", "sleep",
            "60",
        ],
    );
    assert_eq!(uid_map_of(container_pid(&third)), maps[0]);
    client(&env, &agent, &["kill", &third, "-s", "KILL"]);
    let _ = env.berth_client().args(["wait", &third]).output();
    client(&env, &agent, &["rm", &third]);
    client(&env, &agent, &["kill", &names[1], "-s", "KILL"]);
    let _ = env.berth_client().args(["wait", &names[1]]).output();
    client(&env, &agent, &["rm", &names[1]]);
    agent.terminate();
}

#[test]
fn devices_and_the_cgroup_namespace_work_under_a_user_namespace() {
    let env = TestEnv::new("userns-dev");
    import_busybox(&env);
    let o = ok(&run(
        &env,
        &[
            "--image",
            "busybox",
            "--userns",
            "231072:65536",
            "--device",
            "/dev/loop-control",
        ],
        "stat -c '%u:%g %t:%T' /dev/loop-control; : <> /dev/loop-control && echo rw; \
         grep -c ':/$' /proc/self/cgroup; wc -l < /proc/self/cgroup; \
         test -f /sys/fs/cgroup/memory/memory.limit_in_bytes && echo memory; \
         echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null; echo write=$?",
    ));
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(
        lines[0], "0:0 a:ed",
        "the node is the container root's: {o}"
    );
    assert_eq!(lines[1], "rw", "{o}");
    assert_eq!(lines[2], lines[3], "every cgroup path is / inside: {o}");
    assert_eq!(&lines[4..], ["memory", "write=1"], "{o}");
}

/// `--init` and `-t` with a user namespace: the reaper and the pty are
/// set up by the host's root before the init joins the namespace, and
/// still work once it has (the reaper forwards TERM; the pty's slave
/// belongs to the container's root).
#[test]
fn init_and_a_tty_work_in_a_user_namespace() {
    let env = TestEnv::new("userns-init-tty");
    berth_tests::import_busybox(&env);
    let out = env
        .berth()
        .args([
            "run",
            "--init",
            "--image",
            "busybox",
            "--userns",
            "831072:65536",
        ])
        .args([
            "--",
            "sh",
            "-c",
            "cat /proc/1/comm; cat /proc/self/uid_map; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    let words: Vec<&str> = o.split_whitespace().collect();
    assert_eq!(words, ["berth-init", "0", "831072", "65536"], "{o}");

    let mut cmd = env.berth();
    cmd.args([
        "run",
        "-t",
        "--image",
        "busybox",
        "--userns",
        "831072:65536",
    ])
    .args([
        "--",
        "sh",
        "-c",
        "busybox tty; busybox stat -c %u /proc/self/fd/0; exit 4",
    ]);
    let (o, code) = berth_tests::on_pty(cmd, 24, 80);
    assert_eq!(code, Some(4), "{o}");
    assert!(o.contains("/dev/pts/0"), "{o}");
    assert!(
        o.lines().any(|l| l.trim() == "0"),
        "the slave is the container root's: {o}"
    );
    assert_eq!(env.leaks(), Vec::<String>::new());
}
