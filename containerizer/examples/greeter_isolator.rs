//! An isolator plugin, complete: every container gets `GREETING=hello` in
//! its environment and a `motd` file in its sandbox.
//!
//! As root: `cargo run -p berth --example greeter_isolator -- ROOT RUNTIME_DIR CGROUP_ROOT`
//! (the supervisor is taken from `$BERTH_SUPERVISOR`, or beside the binary).

use berth::isolators::{blocking, Isolator, IsolatorError, IsolatorFuture, PrepareRequest};
use berth::launcher::Stdio;
use berth::state::LaunchInfo;
use berth::{ContainerConfig, ContainerId, Containerizer};
use std::os::fd::AsFd;

struct Greeter;

impl Isolator for Greeter {
    fn name(&self) -> &str {
        "example/greeter"
    }

    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        let motd = req.sandbox_dir.join("motd");
        let id = req.id.clone();
        Box::pin(async move {
            let path = motd.clone();
            // File I/O blocks: it runs on the blocking pool, not the actor.
            blocking(move || std::fs::write(&path, "the greeter plugin\n"))
                .await
                .map_err(|e| IsolatorError::io(&id, "write", &motd, e))?;
            let mut info = LaunchInfo::default();
            info.env.insert("GREETING".into(), "hello".into());
            Ok(Some(info))
        })
    }
}

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, runtime, cgroup_root] = args.as_slice() else {
        anyhow::bail!("usage: greeter_isolator ROOT RUNTIME_DIR CGROUP_ROOT");
    };
    let c = Containerizer::builder(root, runtime)
        .cgroup_root(cgroup_root)
        .default_isolators()
        .isolator(Greeter)
        .build()?;
    c.recover().await?;
    let id = ContainerId::new(format!("greeter-{}", std::process::id()));
    let config = ContainerConfig {
        command: vec![r#"echo "$GREETING from $(cat motd)""#.into()],
        shell: true,
        ..Default::default()
    };
    let stdio = Stdio::Fds {
        stdin: None,
        stdout: std::io::stdout().as_fd().try_clone_to_owned()?,
        stderr: std::io::stderr().as_fd().try_clone_to_owned()?,
    };
    c.launch_with_stdio(id.clone(), config, stdio).await?;
    let t = c.wait(id.clone()).await?;
    c.remove(id).await?;
    std::process::exit(t.exit_code);
}
