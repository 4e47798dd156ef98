//! In-memory latency statistics for `GET /v1/statistics`, in OPEA's shape:
//! `{name: {p50_latency, p99_latency, average_latency, p50_latency_first_token, ...}}`.
//!
//! Unlike OPEA's unbounded lists, each stat keeps the most recent [`WINDOW`] samples (the
//! percentiles describe recent traffic and memory stays flat); `count` is the all-time total.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// Samples kept per series.
pub const WINDOW: usize = 10_000;

#[derive(Debug, Default)]
struct Series {
    samples: VecDeque<f64>,
    count: u64,
}

impl Series {
    fn push(&mut self, v: f64) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(v);
        self.count += 1;
    }

    fn summarize(&self, out: &mut serde_json::Map<String, Value>, suffix: &str) {
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let avg = if sorted.is_empty() { None } else { Some(sorted.iter().sum::<f64>() / sorted.len() as f64) };
        out.insert(format!("p50_{suffix}"), json!(percentile(&sorted, 50.0)));
        out.insert(format!("p90_{suffix}"), json!(percentile(&sorted, 90.0)));
        out.insert(format!("p99_{suffix}"), json!(percentile(&sorted, 99.0)));
        out.insert(format!("average_{suffix}"), json!(avg));
    }
}

/// numpy's default (`linear`) percentile of sorted data; `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = (q / 100.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// One named statistic: total latencies and, for streamed answers, first-token latencies.
#[derive(Debug, Default)]
pub struct BaseStatistics {
    inner: Mutex<(Series, Series)>,
}

impl BaseStatistics {
    /// Record one request (OPEA's `append_latency`; a zero first-token latency is skipped as
    /// OPEA does for a falsy value).
    pub fn append_latency(&self, latency: Duration, first_token: Option<Duration>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.push(latency.as_secs_f64());
        if let Some(ft) = first_token.filter(|d| !d.is_zero()) {
            g.1.push(ft.as_secs_f64());
        }
    }

    /// OPEA's six keys plus `p90_*` and `count`.
    pub fn get_statistics(&self) -> Value {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = serde_json::Map::new();
        g.0.summarize(&mut out, "latency");
        g.1.summarize(&mut out, "latency_first_token");
        out.insert("count".into(), json!(g.0.count));
        Value::Object(out)
    }
}

/// The statistics of one server, by name (OPEA's `statistics_dict`, but per server so several
/// servers in one process — tests — do not mix).
#[derive(Debug, Clone, Default)]
pub struct StatisticsRegistry {
    inner: Arc<Mutex<BTreeMap<String, Arc<BaseStatistics>>>>,
}

impl StatisticsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stat called `name`, created on first use (OPEA's `register_statistics`).
    pub fn register(&self, name: &str) -> Arc<BaseStatistics> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(name.to_string()).or_default().clone()
    }

    /// The stat called `name`, if registered.
    pub fn get(&self, name: &str) -> Option<Arc<BaseStatistics>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Every stat (OPEA's `collect_all_statistics`).
    pub fn collect_all(&self) -> Value {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Value::Object(g.iter().map(|(k, v)| (k.clone(), v.get_statistics())).collect())
    }
}
