//! Prometheus metrics. Each server owns its registry (so tests running several servers in one
//! process see only their own numbers) and renders it on `GET /metrics` in text format.

use std::sync::Arc;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Latency buckets in seconds, from sub-millisecond hops to minute-long generations.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// The registry of one server plus the HTTP metrics every server records.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `comps_http_requests_total{method, route, status}`.
    pub requests: IntCounterVec,
    /// `comps_http_request_duration_seconds{method, route, status}`: until the body ended.
    pub duration: HistogramVec,
    /// `comps_http_first_byte_seconds{method, route}`: until the first body chunk (streams).
    pub first_byte: HistogramVec,
    /// `comps_http_requests_in_flight{route}`.
    pub in_flight: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the HTTP metrics and, on Linux, the process metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("comps_http_requests_total", "HTTP requests answered, by route and status"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new("comps_http_request_duration_seconds", "HTTP request latency until the body ended")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let first_byte = HistogramVec::new(
            HistogramOpts::new("comps_http_first_byte_seconds", "Latency until the first body chunk was sent")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("valid metric");
        let in_flight =
            IntGaugeVec::new(Opts::new("comps_http_requests_in_flight", "HTTP requests being answered"), &["route"])
                .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(first_byte.clone()),
            Box::new(in_flight.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            registry.register(Box::new(pc)).expect("process metrics register once per registry");
        }
        Self { registry, requests, duration, first_byte, in_flight }
    }

    /// The registry, to add a service's own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Register a collector, ignoring a second registration of the same metric.
    pub fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: &C) {
        match self.registry.register(Box::new(c.clone())) {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
            Err(e) => tracing::warn!(error = %e, "metric not registered"),
        }
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;
