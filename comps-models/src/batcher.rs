//! Dynamic batching for model compute: requests queue in a bounded channel; one dedicated
//! thread (never the async runtime) takes what is queued — up to a token budget and a request
//! count, waiting at most a short deadline to fill — sorts the items by length so each padded
//! sub-batch wastes little, runs the model, and answers each request on its own channel.
//! A request whose client has gone is skipped; a full queue is refused at once (429).
//!
//! The worker is a [`crate::worker`]: a panic inside the model's compute fails only the batch it
//! happened in (its requests get a 424 through `ModelError::Failed`) and the worker carries on
//! with the next batch; its health ([`Batcher::health`]) turns a service's `/health` 503 when
//! the thread has died or the model keeps panicking.
//!
//! Each batcher keeps Prometheus metrics under its name ([`BatchMetrics`]: queue wait, batch
//! size, forward time, queue depth) and, when traces are exported, gives each request a
//! `queue wait` span (until its batch starts) and a `forward` span per pass its items ran in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntGauge, Opts};
use tokio::sync::oneshot;
use tracing::Span;

use comps_core::health::HealthCheck;
use comps_core::metrics::Metrics;
use comps_core::telemetry;

use crate::ModelError;
use crate::worker::{WorkerHealth, spawn_worker};

/// Batching limits.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Padded tokens (longest item × items) per forward pass.
    pub max_batch_tokens: usize,
    /// Items per forward pass.
    pub max_batch_requests: usize,
    /// Longest wait for more work once the first request of a batch arrived.
    pub max_wait: Duration,
    /// Requests that may wait in the queue (429 beyond).
    pub queue_capacity: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 16_384,
            max_batch_requests: 64,
            max_wait: Duration::from_millis(2),
            queue_capacity: 1024,
        }
    }
}

/// Batching flags every model service shares; flatten into its clap struct.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    /// Padded tokens per forward pass.
    #[arg(long, env = "MAX_BATCH_TOKENS", default_value_t = 16_384)]
    pub max_batch_tokens: usize,
    /// Inputs per forward pass.
    #[arg(long, env = "MAX_BATCH_REQUESTS", default_value_t = 64)]
    pub max_batch_requests: usize,
    /// Microseconds the batcher waits for more work before running a batch.
    #[arg(long, env = "BATCH_WAIT_MICROS", default_value_t = 2_000)]
    pub batch_wait_micros: u64,
}

impl BatchArgs {
    /// The batcher settings, with room for `queue_capacity` waiting requests.
    pub fn config(&self, queue_capacity: usize) -> BatchConfig {
        BatchConfig {
            max_batch_tokens: self.max_batch_tokens.max(1),
            max_batch_requests: self.max_batch_requests.max(1),
            max_wait: Duration::from_micros(self.batch_wait_micros),
            queue_capacity: queue_capacity.max(1),
        }
    }
}

/// One unit of work: a token sequence, or a sequence with its token types.
pub trait BatchItem: Send + 'static {
    /// Its length in tokens (its cost in a batch).
    fn tokens(&self) -> usize;
}

impl BatchItem for Vec<u32> {
    fn tokens(&self) -> usize {
        self.len()
    }
}

/// Ids with token type ids (a cross-encoder's pair).
impl BatchItem for (Vec<u32>, Vec<u32>) {
    fn tokens(&self) -> usize {
        self.0.len()
    }
}

/// The model side of a batcher: runs one batch.
pub trait BatchModel: Send + 'static {
    /// What one item is.
    type Input: BatchItem;
    /// What one item produces.
    type Output: Send + 'static;
    /// Run `items` (sorted by length, longest last) in one forward pass.
    fn run(&mut self, items: &[&Self::Input]) -> Result<Vec<Self::Output>, String>;
}

struct Job<I, O> {
    items: Vec<I>,
    reply: oneshot::Sender<Result<Vec<O>, ModelError>>,
    /// When it was queued.
    queued: Instant,
    /// The request's span (the parent of its `forward` spans); disabled unless traces are exported.
    span: Span,
    /// Open while it waits; closed when its batch starts.
    wait: Span,
}

/// Batch sizes: powers of two up to the largest default batch.
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
/// Queue wait and forward time, seconds.
const TIME_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A batcher's Prometheus metrics, labelled `batcher="<its name>"`; a service puts them on its
/// `/metrics` with [`BatchMetrics::register_into`].
#[derive(Clone)]
pub struct BatchMetrics {
    /// `comps_batch_queue_wait_seconds`: from a request's arrival to the start of its batch.
    pub queue_wait: Histogram,
    /// `comps_batch_size`: items per forward pass.
    pub size: Histogram,
    /// `comps_batch_forward_seconds`: time of one forward pass.
    pub forward: Histogram,
    /// `comps_batch_queue_depth`: requests queued and not yet taken into a batch.
    pub depth: IntGauge,
}

impl std::fmt::Debug for BatchMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchMetrics").field("depth", &self.depth.get()).finish_non_exhaustive()
    }
}

impl BatchMetrics {
    fn new(name: &str) -> Self {
        let h = |metric: &str, help: &str, buckets: &[f64]| {
            let opts = HistogramOpts::new(metric, help).const_label("batcher", name).buckets(buckets.to_vec());
            Histogram::with_opts(opts).expect("fixed options")
        };
        Self {
            queue_wait: h(
                "comps_batch_queue_wait_seconds",
                "From a request's arrival at the batcher to the start of its batch",
                TIME_BUCKETS,
            ),
            size: h("comps_batch_size", "Items per forward pass", SIZE_BUCKETS),
            forward: h("comps_batch_forward_seconds", "Time of one forward pass", TIME_BUCKETS),
            depth: IntGauge::with_opts(
                Opts::new("comps_batch_queue_depth", "Requests queued and not yet in a batch")
                    .const_label("batcher", name),
            )
            .expect("fixed options"),
        }
    }

    /// Put them on a server's `/metrics`.
    pub fn register_into(&self, m: &Metrics) {
        m.register(&self.queue_wait);
        m.register(&self.size);
        m.register(&self.forward);
        m.register(&self.depth);
    }
}

/// Counters of a batcher.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Forward passes run.
    pub batches: AtomicU64,
    /// Items run.
    pub items: AtomicU64,
    /// Requests skipped because their client had gone.
    pub skipped: AtomicU64,
    /// Forward passes whose compute panicked (their requests failed; the worker carried on).
    pub panics: AtomicU64,
}

/// Handle to submit work; cheap to clone.
pub struct Batcher<I, O> {
    tx: SyncSender<Job<I, O>>,
    stats: Arc<BatchStats>,
    metrics: BatchMetrics,
    health: Arc<WorkerHealth>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            stats: self.stats.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
        }
    }
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("name", &self.health.name()).finish_non_exhaustive()
    }
}

impl<I: BatchItem, O: Send + 'static> Batcher<I, O> {
    /// Start the worker thread for `model`.
    pub fn start<M: BatchModel<Input = I, Output = O>>(name: &str, model: M, cfg: BatchConfig) -> Self {
        let (tx, rx) = sync_channel::<Job<I, O>>(cfg.queue_capacity.max(1));
        let stats = Arc::new(BatchStats::default());
        let worker_stats = stats.clone();
        let metrics = BatchMetrics::new(name);
        let worker_metrics = metrics.clone();
        let health = spawn_worker(name, "batcher", move |health| {
            worker(model, rx, cfg, &Worker { stats: &worker_stats, metrics: &worker_metrics, health })
        })
        .expect("start the batcher's worker thread");
        Self { tx, stats, metrics, health }
    }

    /// Counters.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Its Prometheus metrics.
    pub fn metrics(&self) -> &BatchMetrics {
        &self.metrics
    }

    /// The worker's health, for the service's `/health`: failing once the worker thread has
    /// stopped, or while the model's last [`comps_core::limits::BATCHER_UNHEALTHY_AFTER_PANICS`] batches all
    /// panicked. The check holds no handle to the queue, so it never keeps the worker alive.
    pub fn health(&self) -> HealthCheck {
        self.health.check()
    }

    /// Run one request's items; answers in input order.
    pub async fn submit(&self, items: Vec<I>) -> Result<Vec<O>, ModelError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        let (span, wait) = if telemetry::enabled() {
            let wait = tracing::info_span!("queue wait", batcher = self.health.name(), items = items.len());
            (Span::current(), wait)
        } else {
            (Span::none(), Span::none())
        };
        // Counted before it is sent so the worker's decrement never comes first.
        self.metrics.depth.inc();
        let sent = self.tx.try_send(Job { items, reply, queued: Instant::now(), span, wait });
        if sent.is_err() {
            self.metrics.depth.dec();
        }
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ModelError::Busy(format!("{} queue is full; retry later", self.health.name())));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ModelError::Stopped(format!("{} worker has stopped", self.health.name())));
            }
        }
        rx.await.map_err(|_| ModelError::Failed(format!("{} worker dropped the request", self.health.name())))?
    }
}

type JobOf<M> = Job<<M as BatchModel>::Input, <M as BatchModel>::Output>;

/// The worker thread's side of a batcher: what it reports to.
struct Worker<'a> {
    stats: &'a BatchStats,
    metrics: &'a BatchMetrics,
    health: &'a WorkerHealth,
}

fn worker<M: BatchModel>(mut model: M, rx: Receiver<JobOf<M>>, cfg: BatchConfig, w: &Worker<'_>) {
    let mut carry: Option<JobOf<M>> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => {
                    w.metrics.depth.dec();
                    j
                }
                Err(_) => return, // every handle dropped
            },
        };
        let mut jobs = vec![first];
        let mut items: usize = jobs[0].items.len();
        let mut longest: usize = jobs[0].items.iter().map(BatchItem::tokens).max().unwrap_or(0);
        let deadline = Instant::now() + cfg.max_wait;
        // Take what is queued (and what arrives before the deadline) while it fits.
        loop {
            if items >= cfg.max_batch_requests || longest * items >= cfg.max_batch_tokens {
                break;
            }
            let next = match rx.try_recv() {
                Ok(j) => Some(j),
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        None
                    } else {
                        match rx.recv_timeout(left) {
                            Ok(j) => Some(j),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => None,
                        }
                    }
                }
            };
            let Some(j) = next else { break };
            w.metrics.depth.dec();
            let l = j.items.iter().map(BatchItem::tokens).max().unwrap_or(0);
            let n = items + j.items.len();
            if n > cfg.max_batch_requests || longest.max(l) * n > cfg.max_batch_tokens {
                carry = Some(j);
                break;
            }
            items = n;
            longest = longest.max(l);
            jobs.push(j);
        }
        jobs.retain(|j| {
            let gone = j.reply.is_closed();
            if gone {
                w.stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
            !gone
        });
        if jobs.is_empty() {
            continue;
        }
        run_jobs(&mut model, jobs, &cfg, w);
    }
}

fn run_jobs<M: BatchModel>(model: &mut M, mut jobs: Vec<JobOf<M>>, cfg: &BatchConfig, w: &Worker<'_>) {
    for job in &mut jobs {
        w.metrics.queue_wait.observe(job.queued.elapsed().as_secs_f64());
        job.wait = Span::none(); // closes its `queue wait` span
    }
    // (job, item) pairs sorted by length so each sub-batch pads little.
    let mut order: Vec<(usize, usize)> =
        jobs.iter().enumerate().flat_map(|(j, job)| (0..job.items.len()).map(move |i| (j, i))).collect();
    order.sort_by_key(|&(j, i)| jobs[j].items[i].tokens());
    let mut outputs: Vec<Vec<Option<M::Output>>> =
        jobs.iter().map(|j| (0..j.items.len()).map(|_| None).collect()).collect();
    let mut failed: Option<String> = None;
    let mut start = 0;
    while start < order.len() && failed.is_none() {
        // Grow the sub-batch while the padded cost (longest × count) fits the budget.
        let mut end = start + 1;
        while end < order.len() {
            let (j, i) = order[end];
            let len = jobs[j].items[i].tokens();
            let n = end - start + 1;
            if n > cfg.max_batch_requests || len * n > cfg.max_batch_tokens {
                break;
            }
            end += 1;
        }
        let slice: Vec<&M::Input> = order[start..end].iter().map(|&(j, i)| &jobs[j].items[i]).collect();
        let _spans = forward_spans(&jobs, &order[start..end], w.health.name());
        let began = Instant::now();
        // A kernel that panics (an input it cannot take, a bug) fails that batch and the
        // worker goes on. The model is only ever used from this thread, and a later batch that
        // finds it broken fails (or panics) the same way.
        match w.health.guard("a batch", || model.run(&slice)) {
            Ok(Ok(outs)) if outs.len() == slice.len() => {
                for (k, out) in outs.into_iter().enumerate() {
                    let (j, i) = order[start + k];
                    outputs[j][i] = Some(out);
                }
                w.stats.batches.fetch_add(1, Ordering::Relaxed);
                w.stats.items.fetch_add(slice.len() as u64, Ordering::Relaxed);
                w.metrics.size.observe(slice.len() as f64);
                w.metrics.forward.observe(began.elapsed().as_secs_f64());
            }
            Ok(Ok(outs)) => failed = Some(format!("model returned {} outputs for {} inputs", outs.len(), slice.len())),
            Ok(Err(e)) => failed = Some(e),
            Err(_) => {
                w.stats.panics.fetch_add(1, Ordering::Relaxed);
                failed = Some(format!("the {} model panicked while computing this request's batch", w.health.name()));
            }
        }
        start = end;
    }
    for (job, outs) in jobs.into_iter().zip(outputs) {
        let result = match &failed {
            Some(e) => Err(ModelError::Failed(format!("model failed: {e}"))),
            None => Ok(outs.into_iter().map(|o| o.expect("every item ran")).collect()),
        };
        let _ = job.reply.send(result);
    }
}

/// A `forward` span under each request with items in this pass (none unless traces are exported).
fn forward_spans<I: BatchItem, O>(jobs: &[Job<I, O>], pass: &[(usize, usize)], batcher: &str) -> Vec<Span> {
    if !telemetry::enabled() {
        return Vec::new();
    }
    let tokens = pass.iter().map(|&(j, i)| jobs[j].items[i].tokens()).max().unwrap_or(0) * pass.len();
    let mut seen: Vec<usize> = pass.iter().map(|&(j, _)| j).collect();
    seen.sort_unstable();
    seen.dedup();
    seen.into_iter()
        .map(|j| {
            tracing::info_span!(parent: &jobs[j].span, "forward", batcher, batch_size = pass.len(), padded_tokens = tokens)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use comps_core::limits::BATCHER_UNHEALTHY_AFTER_PANICS;
    use std::sync::mpsc;

    /// Echoes lengths; the first batch waits until the test lets it go.
    struct Gate {
        release: Option<mpsc::Receiver<()>>,
        seen: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl BatchModel for Gate {
        type Input = Vec<u32>;
        type Output = usize;
        fn run(&mut self, items: &[&Vec<u32>]) -> Result<Vec<usize>, String> {
            if let Some(rx) = self.release.take() {
                rx.recv().map_err(|e| e.to_string())?;
            }
            self.seen.lock().unwrap().extend(items.iter().map(|i| i.len()));
            Ok(items.iter().map(|i| i.len()).collect())
        }
    }

    #[tokio::test]
    async fn answers_in_order_skips_gone_clients_and_refuses_when_full() {
        let (go, release) = mpsc::channel();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let cfg = BatchConfig { max_wait: Duration::ZERO, queue_capacity: 2, ..BatchConfig::default() };
        let b = Batcher::start("test", Gate { release: Some(release), seen: seen.clone() }, cfg);
        // The first request occupies the worker (held at the gate).
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.submit(vec![vec![1, 2, 3], vec![1]]).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A second request whose client leaves before the worker reaches it.
        let gone = tokio::spawn({
            let b = b.clone();
            async move { b.submit(vec![vec![9; 5]]).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        // A third fills the queue; a fourth is refused at once.
        let third = tokio::spawn({
            let b = b.clone();
            async move { b.submit(vec![vec![7; 2]]).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(b.submit(vec![vec![1]]).await, Err(ModelError::Busy(_))));
        go.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), vec![3, 1], "answers in input order");
        assert_eq!(third.await.unwrap().unwrap(), vec![2]);
        assert_eq!(b.stats().skipped.load(Ordering::Relaxed), 1);
        assert!(!seen.lock().unwrap().contains(&5), "the gone client's work never ran");
    }

    /// Echoes lengths.
    struct Lengths;

    impl BatchModel for Lengths {
        type Input = Vec<u32>;
        type Output = usize;
        fn run(&mut self, items: &[&Vec<u32>]) -> Result<Vec<usize>, String> {
            Ok(items.iter().map(|i| i.len()).collect())
        }
    }

    #[tokio::test]
    async fn metrics_count_every_request_and_pass_and_the_queue_empties() {
        let cfg = BatchConfig { max_batch_requests: 3, ..BatchConfig::default() };
        let b = Batcher::start("metered", Lengths, cfg);
        let asks: Vec<_> = (0..4)
            .map(|n| {
                let b = b.clone();
                tokio::spawn(async move { b.submit(vec![vec![1; n + 1], vec![2; 2]]).await })
            })
            .collect();
        for a in asks {
            assert_eq!(a.await.unwrap().unwrap().len(), 2);
        }
        let m = b.metrics();
        assert_eq!(m.queue_wait.get_sample_count(), 4, "one queue wait per request");
        assert_eq!(m.size.get_sample_sum() as usize, 8, "every item counted once in a pass");
        assert!(m.size.get_sample_count() >= 3, "3 items at most per pass: {}", m.size.get_sample_count());
        assert_eq!(m.forward.get_sample_count(), m.size.get_sample_count());
        assert_eq!(m.depth.get(), 0, "nothing left queued");
        let reg = Metrics::new();
        m.register_into(&reg);
        let text = reg.render();
        assert!(text.contains(r#"comps_batch_queue_wait_seconds_count{batcher="metered"} 4"#), "{text}");
        assert!(text.contains(r#"comps_batch_queue_depth{batcher="metered"} 0"#), "{text}");
    }

    /// Echoes lengths, but its "kernel" panics on any item holding `POISON`.
    struct PanicsOnPoison;

    const POISON: u32 = 666;

    impl BatchModel for PanicsOnPoison {
        type Input = Vec<u32>;
        type Output = usize;
        fn run(&mut self, items: &[&Vec<u32>]) -> Result<Vec<usize>, String> {
            assert!(!items.iter().any(|i| i.contains(&POISON)), "kernel cannot take the poison input");
            Ok(items.iter().map(|i| i.len()).collect())
        }
    }

    fn panicky() -> Batcher<Vec<u32>, usize> {
        Batcher::start("panicky", PanicsOnPoison, BatchConfig { max_wait: Duration::ZERO, ..BatchConfig::default() })
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_request_and_the_worker_serves_the_next() {
        let b = panicky();
        let health = b.health();
        match b.submit(vec![vec![1, POISON]]).await {
            Err(e @ ModelError::Failed(_)) => {
                assert!(e.to_string().contains("panicky model panicked"), "{e}");
                assert_eq!(comps_core::ServiceError::from(e).status(), 424);
            }
            other => panic!("expected a 424 naming the model failure, got {other:?}"),
        }
        assert_eq!(b.submit(vec![vec![1, 2], vec![3]]).await.unwrap(), vec![2, 1], "the worker is still alive");
        assert_eq!(health.check(), Ok(()));
        assert_eq!(b.stats().panics.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn panics_in_a_row_make_it_unhealthy_until_a_batch_runs_cleanly() {
        let b = panicky();
        let health = b.health();
        for n in 1..=BATCHER_UNHEALTHY_AFTER_PANICS {
            assert!(matches!(b.submit(vec![vec![POISON]]).await, Err(ModelError::Failed(_))));
            assert_eq!(health.check().is_ok(), n < BATCHER_UNHEALTHY_AFTER_PANICS, "after {n} panics in a row");
        }
        let why = health.check().unwrap_err();
        assert!(why.contains("panicky model panicked"), "{why}");
        assert_eq!(b.submit(vec![vec![7; 4]]).await.unwrap(), vec![4]);
        assert_eq!(health.check(), Ok(()), "a clean batch makes it healthy again");
    }

    /// An item whose length cannot be taken: asking kills the worker thread outside the
    /// model's compute (a stand-in for any bug that ends the thread).
    struct Bomb;

    impl BatchItem for Bomb {
        fn tokens(&self) -> usize {
            panic!("the worker thread dies here")
        }
    }

    struct Never;

    impl BatchModel for Never {
        type Input = Bomb;
        type Output = ();
        fn run(&mut self, _: &[&Bomb]) -> Result<Vec<()>, String> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn a_dead_worker_reports_unhealthy_and_refuses_work() {
        let b = Batcher::start("doomed", Never, BatchConfig::default());
        let health = b.health();
        assert_eq!(health.check(), Ok(()));
        assert!(b.submit(vec![Bomb]).await.is_err(), "the request the worker died on fails");
        // The thread marks itself stopped as it unwinds, just after the reply was dropped.
        let deadline = Instant::now() + Duration::from_secs(5);
        while health.check().is_ok() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let why = health.check().unwrap_err();
        assert!(why.contains("doomed") && why.contains("stopped"), "{why}");
        assert!(matches!(b.submit(vec![Bomb]).await, Err(ModelError::Stopped(_))), "later work gets 503");
    }
}
