//! `posix/rlimits`: `berth run --rlimit` sets the container's limits.

use berth_tests::TestEnv;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ulimit_inside_shows_the_configured_limits() {
    let env = TestEnv::new("rlimit");
    let out = env
        .berth()
        .args([
            "run",
            "--rlimit",
            "nofile=1024:2048",
            "--rlimit",
            "core=0:unlimited",
            "--",
            "sh",
            "-c",
            "ulimit -Sn; ulimit -Hn; ulimit -Sc; ulimit -Hc",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1024\n2048\n0\nunlimited\n");
}

#[test]
fn bad_rlimits_are_refused_by_name() {
    let env = TestEnv::new("rlimit-bad");
    for (arg, says) in [
        ("nofiles=10", "unknown rlimit \"nofiles\""),
        ("nofile=10:5", "soft limit 10 is above the hard limit 5"),
        ("nofile", "expected NAME=SOFT[:HARD]"),
        ("nofile=lots", "\"lots\" is not a number"),
    ] {
        let out = env
            .berth()
            .args(["run", "--rlimit", arg, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{arg}: a usage error");
        assert!(
            text(&out.stderr).contains(says),
            "{arg}: {}",
            text(&out.stderr)
        );
    }
}
