//! The `berth` binary: `berth run` runs one container in-process (no
//! daemon) on the embedded defaults.

use anyhow::{bail, Context as _, Result};
use berth::launcher::Stdio;
use berth::state::{volume, Volume};
use berth::{ContainerConfig, ContainerId, ContainerTermination, Containerizer, Resources};
use clap::{Args, Parser, Subcommand};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

mod agent;
mod checkpoint;
mod exec;
#[path = "image.rs"]
mod image;
mod retire;
mod run_agent;
mod run_opts;
mod tty;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A containerizer: real isolation on the real kernel"
)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

/// The options every subcommand takes (before or after its name).
#[derive(Args)]
struct Globals {
    /// Where berth keeps its state (checkpoints, sandboxes, images).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        default_value = "/var/lib/berth"
    )]
    root: PathBuf,
    /// Where per-container supervisors keep pids and exit statuses.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        default_value = "/run/berth"
    )]
    runtime_dir: PathBuf,
    /// The name of berth's cgroup under each hierarchy.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        default_value = "berth"
    )]
    cgroup_root: String,
    /// The agent's API socket (served by `berth agent`, used by the clients).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        default_value = "/run/berth/berth.sock"
    )]
    socket: PathBuf,
}

impl std::ops::Deref for Cli {
    type Target = Globals;
    fn deref(&self) -> &Globals {
        &self.globals
    }
}

/// `berth run`'s command line parsed alone: the same globals and the
/// same `run` as [`Cli`]'s, without building the parsers of the other
/// twenty subcommands, which took about 0.4 ms of every `berth run`.
#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A containerizer: real isolation on the real kernel"
)]
struct RunCli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: RunOnly,
}

#[derive(Subcommand)]
enum RunOnly {
    /// Runs one container and exits with its exit code (128+N when killed
    /// by signal N, 128 when the command could not start, 125 when berth
    /// refused the config or failed before the container existed).
    Run(Box<RunCmd>),
}

/// Whether the command line's subcommand is `run`: only global options
/// (with their values) may come before it. Anything else (`--help`,
/// another subcommand, an unknown option) goes to the whole parser.
fn is_run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> bool {
    const GLOBALS: [&str; 4] = ["--root", "--runtime-dir", "--cgroup-root", "--socket"];
    let mut it = args.iter().skip(1).map(|a| a.as_ref().to_str());
    while let Some(Some(a)) = it.next() {
        if a == "run" {
            return true;
        }
        match a.split_once('=') {
            Some((name, _)) if GLOBALS.contains(&name) => {}
            None if GLOBALS.contains(&a) => {
                it.next();
            }
            _ => return false,
        }
    }
    false
}

/// Parses the command line (exits on an error, `--help` or `--version`,
/// as clap does).
fn parse(args: Vec<std::ffi::OsString>) -> (Cli, clap::ArgMatches) {
    use clap::{CommandFactory, FromArgMatches};
    if is_run(&args) {
        let matches = RunCli::command().get_matches_from(args);
        let RunCli {
            globals,
            command: RunOnly::Run(cmd),
        } = RunCli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let cli = Cli {
            globals,
            command: Command::Run(cmd),
        };
        return (cli, matches);
    }
    let matches = Cli::command().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (cli, matches)
}

/// `berth run`: the container's options and the node's.
#[derive(Args)]
struct RunCmd {
    #[command(flatten)]
    run: RunArgs,
    /// Run the container in this process even when an agent serves
    /// --socket (by default `berth run` hands it to that agent when one
    /// answers and no --root, --runtime-dir, --cgroup-root or node option
    /// says otherwise).
    #[arg(long)]
    in_process: bool,
    #[command(flatten, next_help_heading = "Node options (the operator's)")]
    node: run_opts::NodeArgs,
}

/// `berth agent`: the node's options.
#[derive(Args)]
pub(crate) struct AgentCmd {
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9464; default: none).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<String>,
    /// How many container supervisors to keep started ahead of their
    /// launch (0: each starts at its launch). A pooled one saves a launch
    /// the spawn, loader and detach of its supervisor.
    #[arg(long, value_name = "N", default_value_t = berth::DEFAULT_SUPERVISOR_POOL)]
    pub(crate) supervisor_pool: usize,
    /// How many overlay rootfs to keep mounted ahead of their launch for
    /// each of the two images launched last (0: each is made at its
    /// launch). A pooled one saves a launch its directories and overlay
    /// mount; the agent's stop unmounts the rest (after a kill, the next
    /// agent or `berth retire` does).
    #[arg(long, value_name = "N", default_value_t = berth::DEFAULT_ROOTFS_POOL)]
    pub(crate) rootfs_pool: usize,
    #[command(flatten, next_help_heading = "Kubernetes CRI")]
    pub(crate) cri: agent::CriArgs,
    #[command(flatten, next_help_heading = "Node options (the operator's)")]
    pub(crate) node: run_opts::NodeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one container and exits with its exit code (128+N when killed
    /// by signal N, 128 when the command could not start, 125 when berth
    /// refused the config or failed before the container existed).
    Run(Box<RunCmd>),
    /// Runs the long-lived containerizer serving the gRPC API on --socket;
    /// SIGTERM stops it and leaves the containers running.
    Agent(Box<AgentCmd>),
    /// Launches a container on the agent and prints its id.
    Launch(Box<RunArgs>),
    /// Lists the agent's containers.
    Ps(agent::JsonArgs),
    /// Waits for a container to end; exits with its exit code.
    Wait(agent::IdArgs),
    /// Sends a signal to a container.
    Kill(agent::KillArgs),
    /// Destroys a container and prints its termination.
    Destroy(agent::IdArgs),
    /// Stops a container: SIGTERM, SIGKILL after the grace (default 10 s),
    /// then the destroy; prints its termination.
    Stop(agent::StopArgs),
    /// Runs a command inside a running container (its namespaces, cgroups
    /// and security settings) and exits with its exit code.
    Exec(Box<exec::ExecArgs>),
    /// Freezes every process of a running container (state PAUSED).
    Pause(agent::IdArgs),
    /// Checkpoints a running container with CRIU into --image-dir (state
    /// CHECKPOINTING meanwhile); destroys it unless --leave-running.
    Checkpoint(checkpoint::CheckpointArgs),
    /// Makes a new container from a checkpoint's image dir (the same
    /// config and image, its rootfs changes, its processes).
    Restore(checkpoint::RestoreArgs),
    /// Thaws a paused container.
    Resume(agent::IdArgs),
    /// Forgets a terminated container.
    Rm(agent::IdArgs),
    /// Resource usage of a container.
    Stats(agent::IdArgs),
    /// Changes the resource limits of a running container.
    Update(agent::UpdateArgs),
    /// Streams the agent's events (transitions, exits, limitations).
    Events(agent::JsonArgs),
    /// Lists every call into an isolator, the provisioner, the fetcher or
    /// the launcher under way, with its container, age and deadline: what
    /// a stuck launch or destroy waits on.
    Debug(agent::JsonArgs),
    /// Gives back what this root holds on the node once it holds no
    /// container: its cgroup root in every hierarchy, the cgroup root's
    /// claim, its runtime dir (the state dir and images stay).
    Retire,
    /// Prints a container's output from its sandbox log files (stdout to
    /// stdout, stderr to stderr).
    Logs(agent::LogsArgs),
    /// Attaches to a container's stdio: prints its output, forwards stdin
    /// when it was launched with -i (or -t), and exits with its exit code.
    Attach(agent::AttachArgs),
    /// Image store: import, pull, ls, rm, prune.
    #[command(subcommand)]
    Image(image::ImageCommand),
}

#[derive(Args)]
struct RunArgs {
    /// The container's id (default: run-<random>).
    #[arg(long)]
    name: Option<String>,
    /// Image reference; default: the host filesystem.
    #[arg(long)]
    image: Option<String>,
    /// Replaces the image's entrypoint (and drops its cmd).
    #[arg(long)]
    entrypoint: Option<String>,
    /// How the image's rootfs is made: overlay, copy or bind (a
    /// single-layer image's layer bound read-only); default: overlay where
    /// the kernel has it, else copy.
    #[arg(long)]
    rootfs_backend: Option<berth::provisioner::Backend>,
    /// The runtime that runs the container: native (berth's own launcher)
    /// or an OCI runtime the node registered (runc, runsc); default: the
    /// node's --default-runtime.
    #[arg(long, value_name = "NAME")]
    runtime: Option<String>,
    /// CPU share in cores (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Hard CPU limit in cores.
    #[arg(long)]
    cpus_limit: Option<f64>,
    /// Memory limit, e.g. 32M, 1G, or bytes.
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Memory reservation (soft limit: reclaimed down to it first under
    /// memory pressure), e.g. 16M; v1 memory.soft_limit_in_bytes, v2
    /// memory.low. At most --memory.
    #[arg(long, value_parser = parse_size)]
    memory_reservation: Option<u64>,
    /// Maximum number of tasks.
    #[arg(long)]
    pids: Option<u64>,
    /// Environment variable K=V (repeatable).
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Fetch a URI into the sandbox before the command runs:
    /// URI[,executable][,extract][,cache][,sha256=HEX][,output_file=NAME]
    /// (file://, an absolute path, http:// or https://; `cache` keeps it in
    /// the agent's fetch cache), repeatable.
    #[arg(long = "fetch", value_parser = parse_fetch)]
    fetch: Vec<berth::state::FetchUri>,
    /// Resource limit NAME=SOFT[:HARD] (e.g. nofile=1024:2048; `unlimited`
    /// for either), repeatable.
    #[arg(long = "rlimit", value_parser = parse_rlimit)]
    rlimits: Vec<berth::state::Rlimit>,
    /// Bind mount SRC:DST[:ro|rw][,rslave|rshared] (repeatable); rslave:
    /// host mounts under SRC show inside, rshared: both ways (privileged
    /// containers only); SRC must then be a shared mount.
    #[arg(long = "volume", short = 'v', value_parser = parse_volume)]
    volumes: Vec<Volume>,
    /// The container's hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Working directory inside the container.
    #[arg(long)]
    workdir: Option<String>,
    /// USER[:GROUP], by name or number.
    #[arg(long)]
    user: Option<String>,
    /// Milliseconds between SIGTERM and SIGKILL when the container is stopped.
    #[arg(long, default_value_t = 0)]
    grace_ms: u64,
    /// Print the termination as one JSON object on stdout at the end.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    extra: run_opts::RunExtra,
    /// The command and its arguments (optional with --image: the image's
    /// cmd; none with --pod).
    #[arg(last = true, required_unless_present_any = ["image", "pod"])]
    command: Vec<String>,
}

/// `32M`, `1G`, `512k`, `1024` (bytes); binary units.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_lowercase();
            let m: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => {
                    return Err(format!(
                        "size {s:?}: unknown unit {unit:?} (use k, M, G, T)"
                    ))
                }
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("size {s:?}: expected a number with an optional unit (e.g. 32M)"))?;
    if n.is_nan() || n <= 0.0 {
        return Err(format!("size {s:?} must be positive"));
    }
    Ok((n * mult as f64) as u64)
}

/// `URI[,executable][,extract][,cache][,sha256=HEX][,output_file=NAME]`.
fn parse_fetch(s: &str) -> Result<berth::state::FetchUri, String> {
    let mut parts = s.split(',');
    let mut u = berth::state::FetchUri {
        value: parts.next().unwrap_or_default().to_string(),
        ..Default::default()
    };
    if u.value.is_empty() {
        return Err(format!("fetch {s:?}: no URI"));
    }
    for p in parts {
        match p.split_once('=') {
            None if p == "executable" => u.executable = true,
            None if p == "extract" => u.extract = true,
            None if p == "cache" => u.cache = true,
            Some(("sha256", h)) if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) => {
                u.sha256 = h.to_ascii_lowercase()
            }
            Some(("sha256", h)) => {
                return Err(format!("fetch {s:?}: sha256 {h:?} is not 64 hex digits"))
            }
            Some(("output_file", f)) => u.output_file = f.to_string(),
            _ => {
                return Err(format!(
                    "fetch {s:?}: unknown option {p:?} (executable, extract, cache, sha256=HEX, output_file=NAME)"
                ))
            }
        }
    }
    Ok(u)
}

/// `nofile=1024`, `nofile=1024:2048`, `core=0:unlimited`.
fn parse_rlimit(s: &str) -> Result<berth::state::Rlimit, String> {
    let (name, limits) = s
        .split_once('=')
        .ok_or_else(|| format!("rlimit {s:?}: expected NAME=SOFT[:HARD]"))?;
    let num = |v: &str| -> Result<u64, String> {
        if v == "unlimited" || v == "-1" {
            return Ok(u64::MAX);
        }
        v.parse()
            .map_err(|_| format!("rlimit {s:?}: {v:?} is not a number or `unlimited`"))
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(limits)?, num(limits)?),
    };
    let r = berth::state::Rlimit {
        name: name.to_string(),
        soft,
        hard,
    };
    berth::isolators::rlimits::check(std::slice::from_ref(&r))?;
    Ok(r)
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("env {s:?}: expected K=V")),
    }
}

fn parse_volume(s: &str) -> Result<Volume, String> {
    // `SRC:DST[:MODE][,PROPAGATION]`: the propagation after a comma, so
    // the colon-separated form stays as it was.
    let (spec, propagation) = match s.rsplit_once(',') {
        Some((spec, "rslave")) => (spec, volume::Propagation::Rslave),
        Some((spec, "rshared")) => (spec, volume::Propagation::Rshared),
        Some((spec, "private" | "rprivate")) => (spec, volume::Propagation::Private),
        // A comma in a path (`/a,b:/c`) is not a propagation.
        Some((_, p)) if !p.contains(['/', ':']) => {
            return Err(format!(
                "volume {s:?}: propagation {p:?} is not rslave, rshared or private"
            ))
        }
        _ => (s, volume::Propagation::Private),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [src, dst] => (*src, *dst, volume::Mode::Rw),
        [src, dst, "rw"] => (*src, *dst, volume::Mode::Rw),
        [src, dst, "ro"] => (*src, *dst, volume::Mode::Ro),
        [_, _, m] => return Err(format!("volume {s:?}: mode {m:?} is not ro or rw")),
        _ => {
            return Err(format!(
                "volume {s:?}: expected SRC:DST[:ro|rw][,rslave|rshared]"
            ))
        }
    };
    if src.is_empty() || dst.is_empty() {
        return Err(format!("volume {s:?}: SRC and DST must not be empty"));
    }
    Ok(Volume {
        host_path: src.to_string(),
        container_path: dst.to_string(),
        mode: mode as i32,
        propagation: propagation as i32,
    })
}

fn main() {
    let (cli, matches) = parse(std::env::args_os().collect());
    let route = run_agent::route_of(&matches);
    // `berth run` reports its container's end itself; the internals'
    // warnings are for an agent's log (or BERTH_LOG=warn).
    let quiet = matches!(cli.command, Command::Run(_));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if quiet { "error" } else { "warn" })
            }),
        )
        // Colours only for a terminal, not in a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    raise_nofile_limit();
    // A listing piped into `head` ends as other tools do once the reader
    // has gone (SIGPIPE), not with a panic on the failed write. Only for
    // commands that read: one that launches or streams stdin handles the
    // broken pipe itself.
    if matches!(
        cli.command,
        Command::Ps(_)
            | Command::Stats(_)
            | Command::Events(_)
            | Command::Debug(_)
            | Command::Logs(_)
            | Command::Image(_)
    ) {
        // SAFETY: before any thread is started; restores the default action.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    let system = actix_rt::System::new();
    let code = match system.block_on(dispatch(cli, route)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {e:#}");
            125
        }
    };
    // Trees this process discarded (a `berth run`'s sandbox and rootfs)
    // are removed before it ends, not left for the next agent's sweep.
    berth_state::trash::flush();
    // Exits with the runtime still alive: dropping it waits for every
    // blocking task, and one stuck in a plugin's syscall (a FIFO nobody
    // writes) would keep the process from ever exiting.
    std::process::exit(code);
}

async fn dispatch(cli: Cli, route: run_agent::Route) -> Result<i32> {
    match cli.command {
        Command::Run(ref cmd) => match run_agent::agent_for(&cli, cmd.in_process, route).await? {
            Some(client) => run_agent::run(client, &cmd.run).await,
            None => run(&cli, &cmd.run, &cmd.node).await,
        },
        Command::Agent(ref cmd) => agent::agent(&cli, cmd).await,
        Command::Launch(ref args) => agent::launch(&cli, args).await,
        Command::Ps(ref args) => agent::ps(&cli, args).await,
        Command::Wait(ref args) => agent::wait(&cli, args).await,
        Command::Kill(ref args) => agent::kill(&cli, args).await,
        Command::Destroy(ref args) => agent::destroy(&cli, args).await,
        Command::Stop(ref args) => agent::stop(&cli, args).await,
        Command::Exec(ref args) => exec::exec(&cli, args).await,
        Command::Pause(ref args) => agent::set_paused(&cli, args, true).await,
        Command::Checkpoint(ref args) => checkpoint::checkpoint(&cli, args).await,
        Command::Restore(ref args) => checkpoint::restore(&cli, args).await,
        Command::Resume(ref args) => agent::set_paused(&cli, args, false).await,
        Command::Rm(ref args) => agent::remove(&cli, args).await,
        Command::Stats(ref args) => agent::stats(&cli, args).await,
        Command::Update(ref args) => agent::update(&cli, args).await,
        Command::Events(ref args) => agent::events(&cli, args).await,
        Command::Debug(ref args) => agent::debug(&cli, args).await,
        Command::Logs(ref args) => agent::logs(&cli, args).await,
        Command::Attach(ref args) => agent::attach(&cli, args).await,
        Command::Retire => retire::retire(&cli),
        Command::Image(cmd) => image::dispatch(&cli.globals.root, cmd).await,
    }
}

fn config_of(args: &RunArgs) -> ContainerConfig {
    let resources = Resources {
        cpus: args.cpus.unwrap_or(0.0),
        cpu_limit: args.cpus_limit.unwrap_or(0.0),
        memory_bytes: args.memory.unwrap_or(0),
        memory_soft_bytes: args.memory_reservation.unwrap_or(0),
        pids: args.pids.unwrap_or(0),
        ..Default::default()
    };
    let mut config = ContainerConfig {
        command: args.command.clone(),
        env: args.env.iter().cloned().collect(),
        user: args.user.clone().unwrap_or_default(),
        working_dir: args.workdir.clone().unwrap_or_default(),
        image: args.image.clone().unwrap_or_default(),
        entrypoint: args.entrypoint.iter().cloned().collect(),
        resources: Some(resources),
        volumes: args.volumes.clone(),
        rlimits: args.rlimits.clone(),
        uris: args.fetch.clone(),
        hostname: args.hostname.clone().unwrap_or_default(),
        kill_grace_period_ms: args.grace_ms,
        rootfs_backend: args
            .rootfs_backend
            .map(|b| b.name().to_string())
            .unwrap_or_default(),
        runtime: args.runtime.clone().unwrap_or_default(),
        ..Default::default()
    };
    args.extra.apply(&mut config);
    config
}

/// An agent holds a few fds per running container (supervisor pidfd,
/// OOM eventfd, cgroup files): the soft RLIMIT_NOFILE of 1024 would cap it
/// at a few hundred containers, so it goes up to the hard limit (as
/// containerd's and Go's runtimes do).
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn dup_fd(fd: i32) -> Result<OwnedFd> {
    use std::os::fd::{AsFd, BorrowedFd};
    // SAFETY: fds 1 and 2 are open for the life of this process.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    b.as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("dup fd {fd}"))
}

/// `--name`, or `run-<random>`.
fn container_name(args: &RunArgs) -> String {
    args.name
        .clone()
        .unwrap_or_else(|| format!("run-{:08x}", rand_suffix()))
}

/// The containerizer of `berth run` and `berth agent`, on the global
/// options. A container's `--rootfs-backend` travels in its config.
/// The supervisors started ahead of their launch: an agent's pool, kept
/// topped up, or a one-container process's, started at once and not
/// replaced.
pub(crate) enum Ahead {
    Pool(usize),
    Once(usize),
}

fn containerizer(
    cli: &Cli,
    node: &run_opts::NodeArgs,
    ahead: Ahead,
    images: berth::provisioner::ImageProvisioner,
) -> Result<Containerizer> {
    let b = Containerizer::builder(&cli.root, &cli.runtime_dir);
    let b = match ahead {
        Ahead::Pool(n) => b.supervisor_pool(n),
        Ahead::Once(n) => b.supervisor_pool_once(n),
    };
    // The agent's idle members end with it (their sockets close), a
    // cold run's with the run: none outlives its process in berth's
    // cgroup for long.
    Ok(b.supervisor_pool_placed(true)
        .cgroup_root(&cli.cgroup_root)
        .node_options(node.options())
        .default_isolators()
        .fetcher(node.fetcher(&cli.root))
        .provisioner(images)
        .build()?)
}

async fn run(cli: &Cli, args: &RunArgs, node: &run_opts::NodeArgs) -> Result<i32> {
    let id = ContainerId::parse(&container_name(args)).map_err(anyhow::Error::msg)?;
    // One container: its rootfs is made now, beside the store's open and
    // the recovery (as its supervisor is started, below).
    let images = image::provisioner(&cli.root)?;
    let images = match (&args.image, args.rootfs_backend) {
        (Some(image), None | Some(berth::provisioner::Backend::Overlay)) => {
            images.with_rootfs_ahead(image)?
        }
        _ => images,
    };
    let ahead = images.clone();
    let r = run_one(cli, args, node, id, images).await;
    // Not taken (the launch was refused, or its image differs): unmounted
    // before this process ends.
    tokio::task::spawn_blocking(move || ahead.close_pool())
        .await
        .context("closing the rootfs made ahead")?;
    r
}

async fn run_one(
    cli: &Cli,
    args: &RunArgs,
    node: &run_opts::NodeArgs,
    id: ContainerId,
    images: berth::provisioner::ImageProvisioner,
) -> Result<i32> {
    let shutdown = shutdown_signal()?;
    // One container: its supervisor starts now, beside the store's open
    // and the recovery; a pool kept topped up would start ones nobody
    // takes.
    let c = containerizer(cli, node, Ahead::Once(1), images)?;
    let summary = c.recover().await.context("recovering earlier containers")?;
    if !summary.orphans.is_empty() {
        tracing::warn!(orphans = ?summary.orphans, "cleaned up orphans");
    }
    // -t/-i: the supervisor owns the stdio, and this process attaches to
    // it like `berth attach` (the command waits for it); else the command
    // writes to our stdout and stderr directly.
    let config = config_of(args);
    let attached = args.extra.tty
        || args.extra.interactive
        || file_stdio_under_oci(&config, node.default_runtime.as_deref());
    let stdio = match attached {
        true => Stdio::Attached,
        false => Stdio::Fds {
            stdin: None,
            stdout: dup_fd(1)?,
            stderr: dup_fd(2)?,
        },
    };
    let launched = c.launch_with_stdio(id.clone(), config, stdio).await;
    let relay = match (&launched, attached) {
        (Ok(()), true) => Some(tty::relay_local(
            &c.attach_socket(&id),
            args.extra.tty,
            args.extra.interactive || args.extra.tty,
        )?),
        _ => None,
    };
    match &launched {
        Err(e @ berth::ContainerizerError::AlreadyExists(_)) => bail!("{e}"),
        Err(
            e @ (berth::ContainerizerError::InvalidConfig { .. }
            | berth::ContainerizerError::Unsupported { .. }),
        ) => {
            // Refused at admission: nothing was made (exit 125). Found
            // later (a user the host lacks): the container is being
            // destroyed, and ends below like any failed start (START_ERROR,
            // 128), waited for so that no cgroup, sandbox or record stays.
            if c.status(id.clone()).await.is_err() {
                bail!("{e}")
            }
        }
        // The termination below says why (START_ERROR and the message).
        Err(_) => {}
        Ok(()) => {}
    }
    let termination = tokio::select! {
        t = c.wait(id.clone()) => t?,
        _ = shutdown => {
            eprintln!("berth: interrupted; destroying {id}");
            c.destroy(id.clone()).await?
        }
    };
    if let Some(r) = relay {
        // The rest of the output, then the terminal back as it was.
        r.finish().await;
    }
    c.remove(id.clone()).await?;
    Ok(report(&id, &termination, args.json))
}

/// Whether the container runs under an OCI runtime while this process's
/// stdout or stderr is a regular file. Such stdio then goes through the
/// supervisor's pipes and this process (as with `-i`), not straight to the
/// runtime: Debian's runsc (gVisor, 2022) writes a donated regular file
/// from offset 0 through a file description of its own, over what the file
/// already held.
fn file_stdio_under_oci(config: &ContainerConfig, default_runtime: Option<&str>) -> bool {
    let runtime = match config.runtime.as_str() {
        "" => default_runtime.unwrap_or(""),
        r => r,
    };
    if runtime.is_empty() || runtime == "native" {
        return false;
    }
    [1, 2].into_iter().any(|fd| {
        nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
    })
}

/// Tells how `berth run`'s container ended (JSON with `--json`; else a
/// line on stderr when berth, not the command, ended it) and returns the
/// exit code.
fn report(id: &ContainerId, termination: &ContainerTermination, json: bool) -> i32 {
    if json {
        println!("{}", termination_json(id, termination));
    } else {
        // An exit code alone does not tell a command's own failure from
        // berth's ending it: say so when berth did.
        use berth::state::TerminationReason as R;
        let reason = termination.reason();
        if !matches!(reason, R::Completed | R::Failed) {
            let what = match termination.limited_resource.as_str() {
                "" => String::new(),
                r => format!(" ({r})"),
            };
            let prefix = format!("container {id}: ");
            let message = termination.message.strip_prefix(&prefix);
            eprintln!(
                "berth: container {id}: {}{what}: {}",
                reason.as_str_name(),
                message.unwrap_or(&termination.message)
            );
        }
    }
    process_exit_code(termination)
}

/// Registers the SIGINT and SIGTERM handlers now — before the launch, so a
/// signal that comes early is kept rather than killing berth and stranding
/// the container — and resolves on the first of them.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// `no_exit_status` (the command never started) comes with `exit_code`
/// -1 and `signal` null; the other fields are as for any termination.
fn termination_json(id: &ContainerId, t: &ContainerTermination) -> serde_json::Value {
    serde_json::json!({
        "id": id.to_string(),
        "exit_code": t.exit_code,
        "signal": t.signal,
        "reason": t.reason().as_str_name(),
        "message": t.message,
        "limited_resource": t.limited_resource,
        "no_exit_status": t.no_exit_status,
    })
}

/// The exit code of `berth run` and `berth wait` for a termination: the
/// container's, or 255 when it has none (the command never started).
fn process_exit_code(t: &ContainerTermination) -> i32 {
    if t.no_exit_status {
        255
    } else {
        t.exit_code
    }
}

fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_is_told_from_the_other_command_lines() {
        for yes in [
            &["berth", "run", "--", "/bin/true"][..],
            &["berth", "--socket", "/s", "--root=/r", "run", "--help"],
            &["berth", "--cgroup-root", "run", "run"],
        ] {
            assert!(is_run(yes), "{yes:?}");
        }
        for no in [
            &["berth"][..],
            &["berth", "--help"],
            &["berth", "--version", "run"],
            &["berth", "ps"],
            &["berth", "image", "run"],
            &["berth", "--bogus", "run"],
            &["berth", "--socket"],
        ] {
            assert!(!is_run(no), "{no:?}");
        }
    }

    /// The run-only parser is the whole one's `run`: the same help, the
    /// same values and the same route.
    #[test]
    fn the_run_only_parser_parses_run_as_the_whole_one_does() {
        use clap::CommandFactory;
        let help = |mut c: clap::Command| {
            c.build();
            let run = c.find_subcommand_mut("run").expect("run");
            run.render_long_help().to_string()
        };
        assert_eq!(help(RunCli::command()), help(Cli::command()));

        let line = [
            "berth",
            "--socket",
            "/s",
            "run",
            "--name",
            "a",
            "--image",
            "busybox",
            "--memory",
            "32M",
            "--root",
            "/r",
            "--",
            "/bin/echo",
            "hi",
        ];
        let (fast, fast_m) = parse(line.iter().map(Into::into).collect());
        assert!(is_run(&line));
        let whole_m = Cli::command().get_matches_from(line);
        let whole = <Cli as clap::FromArgMatches>::from_arg_matches(&whole_m).unwrap();
        let (Command::Run(f), Command::Run(w)) = (&fast.command, &whole.command) else {
            panic!("not a run");
        };
        assert_eq!((&f.run.name, &f.run.image), (&w.run.name, &w.run.image));
        assert_eq!(f.run.memory, w.run.memory);
        assert_eq!(f.run.command, w.run.command);
        assert_eq!((&fast.root, &fast.socket), (&whole.root, &whole.socket));
        assert_eq!(
            format!("{:?}", run_agent::route_of(&fast_m)),
            format!("{:?}", run_agent::route_of(&whole_m))
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32M"), Ok(32 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn volumes_and_env() {
        let v = parse_volume("/a:/b:ro").unwrap();
        assert_eq!(v.mode, volume::Mode::Ro as i32);
        assert!(parse_volume("/a").unwrap_err().contains("SRC:DST"));
        assert!(parse_volume("/a:/b:rx").unwrap_err().contains("rx"));
        let v = parse_volume("/a:/b:ro,rshared").unwrap();
        assert_eq!(
            (v.mode, v.propagation),
            (volume::Mode::Ro as i32, volume::Propagation::Rshared as i32)
        );
        let v = parse_volume("/a:/b,rslave").unwrap();
        assert_eq!(v.propagation, volume::Propagation::Rslave as i32);
        assert_eq!(parse_volume("/a,b:/c").unwrap().host_path, "/a,b");
        assert!(parse_volume("/a:/b,rsharde")
            .unwrap_err()
            .contains("rsharde"));
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("=x").is_err());
    }
}
