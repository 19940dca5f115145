//! `berth run` through a running agent (as `docker run` and `ctr run` go
//! through their daemons): the container is launched by the agent serving
//! --socket, over the Run call, whose stream is the container's stdio;
//! this process relays it, forwards stdin and the window size (`-t`/`-i`),
//! turns SIGINT/SIGTERM into a destroy, and exits with the container's
//! exit code, exactly as an in-process run. It saves opening the store,
//! claiming the roots and recovering, which the agent did once.
//!
//! Which path a run takes:
//! - `--in-process`: this process, always;
//! - `--socket` given: that agent, which must answer (node options are
//!   then an error: the agent has its own);
//! - `--root`, `--runtime-dir`, `--cgroup-root` or a node option given:
//!   this process (they describe an in-process node);
//! - else the agent on the default socket when one answers, this process
//!   when none does.

use crate::agent::{parse_id, rpc_error};
use crate::{config_of, container_name, report, Cli, RunArgs};
use anyhow::{bail, Result};
use berth::agent::api::containerizer_client::ContainerizerClient;
use berth::agent::api::{exec_input, ContainerRef, ExecInput, LaunchRequest};
use clap::parser::ValueSource;
use clap::ArgMatches;
use tonic::transport::Channel;

/// What the command line said that decides a run's path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Route {
    /// --socket was given.
    socket: bool,
    /// --root, --runtime-dir or --cgroup-root was given.
    node_dirs: bool,
    /// A node option was given to `run`.
    node_options: bool,
}

fn given(m: &ArgMatches, id: &str) -> bool {
    matches!(m.value_source(id), Some(ValueSource::CommandLine))
}

/// Reads the route off the parsed command line (global options may come
/// before or after `run`).
pub fn route_of(m: &ArgMatches) -> Route {
    let Some(("run", sub)) = m.subcommand() else {
        return Route::default();
    };
    let either = |id: &str| given(m, id) || given(sub, id);
    let node_ids: Vec<String> = {
        use clap::Args as _;
        crate::run_opts::NodeArgs::augment_args(clap::Command::new("node"))
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect()
    };
    Route {
        socket: either("socket"),
        node_dirs: either("root") || either("runtime_dir") || either("cgroup_root"),
        node_options: node_ids.iter().any(|id| given(sub, id)),
    }
}

/// The agent a run goes through, or None for an in-process run.
pub async fn agent_for(
    cli: &Cli,
    in_process: bool,
    route: Route,
) -> Result<Option<ContainerizerClient<Channel>>> {
    if in_process {
        return Ok(None);
    }
    if route.socket {
        if route.node_options {
            bail!(
                "node options configure an in-process run, and --socket {} names an agent, \
                 which has its own: drop them, or add --in-process",
                cli.socket.display()
            );
        }
        let c = berth::agent::connect(&cli.socket).await.map_err(|e| {
            anyhow::anyhow!("{e} (no agent serves it; without --socket, berth run runs in-process)")
        })?;
        return Ok(Some(c));
    }
    if route.node_dirs || route.node_options {
        return Ok(None);
    }
    // No socket file: no agent, and no connect attempt to pay for.
    if !cli.socket.exists() {
        return Ok(None);
    }
    Ok(berth::agent::connect(&cli.socket).await.ok())
}

/// Runs the container through the agent `c`; returns the exit code.
pub async fn run(mut c: ContainerizerClient<Channel>, args: &RunArgs) -> Result<i32> {
    let id = parse_id(&container_name(args))?;
    // Before the launch, so an early signal is kept (see shutdown_signal).
    let shutdown = crate::shutdown_signal()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<ExecInput>(16);
    tx.send(ExecInput {
        input: Some(exec_input::Input::Run(LaunchRequest {
            id: Some(id.clone()),
            config: Some(config_of(args)),
        })),
    })
    .await?;
    // As an in-process run: a terminal takes stdin too. Restored when
    // this returns (or unwinds).
    let raw = crate::exec::forward_input(
        &tx,
        args.extra.interactive || args.extra.tty,
        args.extra.tty,
    )?;
    let mut out = c
        .run(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(rpc_error)?
        .into_inner();
    let destroyer = c.clone();
    let target = id.clone();
    let t = crate::exec::relay(&mut out, shutdown, move || {
        eprintln!("berth: interrupted; destroying {target}");
        let mut d = destroyer;
        tokio::spawn(async move {
            let _ = d
                .destroy(ContainerRef {
                    id: Some(target.clone()),
                })
                .await;
        });
    })
    .await;
    drop(raw);
    drop(tx);
    Ok(report(&id, &t?, args.json))
}
