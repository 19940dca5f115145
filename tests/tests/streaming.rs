//! The CRI streaming server (`berth::streaming`), driven by the clients
//! kubelet's callers and critest use: client-go's SPDY remotecommand
//! executor and port forwarder, in `tests/streamclient` (a Go program built
//! offline against the client-go that cri-tools vendors). The server runs
//! on a real containerizer in the test process, with busybox containers:
//! exec (pipes, with stdin and the exit code; a terminal with a resize),
//! attach, and port forwarding into a pod's own network namespace.

use berth::streaming::{AttachStream, ExecStream, PortForwardStream, StreamingServer};
use berth::{ContainerConfig, Containerizer};
use berth_provisioner::import::import;
use berth_provisioner::ImageProvisioner;
use berth_state::model::network;
use berth_state::ContainerId;
use berth_state::Network;
use berth_tests::{busybox_layout, TestEnv};
use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The client, built once per test binary (the build script reuses a
/// finished build and serializes parallel ones).
fn client() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("streamclient/build");
        let out = std::process::Command::new(&script)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
        assert!(bin.is_file(), "the build printed {}", bin.display());
        bin
    })
    .clone()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the client with `stdin` as its input; kills it after 60 s.
async fn run_client(args: &[&str], stdin: &[u8]) -> Output {
    let bin = tokio::task::spawn_blocking(client).await.unwrap();
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start berth-stream-client");
    let mut w = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = w.write_all(&input).await;
        // Dropped: the client reads EOF.
    });
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("berth-stream-client {args:?} ran over 60 s"))
        .unwrap()
}

/// A containerizer on the test's env with busybox imported.
async fn containerizer(env: &TestEnv) -> Containerizer {
    let layout = busybox_layout(env);
    let prov = ImageProvisioner::open(env.state_dir.join("images")).unwrap();
    import(prov.store(), &layout, Some("busybox")).unwrap();
    let c = Containerizer::builder(&env.state_dir, &env.runtime_dir)
        .cgroup_root(&env.cgroup_root)
        .supervisor(env!("CARGO_BIN_EXE_berth-test-supervisor"))
        .default_isolators()
        .provisioner(prov)
        .build()
        .unwrap();
    c.recover().await.unwrap();
    c
}

fn busybox(script: &str) -> ContainerConfig {
    ContainerConfig {
        image: "busybox".into(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// Destroys and removes every container (and checks none is left).
async fn clean(c: &Containerizer) {
    for id in c.containers().await.unwrap() {
        if id.to_string().contains('/') {
            continue;
        }
        let _ = c.destroy(id.clone()).await;
        c.remove(id).await.unwrap();
    }
    let left = c.containers().await.unwrap();
    assert!(left.is_empty(), "containers left: {left:?}");
}

fn exec(c: &ContainerId, cmd: &[&str], tty: bool, stdin: bool) -> ExecStream {
    ExecStream {
        container: c.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

/// A raw HTTP/1.1 request to the server; its status line and body.
async fn raw_request(addr: std::net::SocketAddr, req: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the server answers within 10 s")
        .unwrap();
    let reply = text(&buf[..n]);
    let status = reply.lines().next().unwrap_or("").to_string();
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    format!("{status} {body}")
}

#[actix_rt::test]
async fn exec_streams_stdio_and_the_exit_code_and_urls_are_single_use() {
    let env = TestEnv::new("stream-exec");
    let c = containerizer(&env).await;
    let server = StreamingServer::start("127.0.0.1:0".parse().unwrap(), c.clone())
        .await
        .unwrap();
    let id = ContainerId::new(format!("{}-c", env.name));
    c.launch(id.clone(), busybox("exec sleep 600"))
        .await
        .unwrap();

    // As critest's first exec spec: stdout and stderr, no stdin, no tty.
    let url = server.exec_url(exec(&id, &["sh", "-c", "echo hello"], false, false));
    let out = run_client(&["exec", &url], b"").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\n");
    assert_eq!(text(&out.stderr), "");

    // Stdin through to EOF, both outputs apart, and the exit code.
    let script = "while read l; do echo out:$l; echo err:$l >&2; done; exit 3";
    let url = server.exec_url(exec(&id, &["sh", "-c", script], false, true));
    let out = run_client(&["exec", &url, "-stdin"], b"one\ntwo\n").await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out:one\nout:two\n");
    assert_eq!(text(&out.stderr), "err:one\nerr:two\nexit code 3\n");

    // The URL was used up: a second connection is refused.
    let again = run_client(&["exec", &url, "-stdin"], b"").await;
    assert_eq!(again.status.code(), Some(125), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("an unknown, used or expired streaming URL"),
        "{}",
        text(&again.stderr)
    );

    // A command that cannot start is a Failure status, not an exit code.
    let url = server.exec_url(exec(&id, &["/no/such/command"], false, false));
    let out = run_client(&["exec", &url], b"").await;
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("/no/such/command"),
        "{}",
        text(&out.stderr)
    );

    // Requests that are not SPDY upgrades, and unknown tokens.
    let addr = server.addr();
    let token = server.exec_url(exec(&id, &["true"], false, false));
    let path = token.split_once(&addr.to_string()).unwrap().1.to_string();
    let plain = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    let r = raw_request(addr, &plain).await;
    assert!(r.contains(" 400 ") && r.contains("SPDY/3.1 only"), "{r}");
    let unknown_protocol = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v5.channel.k8s.io\r\n\r\n"
    );
    let r = raw_request(addr, &unknown_protocol).await;
    assert!(
        r.contains(" 403 ") && r.contains("unable to negotiate"),
        "{r}"
    );
    let unknown = "POST /exec/0123 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
                   Upgrade: SPDY/3.1\r\n\r\n";
    let r = raw_request(addr, unknown).await;
    assert!(
        r.contains(" 404 ") && r.contains("expired streaming URL"),
        "{r}"
    );

    // Each exec's DEBUG container is gone once its stream ended.
    let all = c.containers().await.unwrap();
    assert_eq!(all, vec![id.clone()], "{all:?}");
    clean(&c).await;
}

#[actix_rt::test]
async fn exec_with_a_terminal_takes_its_size_from_the_resize_stream() {
    let env = TestEnv::new("stream-tty");
    let c = containerizer(&env).await;
    let server = StreamingServer::start("127.0.0.1:0".parse().unwrap(), c.clone())
        .await
        .unwrap();
    let id = ContainerId::new(format!("{}-c", env.name));
    c.launch(id.clone(), busybox("exec sleep 600"))
        .await
        .unwrap();
    // The client sends the size before any stdin: the command's read
    // returns only after the size is in place.
    let cmd = ["sh", "-c", "read x; busybox stty size; tty; exit 4"];
    let url = server.exec_url(exec(&id, &cmd, true, true));
    let out = run_client(
        &["exec", &url, "-tty", "-stdin", "-size", "123x40"],
        b"go\n",
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout} {}", text(&out.stderr));
    assert!(stdout.contains("40 123\r\n"), "{stdout:?}");
    assert!(stdout.contains("/dev/pts/"), "{stdout:?}");
    let all = c.containers().await.unwrap();
    assert_eq!(all, vec![id.clone()], "{all:?}");
    clean(&c).await;
}

#[actix_rt::test]
async fn attach_relays_the_containers_stdio() {
    let env = TestEnv::new("stream-attach");
    let c = containerizer(&env).await;
    let server = StreamingServer::start("127.0.0.1:0".parse().unwrap(), c.clone())
        .await
        .unwrap();
    let id = ContainerId::new(format!("{}-c", env.name));
    // As critest's attach spec: a shell reading its stdin, here echoing
    // each line to both outputs until its stdin closes.
    let config = ContainerConfig {
        stdin_open: true,
        ..busybox("while read l; do echo got:$l; echo err:$l >&2; done; echo bye")
    };
    c.launch(id.clone(), config).await.unwrap();
    let url = server.attach_url(AttachStream {
        container: id.clone(),
        tty: false,
        stdin: true,
        stdout: true,
        stderr: true,
    });
    let out = run_client(&["attach", &url, "-stdin"], b"hello\nworld\n").await;
    let st = c.status(id.clone()).await.unwrap();
    let log = std::fs::read_to_string(st.sandbox_dir.join("stdout")).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "got:hello\ngot:world\nbye\n",
        "the container's log: {log:?}, its termination: {:?}",
        st.termination
    );
    assert_eq!(text(&out.stderr), "err:hello\nerr:world\n");
    // The client's EOF closed the container's stdin: it ended.
    let t = tokio::time::timeout(Duration::from_secs(10), c.wait(id.clone()))
        .await
        .expect("the container ends once its stdin closes")
        .unwrap();
    assert_eq!(t.exit_code, 0);

    // A terminal: its size comes over the resize stream.
    let tty = ContainerId::new(format!("{}-tty", env.name));
    let config = ContainerConfig {
        stdin_open: true,
        tty: true,
        ..busybox("read x; busybox stty size")
    };
    c.launch(tty.clone(), config).await.unwrap();
    let url = server.attach_url(AttachStream {
        container: tty.clone(),
        tty: true,
        stdin: true,
        stdout: true,
        stderr: true,
    });
    let args = ["attach", &url, "-tty", "-stdin", "-size", "50x20"];
    let out = run_client(&args, b"go\n").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("20 50\r\n"),
        "{:?}",
        text(&out.stdout)
    );

    // Attaching to an ended container is a Failure status.
    let url = server.attach_url(AttachStream {
        container: id.clone(),
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
    });
    let out = run_client(&["attach", &url], b"").await;
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not running"),
        "{}",
        text(&out.stderr)
    );
    clean(&c).await;
}

/// True once `pid`'s network namespace has a TCP socket listening on
/// `port` (read through the process's own /proc view).
fn listening(pid: i32, port: u16) -> bool {
    let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let want = format!(":{port:04X}");
    tcp.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
    })
}

#[actix_rt::test]
async fn port_forward_reaches_a_port_inside_the_pods_network_namespace() {
    let env = TestEnv::new("stream-pf");
    let c = containerizer(&env).await;
    let server = StreamingServer::start("127.0.0.1:0".parse().unwrap(), c.clone())
        .await
        .unwrap();
    let id = ContainerId::new(format!("{}-pod", env.name));
    // An httpd on the pod's own loopback: the host's 127.0.0.1 is
    // another interface, so only a connect made inside the pod's network
    // namespace reaches it.
    let config = ContainerConfig {
        network: Some(Network {
            mode: network::Mode::None as i32,
            cni_network: String::new(),
        }),
        ..busybox(
            "mkdir /www && echo hello-from-the-pod > /www/index.html && \
             exec busybox httpd -f -p 127.0.0.1:8080 -h /www",
        )
    };
    c.launch(id.clone(), config).await.unwrap();
    let pid = c.status(id.clone()).await.unwrap().init.unwrap().pid;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening(pid, 8080) {
        assert!(Instant::now() < deadline, "the pod's httpd never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Two GETs, two connections: two stream pairs on one SPDY session.
    let url = server.port_forward_url(PortForwardStream {
        pod: id.clone(),
        ports: vec![],
    });
    let args = [
        "portforward",
        &url,
        "-port",
        "8080",
        "-path",
        "/index.html",
        "-gets",
        "2",
    ];
    let out = run_client(&args, b"").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "200 hello-from-the-pod\n\n200 hello-from-the-pod\n\n"
    );

    // Nothing listens on 8081 in the pod: the error stream says why.
    let url = server.port_forward_url(PortForwardStream {
        pod: id.clone(),
        ports: vec![],
    });
    let out = run_client(&["portforward", &url, "-port", "8081"], b"").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1:8081 in the pod") && stderr.contains("refused"),
        "{stderr}"
    );

    // A URL made for some ports forwards only those.
    let url = server.port_forward_url(PortForwardStream {
        pod: id.clone(),
        ports: vec![8081],
    });
    let out = run_client(&["portforward", &url, "-port", "8080"], b"").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("port 8080 is not among those this URL forwards"),
        "{}",
        text(&out.stderr)
    );

    // Once the pod has ended, nothing is entered: its init's pid may be
    // another process's by now.
    c.destroy(id.clone()).await.unwrap();
    let url = server.port_forward_url(PortForwardStream {
        pod: id.clone(),
        ports: vec![],
    });
    let out = run_client(&["portforward", &url, "-port", "8080"], b"").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("is not running"),
        "{}",
        text(&out.stderr)
    );
    clean(&c).await;
}

/// The DEBUG containers of `parent` (execs) now.
async fn execs(c: &Containerizer) -> Vec<ContainerId> {
    let all = c.containers().await.unwrap();
    all.into_iter()
        .filter(|i| i.to_string().contains("/exec-"))
        .collect()
}

/// Starts the client on `url`, waits for the exec's DEBUG container, kills
/// the client and waits (15 s at most) for the DEBUG container to go.
async fn hang_up(c: &Containerizer, args: &[&str]) {
    let bin = tokio::task::spawn_blocking(client).await.unwrap();
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while execs(c).await.is_empty() {
        assert!(Instant::now() < deadline, "the exec never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let it run (and, chatty, write) a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = execs(c).await;
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?}: the exec outlived its client: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_rt::test]
async fn an_exec_whose_client_hangs_up_is_destroyed() {
    let env = TestEnv::new("stream-hangup");
    let c = containerizer(&env).await;
    let server = StreamingServer::start("127.0.0.1:0".parse().unwrap(), c.clone())
        .await
        .unwrap();
    let id = ContainerId::new(format!("{}-c", env.name));
    c.launch(id.clone(), busybox("exec sleep 600"))
        .await
        .unwrap();
    // A quiet command, and chatty ones that never stop writing (their
    // output is still flowing when the client goes), with and without a
    // terminal.
    let url = server.exec_url(exec(&id, &["sleep", "600"], false, false));
    hang_up(&c, &["exec", &url]).await;
    let chatty = ["sh", "-c", "while :; do echo chatter; done"];
    let url = server.exec_url(exec(&id, &chatty, false, false));
    hang_up(&c, &["exec", &url]).await;
    let url = server.exec_url(exec(&id, &chatty, true, true));
    hang_up(&c, &["exec", &url, "-tty", "-stdin"]).await;
    // The container it ran in is untouched.
    let st = c.status(id.clone()).await.unwrap();
    assert!(st.termination.is_none(), "{:?}", st.termination);
    clean(&c).await;
}

#[actix_rt::test]
async fn the_older_remotecommand_protocols_are_spoken_too() {
    let env = TestEnv::new("stream-proto");
    let c = containerizer(&env).await;
    let server = StreamingServer::start("127.0.0.1:0".parse().unwrap(), c.clone())
        .await
        .unwrap();
    let id = ContainerId::new(format!("{}-c", env.name));
    c.launch(id.clone(), busybox("exec sleep 600"))
        .await
        .unwrap();
    let script = "while read l; do echo out:$l; echo err:$l >&2; done; exit 3";
    // v3 and v2: the client ends stdin with FIN; the outcome is text.
    for p in ["v3.channel.k8s.io", "v2.channel.k8s.io"] {
        let url = server.exec_url(exec(&id, &["sh", "-c", script], false, true));
        let out = run_client(&["exec", &url, "-stdin", "-protocol", p], b"one\n").await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{p}: {stderr}");
        assert_eq!(text(&out.stdout), "out:one\n", "{p}");
        assert!(stderr.starts_with("err:one\n"), "{p}: {stderr}");
        assert!(
            stderr.contains("command terminated with non-zero exit code: 3"),
            "{p}: {stderr}"
        );
    }
    // v3 has the resize stream; v2 has none (and gets no stderr with a tty).
    let cmd = ["sh", "-c", "read x; busybox stty size"];
    let url = server.exec_url(exec(&id, &cmd, true, true));
    let args = [
        "exec",
        &url,
        "-tty",
        "-stdin",
        "-size",
        "99x33",
        "-protocol",
        "v3.channel.k8s.io",
    ];
    let out = run_client(&args, b"go\n").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("33 99\r\n"),
        "{:?}",
        text(&out.stdout)
    );
    let url = server.exec_url(exec(&id, &["sh", "-c", "busybox tty"], true, false));
    let out = run_client(
        &["exec", &url, "-tty", "-protocol", "v2.channel.k8s.io"],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("/dev/pts/"),
        "{:?}",
        text(&out.stdout)
    );
    // channel.k8s.io (v1): its client never closes stdin, so no stdin here.
    let cmd = ["sh", "-c", "echo hello; echo oops >&2"];
    let url = server.exec_url(exec(&id, &cmd, false, false));
    let out = run_client(&["exec", &url, "-protocol", "channel.k8s.io"], b"").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        (text(&out.stdout).as_str(), text(&out.stderr).as_str()),
        ("hello\n", "oops\n")
    );
    let url = server.exec_url(exec(&id, &["sh", "-c", "exit 5"], false, false));
    let out = run_client(&["exec", &url, "-protocol", "channel.k8s.io"], b"").await;
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("command terminated with non-zero exit code: 5"),
        "{}",
        text(&out.stderr)
    );
    let all = c.containers().await.unwrap();
    assert_eq!(all, vec![id.clone()], "{all:?}");
    clean(&c).await;
}

#[actix_rt::test]
async fn megabytes_pass_whole_both_ways() {
    use sha2::{Digest, Sha256};
    let env = TestEnv::new("stream-big");
    let c = containerizer(&env).await;
    let server = StreamingServer::start("127.0.0.1:0".parse().unwrap(), c.clone())
        .await
        .unwrap();
    let id = ContainerId::new(format!("{}-pod", env.name));
    let config = ContainerConfig {
        network: Some(Network {
            mode: network::Mode::None as i32,
            cni_network: String::new(),
        }),
        ..busybox(
            "mkdir /www && busybox head -c 3000000 /dev/zero | busybox tr '\\0' x > /www/big && \
             exec busybox httpd -f -p 127.0.0.1:8080 -h /www",
        )
    };
    c.launch(id.clone(), config).await.unwrap();

    // 3 MB out of an exec (many DATA frames, the pipe's backpressure).
    let cmd = [
        "sh",
        "-c",
        "busybox head -c 3000000 /dev/zero | busybox tr '\\0' y",
    ];
    let url = server.exec_url(exec(&id, &cmd, false, false));
    let out = run_client(&["exec", &url], b"").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 3_000_000);
    assert!(out.stdout.iter().all(|b| *b == b'y'));

    // 2 MB into one, checked by its digest inside.
    let input: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let want = format!("{:x}", Sha256::digest(&input));
    let url = server.exec_url(exec(&id, &["busybox", "sha256sum"], false, true));
    let out = run_client(&["exec", &url, "-stdin"], &input).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{want}  -\n"));

    // 3 MB through a port forward.
    let pid = c.status(id.clone()).await.unwrap().init.unwrap().pid;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening(pid, 8080) {
        assert!(Instant::now() < deadline, "the pod's httpd never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = server.port_forward_url(PortForwardStream {
        pod: id.clone(),
        ports: vec![8080],
    });
    let args = ["portforward", &url, "-port", "8080", "-path", "/big"];
    let out = run_client(&args, b"").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let body = out.stdout.strip_prefix(b"200 ").expect("a 200");
    assert_eq!(body.len(), 3_000_001);
    assert!(body[..3_000_000].iter().all(|b| *b == b'x'));
    clean(&c).await;
}
