//! The URI fetcher through `berth run --fetch`: file and http URIs land in
//! the sandbox (the container's working dir); checksum, executable,
//! extract; a mismatch or a 404 fails the launch as START_ERROR.

use berth_tests::TestEnv;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A tiny http server on 127.0.0.1 serving `/hello.txt`; 404 otherwise.
/// Counts requests.
fn serve(body: &'static str) -> (String, Arc<AtomicUsize>) {
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
