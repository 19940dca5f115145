//! Latency distributions.

use std::time::Duration;

/// min / p50 / p90 / max of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Dist {
    pub n: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
}

impl Dist {
    pub fn of(samples: &[Duration]) -> Dist {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        if ms.is_empty() {
            return Dist::default();
        }
        let q = |p: f64| ms[(((ms.len() - 1) as f64) * p).round() as usize];
        Dist {
            n: ms.len(),
            min_ms: ms[0],
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            max_ms: ms[ms.len() - 1],
        }
    }
}

/// The median of `v` (0 when empty).
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
