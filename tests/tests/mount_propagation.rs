//! Volume propagation (`--volume SRC:DST[:ro|rw][,rslave|rshared]`) on
//! real mounts: each test makes its own shared bind of a dir under its
//! temp dir (the host's / is private here), mounts under it on the host
//! while a container runs, and has the container mount under its
//! destination: rslave carries the host's mount in and nothing out,
//! rshared both ways; a private source and an unprivileged rshared are
//! refused. Natively (host filesystem and busybox image) and under runc.

use berth_tests::{import_busybox, require_tool, TestEnv};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-ec", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
}

/// A dir bound onto itself and made a shared mount; everything mounted
/// under it is unmounted on drop (before the test's env checks for leaks).
struct SharedDir(PathBuf);

impl SharedDir {
    fn new(env: &TestEnv, name: &str) -> SharedDir {
        let d = env.mkdir(name);
        sh(&format!(
            "mount --bind {0} {0} && mount --make-shared {0}",
            d.display()
        ));
        SharedDir(d)
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(&self.0)
            .status();
    }
}

fn is_mount_point(p: &Path) -> bool {
    berth_tests::mountinfo().iter().any(|m| m.mount_point == p)
}

/// The container: tells the host it runs, waits for the host's mount
/// under the volume (its marker file), shows it, then mounts a tmpfs
/// under the volume itself and writes a file there.
const SCRIPT: &str = "touch /tmp/vol/ready; i=0; \
    while [ ! -e /tmp/vol/sub/marker ]; do i=$((i+1)); [ $i -gt 50 ] && exit 3; sleep 0.1; done; \
    cat /tmp/vol/sub/marker; \
    mount -t tmpfs none /tmp/vol/own && echo inside > /tmp/vol/own/f && echo mounted";

/// Runs the container with `volume` (`<src>:/tmp/vol,<propagation>`) and
/// `extra` args, mounts a tmpfs on `<src>/sub` on the host once it runs,
/// and returns its output.
fn run_with_host_mount(env: &TestEnv, src: &Path, prop: &str, extra: &[&str]) -> Output {
    run_script_with_host_mount(env, src, prop, extra, SCRIPT)
}

/// [`run_with_host_mount`] with the container's own `script`.
fn run_script_with_host_mount(
    env: &TestEnv,
    src: &Path,
    prop: &str,
    extra: &[&str],
    script: &str,
) -> Output {
    std::fs::create_dir(src.join("sub")).unwrap();
    std::fs::create_dir(src.join("own")).unwrap();
    let s = src.display().to_string();
    let volume = format!("{s}:/tmp/vol:rw,{prop}");
    let child = env
        .berth()
        .arg("run")
        .args(["--volume-allow-rw", &s, "-v", &volume])
        .args(["--seccomp-profile", "unconfined"])
        .args(extra)
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !src.join("ready").exists() {
        if start.elapsed() > Duration::from_secs(60) {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the container never ran: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sh(&format!(
        "mount -t tmpfs host-side {s}/sub && echo from-the-host > {s}/sub/marker"
    ));
    child.wait_with_output().unwrap()
}

/// The configurations a volume's propagation must work in: the host's
/// filesystem, a busybox image (berth's own pivot_root), and (`runc`)
/// runc. rshared needs `--cap-add ALL`, which runc refuses on this
/// machine whatever the volumes ("unable to apply caps: operation not
/// permitted": this root's bounding set lacks CAP_SYS_RESOURCE, and runc
/// sets every capability asked for), so runc is tested with rslave only.
fn configs(env: &TestEnv, runc: bool) -> Vec<(&'static str, Vec<&'static str>)> {
    import_busybox(env);
    let mut c = vec![
        ("host filesystem", vec![]),
        ("image", vec!["--image", "busybox"]),
    ];
    if runc {
        require_tool("runc");
        c.push(("runc", vec!["--image", "busybox", "--runtime", "runc"]));
    }
    c
}

#[test]
fn rslave_brings_host_mounts_in_and_sends_none_out() {
    let env = TestEnv::new("mprop-slave");
    for (what, mut extra) in configs(&env, true) {
        let src = SharedDir::new(&env, &format!("slave-{}", what.replace(' ', "-")));
        // Enough to mount inside (and try to leak it out).
        extra.extend(["--cap-add", "SYS_ADMIN"]);
        let out = run_with_host_mount(&env, &src.0, "rslave", &extra);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "from-the-host\nmounted\n", "{what}");
        // The container's own mount stayed in it.
        assert!(!is_mount_point(&src.0.join("own")), "{what}: leaked out");
        assert!(!src.0.join("own/f").exists(), "{what}: leaked out");
    }
}

#[test]
fn rshared_goes_both_ways() {
    let env = TestEnv::new("mprop-shared");
    for (what, mut extra) in configs(&env, false) {
        let src = SharedDir::new(&env, &format!("shared-{}", what.replace(' ', "-")));
        extra.extend(["--cap-add", "ALL"]);
        let out = run_with_host_mount(&env, &src.0, "rshared", &extra);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "from-the-host\nmounted\n", "{what}");
        // The container's tmpfs, and its file, reached the host.
        assert!(is_mount_point(&src.0.join("own")), "{what}: not propagated");
        assert_eq!(
            std::fs::read_to_string(src.0.join("own/f")).unwrap(),
            "inside\n",
            "{what}"
        );
    }
}

#[test]
fn rshared_needs_a_privileged_container_and_a_shared_source() {
    let env = TestEnv::new("mprop-refuse");
    let shared = SharedDir::new(&env, "shared");
    let private = env.mkdir("private");
    let run = |src: &Path, prop: &str, extra: &[&str]| {
        let s = src.display().to_string();
        let volume = format!("{s}:/tmp/vol,{prop}");
        env.berth()
            .arg("run")
            .args(["--volume-allow-rw", &s, "-v", &volume])
            .args(extra)
            .args(["--", "true"])
            .output()
            .unwrap()
    };
    // Not privileged: refused, saying why.
    let out = run(&shared.0, "rshared", &[]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("rshared") && err.contains("privileged"),
        "{err}"
    );
    // A private source would propagate nothing: refused for both.
    for prop in ["rshared", "rslave"] {
        let out = run(&private, prop, &["--cap-add", "ALL"]);
        assert_ne!(out.status.code(), Some(0), "{prop}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&private.display().to_string()) && err.contains("not a shared"),
            "{prop}: {err}"
        );
    }
    // An unknown propagation is a usage error naming it.
    let out = run(&shared.0, "rsharde", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("rsharde"));
    drop(shared);
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
}

#[test]
fn a_private_volume_stays_private() {
    require_tool("mount");
    let env = TestEnv::new("mprop-private");
    let src = SharedDir::new(&env, "src");
    let out = run_with_host_mount(&env, &src.0, "private", &["--cap-add", "SYS_ADMIN"]);
    // The host's mount never shows: the container gives up waiting.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(!is_mount_point(&src.0.join("own")));
}

#[test]
fn rslave_in_a_user_namespace_is_idmapped_too() {
    let env = TestEnv::new("mprop-userns");
    import_busybox(&env);
    let src = SharedDir::new(&env, "src");
    std::fs::write(src.0.join("root-owned"), "").unwrap();
    // The container's root may not mount (its user namespace owns no
    // mount namespace): only the host's mount and the owners are shown.
    let script = "touch /tmp/vol/ready; i=0; \
        while [ ! -e /tmp/vol/sub/marker ]; do i=$((i+1)); [ $i -gt 50 ] && exit 3; sleep 0.1; done; \
        cat /tmp/vol/sub/marker; busybox stat -c %u:%g /tmp/vol/root-owned";
    let out = run_script_with_host_mount(
        &env,
        &src.0,
        "rslave",
        &["--image", "busybox", "--userns", "200000:65536"],
        script,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The host's root shows as the container's root: the bind is idmapped.
    assert_eq!(text(&out.stdout), "from-the-host\n0:0\n");
}

/// The image plants `/vol` as a symlink to a host dir: the propagating
/// bind (cloned from the host before the container's root is private) is
/// placed as any volume is, beneath the rootfs (`RESOLVE_IN_ROOT`), where
/// the link leads nowhere: refused by name, as a private volume is, and
/// the host dir is never mounted over nor written.
#[test]
fn a_planted_destination_link_never_mounts_a_propagating_volume_on_the_host() {
    require_tool("umoci");
    let env = TestEnv::new("mprop-link");
    let canary = env.mkdir("canary");
    std::fs::write(canary.join("secret"), "host\n").unwrap();
    // busybox_layout's image plus /vol -> <canary> (absolute).
    let layout = berth_tests::busybox_layout(&env);
    let bundle = env.path("evil-bundle");
    let (l, b) = (layout.display(), bundle.display());
    sh(&format!(
        "umoci unpack --image {l}:latest {b} >/dev/null && ln -s {c} {b}/rootfs/vol && \
         umoci repack --image {l}:evil {b} && rm -rf {b}",
        c = canary.display()
    ));
    let out = env
        .berth()
        .args(["image", "import"])
        .arg(&layout)
        .args(["--name", "evil"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let src = SharedDir::new(&env, "src");
    let s = src.0.display().to_string();
    for prop in ["private", "rslave"] {
        let volume = format!("{s}:/vol,{prop}");
        let out = env
            .berth()
            .arg("run")
            .args([
                "--volume-allow-rw",
                &s,
                "-v",
                &volume,
                "--image",
                "evil:evil",
            ])
            .args(["--", "sh", "-c", "echo planted > /vol/planted"])
            .output()
            .unwrap();
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(128), "{prop}: {o}{e}");
        assert!(
            e.contains("on /vol") && e.contains("rootfs/vol"),
            "{prop}: {e}"
        );
        assert!(
            !is_mount_point(&canary),
            "{prop}: the host dir was mounted over"
        );
        let names: Vec<_> = std::fs::read_dir(&canary)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"], "{prop}: {o}{e}");
    }
}
