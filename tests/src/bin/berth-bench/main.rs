//! `berth-bench`: berth side by side with runc and containerd, in one run,
//! on the same busybox image and command. Prints one markdown table and
//! writes JSON (`--json FILE`). `scripts/bench [--quick]` builds and runs
//! it; `--smoke` is the tiny mode the test suite runs so it cannot rot.
//!
//! Every number is measured in this run; nothing is a constant.

mod berth;
mod fixture;
mod memory;
mod peers;
mod plugin;
mod stats;

use anyhow::Result;
use stats::Dist;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Sizes {
    runs: usize,
    throughput: usize,
    in_flight: usize,
    recovery: Vec<usize>,
    shims: usize,
    big_mb: usize,
}

/// The pause before each launch of the "quiet node" rows: long enough for
/// the kernel's cgroup threadgroup lock to go idle again (an RCU grace
/// period after its last writer), as on a node where launches are not
/// back to back; a `cgroup.procs` write then waits a grace period.
const QUIET: Duration = Duration::from_millis(50);
const QUIET_LABEL: &str = "quiet node (50 ms apart)";

fn sizes(mode: &str) -> Sizes {
    match mode {
        "smoke" => Sizes {
            runs: 3,
            throughput: 8,
            in_flight: 4,
            recovery: vec![3],
            shims: 2,
            big_mb: 5,
        },
        "lifecycle" => Sizes {
            runs: 100,
            throughput: 300,
            in_flight: 16,
            recovery: vec![],
            shims: 0,
            big_mb: 0,
        },
        "quick" => Sizes {
            runs: 30,
            throughput: 200,
            in_flight: 16,
            recovery: vec![20, 50, 100],
            shims: 10,
            big_mb: 50,
        },
        _ => Sizes {
            runs: 200,
            throughput: 1000,
            in_flight: 16,
            recovery: vec![100, 500, 1000, 5000],
            shims: 50,
            big_mb: 200,
        },
    }
}

#[derive(serde::Serialize, Default)]
struct Report {
    mode: String,
    lifecycle_ms: BTreeMap<String, Dist>,
    ratio_berth_to_runc_p50: f64,
    ratio_berth_to_containerd_p50: f64,
    berth_step_p50_ms: BTreeMap<String, f64>,
    throughput_per_s: BTreeMap<String, f64>,
    recovery_ms: BTreeMap<usize, f64>,
    supervisor_private_dirty_kib: f64,
    supervisor_pss_kib: f64,
    agent_rss_kib_per_container: f64,
    shim_private_dirty_kib: f64,
    shim_pss_kib: f64,
    image_mb: f64,
    berth_import_unpack_mb_s: f64,
    umoci_unpack_mb_s: f64,
    cached_provision_ms: f64,
    big_cached_provision_ms: f64,
    /// Lifecycle p50 with a no-op remote isolator plugin minus without.
    noop_plugin_cost_per_launch_ms: f64,
    /// PREPARING p50 with the no-op plugin (its Prepare round trip in it).
    noop_plugin_preparing_p50_ms: f64,
    targets: Vec<(String, String, bool)>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut mode = "full".to_string();
    let mut json: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => mode = "quick".into(),
            "--smoke" => mode = "smoke".into(),
            "--lifecycle" => mode = "lifecycle".into(),
            "--json" => json = it.next().map(PathBuf::from),
            "--rootfs-pool" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n) => berth::ROOTFS_POOL.store(n, std::sync::atomic::Ordering::Relaxed),
                None => {
                    eprintln!("berth-bench: --rootfs-pool takes a number");
                    std::process::exit(2);
                }
            },
            "-h" | "--help" => {
                println!("usage: berth-bench [--quick|--smoke|--lifecycle] [--json FILE] [--rootfs-pool N]");
                println!("  --rootfs-pool N: the embedded containerizers keep N rootfs ahead (the agent's --rootfs-pool, and its default)");
                println!("  --lifecycle: only the embedded lifecycle, its steps, its throughput (300, 16 in flight) and runc's, interleaved (a quick check of a launch-path change)");
                return;
            }
            other => {
                eprintln!("berth-bench: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let base = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    let r = std::fs::create_dir_all(&base)
        .map_err(anyhow::Error::from)
        .and_then(|_| bench(&mode, &base));
    berth::close_pools();
    cleanup(&base);
    match r {
        Ok(report) => {
            print!("{}", table(&report));
            if let Some(f) = json {
                let text = serde_json::to_string_pretty(&report).expect("report JSON");
                if let Err(e) = std::fs::write(&f, text) {
                    eprintln!("berth-bench: write {}: {e}", f.display());
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("berth-bench: {e:#}");
            std::process::exit(1);
        }
    }
}

fn step(what: &str) {
    eprintln!("berth-bench: {what}");
}

fn bench(mode: &str, base: &Path) -> Result<Report> {
    let sz = sizes(mode);
    let mut rep = Report {
        mode: mode.into(),
        ..Default::default()
    };
    step("building the busybox image (umoci)");
    let layout = fixture::busybox_layout(base)?;
    let archive = fixture::docker_archive(&layout, base)?;
    let runc_true = fixture::runc_bundle(&layout, base, "runc-true", &["/bin/true"])?;

    // berth, embedded.
    let emb = berth::Dirs::new(base, "embedded");
    let image = berth::import(&emb, &layout, "berth-bench")?;
    let system = actix_rt::System::new();
    if mode == "lifecycle" {
        return lifecycle_only(&mut rep, &sz, &system, &emb, &image, base, &runc_true);
    }
    step("berth (embedded): lifecycle, steps, throughput");
    let (times, phases, tput) = system.block_on(async {
        let c = berth::containerizer(&emb)?;
        c.recover().await?;
        // One warm-up: unpacks the layer into the cache.
        berth::lifecycle(&c, &image, 1, "warm").await?;
        let (times, phases) = berth::lifecycle(&c, &image, sz.runs, "lc").await?;
        let tput = berth::throughput(&c, &image, sz.throughput, sz.in_flight).await?;
        anyhow::Ok((times, phases, tput))
    })?;
    rep.lifecycle_ms
        .insert("berth (embedded API)".into(), Dist::of(&times));
    rep.throughput_per_s
        .insert("berth (embedded API)".into(), tput);
    rep.berth_step_p50_ms = step_medians(&phases);
    rep.cached_provision_ms = rep
        .berth_step_p50_ms
        .get("PROVISIONING")
        .copied()
        .unwrap_or(0.0);

    // The same containerizer under each OCI runtime berth found on PATH:
    // the launchers side by side (runsc is gVisor's sandbox).
    for runtime in ["runc", "runsc"] {
        step(&format!(
            "berth (embedded) on the {runtime} launcher: lifecycle"
        ));
        let dirs = berth::Dirs::new(base, runtime);
        let image = berth::import(&dirs, &layout, "berth-bench")?;
        let times = system.block_on(async {
            let c = berth::containerizer(&dirs)?;
            c.recover().await?;
            berth::lifecycle_on(&c, &image, 1, "warm", runtime).await?;
            let (times, _) = berth::lifecycle_on(&c, &image, sz.runs, "lc", runtime).await?;
            anyhow::Ok(times)
        })?;
        rep.lifecycle_ms.insert(
            format!("berth (embedded API, {runtime} launcher)"),
            Dist::of(&times),
        );
    }

    step("berth (embedded) with a no-op remote isolator plugin: lifecycle");
    {
        let dirs = berth::Dirs::new(base, "plugin");
        let image = berth::import(&dirs, &layout, "berth-bench")?;
        let served = plugin::serve(&base.join("noop-plugin"))?;
        let node = ::berth::NodeOptions {
            plugin_dir: Some(served.dir.clone()),
            ..Default::default()
        };
        let (times, phases) = system.block_on(async {
            let c = berth::containerizer_with(&dirs, node)?;
            c.recover().await?;
            berth::lifecycle(&c, &image, 1, "warm").await?;
            berth::lifecycle(&c, &image, sz.runs, "lc").await
        })?;
        drop(served);
        let with = Dist::of(&times);
        let without = rep.lifecycle_ms["berth (embedded API)"].p50_ms;
        rep.noop_plugin_cost_per_launch_ms = with.p50_ms - without;
        let mut prep: Vec<f64> = phases
            .iter()
            .flat_map(|p| p.steps())
            .filter(|(n, _)| *n == "PREPARING")
            .map(|(_, ms)| ms)
            .collect();
        rep.noop_plugin_preparing_p50_ms = stats::median(&mut prep);
        rep.lifecycle_ms
            .insert("berth (embedded API) + no-op remote plugin".into(), with);
    }

    step("berth run (process): lifecycle");
    let run_dirs = berth::Dirs::new(base, "run");
    let run_image = berth::import(&run_dirs, &layout, "berth-bench")?;
    let runs = berth::berth_run(&run_dirs, &run_image, sz.runs)?;
    rep.lifecycle_ms
        .insert("berth run (process)".into(), Dist::of(&runs));

    step("berth run (agent): lifecycle");
    let agent_run_dirs = berth::Dirs::new(base, "agent-run");
    let agent_run_image = berth::import(&agent_run_dirs, &layout, "berth-bench")?;
    let (runs, apart) = berth::berth_run_agent(&agent_run_dirs, &agent_run_image, sz.runs, QUIET)?;
    rep.lifecycle_ms
        .insert("berth run (agent)".into(), Dist::of(&runs));
    rep.lifecycle_ms.insert(
        format!("berth run (agent), {QUIET_LABEL}"),
        Dist::of(&apart),
    );

    step("runc run: lifecycle");
    let runc = peers::runc_lifecycles(base, &runc_true, sz.runs, Duration::ZERO)?;
    rep.lifecycle_ms.insert("runc run".into(), Dist::of(&runc));
    let runc = peers::runc_lifecycles(base, &runc_true, sz.runs, QUIET)?;
    rep.lifecycle_ms
        .insert(format!("runc run, {QUIET_LABEL}"), Dist::of(&runc));

    step("containerd (ctr run --rm): lifecycle, throughput, shim memory");
    {
        let cd = peers::Containerd::start(base)?;
        let cimage = cd.import(&archive)?;
        cd.run_rm(&cimage, "warm")?;
        let mut v = Vec::new();
        for i in 0..sz.runs {
            let t0 = Instant::now();
            cd.run_rm(&cimage, &format!("lc-{i}"))?;
            v.push(t0.elapsed());
        }
        rep.lifecycle_ms
            .insert("containerd (ctr run --rm)".into(), Dist::of(&v));
        let total = sz.throughput.min(sz.runs * 2).max(sz.in_flight);
        let t0 = Instant::now();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| -> Result<()> {
            let hs: Vec<_> = (0..sz.in_flight)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if i >= total {
                                return Ok(());
                            }
                            cd.run_rm(&cimage, &format!("tp-{i}"))?;
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().expect("ctr thread")?;
            }
            Ok(())
        })?;
        rep.throughput_per_s.insert(
            "containerd (parallel ctr run --rm)".into(),
            total as f64 / t0.elapsed().as_secs_f64(),
        );
        for i in 0..sz.shims {
            cd.ctr(&[
                "run",
                "-d",
                &cimage,
                &format!("shim-{i}"),
                "/bin/sleep",
                "100000",
            ])?;
        }
        let sock = cd.socket.display().to_string();
        let shims: Vec<i32> = memory::pids_named("containerd-shim")
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&sock))
                    .unwrap_or(false)
            })
            .collect();
        let (pd, pss) = berth::average_memory(&shims);
        rep.shim_private_dirty_kib = pd;
        rep.shim_pss_kib = pss;
        cd.clean_containers();
    }

    step("berth agent: memory per container and recovery");
    let ag = berth::Dirs::new(base, "agent");
    let ag_image = berth::import(&ag, &layout, "berth-bench")?;
    system.block_on(async {
        let (mut agent, _) = berth::Agent::start(&ag)?;
        let rss0 = memory::rss_kib(agent.pid()).unwrap_or(0);
        let mut launched = 0;
        for &n in &sz.recovery {
            berth::launch_sleepers(&ag, &ag_image, launched, n - launched).await?;
            launched = n;
            if n == *sz.recovery.last().unwrap() {
                let rss1 = memory::rss_kib(agent.pid()).unwrap_or(0);
                rep.agent_rss_kib_per_container = rss1.saturating_sub(rss0) as f64 / n as f64;
                let (_, sups) = berth::running(&ag).await?;
                let (pd, pss) = berth::average_memory(&sups);
                rep.supervisor_private_dirty_kib = pd;
                rep.supervisor_pss_kib = pss;
            }
            agent.kill9();
            let (a, took) = berth::Agent::start(&ag)?;
            agent = a;
            let (running, _) = berth::running(&ag).await?;
            anyhow::ensure!(
                running == n,
                "recovered {running} of {n} running containers"
            );
            rep.recovery_ms.insert(n, took.as_secs_f64() * 1e3);
        }
        berth::destroy_all(&ag).await?;
        agent.terminate();
        anyhow::Ok(())
    })?;

    step("images: import + unpack of a larger image, beside umoci unpack");
    let (big, bytes) = fixture::big_layout(base, sz.big_mb)?;
    rep.image_mb = bytes as f64 / (1u64 << 20) as f64;
    let t0 = Instant::now();
    fixture::sh(std::process::Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:bench", big.display()),
        &base.join("umoci-unpacked").display().to_string(),
    ]))?;
    rep.umoci_unpack_mb_s = rep.image_mb / t0.elapsed().as_secs_f64();
    std::fs::remove_dir_all(base.join("umoci-unpacked"))?;
    let img = berth::Dirs::new(base, "images");
    let t0 = Instant::now();
    let big_ref = berth::import(&img, &big, "berth-big")?;
    let import_s = t0.elapsed().as_secs_f64();
    let (first, second) = system.block_on(async {
        let c = berth::containerizer(&img)?;
        c.recover().await?;
        let (_, p1) = berth::lifecycle(&c, &big_ref, 1, "big-a").await?;
        // Several cached provisions: one sample right after a large unpack
        // swings with the writeback still under way.
        let (_, p2) = berth::lifecycle(&c, &big_ref, 7, "big-b").await?;
        anyhow::Ok((p1, p2))
    })?;
    // The median PROVISIONING time of `p`.
    let prov = |p: &[berth::Phases]| {
        let mut ms: Vec<f64> = p
            .iter()
            .filter_map(|ph| {
                ph.steps()
                    .into_iter()
                    .find(|(n, _)| *n == "PROVISIONING")
                    .map(|(_, ms)| ms)
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms.get(ms.len() / 2).copied().unwrap_or(0.0)
    };
    // Import (blobs verified into the store) plus the first provision,
    // which unpacks every layer into the cache.
    let unpack_s = import_s + prov(&first) / 1e3;
    rep.berth_import_unpack_mb_s = rep.image_mb / unpack_s;
    rep.big_cached_provision_ms = prov(&second);

    // Ratios and targets.
    let p50 = |k: &str| {
        rep.lifecycle_ms
            .get(k)
            .map(|d| d.p50_ms)
            .unwrap_or(f64::NAN)
    };
    let b = p50("berth (embedded API)");
    rep.ratio_berth_to_runc_p50 = b / p50("runc run");
    rep.ratio_berth_to_containerd_p50 = b / p50("containerd (ctr run --rm)");
    let run_agent = p50("berth run (agent)") / p50("runc run");
    let run_cold = p50("berth run (process)") / p50("runc run");
    let t = |k: &str| rep.throughput_per_s.get(k).copied().unwrap_or(0.0);
    let tput_ratio = t("berth (embedded API)") / t("containerd (parallel ctr run --rm)");
    let (n_max, rec_max) = rep
        .recovery_ms
        .iter()
        .last()
        .map(|(n, ms)| (*n, *ms))
        .unwrap_or((0, f64::NAN));
    rep.targets = vec![
        (
            "lifecycle p50 ≤ 1/4 of runc's".into(),
            format!("{:.3}×", rep.ratio_berth_to_runc_p50),
            rep.ratio_berth_to_runc_p50 <= 0.25,
        ),
        (
            "lifecycle p50 ≤ 1/20 of containerd's".into(),
            format!("{:.3}×", rep.ratio_berth_to_containerd_p50),
            rep.ratio_berth_to_containerd_p50 <= 0.05,
        ),
        (
            "`berth run` through an agent ≤ 1/3 of runc's p50".into(),
            format!("{run_agent:.3}×"),
            run_agent <= 1.0 / 3.0,
        ),
        (
            "`berth run` in-process (cold) ≤ runc's p50".into(),
            format!("{run_cold:.3}×"),
            run_cold <= 1.0,
        ),
        (
            "throughput ≥ 15× containerd's".into(),
            format!("{tput_ratio:.1}×"),
            tput_ratio >= 15.0,
        ),
        (
            format!("recovery of {n_max} containers ≤ 1 s (target: 5000)"),
            format!("{rec_max:.0} ms"),
            rec_max <= 1000.0 && n_max >= 5000,
        ),
        (
            "supervisor ≤ 256 KiB private dirty".into(),
            format!("{:.0} KiB", rep.supervisor_private_dirty_kib),
            rep.supervisor_private_dirty_kib <= 256.0,
        ),
        (
            "agent ≤ 64 KiB per container".into(),
            format!("{:.1} KiB", rep.agent_rss_kib_per_container),
            rep.agent_rss_kib_per_container <= 64.0,
        ),
        (
            "import+unpack ≥ umoci unpack's MB/s".into(),
            format!(
                "{:.0} vs {:.0} MB/s",
                rep.berth_import_unpack_mb_s, rep.umoci_unpack_mb_s
            ),
            rep.berth_import_unpack_mb_s >= rep.umoci_unpack_mb_s,
        ),
        (
            "cached provision ≤ 1 ms".into(),
            format!("{:.3} ms", rep.cached_provision_ms),
            rep.cached_provision_ms <= 1.0,
        ),
    ];
    Ok(rep)
}

/// The p50 of each of berth's steps over `phases`.
fn step_medians(phases: &[berth::Phases]) -> BTreeMap<String, f64> {
    let mut per_step: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for p in phases {
        for (name, ms) in p.steps() {
            per_step.entry(name).or_default().push(ms);
        }
    }
    per_step
        .into_iter()
        .map(|(name, mut v)| (name.to_string(), stats::median(&mut v)))
        .collect()
}

/// `--lifecycle`: berth's embedded lifecycle with its steps, then runc's,
/// as in the full run (one after the other: runc's own teardown, e.g. of
/// its network namespaces, goes on in the kernel after each run and
/// would slow whichever runs next).
fn lifecycle_only(
    rep: &mut Report,
    sz: &Sizes,
    system: &actix_rt::SystemRunner,
    emb: &berth::Dirs,
    image: &str,
    base: &Path,
    runc_true: &Path,
) -> Result<Report> {
    step("berth (embedded): lifecycle, throughput");
    let (times, phases, tput) = system.block_on(async {
        let c = berth::containerizer(emb)?;
        c.recover().await?;
        berth::lifecycle(&c, image, 1, "warm").await?;
        let (times, phases) = berth::lifecycle(&c, image, sz.runs, "lc").await?;
        let tput = berth::throughput(&c, image, sz.throughput, sz.in_flight).await?;
        anyhow::Ok((times, phases, tput))
    })?;
    rep.throughput_per_s
        .insert("berth (embedded API)".into(), tput);
    step("runc run: lifecycle");
    let runc = peers::runc_lifecycles(base, runc_true, sz.runs, Duration::ZERO)?;
    rep.lifecycle_ms
        .insert("berth (embedded API)".into(), Dist::of(&times));
    rep.lifecycle_ms.insert("runc run".into(), Dist::of(&runc));
    rep.berth_step_p50_ms = step_medians(&phases);
    let b = rep.lifecycle_ms["berth (embedded API)"].p50_ms;
    rep.ratio_berth_to_runc_p50 = b / rep.lifecycle_ms["runc run"].p50_ms;
    rep.targets = vec![(
        "lifecycle p50 ≤ 1/4 of runc's".into(),
        format!("{:.3}×", rep.ratio_berth_to_runc_p50),
        rep.ratio_berth_to_runc_p50 <= 0.25,
    )];
    Ok(std::mem::take(rep))
}

fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n## berth-bench ({} mode)\n", r.mode);
    let _ = writeln!(s, "### Lifecycle of `/bin/true` (busybox image), ms\n");
    let _ = writeln!(
        s,
        "| peer | n | min | p50 | p90 | max |\n|---|---:|---:|---:|---:|---:|"
    );
    for (k, d) in &r.lifecycle_ms {
        let _ = writeln!(
            s,
            "| {k} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            d.n, d.min_ms, d.p50_ms, d.p90_ms, d.max_ms
        );
    }
    if r.mode == "lifecycle" {
        let _ = writeln!(
            s,
            "\nberth/runc p50: {:.3}×\n\nthroughput, berth (embedded API), 16 in flight: {:.1}/s\n\n### Where berth's time goes (p50, ms)\n\n| step | p50 |\n|---|---:|",
            r.ratio_berth_to_runc_p50,
            r.throughput_per_s.get("berth (embedded API)").copied().unwrap_or(0.0)
        );
        for (k, v) in &r.berth_step_p50_ms {
            let _ = writeln!(s, "| {k} | {v:.3} |");
        }
        return s;
    }
    let _ = writeln!(
        s,
        "\nberth/runc p50: {:.3}×; berth/containerd p50: {:.3}×\n",
        r.ratio_berth_to_runc_p50, r.ratio_berth_to_containerd_p50
    );
    let quiet = |k: &str| {
        r.lifecycle_ms
            .get(&format!("{k}, {QUIET_LABEL}"))
            .map(|d| d.p50_ms)
    };
    if let (Some(b), Some(c)) = (quiet("berth run (agent)"), quiet("runc run")) {
        let _ = writeln!(
            s,
            "On a quiet node (each launch {QUIET:?} after the last ended), `berth run` through an agent / `runc run` p50: {:.3}×\n",
            b / c
        );
    }
    let _ = writeln!(
        s,
        "A no-op remote isolator plugin (berth.plugin.v1 over a Unix socket; Prepare, Isolate, Watch, Cleanup per launch) costs {:.3} ms per launch (p50 with it minus without; its PREPARING p50 is {:.3} ms).\n",
        r.noop_plugin_cost_per_launch_ms, r.noop_plugin_preparing_p50_ms
    );
    let _ = writeln!(
        s,
        "### Where berth's time goes (p50, ms)\n\n| step | p50 |\n|---|---:|"
    );
    for (k, v) in &r.berth_step_p50_ms {
        let _ = writeln!(s, "| {k} | {v:.3} |");
    }
    let _ = writeln!(
        s,
        "\n### Throughput (launch+destroy, containers/s)\n\n| peer | containers/s |\n|---|---:|"
    );
    for (k, v) in &r.throughput_per_s {
        let _ = writeln!(s, "| {k} | {v:.1} |");
    }
    let _ = writeln!(s, "\n### Recovery (agent start → all recovered and watched)\n\n| running containers | ms |\n|---:|---:|");
    for (n, ms) in &r.recovery_ms {
        let _ = writeln!(s, "| {n} | {ms:.1} |");
    }
    let _ = writeln!(
        s,
        "\n### Memory per running container, KiB\n\n| process | private dirty | PSS |\n|---|---:|---:|\n| berth-supervisor | {:.0} | {:.0} |\n| containerd-shim-runc-v2 | {:.0} | {:.0} |\n| berth agent RSS growth | {:.1} | |",
        r.supervisor_private_dirty_kib,
        r.supervisor_pss_kib,
        r.shim_private_dirty_kib,
        r.shim_pss_kib,
        r.agent_rss_kib_per_container
    );
    let _ = writeln!(
        s,
        "\n### Images ({:.0} MiB, 5 layers)\n\n| what | value |\n|---|---:|\n| berth import + unpack | {:.1} MB/s |\n| umoci unpack | {:.1} MB/s |\n| berth cached provision (busybox) | {:.3} ms |\n| berth cached provision (large image, p50 of 7) | {:.3} ms |",
        r.image_mb, r.berth_import_unpack_mb_s, r.umoci_unpack_mb_s, r.cached_provision_ms, r.big_cached_provision_ms
    );
    let _ = writeln!(
        s,
        "\n### Targets\n\n| target | measured | met |\n|---|---:|---|"
    );
    for (t, m, ok) in &r.targets {
        let _ = writeln!(s, "| {t} | {m} | {} |", if *ok { "met" } else { "not met" });
    }
    s
}

/// Removes what the bench made: on success the containers are gone by
/// now; after a failure, its agents, supervisors and containers (found by
/// the temp dir in their command lines and by the bench's cgroups) are
/// killed first. Then the mounts, cgroup roots and temp dir go.
fn cleanup(base: &Path) {
    // The embedded containerizers' trash thread may still be removing
    // trees under `base`.
    berth_state::trash::flush();
    let pid = std::process::id();
    let me = pid as i32;
    let base_text = base.display().to_string();
    let roots: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|h| std::fs::read_dir(h.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("berth-bench-") && n.ends_with(&format!("-{pid}"))
        })
        .collect();
    for _ in 0..50 {
        let mut pids: Vec<i32> = memory::pids_mentioning(&base_text);
        for r in &roots {
            let mut dirs = vec![r.clone()];
            dirs.extend(berth_state::cgroupfs::subdirs_deepest_first(r));
            for d in dirs {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.retain(|p| *p != me);
        if pids.is_empty() {
            break;
        }
        for p in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
        let mut mounts: Vec<String> = mi
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(base.to_str().unwrap_or("/nonexistent")))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    for r in roots {
        let deadline = Instant::now() + Duration::from_secs(5);
        let _ = berth_state::cgroupfs::remove_tree(&r, deadline);
    }
    // The claims of the bench's cgroup roots.
    for e in std::fs::read_dir(::berth::CGROUP_CLAIMS_DIR)
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("berth-bench-") && n.ends_with(&format!("-{pid}")) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir_all(base);
}
