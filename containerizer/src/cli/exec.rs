//! `berth exec ID [-t] [-i] [-e K=V] [--user U[:G]] [--workdir D] -- CMD`:
//! runs a command inside a running container through the agent's Exec
//! call and exits with its exit code. With `-t` the command gets a
//! terminal of the container's own; this one goes raw while attached and
//! its window size follows.

use crate::agent::{client, parse_id, rpc_error};
use crate::tty;
use crate::{parse_env, process_exit_code, Cli};
use anyhow::{bail, Result};
use berth::agent::api::{
    exec_input, exec_output, AttachResize, ExecInput, ExecOutput, ExecRequest,
};
use berth::state::ContainerTermination;
use clap::Args;
use std::io::Write;

#[derive(Args)]
pub struct ExecArgs {
    /// The running container to enter.
    pub id: String,
    /// Keep stdin open: forward this process's stdin to the command.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Environment variable K=V over the container's (repeatable).
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// USER[:GROUP], by name (in the container's image) or number;
    /// default: the container's user.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Working directory inside the container; default: the container's.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub async fn exec(cli: &Cli, args: &ExecArgs) -> Result<i32> {
    let id = parse_id(&args.id)?;
    let mut c = client(cli).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<ExecInput>(16);
    let start = ExecInput {
        input: Some(exec_input::Input::Start(ExecRequest {
            id: Some(id.clone()),
            command: args.command.clone(),
            env: args.env.iter().cloned().collect(),
            user: args.user.clone().unwrap_or_default(),
            working_dir: args.workdir.clone().unwrap_or_default(),
            stdin: args.interactive,
            tty: args.tty,
        })),
    };
    tx.send(start).await?;
    // Restored when this returns (or unwinds).
    let _raw = forward_input(&tx, args.interactive, args.tty)?;
    let mut out = c
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(rpc_error)?
        .into_inner();
    let t = relay(&mut out, std::future::pending(), || {}).await;
    drop(_raw);
    drop(tx);
    let t = t?;
    if t.exit_code == 128 || t.no_exit_status {
        eprintln!("berth exec: {}", t.message);
    }
    Ok(process_exit_code(&t))
}

/// Forwards this process's stdin (`stdin`) and, with a terminal (`tty`),
/// its window size to a streamed container (Exec's or Run's), and puts
/// the terminal in raw mode until the returned guard drops.
pub(crate) fn forward_input(
    tx: &tokio::sync::mpsc::Sender<ExecInput>,
    stdin: bool,
    tty: bool,
) -> Result<Option<tty::RawMode>> {
    if stdin {
        tty::forward_stdin(tx.clone(), |data| ExecInput {
            input: Some(match data {
                Some(b) => exec_input::Input::Stdin(b),
                None => exec_input::Input::StdinClose(true),
            }),
        });
    }
    if !tty {
        return Ok(None);
    }
    tty::forward_resizes(tx.clone(), |rows, cols| ExecInput {
        input: Some(exec_input::Input::Resize(AttachResize {
            rows: rows.into(),
            cols: cols.into(),
        })),
    })?;
    tty::RawMode::enter()
}

/// Writes a streamed container's output (Exec's or Run's) to this
/// process's stdout and stderr until its exit, which it returns.
/// `interrupted` runs once, when `interrupt` resolves (a signal), and the
/// relay goes on to the exit it brings about.
pub(crate) async fn relay(
    out: &mut tonic::Streaming<ExecOutput>,
    interrupt: impl std::future::Future<Output = ()>,
    interrupted: impl FnOnce(),
) -> Result<ContainerTermination> {
    let mut interrupt = std::pin::pin!(interrupt);
    let mut interrupted = Some(interrupted);
    loop {
        let m = tokio::select! {
            m = out.message() => m.map_err(rpc_error)?,
            _ = &mut interrupt, if interrupted.is_some() => {
                if let Some(f) = interrupted.take() {
                    f();
                }
                continue;
            }
        };
        let Some(m) = m else {
            bail!("the agent ended the stream without the container's exit status")
        };
        match m.output {
            Some(exec_output::Output::Stdout(b)) => {
                let mut o = std::io::stdout().lock();
                o.write_all(&b)?;
                o.flush()?;
            }
            Some(exec_output::Output::Stderr(b)) => {
                let mut e = std::io::stderr().lock();
                e.write_all(&b)?;
                e.flush()?;
            }
            Some(exec_output::Output::Exit(t)) => return Ok(t),
            Some(exec_output::Output::Started(_)) | None => {}
        }
    }
}
