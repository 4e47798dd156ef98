//! The decoding scheduler: one thread owns the compute and steps every active sequence, so a
//! short request is never stuck behind a long one. Each sequence has its own KV cache. With
//! the native backend this is continuous batching, as vLLM and llama-server do it: each step
//! is one pass over the weights for one token of every decoding sequence plus up to
//! `prefill_chunk` prompt tokens, given to the oldest prompts first; a sequence joins the
//! batch the step after it is admitted and leaves it when it ends. Other backends step the
//! sequences one after the other (a prompt chunk or one token each, round robin). Requests beyond the
//! active limit wait in a bounded queue; beyond that they are refused (429). A sequence whose
//! client went away is dropped before its next step, freeing its slot at once.
//!
//! Prompts whose tokens begin as a recent prompt's did start from a copy of its keys and
//! values (see [`super::prefix`]) where the backend allows it (the native one).
//!
//! When traces are exported, each generation shows as three spans under the request that
//! submitted it: `queue wait` (until a slot takes it), `prefill` (its prompt, until the first
//! token) and `decode` (the rest, with the tokens generated).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use comps_core::health::HealthCheck;
use comps_core::protocol::FinishReason;
use comps_core::telemetry;
use tokio::sync::mpsc as tmpsc;
use tracing::Span;

use super::decode::{StopMatcher, StopOutcome, TextStream};
use super::model::{BatchInput, ChatModel, SequenceModel};
use super::prefix::PrefixCache;
use super::sampling::{Sampler, SamplingParams};
use crate::ModelError;
use crate::worker::{WorkerHealth, spawn_worker};

/// One generation to run.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// The rendered, tokenized prompt.
    pub prompt_ids: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// How to pick tokens.
    pub sampling: SamplingParams,
    /// Stop strings (not included in the output).
    pub stop: Vec<String>,
    /// Keep going past end-of-turn tokens (vLLM's `ignore_eos`, for benchmarks).
    pub ignore_eos: bool,
}

/// How a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenDone {
    /// `stop` (end-of-turn token or stop string) or `length`.
    pub finish: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated, the end-of-turn token included (as vLLM counts).
    pub completion_tokens: usize,
}

/// What a generation sends back, in order: text pieces, then `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// New text.
    Text(String),
    /// The end.
    Done(GenDone),
    /// The model failed on this sequence.
    Failed(String),
}

/// Scheduler limits.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Sequences decoding at once.
    pub max_active: usize,
    /// Requests waiting for a slot (beyond: 429).
    pub max_queued: usize,
    /// Prompt tokens fed per step, where the architecture allows chunks.
    pub prefill_chunk: usize,
    /// Bytes of finished prompts' keys and values kept for later prompts that begin with the
    /// same tokens (0: none).
    pub prefix_cache_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { max_active: 4, max_queued: 64, prefill_chunk: 128, prefix_cache_bytes: 64 << 20 }
    }
}

struct Job {
    req: GenRequest,
    events: tmpsc::UnboundedSender<GenEvent>,
    /// The submitting request's span; disabled unless traces are exported.
    span: Span,
    /// Open until a slot takes the job.
    wait: Span,
}

/// Gauges of the scheduler.
#[derive(Debug, Default)]
pub struct EngineLoad {
    /// Submitted and not finished (active + queued).
    pub in_flight: AtomicUsize,
    /// Decoding now.
    pub active: AtomicUsize,
    /// Sequences in the last batched step (0 for backends that step them one by one).
    pub batch: AtomicUsize,
    /// The most sequences one batched step has run.
    pub max_batch: AtomicUsize,
    /// Tokens held in the KV caches of the active sequences (prompt and generated so far).
    pub kv_tokens: AtomicUsize,
    /// What the KV caches can hold: active slots × the context length.
    pub kv_capacity: AtomicUsize,
    /// Prompt tokens that started from the prefix cache instead of running (a running total).
    pub prefix_hit_tokens: AtomicUsize,
    /// Bytes of keys and values the prefix cache keeps.
    pub prefix_cache_bytes: AtomicUsize,
}

/// Handle to the scheduler thread.
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    load: Arc<EngineLoad>,
    health: Arc<WorkerHealth>,
    capacity: usize,
}

impl Engine {
    /// Start the scheduler thread for `model`.
    pub fn start(model: Arc<ChatModel>, cfg: EngineConfig) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let load = Arc::new(EngineLoad::default());
        load.kv_capacity.store(cfg.max_active.max(1) * model.context_len, Ordering::SeqCst);
        let l = load.clone();
        // A panic outside a model step ends the engine; its health then says so.
        let health = spawn_worker("llm", "engine", move |health| run(&model, cfg, rx, &l, health))?;
        Ok(Self { jobs: tx, load, health, capacity: cfg.max_active.max(1) + cfg.max_queued })
    }

    /// The scheduler's gauges.
    pub fn load(&self) -> &EngineLoad {
        &self.load
    }

    /// The scheduler's gauges, shared (a metrics collector reads them when scraped).
    pub fn load_handle(&self) -> Arc<EngineLoad> {
        self.load.clone()
    }

    /// The engine's health, for the service's `/health`: failing once the scheduler thread has
    /// stopped, or while the model's last steps all panicked.
    pub fn health(&self) -> HealthCheck {
        self.health.check()
    }

    /// Queue a generation; its events arrive on the returned channel. Dropping the receiver
    /// cancels it.
    pub fn submit(&self, req: GenRequest) -> Result<tmpsc::UnboundedReceiver<GenEvent>, ModelError> {
        let taken = self.load.in_flight.fetch_add(1, Ordering::SeqCst);
        if taken >= self.capacity {
            self.load.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(ModelError::Busy(format!(
                "the model is busy: {taken} requests are generating or queued (limit {}); retry later",
                self.capacity
            )));
        }
        let (tx, rx) = tmpsc::unbounded_channel();
        let (span, wait) = if telemetry::enabled() {
            (Span::current(), tracing::info_span!("queue wait", prompt_tokens = req.prompt_ids.len()))
        } else {
            (Span::none(), Span::none())
        };
        if self.jobs.send(Job { req, events: tx, span, wait }).is_err() {
            self.load.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(ModelError::Stopped("the generation engine has stopped".into()));
        }
        Ok(rx)
    }
}

struct Sequence<'m> {
    model: SequenceModel,
    prompt: Vec<u32>,
    /// Tokens in the KV cache.
    pos: usize,
    generated: usize,
    last: u32,
    sampler: Sampler,
    text: TextStream<'m>,
    stop: StopMatcher,
    max_tokens: usize,
    ignore_eos: bool,
    /// Whether its prompt was offered to the prefix cache.
    offered: bool,
    events: tmpsc::UnboundedSender<GenEvent>,
    /// The submitting request's span.
    span: Span,
    /// `prefill` until the first token, then `decode`.
    phase: Span,
}

/// What a step did.
enum Step {
    Running,
    Finished(FinishReason),
}

impl Sequence<'_> {
    fn send(&self, text: String) {
        if !text.is_empty() {
            let _ = self.events.send(GenEvent::Text(text));
        }
    }

    /// The tokens of this sequence's next step (at most `chunk` of its prompt where prompts
    /// may be chunked) and whether that step ends the prompt or decodes, i.e. needs logits.
    fn next_input(&self, chunked: bool, chunk: usize) -> (&[u32], bool) {
        if self.pos < self.prompt.len() {
            let end = if chunked { (self.pos + chunk.max(1)).min(self.prompt.len()) } else { self.prompt.len() };
            (&self.prompt[self.pos..end], end == self.prompt.len())
        } else {
            (std::slice::from_ref(&self.last), true)
        }
    }

    fn step(
        &mut self,
        chunked: bool,
        chunk: usize,
        stop_ids: &BTreeSet<u32>,
        context_len: usize,
    ) -> anyhow::Result<Step> {
        let ids = self.next_input(chunked, chunk).0.to_vec();
        let logits = self.model.forward(&ids, self.pos)?;
        self.accept(ids.len(), Some(logits), stop_ids, context_len)
    }

    /// Take the result of a step that ran `n` tokens: the logits of the last one, which are
    /// needed when the step ended the prompt or decoded.
    fn accept(
        &mut self,
        n: usize,
        logits: Option<Vec<f32>>,
        stop_ids: &BTreeSet<u32>,
        context_len: usize,
    ) -> anyhow::Result<Step> {
        self.pos += n;
        if self.pos < self.prompt.len() {
            return Ok(Step::Running);
        }
        let mut logits = logits.ok_or_else(|| anyhow::anyhow!("the step returned no logits"))?;
        let id = self.sampler.next(&mut logits);
        self.last = id;
        self.generated += 1;
        if self.generated == 1 && !self.span.is_none() {
            self.phase = tracing::info_span!(parent: &self.span, "decode", generated_tokens = tracing::field::Empty);
        }
        if !self.ignore_eos && stop_ids.contains(&id) {
            return Ok(Step::Finished(FinishReason::Stop));
        }
        let piece = self.text.push(id).map_err(|e| anyhow::anyhow!("detokenizing: {e}"))?;
        match self.stop.push(&piece) {
            StopOutcome::Stop(text) => {
                self.send(text);
                return Ok(Step::Finished(FinishReason::Stop));
            }
            StopOutcome::Continue(text) => self.send(text),
        }
        if self.generated >= self.max_tokens || self.pos + 1 >= context_len {
            return Ok(Step::Finished(FinishReason::Length));
        }
        Ok(Step::Running)
    }

    /// Send what is held back and the summary.
    fn finish(&mut self, finish: FinishReason) {
        if let Ok(rest) = self.text.finish() {
            match self.stop.push(&rest) {
                StopOutcome::Stop(text) => self.send(text),
                StopOutcome::Continue(text) => {
                    self.send(text);
                    let held = self.stop.finish();
                    self.send(held);
                }
            }
        }
        self.phase.record("generated_tokens", self.generated);
        let _ = self.events.send(GenEvent::Done(GenDone {
            finish,
            prompt_tokens: self.prompt.len(),
            completion_tokens: self.generated,
        }));
    }
}

fn admit<'m>(model: &'m ChatModel, job: Job, prefixes: &mut PrefixCache, load: &EngineLoad) -> Option<Sequence<'m>> {
    let Job { req, events, span, wait } = job;
    drop(wait);
    if events.is_closed() {
        return None;
    }
    let phase = if span.is_none() {
        Span::none()
    } else {
        tracing::info_span!(parent: &span, "prefill", prompt_tokens = req.prompt_ids.len())
    };
    match model.sequence() {
        Ok(mut m) => Some(Sequence {
            pos: match prefixes.lookup(&req.prompt_ids) {
                Some((n, state)) => {
                    let took = m.start_from(state, n);
                    load.prefix_hit_tokens.fetch_add(took, Ordering::SeqCst);
                    took
                }
                None => 0,
            },
            model: m,
            sampler: Sampler::new(req.sampling, &req.prompt_ids),
            prompt: req.prompt_ids,
            generated: 0,
            last: 0,
            text: TextStream::new(&model.tokenizer),
            stop: StopMatcher::new(req.stop),
            max_tokens: req.max_tokens.max(1),
            ignore_eos: req.ignore_eos,
            offered: false,
            events,
            span,
            phase,
        }),
        Err(e) => {
            let _ = events.send(GenEvent::Failed(format!("could not start a sequence: {e}")));
            None
        }
    }
}

fn run(model: &ChatModel, cfg: EngineConfig, jobs: mpsc::Receiver<Job>, load: &EngineLoad, health: &WorkerHealth) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut active: Vec<Sequence<'_>> = Vec::new();
    let max_active = cfg.max_active.max(1);
    let mut prefixes = PrefixCache::new(cfg.prefix_cache_bytes);
    loop {
        // Take new jobs: block only when there is nothing to do.
        if active.is_empty() && waiting.is_empty() {
            match jobs.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return,
            }
        }
        waiting.extend(jobs.try_iter());
        // Waiting clients that left are dropped without ever starting.
        waiting.retain(|j| {
            let gone = j.events.is_closed();
            if gone {
                load.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            !gone
        });
        while active.len() < max_active {
            let Some(job) = waiting.pop_front() else { break };
            match admit(model, job, &mut prefixes, load) {
                Some(seq) => active.push(seq),
                None => {
                    load.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        load.active.store(active.len(), Ordering::SeqCst);

        if model.batched() {
            batched_step(model, cfg, &mut active, &mut prefixes, load, health);
        } else {
            one_by_one(model, cfg, &mut active, &mut prefixes, load, health);
        }
        load.active.store(active.len(), Ordering::SeqCst);
        load.kv_tokens.store(active.iter().map(|s| s.pos).sum(), Ordering::SeqCst);
    }
}

/// Offer a sequence's prompt to the prefix cache once it has run, after a step that went well
/// (a failed step leaves its cache in an unknown state).
fn offer_prompt<T>(
    seq: &mut Sequence<'_>,
    stepped: &Result<anyhow::Result<T>, String>,
    prefixes: &mut PrefixCache,
    load: &EngineLoad,
) {
    if seq.offered || seq.pos < seq.prompt.len() || !matches!(stepped, Ok(Ok(_))) {
        return;
    }
    seq.offered = true;
    if prefixes.wants(&seq.prompt)
        && let Some(state) = seq.model.prefix_state(seq.prompt.len())
    {
        prefixes.insert(seq.prompt.clone(), state);
        load.prefix_cache_bytes.store(prefixes.bytes(), Ordering::SeqCst);
    }
}

/// What became of a sequence after a step: still running, or ended (and told its client).
fn settle(seq: &mut Sequence<'_>, stepped: Result<anyhow::Result<Step>, String>) -> bool {
    match stepped {
        Ok(Ok(Step::Running)) => true,
        Ok(Ok(Step::Finished(reason))) => {
            seq.finish(reason);
            false
        }
        Ok(Err(e)) => {
            let _ = seq.events.send(GenEvent::Failed(format!("generation failed: {e}")));
            false
        }
        Err(_) => {
            let _ = seq.events.send(GenEvent::Failed("generation failed: the model panicked".into()));
            false
        }
    }
}

/// Drop the sequences `keep` rejects, releasing their slots.
fn retire(active: &mut Vec<Sequence<'_>>, keep: &[bool], load: &EngineLoad) {
    let mut i = 0;
    active.retain(|_| {
        let k = keep[i];
        i += 1;
        if !k {
            load.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        k
    });
}

/// Sequences whose client went away are dropped before the step.
fn drop_abandoned(active: &mut Vec<Sequence<'_>>, load: &EngineLoad) {
    let keep: Vec<bool> = active.iter().map(|s| !s.events.is_closed()).collect();
    if keep.iter().any(|k| !k) {
        tracing::debug!("client gone; generation stopped");
    }
    retire(active, &keep, load);
}

/// One step of every active sequence, one after the other (backends without batched steps).
fn one_by_one(
    model: &ChatModel,
    cfg: EngineConfig,
    active: &mut Vec<Sequence<'_>>,
    prefixes: &mut PrefixCache,
    load: &EngineLoad,
    health: &WorkerHealth,
) {
    drop_abandoned(active, load);
    let keep: Vec<bool> = active
        .iter_mut()
        .map(|seq| {
            let stepped = health.guard("a sequence's step", || {
                seq.step(model.chunked_prefill, cfg.prefill_chunk, &model.stop_ids, model.context_len)
            });
            offer_prompt(seq, &stepped, prefixes, load);
            settle(seq, stepped)
        })
        .collect();
    retire(active, &keep, load);
}

/// One pass over the weights for every active sequence: one token of each decoding sequence,
/// and prompt tokens up to `prefill_chunk` for the prompts, oldest first.
fn batched_step(
    model: &ChatModel,
    cfg: EngineConfig,
    active: &mut Vec<Sequence<'_>>,
    prefixes: &mut PrefixCache,
    load: &EngineLoad,
    health: &WorkerHealth,
) {
    drop_abandoned(active, load);
    if active.is_empty() {
        return;
    }
    let mut budget = cfg.prefill_chunk.max(1);
    // Per sequence: how many tokens it runs this step (0: it waits) and whether it wants logits.
    let plan: Vec<(usize, bool)> = active
        .iter()
        .map(|seq| {
            let (ids, ends) = seq.next_input(true, budget);
            if seq.pos < seq.prompt.len() {
                if budget == 0 {
                    return (0, false);
                }
                budget -= ids.len();
            }
            (ids.len(), ends)
        })
        .collect();
    let stepped = health.guard("a batched step", || {
        let mut inputs: Vec<BatchInput<'_>> = active
            .iter_mut()
            .zip(&plan)
            .filter(|(_, (n, _))| *n > 0)
            .map(|(seq, &(n, logits))| {
                let start = seq.pos.min(seq.prompt.len());
                let ids = if seq.pos < seq.prompt.len() {
                    &seq.prompt[start..start + n]
                } else {
                    std::slice::from_ref(&seq.last)
                };
                BatchInput { seq: &mut seq.model, ids, logits }
            })
            .collect();
        load.batch.store(inputs.len(), Ordering::SeqCst);
        load.max_batch.fetch_max(inputs.len(), Ordering::SeqCst);
        model.forward_batch(&mut inputs)
    });
    let outputs = match stepped {
        Ok(Ok(outputs)) => outputs,
        failed => {
            // The batch's caches are in an unknown state: every sequence in it ends.
            let why = match failed {
                Ok(Err(e)) => format!("generation failed: {e}"),
                _ => "generation failed: the model panicked".into(),
            };
            for seq in active.iter() {
                let _ = seq.events.send(GenEvent::Failed(why.clone()));
            }
            retire(active, &vec![false; active.len()], load);
            return;
        }
    };
    let mut outputs = outputs.into_iter();
    let keep: Vec<bool> = active
        .iter_mut()
        .zip(&plan)
        .map(|(seq, &(n, _))| {
            if n == 0 {
                return true;
            }
            let logits = outputs.next().flatten();
            let stepped = health.guard("sampling", || seq.accept(n, logits, &model.stop_ids, model.context_len));
            offer_prompt(seq, &stepped, prefixes, load);
            settle(seq, stepped)
        })
        .collect();
    retire(active, &keep, load);
}
