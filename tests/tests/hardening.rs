//! Safe defaults seen from inside real containers: a host-filesystem
//! container sees the host's root read-only and cannot reach berth's own
//! state, runtime dir or binaries (`--host-rootfs rw` opts out);
//! `--read-only` makes an image's rootfs read-only; volumes may not cover
//! /proc, /sys or /dev; moby's extra masked paths are masked; an image
//! container sees none of the host's mounts below /sys.

use berth_tests::{berth_bin, busybox_layout, require_tool, TestEnv};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A berth root and runtime dir outside /tmp (a host-filesystem container
/// gets a private /tmp, which would hide them anyway), removed on drop.
struct OutsideTmp {
    base: PathBuf,
    root: PathBuf,
    runtime: PathBuf,
}

impl OutsideTmp {
    fn new(env: &TestEnv) -> OutsideTmp {
        let base = Path::new("/var/tmp").join(&env.name);
        std::fs::create_dir(&base).unwrap_or_else(|e| panic!("create {}: {e}", base.display()));
        let (root, runtime) = (base.join("root"), base.join("run"));
        OutsideTmp {
            base,
            root,
            runtime,
        }
    }

    fn berth(&self, env: &TestEnv) -> Command {
        let mut c = Command::new(berth_bin());
        c.arg("--root")
            .arg(&self.root)
            .arg("--runtime-dir")
            .arg(&self.runtime)
            .arg("--cgroup-root")
            .arg(&env.cgroup_root);
        c
    }

    fn run(&self, env: &TestEnv, args: &[&str], script: &str) -> Output {
        self.berth(env)
            .arg("run")
            .args(args)
            .args(["--", "sh", "-c", script])
            .output()
            .expect("run berth")
    }
}

impl Drop for OutsideTmp {
    fn drop(&mut self) {
        // (The cgroup root's claim is the TestEnv's to remove.)
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[test]
fn the_hosts_root_is_read_only_and_berths_own_files_are_hidden() {
    let env = TestEnv::new("hard-host-ro");
    let out_tmp = OutsideTmp::new(&env);
    let probe = out_tmp.base.join("probe");
    let supervisor = berth_bin().with_file_name("berth-supervisor");
    let script = format!(
        "touch {probe} 2>&1; echo \"touch=$?\"; \
         echo sand > \"$BERTH_SANDBOX/f\" && cat \"$BERTH_SANDBOX/f\"; \
         echo tmp > /tmp/t && cat /tmp/t; \
         echo \"root=$(ls -A {root})\"; \
         echo \"runtime=$(ls -A {runtime} | wc -l)\"; \
         echo \"bin=$(wc -c < {bin} 2>/dev/null || echo 0) sup=$(wc -c < {sup} 2>/dev/null || echo 0)\"; \
         echo \"interrupts=$(wc -c < /proc/interrupts)\"",
        probe = probe.display(),
        root = out_tmp.root.display(),
        runtime = out_tmp.runtime.display(),
        bin = berth_bin().display(),
        sup = supervisor.display(),
    );
    let out = out_tmp.run(&env, &[], &script);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("Read-only file system") && stdout.contains("touch=1"),
        "writing the host's root must fail: {stdout}"
    );
    assert!(!probe.exists(), "the container created {}", probe.display());
    assert!(
        stdout.contains("sand\n"),
        "the sandbox is writable: {stdout}"
    );
    assert!(
        stdout.contains("tmp\n"),
        "the private /tmp is writable: {stdout}"
    );
    // Only the way to the sandbox is left of berth's root.
    assert!(stdout.contains("root=sandboxes\n"), "{stdout}");
    assert!(stdout.contains("runtime=0\n"), "{stdout}");
    // Masked with an empty file; or, for a build under /tmp, not there at
    // all (the container's /tmp is its own): either way nothing to read.
    assert!(
        stdout.contains("bin=0 sup=0\n"),
        "berth's binaries: {stdout}"
    );
    assert!(stdout.contains("interrupts=0\n"), "{stdout}");
}

#[test]
fn host_rootfs_rw_is_an_explicit_opt_in() {
    let env = TestEnv::new("hard-host-rw");
    let out_tmp = OutsideTmp::new(&env);
    let probe = out_tmp.base.join("probe");
    let out = out_tmp.run(
        &env,
        &["--host-rootfs", "rw"],
        &format!("echo w > {}", probe.display()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&probe).unwrap(), "w\n");

    let out = out_tmp.run(&env, &["--host-rootfs", "yes"], "true");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("expected ro or rw"),
        "{}",
        text(&out.stderr)
    );
    let out = out_tmp.run(&env, &["--read-only"], "true");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("needs an image"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn read_only_makes_an_image_rootfs_read_only_and_leaves_the_sandbox_writable() {
    require_tool("umoci");
    let env = TestEnv::new("hard-img-ro");
    berth_tests::import_busybox(&env);
    let run = |args: &[&str]| {
        env.berth()
            .arg("run")
            .args(["--image", "busybox"])
            .args(args)
            .args([
                "--",
                "sh",
                "-c",
                "echo x > /x 2>&1; echo \"root=$?\"; echo s > /mnt/sandbox/s && echo sandbox-ok; \
                 echo > /dev/null && echo dev-ok",
            ])
            .output()
            .unwrap()
    };
    let out = run(&["--read-only"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("root=1"), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("sandbox-ok") && stdout.contains("dev-ok"),
        "{stdout}"
    );
    let out = run(&[]);
    assert!(
        text(&out.stdout).contains("root=0"),
        "{}",
        text(&out.stdout)
    );
}

/// An image container on the host's network sees the host's sysfs alone
/// under /sys, as one with a network of its own sees a fresh one: none of
/// the host's mounts below it (tracefs, debugfs, securityfs, bpffs), and
/// under /sys/fs/cgroup only its own cgroups.
#[test]
fn an_image_container_sees_no_host_mount_below_sys() {
    require_tool("umoci");
    // Mount points below /sys other than the cgroup ones, on the host.
    let below_sys = |mountinfo: &str| -> Vec<String> {
        mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with("/sys/") && !p.starts_with("/sys/fs/cgroup"))
            .map(str::to_string)
            .collect()
    };
    let host = below_sys(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    assert!(
        !host.is_empty(),
        "this test needs a host mount below /sys besides the cgroup ones (tracefs, debugfs, ...)"
    );
    let env = TestEnv::new("hard-sys");
    berth_tests::import_busybox(&env);
    let out = env
        .berth()
        .args([
            "run",
            "--image",
            "busybox",
            "--",
            "busybox",
            "cat",
            "/proc/self/mountinfo",
        ])
        .output()
        .unwrap();
    let inside = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{inside}{}", text(&out.stderr));
    // Masked paths (a tmpfs on /sys/firmware) are the container's own.
    let leaked: Vec<String> = below_sys(&inside)
        .into_iter()
        .filter(|p| host.contains(p))
        .collect();
    assert!(
        leaked.is_empty(),
        "host mounts below /sys inside: {leaked:?}\n{inside}"
    );
    assert!(inside.contains(" /sys/fs/cgroup/memory "), "{inside}");
}

#[test]
fn volumes_may_not_cover_proc_sys_or_dev() {
    require_tool("umoci");
    let env = TestEnv::new("hard-vol-kernel");
    let src = env.mkdir("src");
    let src_s = src.display().to_string();
    let layout = busybox_layout(&env);
    // An image whose /data leads into /proc.
    let bundle = env.path("bundle");
    let (l, b) = (layout.display(), bundle.display());
    let out = Command::new("sh")
        .args([
            "-ec",
            &format!(
                "umoci unpack --image {l}:latest {b} && ln -s /proc/sys {b}/rootfs/data && \
                 umoci repack --image {l}:latest {b} && rm -rf {b}"
            ),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let import = env
        .berth()
        .args(["image", "import"])
        .arg(&layout)
        .args(["--name", "linky"])
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", text(&import.stderr));

    for (image, dst) in [
        (None, "/proc/sys"),
        (None, "/sys/kernel"),
        (None, "/dev/foo"),
        (Some("linky"), "/dev/shm/x"),
        (Some("linky"), "/data/kernel"),
    ] {
        let mut c = env.berth();
        c.args(["run", "--volume-allow-rw", &src_s]);
        if let Some(i) = image {
            c.args(["--image", i]);
        }
        let spec = format!("{src_s}:{dst}");
        let out = c.args(["-v", &spec, "--", "true"]).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(128), "{dst}: {err}");
        assert!(
            err.contains("does not mount volumes into /proc, /sys or /dev"),
            "{dst}: {err}"
        );
    }
    // Elsewhere is fine.
    let out = env
        .berth()
        .args(["run", "--volume-allow-rw", &src_s])
        .args(["-v", &format!("{src_s}:/tmp/data"), "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn cap_drop_and_cap_add_change_what_the_container_may_do() {
    let env = TestEnv::new("hard-caps");
    let run = |args: &[&str], script: &str| {
        env.berth()
            .arg("run")
            .args(args)
            .args(["--", "sh", "-c", script])
            .output()
            .unwrap()
    };
    let ping = "busybox ping -c1 -W2 127.0.0.1 >/dev/null 2>&1; echo ping=$?";
    let out = run(&[], ping);
    assert!(
        text(&out.stdout).contains("ping=0"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Without CAP_NET_RAW, busybox ping cannot open its raw socket.
    let out = run(&["--cap-drop", "NET_RAW"], ping);
    assert!(
        text(&out.stdout).contains("ping=1"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // CAP_SYS_ADMIN also lets the seccomp filter allow unshare, as Docker's.
    let userns = "busybox unshare -U true 2>/dev/null; echo unshare=$?";
    assert!(text(&run(&[], userns).stdout).contains("unshare=1"));
    let out = run(&["--cap-add", "SYS_ADMIN"], userns);
    assert!(
        text(&out.stdout).contains("unshare=0"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Only CAP_KILL (bit 5) is left.
    let out = run(
        &["--cap-drop", "ALL", "--cap-add", "kill"],
        "grep CapBnd /proc/self/status",
    );
    assert!(
        text(&out.stdout).contains("0000000000000020"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["--cap-add", "BOGUS"], "true");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("unknown capability \"BOGUS\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn shm_size_sysctls_and_the_agents_default_network() {
    let env = TestEnv::new("hard-opts");
    let run = |global: &[&str], args: &[&str], script: &str| {
        env.berth()
            .arg("run")
            .args(global)
            .args(args)
            .args(["--", "sh", "-c", script])
            .output()
            .unwrap()
    };
    let out = run(&[], &["--shm-size", "8M"], "df -k /dev/shm | tail -1");
    assert!(
        text(&out.stdout).split_whitespace().nth(1) == Some("8192"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Namespaced sysctls land in the container's own namespaces only.
    let host_shmmax = std::fs::read_to_string("/proc/sys/kernel/shmmax").unwrap();
    let out = run(
        &[],
        &[
            "--network",
            "none",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--sysctl",
            "kernel.shmmax=123456",
        ],
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax",
    );
    assert_eq!(text(&out.stdout), "1\n123456\n", "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shmmax").unwrap(),
        host_shmmax
    );
    for (args, why) in [
        (
            &["--sysctl", "net.ipv4.ip_forward=1"][..],
            "would change the host's network",
        ),
        (&["--sysctl", "kernel.panic=1"][..], "is not namespaced"),
        (&["--sysctl", "../../x=1"][..], "is not namespaced"),
    ] {
        let out = run(&[], args, "true");
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(
            text(&out.stderr).contains(why),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // The agent's (here: berth run's) default network applies to a
    // container that names none: only lo.
    let out = run(&["--default-network", "none"], &[], "ls /sys/class/net");
    assert_eq!(text(&out.stdout), "lo\n", "{}", text(&out.stderr));
}
