//! `berth retire`: gives back what a berth root holds on the node — its
//! cgroup root dir in every hierarchy, its cgroup root's claim and its
//! runtime dir — once it holds no container. The state dir (`--root`, with
//! its image store) is left: removing it is the operator's call.

use crate::Cli;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where the root's supervisors live in each hierarchy.
const SUPERVISORS: &str = berth::launcher::SUPERVISORS_CGROUP;

/// Subdirectories of `dir` (none if it does not exist).
fn subdirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn retire(cli: &Cli) -> Result<i32> {
    let state = cli.root.join("state");
    if !state.is_dir() {
        bail!(
            "{} holds no berth state (nothing to retire)",
            cli.root.display()
        );
    }
    let runtime = berth::state::RuntimeDir::open(&cli.runtime_dir)
        .with_context(|| format!("runtime dir {}", cli.runtime_dir.display()))?;
    // Its lock: no agent and no `berth run` uses this root while we look.
    let store =
        berth::state::Store::open_with_mirror(&state, runtime.clone()).with_context(|| {
            format!(
                "opening {} (is a berth agent or `berth run` using this --root?)",
                state.display()
            )
        })?;
    let records = store.list().context("reading the records")?;
    if !records.is_empty() {
        let ids: Vec<String> = records
            .iter()
            .map(|r| match r {
                Ok(r) => r.id.clone().unwrap_or_default().to_string(),
                Err(e) => e.to_string(),
            })
            .collect();
        bail!(
            "{} container(s) still recorded in {} ({}): destroy and remove them first \
             (berth destroy ID; berth rm ID, through the agent)",
            ids.len(),
            cli.root.display(),
            ids.join(", ")
        );
    }
    // Rootfs a killed agent had mounted ahead of their launch.
    crate::image::provisioner(&cli.root)?.sweep_pool();
    let live = runtime.list().context("listing the runtime dir")?;
    if !live.is_empty() {
        bail!(
            "the runtime dir {} still holds containers ({}): start the agent on this root \
             to recover and clean them",
            cli.runtime_dir.display(),
            live.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let roots: Vec<PathBuf> = berth::state::cgroupfs::mounts()
        .context("read /proc/self/mountinfo")?
        .into_iter()
        .map(|m| m.join(&cli.cgroup_root))
        .filter(|d| d.is_dir())
        .collect();
    for d in &roots {
        let sup = d.join(SUPERVISORS);
        let procs_of = || std::fs::read_to_string(sup.join("cgroup.procs")).unwrap_or_default();
        // With no container left, what still runs there is a stopped
        // agent's idle pooled supervisors, which end as soon as they get
        // the CPU to read their closed sockets: given a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut procs = procs_of();
        while !procs.trim().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            procs = procs_of();
        }
        if !procs.trim().is_empty() {
            bail!(
                "supervisors still run in {} (pids {}): their containers are not gone",
                sup.display(),
                procs.split_whitespace().collect::<Vec<_>>().join(", ")
            );
        }
        let children: Vec<String> = subdirs(d)
            .into_iter()
            .filter(|c| c != SUPERVISORS)
            .collect();
        if !children.is_empty() {
            bail!(
                "cgroup {} still has cgroups ({}): start the agent on this root to clean them",
                d.display(),
                children.join(", ")
            );
        }
    }
    let mut removed = Vec::new();
    for d in roots {
        let sup = d.join(SUPERVISORS);
        if sup.is_dir() {
            std::fs::remove_dir(&sup)
                .with_context(|| format!("remove cgroup {}", sup.display()))?;
        }
        std::fs::remove_dir(&d).with_context(|| format!("remove cgroup {}", d.display()))?;
        removed.push(d);
    }
    let owner = std::fs::canonicalize(&cli.root).unwrap_or_else(|_| cli.root.clone());
    let ours =
        |f: &Path| std::fs::read_to_string(f).is_ok_and(|t| Path::new(t.trim()) == owner.as_path());
    // Claims only if this root holds them (another root may own a name).
    let claim = berth::cgroup_claim_path(&cli.cgroup_root);
    if ours(&claim) {
        std::fs::remove_file(&claim).with_context(|| format!("remove {}", claim.display()))?;
        removed.push(claim);
    }
    let owner_file = cli.runtime_dir.join("owner");
    if ours(&owner_file) {
        std::fs::remove_file(&owner_file)
            .with_context(|| format!("remove {}", owner_file.display()))?;
        removed.push(owner_file);
        // What berth made there, if nothing else is left in it.
        let _ = std::fs::remove_dir(cli.runtime_dir.join("containers"));
        let _ = std::fs::remove_dir_all(cli.runtime_dir.join("seccomp"));
        let _ = berth_state::safe_path::remove_tree(&cli.runtime_dir.join("trash"));
        if std::fs::remove_dir(&cli.runtime_dir).is_ok() {
            removed.push(cli.runtime_dir.clone());
        }
    }
    drop(store);
    for r in &removed {
        println!("removed {}", r.display());
    }
    println!(
        "retired: {} keeps its state and images; remove it yourself if no longer wanted",
        cli.root.display()
    );
    Ok(0)
}
