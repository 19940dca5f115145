//! The URI fetcher through `berth run --fetch`: file and http URIs land in
//! the sandbox (the container's working dir); checksum, executable,
//! extract (tar, tar.gz, tar.xz, tar.zst, zip, with the layers' no-escape
//! rules); a mismatch or a 404 fails the launch as START_ERROR; the shared
//! cache downloads a URI once for concurrent containers, in one agent and
//! across `berth run` processes.

use berth_tests::TestEnv;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A tiny http server on 127.0.0.1 serving `/hello.txt`; 404 otherwise.
/// Counts requests.
fn serve(body: &'static str) -> (String, Arc<AtomicUsize>) {
    serve_slowly(body, Duration::ZERO)
}

/// `serve`, answering each request after `delay` (so concurrent fetches
/// overlap).
fn serve_slowly(body: &'static str, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            loop {
                let mut hdr = String::new();
                if r.read_line(&mut hdr).unwrap_or(0) == 0 || hdr == "\r\n" {
                    break;
                }
            }
            std::thread::sleep(delay);
            let mut c = conn;
            let reply = if line.starts_with("GET /hello.txt ") {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let _ = c.write_all(reply.as_bytes());
        }
    });
    (format!("http://{addr}"), hits)
}

fn run(env: &TestEnv, fetch: &[String], script: &str) -> Output {
    let mut c = env.berth();
    c.args(["run", "--json"]);
    for f in fetch {
        c.args(["--fetch", f]);
    }
    c.args(["--", "sh", "-c", script]).output().unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    use std::process::{Command, Stdio};
    let mut p = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(data).unwrap();
    let out = p.wait_with_output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn file_and_http_uris_land_in_the_sandbox_checked_and_executable() {
    let env = TestEnv::new("fetch-ok");
    let (url, hits) = serve("hello over http\n");
    let script = env.path("tool.sh");
    std::fs::write(&script, "#!/bin/sh\necho tool ran\n").unwrap();
    let sum = sha256_hex(b"hello over http\n");
    let fetch = vec![
        format!("file://{},executable", script.display()),
        format!("{url}/hello.txt,sha256={sum},output_file=greeting"),
    ];
    let out = run(&env, &fetch, "./tool.sh && cat greeting");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("tool ran\nhello over http\n"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn archives_are_extracted_into_the_sandbox() {
    let env = TestEnv::new("fetch-tar");
    let src = env.mkdir("src");
    std::fs::create_dir(src.join("dir")).unwrap();
    std::fs::write(src.join("dir/inside.txt"), "from the archive\n").unwrap();
    let tgz = env.path("bundle.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&src)
        .arg("dir")
        .status()
        .unwrap();
    assert!(st.success());
    let out = run(
        &env,
        &[format!("{},extract", tgz.display())],
        "cat dir/inside.txt",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("from the archive\n"));
}

#[test]
fn a_checksum_mismatch_or_a_404_fails_the_launch_by_name() {
    let env = TestEnv::new("fetch-bad");
    let (url, _) = serve("hello over http\n");
    let wrong = "0".repeat(64);
    for (uri, says) in [
        (format!("{url}/hello.txt,sha256={wrong}"), "sha256 mismatch"),
        (format!("{url}/missing.txt"), "HTTP 404"),
        ("relative/path".to_string(), "absolute path"),
    ] {
        let out = run(&env, std::slice::from_ref(&uri), "true");
        assert_eq!(out.status.code(), Some(128), "{uri}: {}", text(&out.stderr));
        let json: serde_json::Value =
            serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
        assert_eq!(json["reason"], "START_ERROR", "{uri}: {json}");
        let msg = json["message"].as_str().unwrap_or_default().to_string() + &text(&out.stderr);
        assert!(msg.contains(says), "{uri}: {msg}");
    }
    let out = env
        .berth()
        .args(["run", "--fetch", "x,bogus", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown option \"bogus\""));
}

fn sh(script: &str) {
    let out = std::process::Command::new("sh")
        .args(["-ec", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
}

#[test]
fn xz_zstd_and_zip_archives_are_extracted_with_modes_and_links() {
    for tool in ["xz", "zstd", "python3"] {
        berth_tests::require_tool(tool);
    }
    let env = TestEnv::new("fetch-kinds");
    let src = env.mkdir("src");
    std::fs::create_dir(src.join("d")).unwrap();
    std::fs::write(src.join("d/data.txt"), "payload\n").unwrap();
    std::fs::write(src.join("d/run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    let s = src.display();
    sh(&format!(
        "cd {s} && chmod 755 d/run.sh && ln -s data.txt d/link && \
         tar cJf ../a.tar.xz d && tar --zstd -cf ../a.tar.zst d && \
         python3 - <<'PY'
import os, zipfile
z = zipfile.ZipFile('../a.zip', 'w', zipfile.ZIP_DEFLATED)
for root, dirs, files in os.walk('d'):
    z.write(root)
    for f in files:
        p = os.path.join(root, f)
        if os.path.islink(p):
            i = zipfile.ZipInfo(p)
            i.external_attr = (0o120777 << 16)
            z.writestr(i, os.readlink(p))
        else:
            z.write(p)
z.close()
PY"
    ));
    for kind in ["a.tar.xz", "a.tar.zst", "a.zip"] {
        let out = run(
            &env,
            &[format!("{},extract", env.path(kind).display())],
            "test -L d/link && cat d/link && d/run.sh",
        );
        assert_eq!(out.status.code(), Some(0), "{kind}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).starts_with("payload\nran\n"),
            "{kind}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn archives_that_escape_the_sandbox_are_refused() {
    berth_tests::require_tool("python3");
    let env = TestEnv::new("fetch-escape");
    let outside = env.mkdir("outside");
    let o = outside.display();
    let zips = env.mkdir("zips");
    sh(&format!(
        "cd {} && python3 - <<'PY'
import zipfile
z = zipfile.ZipFile('dotdot.zip', 'w')
z.writestr('../../escaped.txt', 'no')
z.close()
z = zipfile.ZipFile('abs.zip', 'w')
z.writestr(zipfile.ZipInfo('{o}/abs.txt'), 'no')
z.close()
z = zipfile.ZipFile('through-link.zip', 'w')
i = zipfile.ZipInfo('link')
i.external_attr = (0o120777 << 16)
z.writestr(i, '{o}')
z.writestr('link/evil.txt', 'no')
z.close()
PY",
        zips.display()
    ));
    for name in ["dotdot.zip", "abs.zip", "through-link.zip"] {
        let out = run(
            &env,
            &[format!("{},extract", zips.join(name).display())],
            "true",
        );
        assert_eq!(
            out.status.code(),
            Some(128),
            "{name}: {}",
            text(&out.stderr)
        );
        let json: serde_json::Value =
            serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
        assert_eq!(json["reason"], "START_ERROR", "{name}: {json}");
        let msg = json["message"].as_str().unwrap_or_default();
        assert!(msg.contains(&format!("extract {name}")), "{name}: {msg}");
        let left: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
        assert!(left.is_empty(), "{name} wrote outside: {left:?}");
    }
    assert!(!env.temp_dir.join("escaped.txt").exists());
    assert!(!std::path::Path::new("/tmp/escaped.txt").exists());
}

/// The cache entries (blobs) under a fetch cache dir.
fn cache_entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("entries"))
        .map(|rd| rd.flatten().filter(|e| e.file_name().len() == 64).count())
        .unwrap_or(0)
}

#[test]
fn two_containers_on_one_agent_fetching_one_cached_uri_download_it_once() {
    let env = TestEnv::new("fetch-cache-agent");
    let (url, hits) = serve_slowly("hello over http\n", Duration::from_millis(500));
    let agent = env.start_agent("");
    let uri = format!("{url}/hello.txt,cache");
    let script = "test \"$(cat hello.txt)\" = 'hello over http'";
    // Both launches are in flight at once: the server answers after
    // 500 ms, so the second fetch starts while the first downloads.
    let children: Vec<_> = ["c1", "c2"]
        .iter()
        .map(|id| {
            env.berth_client()
                .args([
                    "launch", "--name", id, "--fetch", &uri, "--", "sh", "-c", script,
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let launches: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for (id, out) in ["c1", "c2"].iter().zip(&launches) {
        assert_eq!(
            out.status.code(),
            Some(0),
            "launch {id}: {}\n{}",
            text(&out.stderr),
            agent.log()
        );
    }
    for id in ["c1", "c2"] {
        let out = env.berth_client().args(["wait", id]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{id}: {}", agent.log());
        let out = env.berth_client().args(["rm", id]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "rm {id}: {}", text(&out.stderr));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "{}", agent.log());
    assert_eq!(cache_entries(&env.state_dir.join("fetch-cache")), 1);
    assert!(agent.log().contains("cache hit"), "{}", agent.log());
    drop(agent);
}

#[test]
fn berth_run_processes_sharing_a_cache_download_once_and_the_size_limit_holds() {
    let a = TestEnv::new("fetch-cache-run-a");
    let b = TestEnv::new("fetch-cache-run-b");
    let cache = a.path("shared-cache");
    let (url, hits) = serve_slowly("hello over http\n", Duration::from_millis(500));
    let uri = format!("{url}/hello.txt,cache");
    let script = "test \"$(cat hello.txt)\" = 'hello over http'";
    // Two roots (two `berth run` at once cannot share one store), one cache.
    let children: Vec<_> = [&a, &b]
        .iter()
        .map(|env| {
            env.berth()
                .arg("run")
                .arg("--fetch-cache-dir")
                .arg(&cache)
                .args(["--fetch", &uri, "--", "sh", "-c", script])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(cache_entries(&cache), 1);

    // A cache smaller than the file: fetched every time, never kept.
    let small = a.path("small-cache");
    for n in 2..=3 {
        let out = a
            .berth()
            .arg("run")
            .arg("--fetch-cache-dir")
            .arg(&small)
            .args(["--fetch-cache-size", "8"])
            .args(["--fetch", &uri, "--", "sh", "-c", script])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(hits.load(Ordering::SeqCst), n);
        assert_eq!(cache_entries(&small), 0);
    }
}

#[test]
fn a_container_run_as_a_user_owns_its_sandbox_and_what_was_fetched() {
    use std::os::unix::fs::MetadataExt;
    let env = TestEnv::new("fetch-owner");
    let outside = env.path("outside.txt");
    std::fs::write(&outside, "host file\n").unwrap();
    let src = env.mkdir("src");
    std::fs::create_dir(src.join("dir")).unwrap();
    std::fs::write(src.join("dir/inside.txt"), "from the archive\n").unwrap();
    std::os::unix::fs::symlink(&outside, src.join("dir/out")).unwrap();
    let tgz = env.path("bundle.tar.gz");
    sh(&format!(
        "tar czf {} -C {} dir",
        tgz.display(),
        src.display()
    ));
    let script = "touch mine && echo more >> dir/inside.txt && \
                  stat -c %u . mine bundle.tar.gz dir dir/inside.txt dir/out";
    let out = env
        .berth()
        .args(["run", "--user", "65534", "--fetch"])
        .arg(format!("{},extract", tgz.display()))
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let owners: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    // Everything in the sandbox is the user's, the link itself included;
    // the link's target on the host is not touched.
    assert_eq!(
        owners,
        ["65534", "65534", "65534", "65534", "65534", "65534"],
        "{}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0);
}
