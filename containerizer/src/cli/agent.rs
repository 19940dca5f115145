//! `berth agent` and its clients (`launch`, `ps`, `wait`, `kill`,
//! `destroy`, `rm`, `stats`, `update`, `events`), in the style of ctr and
//! podman: each client makes one gRPC call on the agent's socket.

use crate::{config_of, process_exit_code, shutdown_signal, termination_json, Cli, RunArgs};
use anyhow::{bail, Context as _, Result};
use berth::agent::api::{
    self, ContainerRef, EventsRequest, KillRequest, LaunchRequest, ListRequest, UpdateRequest,
};
use berth::{ContainerId, ContainerState, ResourceStatistics, Resources};
use clap::Args;

#[derive(Args)]
pub struct IdArgs {
    /// The container's id.
    pub id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct StopArgs {
    /// The container's id.
    pub id: String,
    /// Seconds between SIGTERM and SIGKILL (fractions allowed).
    #[arg(long, default_value_t = 10.0, value_parser = parse_grace)]
    pub grace: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_grace(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "--grace {s:?}: expected seconds between 0 and 86400"
        )),
    }
}

#[derive(Args)]
pub struct JsonArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct LogsArgs {
    /// The container's id.
    pub id: String,
    /// Keep printing new output until the container ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (per stream with the plain log format).
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Only output since a time: RFC 3339 (2024-05-01T10:00:00Z) or an age
    /// (10s, 5m, 2h, 1d); needs the cri log format.
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<i64>,
    /// Only stdout.
    #[arg(long, conflicts_with = "stderr_only")]
    pub stdout_only: bool,
    /// Only stderr.
    #[arg(long)]
    pub stderr_only: bool,
}

/// `--since`: RFC 3339, or an age before now (`90s`, `5m`, `2h`, `1d`,
/// `1500ms`), as nanoseconds since the epoch.
pub fn parse_since(s: &str) -> Result<i64, String> {
    if let Some(t) = berth::state::time::parse_rfc3339(s) {
        return Ok(t);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| {
            format!("--since {s:?}: give a unit (10s, 5m, 2h, 1d) or an RFC 3339 time")
        })?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("--since {s:?}: expected RFC 3339 or an age like 10s, 5m"))?;
    let unit_ns: f64 = match unit {
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        "d" => 86400e9,
        _ => {
            return Err(format!(
                "--since {s:?}: unit {unit:?} is not ms, s, m, h or d"
            ))
        }
    };
    Ok(berth::state::time::now_unix_nanos() - (n * unit_ns) as i64)
}

/// Prints the container's logs: stdout chunks to stdout, stderr to stderr.
pub async fn logs(cli: &Cli, args: &LogsArgs) -> Result<i32> {
    use std::io::Write;
    let id = parse_id(&args.id)?;
    let mut c = client(cli).await?;
    let mut stream = c
        .logs(api::LogsRequest {
            id: Some(id),
            follow: args.follow,
            tail: args.tail,
            since_unix_nanos: args.since.unwrap_or(0),
            no_stdout: args.stderr_only,
            no_stderr: args.stdout_only,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    while let Some(chunk) = stream.message().await.map_err(rpc_error)? {
        let written = if chunk.stderr {
            let mut e = std::io::stderr().lock();
            e.write_all(&chunk.data).and_then(|_| e.flush())
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(&chunk.data).and_then(|_| o.flush())
        };
        // A closed pipe (e.g. `| head`) ends the client quietly.
        if written.is_err() {
            return Ok(0);
        }
    }
    Ok(0)
}

#[derive(Args)]
pub struct AttachArgs {
    /// The container's id.
    pub id: String,
    /// Do not forward stdin (only watch the output).
    #[arg(long)]
    pub no_stdin: bool,
}

/// Relays this terminal (or these pipes) to the container's stdio through
/// the agent until the container ends; returns its exit code.
pub async fn attach(cli: &Cli, args: &AttachArgs) -> Result<i32> {
    use api::{attach_input, attach_output, AttachInput};
    use std::io::Write;
    let id = parse_id(&args.id)?;
    let mut c = client(cli).await?;
    let st = c.status(id_ref(&id)).await.map_err(rpc_error)?.into_inner();
    let config = st.config.unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::channel::<AttachInput>(16);
    tx.send(AttachInput {
        id: Some(id.clone()),
        kind: None,
    })
    .await
    .ok();
    let forward = (config.stdin_open || config.tty) && !args.no_stdin;
    // A container's tty gets this terminal raw (its own line discipline
    // does the editing and echo) and its window size.
    let _raw = match config.tty {
        true => {
            let raw = crate::tty::RawMode::enter()?;
            crate::tty::forward_resizes(tx.clone(), |rows, cols| AttachInput {
                id: None,
                kind: Some(attach_input::Kind::Resize(api::AttachResize {
                    rows: rows as u32,
                    cols: cols as u32,
                })),
            })?;
            raw
        }
        false => None,
    };
    if forward {
        crate::tty::forward_stdin(tx.clone(), |b| AttachInput {
            id: None,
            kind: Some(match b {
                Some(b) => attach_input::Kind::Stdin(b),
                None => attach_input::Kind::StdinClose(true),
            }),
        });
    }
    let mut out = c
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(rpc_error)?
        .into_inner();
    while let Some(m) = out.message().await.map_err(rpc_error)? {
        match m.kind {
            Some(attach_output::Kind::Stdout(b)) => {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(&b).and_then(|_| o.flush());
            }
            Some(attach_output::Kind::Stderr(b)) => {
                let mut e = std::io::stderr().lock();
                let _ = e.write_all(&b).and_then(|_| e.flush());
            }
            Some(attach_output::Kind::Exit(e)) => return Ok(e.exit_code),
            None => {}
        }
    }
    bail!("attach {id}: the agent ended the stream before the container's exit")
}

#[derive(Args)]
pub struct KillArgs {
    /// The container's id.
    pub id: String,
    /// The signal: a name (`TERM`, `SIGKILL`) or a number (`9`).
    #[arg(short, long, default_value = "TERM", value_parser = parse_signal)]
    pub signal: i32,
}

#[derive(Args)]
pub struct UpdateArgs {
    /// The container's id.
    pub id: String,
    /// CPU share in cores (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Hard CPU limit in cores (0 = none).
    #[arg(long)]
    pub cpus_limit: Option<f64>,
    /// Memory limit, e.g. 32M, 1G, or bytes.
    #[arg(long, value_parser = crate::parse_size)]
    pub memory: Option<u64>,
    /// Memory reservation (soft limit), e.g. 16M.
    #[arg(long, value_parser = crate::parse_size)]
    pub memory_reservation: Option<u64>,
    /// Maximum number of tasks.
    #[arg(long)]
    pub pids: Option<u64>,
}

/// `KILL`, `SIGKILL`, `kill` or `9`.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(format!("signal {s:?}: numbers run from 1 to 64"))
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| format!("signal {s:?}: not a signal name (e.g. TERM, SIGKILL) or number"))
}

pub(crate) fn parse_id(s: &str) -> Result<ContainerId> {
    ContainerId::parse(s).map_err(|e| anyhow::anyhow!("container id {s:?}: {e}"))
}

pub(crate) fn rpc_error(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}

pub(crate) async fn client(
    cli: &Cli,
) -> Result<api::containerizer_client::ContainerizerClient<tonic::transport::Channel>> {
    Ok(berth::agent::connect(&cli.socket).await?)
}

fn id_ref(id: &ContainerId) -> ContainerRef {
    ContainerRef {
        id: Some(id.clone()),
    }
}

/// `berth agent`'s Kubernetes CRI options.
#[derive(Args, Debug, Clone)]
pub struct CriArgs {
    /// Also serve the Kubernetes CRI (runtime.v1 RuntimeService and
    /// ImageService) on this Unix socket (mode 0600).
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Option<std::path::PathBuf>,
    /// Where the CRI streaming server (Exec, Attach, PortForward) is to
    /// listen.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub cri_stream_addr: std::net::SocketAddr,
    /// The CNI network CRI pods join (a config's name in --cni-config-dir);
    /// default: a network namespace with only `lo`.
    #[arg(long, value_name = "NAME")]
    pub cri_network: Option<String>,
    /// Pull images of registry UPSTREAM (as references name it: `gcr.io`,
    /// `docker.io` for Docker Hub) from URL instead; repeatable.
    #[arg(long, value_name = "UPSTREAM=URL", value_parser = parse_mirror)]
    pub registry_mirror: Vec<(String, String)>,
}

fn parse_mirror(s: &str) -> Result<(String, String), String> {
    let (host, url) = s
        .split_once('=')
        .ok_or_else(|| format!("--registry-mirror {s:?}: expected UPSTREAM=URL"))?;
    if host.is_empty() || host.contains('/') {
        return Err(format!(
            "--registry-mirror {s:?}: UPSTREAM must be a registry host such as gcr.io"
        ));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "--registry-mirror {s:?}: URL must start with http:// or https://"
        ));
    }
    Ok((host.to_string(), url.to_string()))
}

/// The long-lived containerizer: recovers every checkpointed container,
/// then serves the API until SIGINT/SIGTERM. Containers keep running when
/// it stops; the next agent recovers them.
pub async fn agent(cli: &Cli, cmd: &crate::AgentCmd) -> Result<i32> {
    let node = &cmd.node;
    let shutdown = shutdown_signal()?;
    // Before anything is touched: a bad address fails the start at once.
    let metrics = match &cmd.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr.as_str())
                .await
                .with_context(|| format!("--metrics-listen {addr}: cannot listen there"))?,
        ),
        None => None,
    };
    // CRI pods' resolv.conf, hostname and hosts files are mounted into
    // their members from the CRI server's own directory.
    let mut node = node.clone();
    if cmd.cri.cri_socket.is_some() {
        let files = cli.root.join("cri").join("pod-files");
        std::fs::create_dir_all(&files).with_context(|| format!("creating {}", files.display()))?;
        node.volume_allow_ro.push(files);
    }
    let node = &node;
    let t_open = std::time::Instant::now();
    // One provisioner for the launches and the image API: a prune drains
    // the rootfs pool it keeps.
    let images = crate::image::provisioner(&cli.root)?
        .with_rootfs_pool(cmd.rootfs_pool)
        .context("--rootfs-pool")?;
    let c = crate::containerizer(
        cli,
        node,
        crate::Ahead::Pool(cmd.supervisor_pool),
        images.clone(),
    )
    .with_context(|| {
        format!(
            "starting the agent on {} (is another berth agent or `berth run` using this --root?)",
            cli.root.display()
        )
    })?;
    tracing::info!(target: "berth::recovery", took_ms = t_open.elapsed().as_secs_f64() * 1e3, "store opened, actors started");
    let started = std::time::Instant::now();
    let summary = c.recover().await.context("recovering containers")?;
    tracing::info!(
        running = summary.running.len(),
        destroying = summary.destroying.len(),
        terminated = summary.terminated.len(),
        orphans = summary.orphans.len(),
        corrupt = summary.corrupt.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    for (id, why) in &summary.corrupt {
        eprintln!(
            "berth agent: container {id}: unreadable checkpoint ({why}); reported as UNKNOWN"
        );
    }
    eprintln!(
        "berth agent: serving on {} ({} running, {} terminated, {} orphans cleaned)",
        cli.socket.display(),
        summary.running.len(),
        summary.terminated.len(),
        summary.orphans.len()
    );
    let metrics = metrics.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            eprintln!("berth agent: serving metrics at http://{addr}/metrics");
        }
        actix_rt::spawn(berth::agent::serve_metrics(listener, c.clone()))
    });
    // One signal stops both servers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cri = cmd.cri.cri_socket.clone().map(|socket| {
        eprintln!("berth agent: serving the CRI on {}", socket.display());
        let opts = berth::cri::CriOptions {
            socket,
            stream_addr: cmd.cri.cri_stream_addr,
            mirrors: cmd.cri.registry_mirror.iter().cloned().collect(),
            network: cmd.cri.cri_network.clone(),
        };
        let mut stop = stop_rx.clone();
        let (c, images, root) = (c.clone(), images.clone(), cli.root.clone());
        actix_rt::spawn(async move {
            berth::cri::serve(c, images, &root, opts, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        })
    });
    let served = berth::agent::serve(c, Some(images.clone()), &cli.socket, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
    .await;
    if let Some(task) = metrics {
        task.abort();
    }
    if let Some(task) = cri {
        match task.await {
            Ok(Err(e)) => eprintln!("berth agent: the CRI server failed: {e}"),
            Err(e) => eprintln!("berth agent: the CRI server failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    // Nothing of the pool's may outlive the agent: no container is in it.
    images.close_pool();
    served.with_context(|| format!("serving on {}", cli.socket.display()))?;
    let _ = std::fs::remove_file(&cli.socket);
    Ok(0)
}

pub async fn launch(cli: &Cli, args: &RunArgs) -> Result<i32> {
    let id = parse_id(&crate::container_name(args))?;
    let mut c = client(cli).await?;
    let r = c
        .launch(LaunchRequest {
            id: Some(id.clone()),
            config: Some(config_of(args)),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"id": id.to_string(), "pid": r.pid})
        );
    } else {
        println!("{id}");
    }
    Ok(0)
}

fn state_name(s: i32) -> &'static str {
    ContainerState::try_from(s)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN")
}

fn status_json(s: &api::ContainerStatus) -> serde_json::Value {
    let id = s.id.clone().unwrap_or_default().to_string();
    let t = s.termination.as_ref();
    serde_json::json!({
        "id": id,
        "state": state_name(s.state),
        // A terminated container's pid is gone (and may be someone else's).
        "pid": s.init.filter(|_| s.state != ContainerState::Terminated as i32).map(|p| p.pid),
        "supervisor_pid": s.supervisor.map(|p| p.pid),
        "command": s.config.as_ref().map(|c| c.command.clone()).unwrap_or_default(),
        "init": s.config.as_ref().is_some_and(|c| c.init),
        // Resolved at admission: `native` or the OCI runtime's name.
        "runtime": s.config.as_ref().map(|c| c.runtime.clone()).unwrap_or_default(),
        "sandbox_dir": s.sandbox_dir,
        "termination": t.map(|t| termination_json(&s.id.clone().unwrap_or_default(), t)),
        "isolator_fields": s.isolator_fields,
        // `berth restore`'s image dir; empty for a launched container.
        "restored_from": s.restored_from,
    })
}

pub async fn debug(cli: &Cli, args: &JsonArgs) -> Result<i32> {
    let mut c = client(cli).await?;
    let calls = c
        .debug(api::Empty {})
        .await
        .map_err(rpc_error)?
        .into_inner()
        .calls;
    if args.json {
        let all: Vec<_> = calls
            .iter()
            .map(|c| {
                serde_json::json!({
                    "container": c.container_id,
                    "call": c.call,
                    "component": c.component,
                    "age_ms": c.age_ms,
                    "timeout_ms": c.timeout_ms,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(0);
    }
    println!(
        "{:<32} {:<10} {:<20} {:>10} {:>10}",
        "CONTAINER", "CALL", "COMPONENT", "AGE", "TIMEOUT"
    );
    let secs = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
    for c in &calls {
        let id = if c.container_id.is_empty() {
            "-"
        } else {
            &c.container_id
        };
        println!(
            "{id:<32} {:<10} {:<20} {:>10} {:>10}",
            c.call,
            c.component,
            secs(c.age_ms),
            secs(c.timeout_ms)
        );
    }
    Ok(0)
}

pub async fn ps(cli: &Cli, args: &JsonArgs) -> Result<i32> {
    let mut c = client(cli).await?;
    let list = c
        .list(ListRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner()
        .containers;
    if args.json {
        let all: Vec<_> = list.iter().map(status_json).collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(0);
    }
    println!("{:<32} {:<12} {:>8}  COMMAND", "ID", "STATE", "PID");
    for s in &list {
        let id = s.id.clone().unwrap_or_default().to_string();
        let pid = s
            .init
            .filter(|_| s.state != ContainerState::Terminated as i32)
            .map(|p| p.pid.to_string())
            .unwrap_or_else(|| "-".into());
        let cmd = s
            .config
            .as_ref()
            .map(|c| c.command.join(" "))
            .unwrap_or_default();
        println!("{id:<32} {:<12} {pid:>8}  {cmd}", state_name(s.state));
    }
    Ok(0)
}

fn print_termination(id: &ContainerId, t: &berth::ContainerTermination, json: bool) {
    if json {
        println!("{}", termination_json(id, t));
    } else {
        let mut line = if t.no_exit_status {
            format!("{id}: {} no exit status", t.reason().as_str_name())
        } else {
            format!(
                "{id}: {} exit_code={}",
                t.reason().as_str_name(),
                t.exit_code
            )
        };
        if let Some(sig) = t.signal {
            line.push_str(&format!(" signal={sig}"));
        }
        if !t.message.is_empty() {
            line.push_str(&format!(" ({})", t.message));
        }
        println!("{line}");
    }
}

/// Waits for the container's end; exits with its exit code.
pub async fn wait(cli: &Cli, args: &IdArgs) -> Result<i32> {
    let id = parse_id(&args.id)?;
    let mut c = client(cli).await?;
    let t = c.wait(id_ref(&id)).await.map_err(rpc_error)?.into_inner();
    print_termination(&id, &t, args.json);
    Ok(process_exit_code(&t))
}

pub async fn kill(cli: &Cli, args: &KillArgs) -> Result<i32> {
    let id = parse_id(&args.id)?;
    let mut c = client(cli).await?;
    c.kill(KillRequest {
        id: Some(id),
        signal: args.signal,
    })
    .await
    .map_err(rpc_error)?;
    Ok(0)
}

pub async fn stop(cli: &Cli, args: &StopArgs) -> Result<i32> {
    let id = parse_id(&args.id)?;
    let mut c = client(cli).await?;
    let t = c
        .stop(api::StopRequest {
            id: Some(id.clone()),
            grace_ms: Some((args.grace * 1000.0).round() as u64),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    print_termination(&id, &t, args.json);
    Ok(0)
}

/// `berth pause` (`true`) and `berth resume`.
pub async fn set_paused(cli: &Cli, args: &IdArgs, paused: bool) -> Result<i32> {
    let id = parse_id(&args.id)?;
    let mut c = client(cli).await?;
    let r = id_ref(&id);
    if paused {
        c.pause(r).await.map_err(rpc_error)?;
    } else {
        c.resume(r).await.map_err(rpc_error)?;
    }
    Ok(0)
}

pub async fn destroy(cli: &Cli, args: &IdArgs) -> Result<i32> {
    let id = parse_id(&args.id)?;
    let mut c = client(cli).await?;
    let t = c
        .destroy(id_ref(&id))
        .await
        .map_err(rpc_error)?
        .into_inner();
    print_termination(&id, &t, args.json);
    Ok(0)
}

pub async fn remove(cli: &Cli, args: &IdArgs) -> Result<i32> {
    let id = parse_id(&args.id)?;
    let mut c = client(cli).await?;
    c.remove(id_ref(&id)).await.map_err(rpc_error)?;
    Ok(0)
}

fn stats_json(id: &ContainerId, s: &ResourceStatistics) -> serde_json::Value {
    serde_json::json!({
        "id": id.to_string(),
        "timestamp": s.timestamp,
        "cpus_user_time_secs": s.cpus_user_time_secs,
        "cpus_system_time_secs": s.cpus_system_time_secs,
        "cpus_limit": s.cpus_limit,
        "cpus_nr_periods": s.cpus_nr_periods,
        "cpus_nr_throttled": s.cpus_nr_throttled,
        "cpus_throttled_time_secs": s.cpus_throttled_time_secs,
        "mem_usage_bytes": s.mem_usage_bytes,
        "mem_rss_bytes": s.mem_rss_bytes,
        "mem_cache_bytes": s.mem_cache_bytes,
        "mem_swap_bytes": s.mem_swap_bytes,
        "mem_max_usage_bytes": s.mem_max_usage_bytes,
        "mem_limit_bytes": s.mem_limit_bytes,
        "processes": s.processes,
        "threads": s.threads,
        "disk_used_bytes": s.disk_used_bytes,
        "disk_limit_bytes": s.disk_limit_bytes,
    })
}

pub async fn stats(cli: &Cli, args: &IdArgs) -> Result<i32> {
    let id = parse_id(&args.id)?;
    let mut c = client(cli).await?;
    let s = c.usage(id_ref(&id)).await.map_err(rpc_error)?.into_inner();
    if args.json {
        println!("{}", stats_json(&id, &s));
    } else {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        println!(
            "{id}: cpu user {:.2}s system {:.2}s (limit {}, throttled {}/{} periods); memory {:.1} MiB (rss {:.1}, cache {:.1}, max {:.1}, limit {}); {} processes, {} threads",
            s.cpus_user_time_secs,
            s.cpus_system_time_secs,
            if s.cpus_limit > 0.0 { format!("{:.2}", s.cpus_limit) } else { "none".into() },
            s.cpus_nr_throttled,
            s.cpus_nr_periods,
            mib(s.mem_usage_bytes),
            mib(s.mem_rss_bytes),
            mib(s.mem_cache_bytes),
            mib(s.mem_max_usage_bytes),
            if s.mem_limit_bytes > 0 { format!("{:.1} MiB", mib(s.mem_limit_bytes)) } else { "none".into() },
            s.processes,
            s.threads,
        );
    }
    Ok(0)
}

/// Changes the given limits; the others keep their current values.
pub async fn update(cli: &Cli, args: &UpdateArgs) -> Result<i32> {
    let id = parse_id(&args.id)?;
    if args.cpus.is_none()
        && args.cpus_limit.is_none()
        && args.memory.is_none()
        && args.memory_reservation.is_none()
        && args.pids.is_none()
    {
        bail!(
            "update {id}: give at least one of --cpus, --cpus-limit, --memory, \
             --memory-reservation, --pids"
        );
    }
    let mut c = client(cli).await?;
    let st = c.status(id_ref(&id)).await.map_err(rpc_error)?.into_inner();
    let mut res: Resources = st.config.and_then(|c| c.resources).unwrap_or_default();
    if let Some(v) = args.cpus {
        res.cpus = v;
    }
    if let Some(v) = args.cpus_limit {
        res.cpu_limit = v;
    }
    if let Some(v) = args.memory {
        res.memory_bytes = v;
    }
    if let Some(v) = args.memory_reservation {
        res.memory_soft_bytes = v;
    }
    if let Some(v) = args.pids {
        res.pids = v;
    }
    c.update(UpdateRequest {
        id: Some(id),
        resources: Some(res),
    })
    .await
    .map_err(rpc_error)?;
    Ok(0)
}

fn event_json(e: &api::Event) -> serde_json::Value {
    let id = e.id.clone().unwrap_or_default();
    let mut v = serde_json::json!({
        "id": id.to_string(),
        "at_unix_nanos": e.at_unix_nanos,
    });
    match &e.kind {
        Some(api::event::Kind::State(s)) => {
            v["type"] = "state".into();
            v["state"] = state_name(*s).into();
        }
        Some(api::event::Kind::Limitation(l)) => {
            v["type"] = "limitation".into();
            v["reason"] = berth::TerminationReason::try_from(l.reason)
                .map(|r| r.as_str_name())
                .unwrap_or("UNKNOWN")
                .into();
            v["resource"] = l.resource.clone().into();
            v["message"] = l.message.clone().into();
        }
        None => {}
    }
    if let Some(t) = &e.termination {
        v["termination"] = termination_json(&id, t);
    }
    v
}

/// Prints events, one per line, until interrupted or the agent stops.
pub async fn events(cli: &Cli, args: &JsonArgs) -> Result<i32> {
    let mut c = client(cli).await?;
    let mut stream = c
        .events(EventsRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    use std::io::Write;
    while let Some(e) = stream.message().await.map_err(rpc_error)? {
        let v = event_json(&e);
        let line = if args.json {
            v.to_string()
        } else {
            // A transition reads `ID STATE`; any other event `ID TYPE k=v…`.
            let kind = match (v["type"].as_str(), v["state"].as_str()) {
                (Some("state"), Some(state)) => state,
                (t, _) => t.unwrap_or(""),
            };
            let mut l = format!("{} {kind}", v["id"].as_str().unwrap_or(""));
            for k in ["reason", "resource", "message"] {
                if let Some(s) = v[k].as_str() {
                    l.push_str(&format!(" {k}={s}"));
                }
            }
            if let Some(t) = v.get("termination") {
                l.push_str(&format!(" exit_code={}", t["exit_code"]));
            }
            l
        };
        let mut out = std::io::stdout().lock();
        // A closed pipe (e.g. `| head`) ends the client quietly.
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            return Ok(0);
        }
    }
    Ok(0)
}
