//! `berth agent --metrics-listen`: a real Prometheus (Debian's) scrapes the
//! agent and its API answers berth's series with real values; the
//! endpoint itself counts launches, destroys by reason, fetch-cache hits
//! and misses and image pulls; a container's series go once it stops;
//! without the option nothing listens; a bad address is refused.

use berth::agent::api::PullImageRequest;
use berth_tests::{require_tool, Agent, TestEnv};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A 127.0.0.1 port nobody listens on (a moment ago).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client command on the test's agent; panics (with the agent's log)
/// unless it exits 0 within 60 s.
fn client(env: &TestEnv, agent: &Agent, args: &[&str]) -> Output {
    let mut child = env
        .berth_client()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth {args:?} hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "berth {args:?}: {}\nstdout: {}\nstderr: {}\nagent log:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        agent.log()
    );
    out
}

/// An HTTP/1.0 GET (no chunked answers, the server closes): the status
/// code, the headers and the body.
fn http_get(addr: &str, path_and_query: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(s, "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = text(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, head.to_string(), body.to_string()))
}

/// berth's `/metrics`, which must answer 200.
fn scrape(addr: &str, agent: &Agent) -> String {
    let (code, head, body) = http_get(addr, "/metrics")
        .unwrap_or_else(|e| panic!("GET {addr}/metrics: {e}\nagent log:\n{}", agent.log()));
    assert_eq!(code, 200, "{head}\n{body}\nagent log:\n{}", agent.log());
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// The value of the sample `series` (name and labels exactly as exposed)
/// in an exposition, if present.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Debian's `prometheus`, scraping `target` every second, on a free port
/// with its config and TSDB in a temp dir of its own. Killed (by its pid)
/// and its dir removed when dropped, also when the test fails.
struct Prometheus {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        require_tool("prometheus");
        let dir = tempfile::Builder::new()
            .prefix("berth-prometheus-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: berth\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _, _)) = http_get(&p.addr, "/-/ready") {
                break;
            }
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready on {} within 30 s:\n{}",
                p.addr,
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: each result series' value.
    fn query(&self, promql: &str) -> Vec<f64> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (code, _, body) = http_get(&self.addr, &path).expect("query prometheus");
        assert_eq!(code, 200, "{promql}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|r| {
                r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("{r}"))
            })
            .collect()
    }

    /// Queries `promql` until `ok` accepts its values, for up to 30 s.
    fn wait_for(&self, promql: &str, ok: impl Fn(&[f64]) -> bool) -> Vec<f64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.query(promql);
            if ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: still {v:?} after 30 s\nprometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Child::kill is SIGKILL to this child's pid; the TempDir goes after.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_the_agent_and_sees_real_values() {
    let env = TestEnv::new("metrics-prom");
    let addr = format!("127.0.0.1:{}", free_port());
    let agent = env.start_agent_with("", &["--metrics-listen", &addr]);
    client(
        &env,
        &agent,
        &["launch", "--name", "m1", "--", "sleep", "60"],
    );
    // The endpoint itself first: a failure here is clearer than in PromQL.
    let body = scrape(&addr, &agent);
    assert_eq!(sample(&body, "berth_containers_launched_total"), Some(1.0));
    assert_eq!(
        sample(&body, r#"berth_containers{state="RUNNING"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, r#"berth_containers{state="DESTROYING"}"#),
        Some(0.0)
    );
    let mem = sample(&body, r#"berth_container_memory_bytes{id="m1"}"#);
    assert!(mem.is_some_and(|m| m > 0.0), "{body}");

    let prom = Prometheus::start(&addr);
    prom.wait_for("up{job=\"berth\"}", |v| v == [1.0]);
    let mem = prom.wait_for(r#"berth_container_memory_bytes{id="m1"}"#, |v| {
        !v.is_empty()
    });
    assert!(mem[0] > 0.0, "memory of m1: {mem:?}");
    let procs = prom.wait_for(r#"berth_container_processes{id="m1"}"#, |v| !v.is_empty());
    assert!(procs[0] >= 1.0, "processes of m1: {procs:?}");
    prom.wait_for(r#"berth_container_cpu_seconds_total{id="m1"}"#, |v| {
        v.len() == 1 && v[0] >= 0.0
    });
    let launched = prom.wait_for("berth_containers_launched_total", |v| !v.is_empty());
    assert!(launched[0] >= 1.0, "launched: {launched:?}");
    for step in ["STARTING", "PREPARING", "FORKING", "ISOLATING", "RELEASING"] {
        let q = format!("berth_launch_step_duration_seconds_count{{step=\"{step}\"}}");
        let n = prom.wait_for(&q, |v| !v.is_empty());
        assert_eq!(n, [1.0], "{q}");
    }
    let q = r#"berth_launch_step_duration_seconds_bucket{step="ISOLATING",le="+Inf"}"#;
    assert_eq!(prom.query(q), [1.0], "{q}");
    let sum = prom.query("berth_launch_duration_seconds_sum");
    assert!(
        sum.len() == 1 && sum[0] > 0.0,
        "launch duration sum: {sum:?}"
    );

    // Destroyed: counted by reason, and m1's series go (Prometheus marks
    // them stale at the first scrape without them).
    client(&env, &agent, &["destroy", "m1"]);
    prom.wait_for(
        r#"berth_containers_destroyed_total{reason="DESTROYED"}"#,
        |v| v == [1.0],
    );
    prom.wait_for(
        r#"berth_destroy_stage_duration_seconds_count{stage="kill"}"#,
        |v| v == [1.0],
    );
    prom.wait_for(r#"berth_container_memory_bytes{id="m1"}"#, |v| v.is_empty());
    client(&env, &agent, &["rm", "m1"]);
    let body = scrape(&addr, &agent);
    assert!(!body.contains(r#"id="m1""#), "{body}");
    drop(prom);
    assert!(agent.terminate().success());
}

#[test]
fn recovery_is_counted_at_the_agent_start() {
    let env = TestEnv::new("metrics-recover");
    let agent = env.start_agent("");
    client(
        &env,
        &agent,
        &["launch", "--name", "r1", "--", "sleep", "60"],
    );
    agent.kill9();
    let addr = format!("127.0.0.1:{}", free_port());
    let agent = env.start_agent_with("", &["--metrics-listen", &addr]);
    let body = scrape(&addr, &agent);
    assert_eq!(
        sample(&body, "berth_containers_recovered"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(sample(&body, "berth_orphans_cleaned"), Some(0.0), "{body}");
    // This agent launched nothing; the recovered container has its series.
    assert_eq!(sample(&body, "berth_containers_launched_total"), Some(0.0));
    let procs = sample(&body, r#"berth_container_processes{id="r1"}"#);
    assert!(procs.is_some_and(|p| p >= 1.0), "{body}");
    client(&env, &agent, &["destroy", "r1"]);
    client(&env, &agent, &["rm", "r1"]);
    let body = scrape(&addr, &agent);
    assert_eq!(
        sample(
            &body,
            r#"berth_containers_destroyed_total{reason="DESTROYED"}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert!(agent.terminate().success());
}

/// A local docker-registry holding the busybox layout as `test/busybox`;
/// killed on drop.
struct Registry {
    child: Child,
    addr: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry_with_busybox(env: &TestEnv) -> (Registry, String) {
    require_tool("docker-registry");
    require_tool("skopeo");
    let layout = berth_tests::busybox_layout(env);
    let addr = format!("127.0.0.1:{}", free_port());
    let config = env.path("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            env.mkdir("registry").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reg = Registry { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&reg.addr).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let name = format!("{}/test/busybox:latest", reg.addr);
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
    (reg, name)
}

#[test]
fn the_endpoint_counts_fetch_cache_hits_and_misses_and_image_pulls() {
    let env = TestEnv::new("metrics-counts");
    let (_registry, image) = registry_with_busybox(&env);
    let addr = format!("127.0.0.1:{}", free_port());
    let agent = env.start_agent_with("", &["--metrics-listen", &addr]);
    let body = scrape(&addr, &agent);
    for zero in [
        "berth_containers_launched_total",
        "berth_fetch_cache_hits_total",
        "berth_fetch_cache_misses_total",
        "berth_image_pulls_total",
        "berth_image_pulled_bytes_total",
        "berth_containers_recovered",
        "berth_orphans_cleaned",
        r#"berth_containers_destroyed_total{reason="COMPLETED"}"#,
    ] {
        assert_eq!(sample(&body, zero), Some(0.0), "{zero} in\n{body}");
    }

    // Two containers fetch one file through the cache: a miss, then a hit;
    // both complete.
    let file = env.path("payload.txt");
    std::fs::write(&file, "cached payload\n").unwrap();
    let fetch = format!("{},cache", file.display());
    for name in ["f1", "f2"] {
        client(
            &env,
            &agent,
            &[
                "launch",
                "--name",
                name,
                "--fetch",
                &fetch,
                "--",
                "cat",
                "payload.txt",
            ],
        );
        client(&env, &agent, &["wait", name]);
        client(&env, &agent, &["rm", name]);
    }
    let body = scrape(&addr, &agent);
    assert_eq!(
        sample(&body, "berth_fetch_cache_misses_total"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "berth_fetch_cache_hits_total"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(sample(&body, "berth_containers_launched_total"), Some(2.0));
    assert_eq!(
        sample(
            &body,
            r#"berth_containers_destroyed_total{reason="COMPLETED"}"#
        ),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"berth_launch_step_duration_seconds_count{step="FETCHING"}"#
        ),
        Some(2.0),
        "{body}"
    );

    // A pull through the agent's API: counted, with its blobs' bytes; a
    // failed one is counted apart.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut api = berth::agent::connect(&env.socket()).await.unwrap();
        api.pull_image(PullImageRequest {
            reference: image.clone(),
            insecure: false,
        })
        .await
        .unwrap_or_else(|e| panic!("pull {image}: {e}\n{}", agent.log()));
        api.pull_image(PullImageRequest {
            reference: "127.0.0.1:1/nothing:latest".into(),
            insecure: false,
        })
        .await
        .unwrap_err();
    });
    let body = scrape(&addr, &agent);
    assert_eq!(
        sample(&body, "berth_image_pulls_total"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "berth_image_pull_errors_total"),
        Some(1.0),
        "{body}"
    );
    let bytes = sample(&body, "berth_image_pulled_bytes_total").unwrap_or(0.0);
    // busybox alone is about a megabyte.
    assert!(bytes > 500_000.0, "pulled bytes: {bytes}\n{body}");

    // Not /metrics, or not GET: refused.
    let (code, _, _) = http_get(&addr, "/").unwrap();
    assert_eq!(code, 404);
    assert!(agent.terminate().success());
}

/// The inodes of the TCP sockets in LISTEN state that process `pid` holds.
fn listening_sockets(pid: u32) -> Vec<String> {
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let t = std::fs::read_to_string(table).unwrap_or_default();
        for row in t.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if cols.len() > 9 && cols[3] == "0A" {
                listening.push(cols[9].to_string());
            }
        }
    }
    let mut held = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(link) = std::fs::read_link(fd.path()) {
            let link = link.display().to_string();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                if listening.iter().any(|l| l == inode) {
                    held.push(inode.to_string());
                }
            }
        }
    }
    held
}

#[test]
fn without_the_option_nothing_listens_and_a_bad_address_is_refused() {
    let env = TestEnv::new("metrics-off");
    let agent = env.start_agent("");
    assert_eq!(
        listening_sockets(agent.child.id()),
        Vec::<String>::new(),
        "the agent listens on TCP without --metrics-listen"
    );
    assert!(agent.terminate().success());

    // An address that is not one, and one that is taken: the agent does
    // not start, and says which address.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for bad in ["not-an-address", "127.0.0.1:99999", taken.as_str()] {
        let mut child = env
            .berth_client()
            .args(["agent", "--metrics-listen", bad])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("berth agent --metrics-listen {bad} did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{bad}: {err}");
        assert!(err.contains(&format!("--metrics-listen {bad}")), "{err}");
        assert!(!env.socket().exists(), "{bad}: the agent served");
    }
    // Only the agent has the option.
    let out = env
        .berth()
        .args(["run", "--metrics-listen", "127.0.0.1:0", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("unexpected argument '--metrics-listen'"),
        "{err}"
    );
}
