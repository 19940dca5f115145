//! `berth agent --cri-socket`: the Kubernetes CRI driven over its socket
//! by a gRPC client (the generated runtime.v1 client): pods, containers,
//! exec, logs, stats, images through a registry mirror, an agent restart
//! keeping everything, and a log link planted by a container.

use berth::cri::api::{
    self, image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    ContainerState, PodSandboxState,
};
use berth_tests::{busybox_layout, import_busybox, require_tool, Agent, TestEnv};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn cri_socket(env: &TestEnv) -> PathBuf {
    env.path("cri.sock")
}

fn start(env: &TestEnv, extra: &[&str]) -> Agent {
    let sock = cri_socket(env);
    let mut args = vec!["--cri-socket", sock.to_str().unwrap()];
    args.extend_from_slice(extra);
    let agent = env.start_agent_with("", &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "no CRI socket:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    agent
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn channel(sock: &Path) -> Channel {
    let p = sock.to_path_buf();
    tonic::transport::Endpoint::from_static("http://cri")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = p.clone();
            async move {
                let s = tokio::net::UnixStream::connect(p).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .expect("connect to the CRI socket")
}

struct Cri {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
}

async fn cri(env: &TestEnv) -> Cri {
    let ch = channel(&cri_socket(env)).await;
    Cri {
        rt: RuntimeServiceClient::new(ch.clone()),
        img: ImageServiceClient::new(ch),
    }
}

fn pod_config(name: &str, log_dir: &Path) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "test".into(),
            attempt: 0,
        }),
        hostname: "crihost".into(),
        log_directory: log_dir.display().to_string(),
        dns_config: Some(api::DnsConfig {
            servers: vec!["10.9.8.7".into()],
            searches: vec!["cri.test".into()],
            options: vec![],
        }),
        labels: [("app".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), "kept".to_string())].into(),
        ..Default::default()
    }
}

fn container_config(name: &str, cmd: &[&str]) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: "busybox:latest".into(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: [("role".to_string(), name.to_string())].into(),
        annotations: [("a".to_string(), "b".to_string())].into(),
        ..Default::default()
    }
}

impl Cri {
    async fn run_pod(&mut self, config: &api::PodSandboxConfig) -> String {
        self.rt
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id
    }

    async fn create(
        &mut self,
        pod: &str,
        pc: &api::PodSandboxConfig,
        c: api::ContainerConfig,
    ) -> String {
        self.rt
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(c),
                sandbox_config: Some(pc.clone()),
            })
            .await
            .expect("CreateContainer")
            .into_inner()
            .container_id
    }

    async fn start(&mut self, id: &str) {
        self.rt
            .start_container(api::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .expect("StartContainer");
    }

    async fn status(&mut self, id: &str) -> api::ContainerStatus {
        self.rt
            .container_status(api::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .unwrap()
    }

    async fn exec(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<api::ExecSyncResponse, tonic::Status> {
        self.rt
            .exec_sync(api::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn remove_pod(&mut self, pod: &str) {
        self.rt
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
            .expect("StopPodSandbox");
        self.rt
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
            .expect("RemovePodSandbox");
    }
}

/// Waits until `f` holds (10 s at most).
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_pod_runs_a_container_with_exec_logs_and_stats_then_goes_away() {
    let env = TestEnv::new("cri-life");
    import_busybox(&env);
    let agent = start(&env, &[]);
    let logs = env.mkdir("pod-logs");
    rt().block_on(async {
        let mut c = cri(&env).await;
        let v =
            c.rt.version(api::VersionRequest::default())
                .await
                .unwrap()
                .into_inner();
        assert_eq!(
            (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
            ("berth", "v1")
        );

        let pc = pod_config("life", &logs);
        let pod = c.run_pod(&pc).await;
        let ps =
            c.rt.pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(ps.state, PodSandboxState::SandboxReady as i32);
        assert_eq!(ps.labels.get("app").map(String::as_str), Some("life"));
        assert_eq!(ps.metadata.as_ref().unwrap().name, "life");

        let id = c
            .create(
                &pod,
                &pc,
                container_config(
                    "main",
                    &["sh", "-c", "echo out; echo err >&2; exec sleep 1000"],
                ),
            )
            .await;
        assert_eq!(
            c.status(&id).await.state,
            ContainerState::ContainerCreated as i32
        );
        c.start(&id).await;
        let st = c.status(&id).await;
        assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
        assert!(
            st.started_at >= st.created_at && st.started_at > 0,
            "{st:?}"
        );
        assert_eq!(st.log_path, logs.join("main.log").display().to_string());

        // exec: output, exit code, the pod's hostname and resolv.conf.
        let r = c
            .exec(
                &id,
                &[
                    "sh",
                    "-c",
                    "echo $(hostname); read l < /etc/resolv.conf; echo $l; exit 3",
                ],
                0,
            )
            .await
            .unwrap();
        assert_eq!(r.exit_code, 3, "{}", text(&r.stderr));
        assert_eq!(text(&r.stdout), "crihost\nsearch cri.test\n");
        let e = c.exec(&id, &["sleep", "100"], 1).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");

        // The CRI log: both streams, in the CRI format.
        let log = logs.join("main.log");
        until("the log lines", || {
            let log = log.clone();
            async move {
                let t = std::fs::read_to_string(&log).unwrap_or_default();
                t.contains(" stdout F out\n") && t.contains(" stderr F err\n")
            }
        })
        .await;

        let stats =
            c.rt.container_stats(api::ContainerStatsRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        assert_eq!(stats.attributes.as_ref().unwrap().id, id);
        assert!(stats.memory.unwrap().usage_bytes.unwrap().value > 0);
        assert!(stats.cpu.is_some());

        let list =
            c.rt.list_containers(api::ListContainersRequest {
                filter: Some(api::ContainerFilter {
                    label_selector: [("role".to_string(), "main".to_string())].into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, id);

        c.rt.stop_container(api::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
        let st = c.status(&id).await;
        assert_eq!(st.state, ContainerState::ContainerExited as i32);
        assert!(st.finished_at >= st.started_at, "{st:?}");
        assert_ne!(st.exit_code, 0, "{st:?}");
        c.rt.remove_container(api::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        c.remove_pod(&pod).await;
        let pods =
            c.rt.list_pod_sandbox(api::ListPodSandboxRequest::default())
                .await
                .unwrap()
                .into_inner()
                .items;
        assert!(pods.is_empty(), "{pods:?}");
    });
    assert!(
        env.ps_json(&agent).is_empty(),
        "every berth container went with the pod"
    );
}

#[test]
fn bad_requests_name_what_is_wrong() {
    let env = TestEnv::new("cri-bad");
    import_busybox(&env);
    let _agent = start(&env, &[]);
    let logs = env.mkdir("pod-logs");
    rt().block_on(async {
        let mut c = cri(&env).await;
        let e =
            c.rt.run_pod_sandbox(api::RunPodSandboxRequest::default())
                .await
                .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("no config"), "{e:?}");

        let pc = pod_config("bad", &logs);
        let pod = c.run_pod(&pc).await;
        let mut cc = container_config("x", &["true"]);
        cc.image = Some(api::ImageSpec {
            image: "no-such-image:1".into(),
            ..Default::default()
        });
        let e =
            c.rt.create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(cc),
                sandbox_config: Some(pc.clone()),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(e.message().contains("no-such-image:1"), "{e:?}");

        let e =
            c.rt.start_container(api::StartContainerRequest {
                container_id: "feedface".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(e.message().contains("feedface"), "{e:?}");
        c.remove_pod(&pod).await;
    });
}

#[test]
fn an_agent_restart_keeps_pods_containers_and_their_metadata() {
    let env = TestEnv::new("cri-restart");
    import_busybox(&env);
    let agent = start(&env, &[]);
    let logs = env.mkdir("pod-logs");
    let pc = pod_config("keep", &logs);
    let (pod, running, created) = rt().block_on(async {
        let mut c = cri(&env).await;
        let pod = c.run_pod(&pc).await;
        let running = c
            .create(
                &pod,
                &pc,
                container_config("runs", &["sh", "-c", "echo before; exec sleep 1000"]),
            )
            .await;
        c.start(&running).await;
        let created = c
            .create(
                &pod,
                &pc,
                container_config("waits", &["sh", "-c", "echo later; exec sleep 1000"]),
            )
            .await;
        (pod, running, created)
    });
    agent.terminate();
    let _agent = start(&env, &[]);
    rt().block_on(async {
        let mut c = cri(&env).await;
        let pods =
            c.rt.list_pod_sandbox(api::ListPodSandboxRequest::default())
                .await
                .unwrap()
                .into_inner()
                .items;
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].id, pod);
        assert_eq!(pods[0].state, PodSandboxState::SandboxReady as i32);
        assert_eq!(
            pods[0].annotations.get("note").map(String::as_str),
            Some("kept")
        );

        let st = c.status(&running).await;
        assert_eq!(st.state, ContainerState::ContainerRunning as i32);
        assert_eq!(st.metadata.as_ref().unwrap().name, "runs");
        assert_eq!(st.labels.get("role").map(String::as_str), Some("runs"));
        assert_eq!(st.annotations.get("a").map(String::as_str), Some("b"));
        assert_eq!(st.image.as_ref().unwrap().image, "busybox:latest");
        let st = c.status(&created).await;
        assert_eq!(st.state, ContainerState::ContainerCreated as i32);

        // Both still work: exec in the running one, start the other.
        let r = c
            .exec(&running, &["sh", "-c", "echo alive"], 10)
            .await
            .unwrap();
        assert_eq!(text(&r.stdout), "alive\n");
        c.start(&created).await;
        let log = logs.join("waits.log");
        until("the started container's log", || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains(" stdout F later\n")
            }
        })
        .await;
        // The relay resumed where it was: the first line once.
        let first = std::fs::read_to_string(logs.join("runs.log")).unwrap();
        assert_eq!(first.matches("before").count(), 1, "{first}");
        c.remove_pod(&pod).await;
    });
}

/// A container replaces its sandbox's log file with a link to a host
/// file; the relay opening it again (after an agent restart) refuses the
/// link, so the host file never reaches the CRI log.
#[test]
fn a_log_link_planted_in_the_sandbox_is_not_followed() {
    let env = TestEnv::new("cri-attack");
    import_busybox(&env);
    let secret = env.path("secret");
    std::fs::write(&secret, "host-secret-content\n").unwrap();
    let agent = start(&env, &[]);
    let logs = env.mkdir("pod-logs");
    let pc = pod_config("attack", &logs);
    let script = format!(
        "echo planted; while [ ! -L /mnt/sandbox/container.log ]; do \
         rm -f /mnt/sandbox/container.log; ln -s {} /mnt/sandbox/container.log; done; exec sleep 1000",
        secret.display()
    );
    let pod = rt().block_on(async {
        let mut c = cri(&env).await;
        let pod = c.run_pod(&pc).await;
        let id = c
            .create(&pod, &pc, container_config("evil", &["sh", "-c", &script]))
            .await;
        c.start(&id).await;
        let r = c
            .exec(
                &id,
                &[
                    "sh",
                    "-c",
                    "while [ ! -L /mnt/sandbox/container.log ]; do sleep 0.1; done; echo linked",
                ],
                10,
            )
            .await
            .unwrap();
        assert_eq!(text(&r.stdout), "linked\n", "{}", text(&r.stderr));
        pod
    });
    agent.terminate();
    let _agent = start(&env, &[]);
    rt().block_on(async {
        let mut c = cri(&env).await;
        // Time for the resumed relay to have tried.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let log = std::fs::read_to_string(logs.join("evil.log")).unwrap_or_default();
        assert!(
            !log.contains("host-secret-content"),
            "the host file leaked: {log}"
        );
        c.remove_pod(&pod).await;
    });
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "host-secret-content\n"
    );
}

/// Debian's docker-registry on a free 127.0.0.1 port; killed on drop.
struct Registry(std::process::Child, String);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn registry(env: &TestEnv) -> Registry {
    require_tool("docker-registry");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = env.path("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            env.mkdir("registry").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reg = Registry(child, addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&reg.1).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    reg
}

#[test]
fn images_are_pulled_through_a_mirror_then_listed_and_removed() {
    let env = TestEnv::new("cri-images");
    require_tool("skopeo");
    let reg = registry(&env);
    let layout = busybox_layout(&env);
    let out = std::process::Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{}/tools/busybox:1.0", reg.1))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
    let mirror = format!("example.org=http://{}", reg.1);
    let _agent = start(&env, &["--registry-mirror", &mirror]);
    rt().block_on(async {
        let mut c = cri(&env).await;
        let name = "example.org/tools/busybox:1.0";
        let spec = |image: &str| {
            Some(api::ImageSpec {
                image: image.into(),
                ..Default::default()
            })
        };
        let absent = c
            .img
            .image_status(api::ImageStatusRequest {
                image: spec(name),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(absent.image.is_none());
        let id = c
            .img
            .pull_image(api::PullImageRequest {
                image: spec(name),
                ..Default::default()
            })
            .await
            .expect("pull through the mirror")
            .into_inner()
            .image_ref;
        assert!(id.starts_with("sha256:"), "{id}");
        let img = c
            .img
            .image_status(api::ImageStatusRequest {
                image: spec(name),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .unwrap();
        assert_eq!(img.id, id);
        assert_eq!(img.repo_tags, vec![name.to_string()]);
        assert_eq!(
            img.repo_digests,
            vec![format!("example.org/tools/busybox@{id}")]
        );
        assert!(img.size > 0);
        // By id, too.
        let by_id = c
            .img
            .image_status(api::ImageStatusRequest {
                image: spec(&id),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .unwrap();
        assert_eq!(by_id.id, id);
        let listed = c
            .img
            .list_images(api::ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images;
        assert_eq!(listed.len(), 1);

        // A registry with no mirror is not reached by way of the mirror.
        let e = c
            .img
            .pull_image(api::PullImageRequest {
                image: spec("127.0.0.1:1/nothing:1"),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(e.message().contains("127.0.0.1:1"), "{e:?}");

        c.img
            .remove_image(api::RemoveImageRequest { image: spec(name) })
            .await
            .unwrap();
        let gone = c
            .img
            .image_status(api::ImageStatusRequest {
                image: spec(name),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(gone.image.is_none());
        // Removing it again is no error.
        c.img
            .remove_image(api::RemoveImageRequest { image: spec(name) })
            .await
            .unwrap();
        let fs = c
            .img
            .image_fs_info(api::ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fs.image_filesystems.len(), 1);
    });
}

/// `drop: [ALL]` leaves no capability at all (not berth's default set),
/// and supplementary groups reach the command and its execs.
#[test]
fn a_security_context_drops_every_capability_and_adds_groups() {
    let env = TestEnv::new("cri-secctx");
    import_busybox(&env);
    let _agent = start(&env, &[]);
    let logs = env.mkdir("pod-logs");
    let pc = pod_config("sec", &logs);
    rt().block_on(async {
        let mut c = cri(&env).await;
        let pod = c.run_pod(&pc).await;
        let mut cc = container_config("capless", &["sleep", "1000"]);
        cc.linux = Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                capabilities: Some(api::Capability {
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                supplemental_groups: vec![1234, 5678],
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = c.create(&pod, &pc, cc).await;
        c.start(&id).await;
        let script = "while read k v; do case $k in CapBnd:|CapEff:|Groups:) echo $k $v;; esac; done < /proc/self/status";
        let r = c.exec(&id, &["sh", "-c", script], 10).await.unwrap();
        let out = text(&r.stdout);
        assert!(out.contains("CapEff: 0000000000000000\n"), "{out}");
        assert!(out.contains("CapBnd: 0000000000000000\n"), "{out}");
        assert!(out.contains("1234") && out.contains("5678"), "{out}");
        c.remove_pod(&pod).await;
    });
}

/// The client-go program of the streaming suite (tests/streamclient),
/// built once per test binary.
fn stream_client() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("streamclient/build");
        let out = std::process::Command::new(&script)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            text(&out.stderr)
        );
        PathBuf::from(text(&out.stdout).trim())
    })
    .clone()
}

/// Exec, Attach and PortForward through the URLs the CRI hands out, with
/// kubelet's own client library (SPDY): stdin, both outputs and the exit
/// code of an exec; a GET through a port forward into the pod's network
/// namespace; and the requests that are refused, with why.
#[test]
fn exec_and_port_forward_go_through_the_urls_the_cri_hands_out() {
    let env = TestEnv::new("cri-stream");
    import_busybox(&env);
    let _agent = start(&env, &[]);
    let logs = env.mkdir("pod-logs");
    let client = stream_client();
    rt().block_on(async {
        let mut c = cri(&env).await;
        let pc = pod_config("stream", &logs);
        let pod = c.run_pod(&pc).await;
        let www = "mkdir -p /www && echo hello-from-the-pod > /www/index.html && \
                   exec httpd -f -p 127.0.0.1:8080 -h /www";
        let id = c
            .create(&pod, &pc, container_config("web", &["sh", "-c", www]))
            .await;
        c.start(&id).await;

        let url =
            c.rt.exec(api::ExecRequest {
                container_id: id.clone(),
                cmd: ["sh", "-c", "read x; echo got $x; echo oops >&2; exit 3"]
                    .map(String::from)
                    .to_vec(),
                tty: false,
                stdin: true,
                stdout: true,
                stderr: true,
            })
            .await
            .expect("Exec")
            .into_inner()
            .url;
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let out = std::process::Command::new(&client)
            .args(["exec", &url, "-stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut ch| {
                use std::io::Write;
                ch.stdin.take().unwrap().write_all(b"there\n")?;
                ch.wait_with_output()
            })
            .expect("run the stream client");
        assert_eq!(text(&out.stdout), "got there\n", "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("oops"), "{}", text(&out.stderr));
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

        // The port forward: the pod's own loopback, which the host cannot
        // reach any other way.
        let mut url =
            c.rt.port_forward(api::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![8080],
            })
            .await
            .expect("PortForward")
            .into_inner()
            .url;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = std::process::Command::new(&client)
                .args(["portforward", &url, "-port", "8080", "-path", "/index.html"])
                .output()
                .unwrap();
            if text(&out.stdout).contains("hello-from-the-pod") {
                break;
            }
            // httpd may not listen yet: a URL is good once, so ask anew.
            assert!(
                Instant::now() < deadline,
                "no page through the port forward: {} {}",
                text(&out.stdout),
                text(&out.stderr)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            let r =
                c.rt.port_forward(api::PortForwardRequest {
                    pod_sandbox_id: pod.clone(),
                    port: vec![8080],
                })
                .await
                .expect("PortForward");
            url = r.into_inner().url;
        }

        // Refused, naming why.
        let exec = |container_id: &str, tty: bool, stderr: bool| api::ExecRequest {
            container_id: container_id.into(),
            cmd: vec!["true".into()],
            tty,
            stdin: false,
            stdout: true,
            stderr,
        };
        let e = c.rt.exec(exec(&id, true, true)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("tty and stderr"), "{e:?}");
        let e = c.rt.exec(exec("feedface", false, true)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        assert!(e.message().contains("feedface"), "{e:?}");
        let e =
            c.rt.attach(api::AttachRequest {
                container_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let e =
            c.rt.port_forward(api::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![70000],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("70000"), "{e:?}");

        c.rt.remove_container(api::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        c.remove_pod(&pod).await;
    });
}

/// The security context's masked and read-only paths, added to berth's
/// own: a masked file reads empty, a masked directory is an empty
/// read-only tmpfs, a read-only path refuses writes (its bind-mounted
/// files too), a missing path is skipped; each is resolved inside the
/// container's root, so `..` cannot climb out of it. A relative path is
/// refused, naming it.
#[test]
fn masked_and_read_only_paths_of_the_security_context() {
    let env = TestEnv::new("cri-masks");
    import_busybox(&env);
    let _agent = start(&env, &[]);
    let logs = env.mkdir("pod-logs");
    let pc = pod_config("masks", &logs);
    rt().block_on(async {
        let mut c = cri(&env).await;
        let pod = c.run_pod(&pc).await;
        let id0 = c
            .create(&pod, &pc, container_config("plain", &["sleep", "1000"]))
            .await;
        c.start(&id0).await;
        let with = |masked: &[&str], readonly: &[&str]| {
            let mut cc = container_config("masked", &["sleep", "1000"]);
            cc.linux = Some(api::LinuxContainerConfig {
                security_context: Some(api::LinuxContainerSecurityContext {
                    masked_paths: masked.iter().map(|s| s.to_string()).collect(),
                    readonly_paths: readonly.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            cc
        };
        // The image has /bin (busybox) and the pod's /etc/hosts (a bind);
        // the sandbox is at /mnt/sandbox.
        let before = c
            .exec(&id0, &["sh", "-c", "cat /etc/hosts"], 10)
            .await
            .unwrap();
        assert!(text(&before.stdout).contains("localhost"), "{before:?}");
        let cc = with(
            &["/etc/hosts", "/mnt/sandbox", "/no/such/path"],
            &["/../../../bin"],
        );
        let id = c.create(&pod, &pc, cc).await;
        c.start(&id).await;
        let script = "echo hosts=[$(cat /etc/hosts)]; \
                      touch /mnt/sandbox/x 2>&1; ls -a /mnt/sandbox | wc -l; \
                      touch /bin/x 2>&1; echo done";
        let r = c.exec(&id, &["sh", "-c", script], 10).await.unwrap();
        let out = text(&r.stdout);
        assert!(out.contains("hosts=[]\n"), "{out}");
        assert!(
            out.contains("touch: /mnt/sandbox/x: Read-only file system\n2\n"),
            "{out}"
        );
        // `..` stayed inside the root: the container's /bin is read-only.
        assert!(
            out.contains("touch: /bin/x: Read-only file system"),
            "{out}"
        );
        assert!(out.ends_with("done\n"), "{out}");

        let mut bad = with(&["etc/passwd"], &[]);
        bad.metadata.as_mut().unwrap().name = "bad".into();
        let e =
            c.rt.create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(bad),
                sandbox_config: Some(pc.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id);
        let e = match e {
            // Refused at create, or at start (the launch validates).
            Err(e) => e,
            Ok(id) => {
                c.rt.start_container(api::StartContainerRequest { container_id: id })
                    .await
                    .unwrap_err()
            }
        };
        assert!(e.message().contains("\"etc/passwd\""), "{e:?}");
        c.remove_pod(&pod).await;
    });
}

#[test]
fn host_pid_mount_propagation_and_no_new_privs_of_the_cri() {
    let env = TestEnv::new("cri-nsprop");
    import_busybox(&env);
    // A shared mount to propagate from (the host's / is private here).
    let src = env.mkdir("shared");
    let s = src.display().to_string();
    let sh = |script: &str| {
        let ok = std::process::Command::new("sh")
            .args(["-ec", script])
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    };
    sh(&format!("mount --bind {s} {s} && mount --make-shared {s}"));
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .args(["-R", "-l", &self.0])
                .status();
        }
    }
    let _unmount = Unmount(s.clone());
    let _agent = start(&env, &["--volume-allow-rw", &s]);
    let logs = env.mkdir("pod-logs");
    let mut pc = pod_config("nsprop", &logs);
    pc.linux = Some(api::LinuxPodSandboxConfig {
        security_context: Some(api::LinuxSandboxSecurityContext {
            namespace_options: Some(api::NamespaceOption {
                pid: api::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mount = |propagation: api::MountPropagation| api::Mount {
        container_path: "/vol".into(),
        host_path: s.clone(),
        propagation: propagation as i32,
        ..Default::default()
    };
    rt().block_on(async {
        let mut c = cri(&env).await;
        let pod = c.run_pod(&pc).await;
        let mut cc = container_config("slave", &["sleep", "1000"]);
        cc.mounts = vec![mount(api::MountPropagation::PropagationHostToContainer)];
        let id = c.create(&pod, &pc, cc).await;
        c.start(&id).await;
        // The host's pid namespace: its pid 1 is the host's.
        let r = c
            .exec(&id, &["sh", "-c", "cat /proc/1/comm"], 10)
            .await
            .unwrap();
        let host_init = std::fs::read_to_string("/proc/1/comm").unwrap();
        assert_eq!(text(&r.stdout), host_init);
        // A mount the host makes under the source shows inside.
        std::fs::create_dir(src.join("sub")).unwrap();
        sh(&format!(
            "mount -t tmpfs cri-host {s}/sub && echo seen > {s}/sub/m"
        ));
        let r = c
            .exec(&id, &["sh", "-c", "cat /vol/sub/m"], 10)
            .await
            .unwrap();
        assert_eq!(text(&r.stdout), "seen\n", "{r:?}");
        let st = c.status(&id).await;
        assert_eq!(
            st.mounts[0].propagation,
            api::MountPropagation::PropagationHostToContainer as i32
        );

        // Bidirectional needs a privileged container.
        let mut cc = container_config("shared", &["sleep", "1000"]);
        cc.mounts = vec![mount(api::MountPropagation::PropagationBidirectional)];
        let id = c.create(&pod, &pc, cc).await;
        let e =
            c.rt.start_container(api::StartContainerRequest { container_id: id })
                .await
                .unwrap_err();
        assert!(e.message().contains("privileged"), "{e:?}");

        // no_new_privs: /proc/self/status says which.
        for (nnp, want) in [(true, "1"), (false, "0")] {
            let mut cc = container_config(&format!("nnp-{nnp}"), &["sleep", "1000"]);
            cc.linux = Some(api::LinuxContainerConfig {
                security_context: Some(api::LinuxContainerSecurityContext {
                    no_new_privs: nnp,
                    ..Default::default()
                }),
                ..Default::default()
            });
            let id = c.create(&pod, &pc, cc).await;
            c.start(&id).await;
            let r = c
                .exec(&id, &["sh", "-c", "grep NoNewPrivs /proc/self/status"], 10)
                .await
                .unwrap();
            let out = text(&r.stdout);
            assert_eq!(out.split_whitespace().nth(1), Some(want), "{nnp}: {out}");
        }
        c.remove_pod(&pod).await;
    });
}
