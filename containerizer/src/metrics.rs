//! The figures an operator watches, and their Prometheus exposition.
//!
//! The hot path only bumps atomics: a launch adds one to a counter and
//! one observation per launch step to a fixed-bucket histogram (an array
//! of atomics, indexed by the step); a destroy does the same per stage and
//! counts its termination reason. Nothing is allocated or locked for it.
//! Everything else is read when Prometheus scrapes: the counters, the
//! containers per state, and each RUNNING container's usage (the data of
//! `berth stats`), encoded by `prometheus-client` in the text format.

use berth_state::{ContainerId, ContainerState, ResourceStatistics, TerminationReason};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The `Content-Type` of [`encode`]'s output (Prometheus text 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The histograms' upper bounds, in nanoseconds: 100 µs to 60 s. A
/// launch step takes from a fraction of a millisecond (a checkpoint) to
/// seconds (an image's rootfs, a download).
const BOUNDS_NANOS: [u64; 18] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// A latency histogram with fixed buckets, made of atomics: observing is
/// a search in 18 bounds and two relaxed `fetch_add`s.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NANOS.partition_point(|&b| b < n);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(n, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the recorded durations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// (upper bound in seconds, observations in that bucket alone), the
    /// last bound +Inf.
    fn buckets(&self) -> Vec<(f64, u64)> {
        BOUNDS_NANOS
            .iter()
            .map(|&b| b as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect()
    }
}

/// A launch step, as timed by `berth_launch_step_duration_seconds`: the
/// container state it runs in (the fork and the release have their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchStep {
    /// The record and the sandbox (validation is not waited for).
    Starting,
    /// The provisioner's rootfs and the image user.
    Provisioning,
    /// PREPARING's checkpoint and every isolator's `prepare`.
    Preparing,
    /// The launcher forks the supervisor and the container's init.
    Forking,
    /// Every isolator's `isolate(pid)`.
    Isolating,
    /// The fetcher (and the sandbox's chown to the container's user).
    Fetching,
    /// The init is released to exec the command; RUNNING is checkpointed.
    Releasing,
}

impl LaunchStep {
    pub const ALL: [LaunchStep; 7] = [
        LaunchStep::Starting,
        LaunchStep::Provisioning,
        LaunchStep::Preparing,
        LaunchStep::Forking,
        LaunchStep::Isolating,
        LaunchStep::Fetching,
        LaunchStep::Releasing,
    ];

    /// The `step` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchStep::Starting => "STARTING",
            LaunchStep::Provisioning => "PROVISIONING",
            LaunchStep::Preparing => "PREPARING",
            LaunchStep::Forking => "FORKING",
            LaunchStep::Isolating => "ISOLATING",
            LaunchStep::Fetching => "FETCHING",
            LaunchStep::Releasing => "RELEASING",
        }
    }
}

/// A destroy stage, as timed by `berth_destroy_stage_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestroyStage {
    /// DESTROYING is checkpointed.
    MarkDestroying,
    /// Nested containers are destroyed.
    Nested,
    /// The launch's in-flight step finishes.
    WaitLaunch,
    /// The launcher kills every process (after the grace period, if any)
    /// and the exit status is collected.
    Kill,
    /// The isolators' `cleanup`, in reverse order.
    Cleanup,
    /// The provisioner removes the rootfs.
    Provisioner,
    /// TERMINATED is checkpointed and the runtime dir removed.
    Terminate,
}

impl DestroyStage {
    pub const ALL: [DestroyStage; 7] = [
        DestroyStage::MarkDestroying,
        DestroyStage::Nested,
        DestroyStage::WaitLaunch,
        DestroyStage::Kill,
        DestroyStage::Cleanup,
        DestroyStage::Provisioner,
        DestroyStage::Terminate,
    ];

    /// The `stage` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            DestroyStage::MarkDestroying => "mark_destroying",
            DestroyStage::Nested => "nested",
            DestroyStage::WaitLaunch => "wait_launch",
            DestroyStage::Kill => "kill",
            DestroyStage::Cleanup => "cleanup",
            DestroyStage::Provisioner => "provisioner",
            DestroyStage::Terminate => "terminate",
        }
    }
}

/// Termination reasons are the enum's values 0..=7 (UNKNOWN).
const REASONS: usize = TerminationReason::Unknown as usize + 1;

/// Counters and histograms an operator watches; shared by the actor and
/// the [`crate::Containerizer`] handle ([`crate::Containerizer::metrics`]).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Destroy attempts that failed at some stage (the container stays
    /// DESTROYING and a later destroy retries).
    pub container_destroy_errors: AtomicU64,
    /// Containers launched since start (admitted: their config was valid).
    pub containers_launched: AtomicU64,
    /// Containers destroyed, by the termination's reason (indexed by
    /// `TerminationReason as usize`).
    containers_destroyed: [AtomicU64; REASONS],
    /// Successful launch steps' latencies, indexed like [`LaunchStep::ALL`].
    launch_steps: [Histogram; LaunchStep::ALL.len()],
    /// Launches from admission to RUNNING.
    pub launch_duration: Histogram,
    /// Successful destroy stages' latencies, indexed like [`DestroyStage::ALL`].
    destroy_stages: [Histogram; DestroyStage::ALL.len()],
    /// Containers the last recovery re-attached to (still running).
    pub containers_recovered: AtomicU64,
    /// Orphans (found on the host, explained by no record) the last
    /// recovery cleaned up.
    pub orphans_cleaned: AtomicU64,
    /// Image pulls through the agent's API that succeeded.
    pub image_pulls: AtomicU64,
    /// Image pulls through the agent's API that failed.
    pub image_pull_errors: AtomicU64,
    /// Bytes of image blobs downloaded by those pulls, counted as they
    /// arrive (handed to [`berth_provisioner::pull::PullOptions`]).
    pub image_pulled_bytes: Arc<AtomicU64>,
}

impl Metrics {
    /// Counts a container destroyed with `reason`.
    pub fn destroyed(&self, reason: TerminationReason) {
        let i = (reason as usize).min(REASONS - 1);
        self.containers_destroyed[i].fetch_add(1, Ordering::Relaxed);
    }

    /// How many containers were destroyed with `reason`.
    pub fn destroyed_count(&self, reason: TerminationReason) -> u64 {
        self.containers_destroyed
            .get(reason as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The latencies of launch step `step`.
    pub fn launch_step(&self, step: LaunchStep) -> &Histogram {
        &self.launch_steps[step as usize]
    }

    /// The latencies of destroy stage `stage`.
    pub fn destroy_stage(&self, stage: DestroyStage) -> &Histogram {
        &self.destroy_stages[stage as usize]
    }
}

/// A fetch cache's hits and misses (a miss: the URI was downloaded, or
/// its download was tried). Shared by every clone of the cache.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// What a scrape reads from the containerizer at that moment.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// How many containers are in each state (terminated ones until removed).
    pub states: Vec<(ContainerState, u64)>,
    /// Each RUNNING container's usage (as `berth stats`).
    pub running: Vec<(ContainerId, ResourceStatistics)>,
}

/// Encodes `metrics`, the fetch cache's counters and `snapshot` in
/// Prometheus's text format (version 0.0.4).
pub fn encode(
    metrics: Arc<Metrics>,
    cache: Option<Arc<CacheCounters>>,
    snapshot: Snapshot,
) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Exposition {
        metrics,
        cache,
        snapshot,
    }));
    let mut out = String::new();
    // Writing to a String cannot fail, nor can the collector's encoding
    // (its names and labels are valid by construction).
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct Exposition {
    metrics: Arc<Metrics>,
    cache: Option<Arc<CacheCounters>>,
    snapshot: Snapshot,
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: &AtomicU64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v.load(Ordering::Relaxed));
    c.encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: &AtomicU64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v.load(Ordering::Relaxed));
    g.encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// One histogram family with one label (`key`), a series per value.
fn histograms<'h>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &'static str,
    series: impl Iterator<Item = (&'static str, &'h Histogram)>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (value, h) in series {
        let buckets = h.buckets();
        let count = buckets.iter().map(|(_, n)| n).sum();
        m.encode_family(&[(key, value)])?
            .encode_histogram::<NoLabelSet>(h.sum_seconds(), count, &buckets, None)?;
    }
    Ok(())
}

/// One gauge or counter family labelled by container id, from the
/// running containers' usage.
fn per_container<V>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    running: &[(String, ResourceStatistics)],
    value: impl Fn(&ResourceStatistics) -> V,
) -> Result<(), std::fmt::Error>
where
    V: prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (id, s) in running {
        let labels = [("id", id.as_str())];
        let fam = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value(s)).encode(fam)?,
            _ => ConstGauge::new(value(s)).encode(fam)?,
        }
    }
    Ok(())
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.metrics;
        counter(
            &mut e,
            "berth_containers_launched",
            "Containers admitted for launch since the agent started.",
            &m.containers_launched,
        )?;
        {
            let mut d = e.encode_descriptor(
                "berth_containers_destroyed",
                "Containers destroyed since the agent started, by termination reason.",
                None,
                MetricType::Counter,
            )?;
            for (i, n) in m.containers_destroyed.iter().enumerate().skip(1) {
                let reason = TerminationReason::try_from(i as i32)
                    .unwrap_or(TerminationReason::Unknown)
                    .as_str_name();
                ConstCounter::new(n.load(Ordering::Relaxed))
                    .encode(d.encode_family(&[("reason", reason)])?)?;
            }
        }
        counter(
            &mut e,
            "berth_container_destroy_errors",
            "Destroy attempts that failed at a stage (the container stays DESTROYING).",
            &m.container_destroy_errors,
        )?;
        gauge(
            &mut e,
            "berth_containers_recovered",
            "Running containers the agent re-attached to at its start.",
            &m.containers_recovered,
        )?;
        gauge(
            &mut e,
            "berth_orphans_cleaned",
            "Orphaned containers (no record explains them) cleaned up at the agent's start.",
            &m.orphans_cleaned,
        )?;
        histograms(
            &mut e,
            "berth_launch_step_duration_seconds",
            "Latency of each successful launch step.",
            "step",
            LaunchStep::ALL
                .iter()
                .map(|s| (s.as_str(), m.launch_step(*s))),
        )?;
        {
            let mut d = e.encode_descriptor(
                "berth_launch_duration_seconds",
                "Latency of successful launches, from admission to RUNNING.",
                None,
                MetricType::Histogram,
            )?;
            let h = &m.launch_duration;
            d.encode_histogram::<NoLabelSet>(h.sum_seconds(), h.count(), &h.buckets(), None)?;
        }
        histograms(
            &mut e,
            "berth_destroy_stage_duration_seconds",
            "Latency of each successful destroy stage.",
            "stage",
            DestroyStage::ALL
                .iter()
                .map(|s| (s.as_str(), m.destroy_stage(*s))),
        )?;
        if let Some(c) = &self.cache {
            counter(
                &mut e,
                "berth_fetch_cache_hits",
                "Cached fetches served from the fetch cache.",
                &c.hits,
            )?;
            counter(
                &mut e,
                "berth_fetch_cache_misses",
                "Cached fetches that had to download the URI.",
                &c.misses,
            )?;
        }
        counter(
            &mut e,
            "berth_image_pulls",
            "Image pulls through the agent's API that succeeded.",
            &m.image_pulls,
        )?;
        counter(
            &mut e,
            "berth_image_pull_errors",
            "Image pulls through the agent's API that failed.",
            &m.image_pull_errors,
        )?;
        counter(
            &mut e,
            "berth_image_pulled_bytes",
            "Bytes of image blobs downloaded by pulls through the agent's API.",
            &m.image_pulled_bytes,
        )?;
        {
            let mut d = e.encode_descriptor(
                "berth_containers",
                "Containers the agent knows, by state (terminated ones until removed).",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in &self.snapshot.states {
                ConstGauge::new(*n).encode(d.encode_family(&[("state", state.as_str_name())])?)?;
            }
        }
        let running: Vec<(String, ResourceStatistics)> = self
            .snapshot
            .running
            .iter()
            .map(|(id, s)| (id.to_string(), *s))
            .collect();
        per_container(
            &mut e,
            "berth_container_cpu_seconds",
            "CPU time (user + system) a running container used.",
            MetricType::Counter,
            &running,
            |s| s.cpus_user_time_secs + s.cpus_system_time_secs,
        )?;
        per_container(
            &mut e,
            "berth_container_memory_bytes",
            "Memory a running container uses (its cgroup's usage).",
            MetricType::Gauge,
            &running,
            |s| s.mem_usage_bytes,
        )?;
        per_container(
            &mut e,
            "berth_container_processes",
            "Tasks (processes and threads) in a running container.",
            MetricType::Gauge,
            &running,
            |s| s.processes,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_duration_in_its_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100)); // on the first bound: in it
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(3600));
        assert_eq!(h.count(), 4);
        let b = h.buckets();
        assert_eq!(b[0], (0.0001, 1));
        assert_eq!(b[1], (0.00025, 1));
        assert_eq!(b[5], (0.005, 1));
        assert_eq!(b[b.len() - 1], (f64::INFINITY, 1));
        assert!((h.sum_seconds() - 3600.003201).abs() < 1e-9);
    }

    #[test]
    fn the_exposition_has_every_family_and_running_containers() {
        let m = Arc::new(Metrics::default());
        m.containers_launched.fetch_add(2, Ordering::Relaxed);
        m.destroyed(TerminationReason::OomKilled);
        m.launch_step(LaunchStep::Isolating)
            .observe(Duration::from_millis(2));
        m.destroy_stage(DestroyStage::Kill)
            .observe(Duration::from_millis(20));
        m.image_pulled_bytes.fetch_add(1234, Ordering::Relaxed);
        let cache = Arc::new(CacheCounters::default());
        cache.hits.fetch_add(3, Ordering::Relaxed);
        let running = ResourceStatistics {
            cpus_user_time_secs: 1.5,
            cpus_system_time_secs: 0.25,
            mem_usage_bytes: 4096,
            processes: 2,
            ..Default::default()
        };
        let text = encode(
            m,
            Some(cache),
            Snapshot {
                states: vec![
                    (ContainerState::Running, 1),
                    (ContainerState::Terminated, 3),
                ],
                running: vec![(ContainerId::new("web"), running)],
            },
        );
        for line in [
            "# TYPE berth_containers_launched_total counter",
            "berth_containers_launched_total 2",
            r#"berth_containers_destroyed_total{reason="OOM_KILLED"} 1"#,
            r#"berth_containers_destroyed_total{reason="COMPLETED"} 0"#,
            "berth_container_destroy_errors_total 0",
            "berth_containers_recovered 0",
            "berth_orphans_cleaned 0",
            "# TYPE berth_launch_step_duration_seconds histogram",
            r#"berth_launch_step_duration_seconds_bucket{step="ISOLATING",le="0.001"} 0"#,
            r#"berth_launch_step_duration_seconds_bucket{step="ISOLATING",le="0.0025"} 1"#,
            r#"berth_launch_step_duration_seconds_bucket{step="ISOLATING",le="+Inf"} 1"#,
            r#"berth_launch_step_duration_seconds_count{step="ISOLATING"} 1"#,
            r#"berth_launch_step_duration_seconds_count{step="STARTING"} 0"#,
            "berth_launch_duration_seconds_count 0",
            r#"berth_destroy_stage_duration_seconds_count{stage="kill"} 1"#,
            "berth_fetch_cache_hits_total 3",
            "berth_fetch_cache_misses_total 0",
            "berth_image_pulls_total 0",
            "berth_image_pulled_bytes_total 1234",
            r#"berth_containers{state="RUNNING"} 1"#,
            r#"berth_containers{state="TERMINATED"} 3"#,
            "# TYPE berth_container_cpu_seconds_total counter",
            r#"berth_container_cpu_seconds_total{id="web"} 1.75"#,
            r#"berth_container_memory_bytes{id="web"} 4096"#,
            r#"berth_container_processes{id="web"} 2"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("REASON_UNSPECIFIED"),
            "the unspecified reason is not a series"
        );
    }
}
