//! Crash injection: `berth agent` killed (SIGKILL, by a failpoint) at every
//! launch transition, inside launch steps and inside every destroy stage;
//! after each crash a fresh agent recovers, the container is accounted for
//! (listed, with a termination), and once it is removed nothing is left:
//! no process, cgroup, mount, sandbox or runtime dir.

use berth_tests::{Agent, TestEnv};
use serde_json::Value;
use std::time::Duration;

/// The default isolators, in order (their names make failpoints).
const ISOLATORS: &[&str] = &[
    "filesystem/linux",
    "namespaces/pid",
    "namespaces/ipc",
    "namespaces/uts",
    "namespaces/cgroup",
    "posix/rlimits",
    "cgroups/cpu",
    "cgroups/mem",
    "cgroups/pids",
    "cgroups/devices",
    "volume/host_path",
    "disk/du",
    "network/cni",
];

/// Points reached while a launch is under way; the crash interrupts
/// `berth launch`.
fn launch_points() -> Vec<String> {
    let mut p: Vec<String> = [
        "STARTING",
        "PROVISIONING",
        "PREPARING",
        "ISOLATING",
        "FETCHING",
        "RUNNING",
    ]
    .iter()
    .map(|s| format!("after-checkpoint:{s}"))
    .collect();
    p.extend(
        ISOLATORS
            .iter()
            .map(|i| format!("launch:after-prepare:{i}")),
    );
    p.push("launch:after-fork".into());
    p
}

/// Points reached while a destroy is under way; the crash interrupts
/// `berth destroy`. (`destroy:after-provisioner` needs an image: see
/// `a_crash_around_the_provisioner_is_recovered_without_leaks`.)
fn destroy_points() -> Vec<String> {
    let mut p: Vec<String> = vec![
        "after-checkpoint:DESTROYING".into(),
        "destroy:after-kill".into(),
    ];
    p.extend(
        ISOLATORS
            .iter()
            .rev()
            .map(|i| format!("destroy:after-cleanup:{i}")),
    );
    p.push("destroy:after-cleanup".into());
    p.push("after-checkpoint:TERMINATED".into());
    p.push("destroy:after-remove-runtime-dir".into());
    p
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ps(env: &TestEnv, agent: &Agent) -> Vec<Value> {
    let out = env.berth_client().args(["ps", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        agent.log()
    );
    serde_json::from_str::<Value>(&text(&out.stdout))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum During {
    Launch,
    Destroy,
}

/// Arms `point`, drives a container into it, checks that the agent died
/// there, recovers with a fresh agent and checks that the container is
/// accounted for and leaves nothing behind. Returns whether it was
/// recovered RUNNING, and its termination.
fn crash_at(env: &TestEnv, point: &str, during: During, n: usize) -> (bool, Value) {
    crash_at_with(env, point, during, &format!("fp{n}"), None)
}

/// `crash_at` for container `id`, from `image` (a reference in the test's
/// store) when given, else on the host filesystem.
fn crash_at_with(
    env: &TestEnv,
    point: &str,
    during: During,
    id: &str,
    image: Option<&str>,
) -> (bool, Value) {
    let id = id.to_string();
    let mut agent = env.start_agent(point);
    let mut launch = env.berth_client();
    launch.args(["launch", "--name", &id, "--memory", "64M", "--pids", "50"]);
    if let Some(image) = image {
        launch.args(["--image", image]);
    }
    let launch = launch.args(["--", "sleep", "1000"]).output().unwrap();
    match during {
        During::Launch => assert_ne!(
            launch.status.code(),
            Some(0),
            "{point}: the launch went through: the point was never reached\n{}",
            agent.log()
        ),
        During::Destroy => {
            assert_eq!(
                launch.status.code(),
                Some(0),
                "{point}: {}\n{}",
                text(&launch.stderr),
                agent.log()
            );
            let d = env.berth_client().args(["destroy", &id]).output().unwrap();
            assert_ne!(
                d.status.code(),
                Some(0),
                "{point}: the destroy went through: the point was never reached\n{}",
                agent.log()
            );
        }
    }
    assert!(
        agent.wait_dead(Duration::from_secs(10)),
        "{point}: the agent is still alive"
    );
    assert!(
        agent.log().contains(&format!("failpoint {point} reached")),
        "{point}: {}",
        agent.log()
    );

    let agent = env.start_agent("");
    let list = ps(env, &agent);
    let c = list
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{point}: container {id} lost: {list:?}\n{}", agent.log()));
    // A container caught mid-launch or mid-destroy is destroyed by the
    // recovery; one caught RUNNING (the command exec'd) keeps running.
    let recovered_running = c["state"] == "RUNNING";
    if recovered_running {
        // RUNNING means the command was exec'd: the init is `sleep`.
        let pid = c["pid"].as_i64().unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "sleep", "{point}: {c}");
    }
    let out = if recovered_running {
        let out = env
            .berth_client()
            .args(["destroy", &id, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{point}: {}", text(&out.stderr));
        out
    } else {
        env.berth_client()
            .args(["wait", &id, "--json"])
            .output()
            .unwrap()
    };
    let t: Value = serde_json::from_str(text(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("{point}: {e}: {}", text(&out.stderr)));
    let rm = env.berth_client().args(["rm", &id]).output().unwrap();
    assert!(rm.status.success(), "{point}: {}", text(&rm.stderr));
    assert!(agent.terminate().success());

    let leaks = env.leaks();
    assert!(leaks.is_empty(), "{point}: leaked {leaks:?}");
    for dir in [
        env.state_dir.join("sandboxes").join(&id),
        env.runtime_dir.join("containers").join(&id),
        env.state_dir.join("images/containers").join(&id),
    ] {
        assert!(!dir.exists(), "{point}: {} left behind", dir.display());
    }
    (recovered_running, t)
}

#[test]
fn a_crash_at_every_launch_step_is_recovered_without_leaks() {
    let env = TestEnv::new("fp-launch");
    for (n, point) in launch_points().iter().enumerate() {
        let (running, t) = crash_at(&env, point, During::Launch, n);
        let reason = t["reason"].as_str().unwrap();
        if point == "after-checkpoint:RUNNING" {
            // RUNNING is checkpointed once the command was released to
            // exec: it is recovered as a running container.
            assert!(running, "{point}: {t}");
            assert_eq!(reason, "DESTROYED", "{point}: {t}");
        } else {
            assert!(
                !running,
                "{point}: an unfinished launch was passed off as running"
            );
            assert_eq!(reason, "START_ERROR", "{point}: {t}");
            assert_eq!(t["exit_code"], 128, "{point}: {t}");
            assert!(
                t["message"]
                    .as_str()
                    .unwrap()
                    .contains("the agent restarted during launch"),
                "{point}: {t}"
            );
        }
    }
}

#[test]
fn a_crash_in_every_destroy_stage_is_recovered_without_leaks() {
    let env = TestEnv::new("fp-destroy");
    for (n, point) in destroy_points().iter().enumerate() {
        let (_, t) = crash_at(&env, point, During::Destroy, n);
        let reason = t["reason"].as_str().unwrap();
        assert!(
            reason == "DESTROYED",
            "{point}: a requested destroy ends DESTROYED: {t}"
        );
    }
}

/// The busybox image, imported into the test's store as
/// `fp-busybox:latest`.
fn busybox_image(env: &TestEnv) -> String {
    let layout = berth_tests::busybox_layout(env);
    let out = env
        .berth()
        .arg("image")
        .arg("import")
        .arg(&layout)
        .args(["--name", "fp-busybox"])
        .output()
        .unwrap();
    assert!(out.status.success(), "import: {}", text(&out.stderr));
    "fp-busybox:latest".into()
}

#[test]
fn a_crash_around_the_provisioner_is_recovered_without_leaks() {
    let env = TestEnv::new("fp-image");
    let image = busybox_image(&env);
    let points = [
        ("after-checkpoint:PROVISIONING", During::Launch),
        ("launch:after-prepare:filesystem/linux", During::Launch),
        ("launch:after-fork", During::Launch),
        ("destroy:after-cleanup", During::Destroy),
        ("destroy:after-provisioner", During::Destroy),
        ("after-checkpoint:TERMINATED", During::Destroy),
    ];
    for (n, (point, during)) in points.into_iter().enumerate() {
        let (_, t) = crash_at_with(&env, point, during, &format!("img{n}"), Some(&image));
        let want = match during {
            During::Launch => "START_ERROR",
            During::Destroy => "DESTROYED",
        };
        assert_eq!(t["reason"], want, "{point}: {t}");
    }
    // The image's rootfs mounts and dirs went with each container; the
    // image itself is still there.
    let out = env.berth().args(["image", "ls"]).output().unwrap();
    assert!(
        text(&out.stdout).contains("fp-busybox"),
        "{}",
        text(&out.stdout)
    );
}

/// A pod member or an exec caught by an agent crash at `point`: after
/// recovery the pod runs on, the member is accounted for (an exec is
/// always destroyed, never recovered), and once the pod is destroyed
/// nothing is left.
fn crash_nested_at(env: &TestEnv, point: &str, n: usize, exec: bool) {
    let pod = format!("pod{n}");
    let agent = env.start_agent("");
    let out = env
        .berth_client()
        .args([
            "launch",
            "--name",
            &pod,
            "--network",
            "none",
            "--",
            "sleep",
            "1000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{point}: {}", text(&out.stderr));
    assert!(agent.terminate().success());

    let mut agent = env.start_agent(point);
    let out = match exec {
        true => env
            .berth_client()
            .args(["exec", &pod, "--", "sleep", "1000"])
            .output()
            .unwrap(),
        false => env
            .berth_client()
            .args([
                "launch",
                "--name",
                &format!("{pod}/m"),
                "--share-pid-namespace",
            ])
            .args(["--", "sleep", "1000"])
            .output()
            .unwrap(),
    };
    assert_ne!(
        out.status.code(),
        Some(0),
        "{point}: the point was never reached"
    );
    assert!(
        agent.wait_dead(Duration::from_secs(10)),
        "{point}: the agent is still alive"
    );
    assert!(
        agent.log().contains(&format!("failpoint {point} reached")),
        "{point}"
    );

    let agent = env.start_agent("");
    let list = ps(env, &agent);
    let state = |id: &str| {
        list.iter()
            .find(|c| c["id"] == id)
            .map(|c| c["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state(&pod).as_deref(), Some("RUNNING"), "{point}: {list:?}");
    let nested: Vec<&Value> = list
        .iter()
        .filter(|c| c["id"].as_str().unwrap().starts_with(&format!("{pod}/")))
        .collect();
    assert_eq!(nested.len(), 1, "{point}: {list:?}\n{}", agent.log());
    let recovered_running = nested[0]["state"] == "RUNNING";
    assert!(
        !(exec && recovered_running),
        "{point}: an exec was recovered: {list:?}"
    );
    let out = env.berth_client().args(["destroy", &pod]).output().unwrap();
    assert!(out.status.success(), "{point}: {}", text(&out.stderr));
    assert!(agent.terminate().success());
    let leaks = env.leaks();
    assert!(leaks.is_empty(), "{point}: leaked {leaks:?}");
}

#[test]
fn a_crash_while_a_pod_member_or_an_exec_launches_is_recovered_without_leaks() {
    let env = TestEnv::new("fp-nested");
    let points = [
        "after-checkpoint:PREPARING",
        "launch:after-prepare:namespaces/ipc",
        "launch:after-fork",
        "after-checkpoint:RUNNING",
    ];
    for (n, point) in points.iter().enumerate() {
        crash_nested_at(&env, point, n, false);
        crash_nested_at(&env, point, n + points.len(), true);
    }
}
