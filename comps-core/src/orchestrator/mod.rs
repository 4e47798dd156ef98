//! `ServiceOrchestrator`: runs a megaservice's DAG of remote microservices for each request,
//! with OPEA's semantics (node ids, fan-in merge, `downstream_black_list`, align hooks,
//! streaming LLM pass-through, output guard on the stream) and without OPEA's failures (every
//! upstream status checked and reported naming the node, per-node timeouts, bounded retries,
//! cancellation of the rest of a request's work when it fails or its client leaves, one pooled
//! client, a pending gauge that always returns to zero).
//!
//! ```no_run
//! use comps_core::orchestrator::ServiceOrchestrator;
//! use comps_core::{LLMParams, MicroService, ServiceType};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let s1 = MicroService::from_url("s1", "http://127.0.0.1:8083/v1/add")?;
//! let s2 = MicroService::from_url("s2", "http://127.0.0.1:8084/v1/add")?;
//! let mut mega = ServiceOrchestrator::new();
//! mega.add(s1.clone())?.add(s2.clone())?;
//! mega.flow_to(&s1, &s2)?;
//! let result = mega.schedule(serde_json::json!({"text": "hello, "}), LLMParams::default(), Default::default()).await?;
//! println!("{:?}", result.leaf_json());
//! # Ok(()) }
//! ```

pub mod dag;
pub mod yaml;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::Instrument;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};
use regex::Regex;
use serde_json::{Map, Value};

pub use crate::client::NodePolicy;
use crate::client::transport;
pub use dag::{Dag, GraphError};

use crate::client::Target;
use crate::error::ServiceError;
use crate::metrics::{LATENCY_BUCKETS, Metrics};
use crate::protocol::{LLMParams, completion_id};
use crate::service::MicroService;
use crate::sse::{ByteStream, EventStream, chunk_payload, event_text, frame_events};

/// Per-request parameters for the hooks, by type (e.g. `RetrieverParms`, `RerankerParms`).
pub type Extras = http::Extensions;

/// What a hook sees of the node being called and of the request.
pub struct NodeContext<'a> {
    /// Node id (`"llm/MicroService"`).
    pub node: &'a str,
    /// The node's descriptor.
    pub service: &'a MicroService,
    /// What the node received: its predecessors' answers merged (or the request's inputs for
    /// an entry node), before `align_inputs`.
    pub received: &'a Value,
    /// OPEA's LLM parameters, when the request was scheduled with them.
    pub llm_params: Option<&'a LLMParams>,
    /// The request's typed values (a megaservice's per-request context).
    pub extras: &'a Extras,
    /// This request's graph: hooks may cut edges or remove nodes.
    pub graph: &'a mut Dag,
    nodes: &'a HashMap<String, Arc<Node>>,
}

impl NodeContext<'_> {
    /// The descriptor of any node of the pipeline (e.g. to ask what type a downstream node is).
    pub fn service_of(&self, node: &str) -> Option<&MicroService> {
        self.nodes.get(node).map(|n| &n.service)
    }
}

/// What `align_generator` sees.
pub struct StreamContext<'a> {
    /// The node whose stream this is (the output guard's, when there is one).
    pub node: &'a str,
    /// OPEA's LLM parameters, when the request was scheduled with them.
    pub llm_params: Option<&'a LLMParams>,
    /// The request's typed values.
    pub extras: &'a Extras,
}

/// How one request runs through the graph.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// LLM nodes stream their answer to the client.
    pub stream: bool,
    /// OPEA's LLM parameters, merged into every LLM node's inputs as OPEA does. `None` when the
    /// hooks build the LLM's body themselves (from a context in `extras`).
    pub llm_params: Option<LLMParams>,
    /// Typed per-request values for the hooks.
    pub extras: Extras,
}

impl RunOptions {
    /// OPEA's way: `llm_params` decide streaming and are injected into LLM inputs.
    pub fn opea(llm_params: LLMParams, extras: Extras) -> Self {
        Self { stream: llm_params.stream, llm_params: Some(llm_params), extras }
    }
}

/// How the orchestrator reaches a node: HTTP in production ([`HttpTransport`]), anything that
/// answers like a node in tests (hooks and scheduling run in process, no sockets).
#[async_trait::async_trait]
pub trait NodeTransport: Send + Sync {
    /// POST `body`, read a JSON answer.
    async fn json(&self, target: &Target<'_>, body: &Value) -> Result<Value, ServiceError>;
    /// POST `body`, read the answer's SSE events.
    async fn stream(&self, target: &Target<'_>, body: &Value) -> Result<EventStream, ServiceError>;
}

/// Nodes over HTTP, through [`crate::client::transport`] (timeouts, retries, errors naming the node).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpTransport;

#[async_trait::async_trait]
impl NodeTransport for HttpTransport {
    async fn json(&self, target: &Target<'_>, body: &Value) -> Result<Value, ServiceError> {
        transport::call_json(target, body).await
    }
    async fn stream(&self, target: &Target<'_>, body: &Value) -> Result<EventStream, ServiceError> {
        transport::call_stream(target, body).await
    }
}

/// A megaservice's adaptations between nodes. Every method defaults to the identity.
pub trait Hooks: Send + Sync {
    /// Adapt a node's inputs before it is called.
    fn align_inputs(&self, inputs: Value, _ctx: &mut NodeContext<'_>) -> Result<Value, ServiceError> {
        Ok(inputs)
    }
    /// Adapt a node's answer before it feeds its downstream nodes.
    fn align_outputs(&self, output: Value, _inputs: &Value, _ctx: &mut NodeContext<'_>) -> Result<Value, ServiceError> {
        Ok(output)
    }
    /// Turn a streaming node's events into the bytes sent to the client. The default frames
    /// each event as `data: <payload>` and ends with `data: [DONE]`.
    fn align_generator(&self, events: EventStream, _ctx: &StreamContext<'_>) -> ByteStream {
        frame_events(events)
    }
}

/// Hooks that change nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityHooks;
impl Hooks for IdentityHooks {}

/// A node's result.
pub enum NodeOutput {
    /// A JSON answer.
    Json(Value),
    /// A stream for the client (after `align_generator`).
    Stream(ByteStream),
}

impl std::fmt::Debug for NodeOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Json(v) => f.debug_tuple("Json").field(v).finish(),
            Self::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

impl NodeOutput {
    /// The JSON answer, if this is one.
    pub fn json(&self) -> Option<&Value> {
        match self {
            Self::Json(v) => Some(v),
            Self::Stream(_) => None,
        }
    }
}

/// What `schedule` returns: each executed node's result and this request's graph (pruned to
/// what was reached).
#[derive(Debug)]
pub struct ScheduleResult {
    /// Results by node id.
    pub results: BTreeMap<String, NodeOutput>,
    /// The runtime graph.
    pub runtime_graph: Dag,
}

impl ScheduleResult {
    /// The leaves of the runtime graph that produced a result, in graph order.
    pub fn leaves(&self) -> Vec<String> {
        self.runtime_graph.all_leaves().into_iter().filter(|l| self.results.contains_key(l)).collect()
    }

    /// Take the stream of the (first) streaming leaf.
    pub fn take_stream(&mut self) -> Option<ByteStream> {
        let leaf = self.leaves().into_iter().find(|l| matches!(self.results.get(l), Some(NodeOutput::Stream(_))))?;
        match self.results.remove(&leaf) {
            Some(NodeOutput::Stream(s)) => Some(s),
            _ => None,
        }
    }

    /// The JSON of the last leaf (the final answer of a single-leaf flow).
    pub fn leaf_json(&self) -> Option<&Value> {
        self.leaves().last().and_then(|l| self.results.get(l)).and_then(NodeOutput::json)
    }
}

/// The megaservice metrics OPEA exports, plus per-node ones.
#[derive(Clone)]
pub struct OrchestratorMetrics {
    /// `megaservice_first_token_latency` (s from request start).
    pub first_token: Histogram,
    /// `megaservice_inter_token_latency`.
    pub inter_token: Histogram,
    /// `megaservice_request_latency` (streamed and not).
    pub request: Histogram,
    /// `megaservice_request_pending`.
    pub pending: IntGauge,
    /// `megaservice_node_latency_seconds{node}`.
    pub node_latency: HistogramVec,
    /// `megaservice_node_errors_total{node, status}`: `status` is what the client got for it
    /// (502 the node failed or answered an error, 504 it timed out, 404 an unknown model, ...).
    pub node_errors: IntCounterVec,
}

impl std::fmt::Debug for OrchestratorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OrchestratorMetrics {{ pending: {} }}", self.pending.get())
    }
}

impl Default for OrchestratorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl OrchestratorMetrics {
    /// Fresh, unregistered collectors.
    pub fn new() -> Self {
        let h = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())).expect("valid")
        };
        Self {
            first_token: h("megaservice_first_token_latency", "First token latency (histogram)"),
            inter_token: h("megaservice_inter_token_latency", "Inter-token latency (histogram)"),
            request: h("megaservice_request_latency", "Whole request/reply latency (histogram)"),
            pending: IntGauge::new("megaservice_request_pending", "Count of currently pending requests (gauge)")
                .expect("valid"),
            node_latency: HistogramVec::new(
                HistogramOpts::new("megaservice_node_latency_seconds", "Latency of calls to each node")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["node"],
            )
            .expect("valid"),
            node_errors: IntCounterVec::new(
                Opts::new("megaservice_node_errors_total", "Failed calls to each node, by the status the client got"),
                &["node", "status"],
            )
            .expect("valid"),
        }
    }

    /// Add these collectors to a server's registry.
    pub fn register_into(&self, m: &Metrics) {
        m.register(&self.first_token);
        m.register(&self.inter_token);
        m.register(&self.request);
        m.register(&self.pending);
        m.register(&self.node_latency);
        m.register(&self.node_errors);
    }

    /// Count a failed call to `node` under the status its error gives the client.
    fn node_failed(&self, node: &str, e: &ServiceError) {
        self.node_errors.with_label_values(&[node, e.status().as_str()]).inc();
    }
}

/// Decrements the pending gauge when the request's last piece of work is gone, however it ends.
struct Pending {
    gauge: IntGauge,
}

impl Pending {
    fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self { gauge: gauge.clone() }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

struct Node {
    service: MicroService,
    policy: NodePolicy,
}

struct Request {
    opts: RunOptions,
    start: Instant,
}

impl Request {
    fn stream_context<'a>(&'a self, node: &'a str) -> StreamContext<'a> {
        StreamContext { node, llm_params: self.opts.llm_params.as_ref(), extras: &self.opts.extras }
    }
}

/// The DAG engine of a megaservice.
pub struct ServiceOrchestrator {
    graph: Dag,
    nodes: Arc<HashMap<String, Arc<Node>>>,
    hooks: Arc<dyn Hooks>,
    transport: Arc<dyn NodeTransport>,
    metrics: OrchestratorMetrics,
    default_policy: NodePolicy,
}

impl std::fmt::Debug for ServiceOrchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceOrchestrator")
            .field("nodes", &self.graph.nodes())
            .field("edges", &self.graph.edges())
            .finish()
    }
}

impl Default for ServiceOrchestrator {
    fn default() -> Self {
        Self::new()
    }
}

/// Sentence ends after which an output guard is called (OPEA's list).
pub const SENTENCE_ENDS: [char; 6] = ['.', '?', '!', '。', '，', '！'];

impl ServiceOrchestrator {
    /// An empty orchestrator with identity hooks and default node policies.
    pub fn new() -> Self {
        Self {
            graph: Dag::new(),
            nodes: Arc::new(HashMap::new()),
            hooks: Arc::new(IdentityHooks),
            transport: Arc::new(HttpTransport),
            metrics: OrchestratorMetrics::new(),
            default_policy: NodePolicy::default(),
        }
    }

    /// Use these hooks.
    pub fn with_hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// Reach the nodes through this transport instead of HTTP.
    pub fn with_transport(mut self, transport: Arc<dyn NodeTransport>) -> Self {
        self.transport = transport;
        self
    }

    /// The policy of nodes added from now on without one.
    pub fn with_default_policy(mut self, policy: NodePolicy) -> Self {
        self.default_policy = policy;
        self
    }

    /// The metrics (register them into the megaservice's server).
    pub fn metrics(&self) -> &OrchestratorMetrics {
        &self.metrics
    }

    /// Add a node; a second node with the same name is an error.
    pub fn add(&mut self, service: MicroService) -> Result<&mut Self, GraphError> {
        let policy = self.default_policy.clone();
        self.add_with_policy(service, policy)
    }

    /// Add a node with its own timeouts and retries.
    pub fn add_with_policy(&mut self, service: MicroService, policy: NodePolicy) -> Result<&mut Self, GraphError> {
        let id = service.node_id();
        self.graph.add_node(&id)?;
        Arc::make_mut(&mut self.nodes).insert(id, Arc::new(Node { service, policy }));
        Ok(self)
    }

    /// Add the edge `from >> to` (both added before); unknown nodes, self-loops and cycles are
    /// errors.
    pub fn flow_to(&mut self, from: &MicroService, to: &MicroService) -> Result<&mut Self, GraphError> {
        self.graph.add_edge(&from.node_id(), &to.node_id())?;
        Ok(self)
    }

    /// The graph.
    pub fn graph(&self) -> &Dag {
        &self.graph
    }

    /// The descriptor of a node.
    pub fn service(&self, node: &str) -> Option<&MicroService> {
        self.nodes.get(node).map(|n| &n.service)
    }

    /// Run the graph for one request the OPEA way: `llm_params` decide streaming and are
    /// merged into the LLM nodes' inputs. See [`Self::run`].
    pub async fn schedule(
        &self,
        inputs: Value,
        llm_params: LLMParams,
        extras: Extras,
    ) -> Result<ScheduleResult, ServiceError> {
        self.run(inputs, RunOptions::opea(llm_params, extras)).await
    }

    /// Run the graph for one request. Entry nodes get `inputs`; a node starts when all its
    /// predecessors are done, with their JSON answers merged key by key in the order the
    /// predecessors were added. On the first failure the rest of the work is cancelled and the
    /// error (naming the node) is returned.
    pub async fn run(&self, inputs: Value, opts: RunOptions) -> Result<ScheduleResult, ServiceError> {
        let pending = Arc::new(Pending::new(&self.metrics.pending));
        let req = Arc::new(Request { opts, start: Instant::now() });
        let graph = Arc::new(Mutex::new(self.graph.clone()));
        let entry = self.graph.ind_nodes();

        let mut results: BTreeMap<String, NodeOutput> = BTreeMap::new();
        let mut started: HashSet<String> = entry.iter().cloned().collect();
        let mut tasks: FuturesUnordered<_> = entry
            .iter()
            .map(|node| self.execute(node.clone(), inputs.clone(), req.clone(), graph.clone(), pending.clone()))
            .collect();

        // Dropping `tasks` on an early return cancels every call still in flight.
        while let Some(done) = tasks.next().await {
            let (node, mut output) = done?;
            let mut g = lock(&graph);
            let (downstreams, cut) = cut_black_listed(&mut g, &node, &output);
            if !cut.is_empty() && downstreams.is_empty() && req.opts.stream {
                output = self.refusal_as_stream(&node, output, &req, &pending);
            }
            results.insert(node.clone(), output);
            for d in downstreams.iter().chain(cut.iter()) {
                if let Some(merged) = ready_inputs(&g, d, &started, &results)? {
                    started.insert(d.clone());
                    tasks.push(self.execute(d.clone(), merged, req.clone(), graph.clone(), pending.clone()));
                }
            }
        }

        let runtime_graph = reached(&lock(&graph), &entry);
        if !results.values().any(|r| matches!(r, NodeOutput::Stream(_))) {
            self.metrics.request.observe(req.start.elapsed().as_secs_f64());
        }
        // A stream holds its own reference to `pending`; dropping ours here lets the gauge
        // fall now for JSON answers and when the stream ends for streamed ones.
        drop(pending);
        Ok(ScheduleResult { results, runtime_graph })
    }

    /// Everything downstream of `node` was cut: answer the client with its text as a one-event
    /// stream, so a UI sees the same shape as a normal answer.
    fn refusal_as_stream(&self, node: &str, output: NodeOutput, req: &Request, pending: &Arc<Pending>) -> NodeOutput {
        let NodeOutput::Json(v) = &output else { return output };
        let text = v.get("text").map(text_of).unwrap_or_default();
        let events: EventStream =
            futures::stream::once(async move { Ok(chunk_payload(&completion_id(), "opea", &text)) }).boxed();
        let events = count_tokens(&self.metrics, events, req.start);
        let bytes = self.hooks.align_generator(events, &req.stream_context(node));
        NodeOutput::Stream(finish_stream(&self.metrics, bytes, req.start, pending.clone()))
    }

    /// Call one node: align its inputs, call it (a stream when it is a streaming LLM), align
    /// its answer.
    fn execute(
        &self,
        node_id: String,
        received: Value,
        req: Arc<Request>,
        graph: Arc<Mutex<Dag>>,
        pending: Arc<Pending>,
    ) -> impl Future<Output = Result<(String, NodeOutput), ServiceError>> + Send + 'static {
        let step = Step {
            node: self.nodes.get(&node_id).cloned(),
            nodes: self.nodes.clone(),
            hooks: self.hooks.clone(),
            transport: self.transport.clone(),
            metrics: self.metrics.clone(),
            req,
            graph,
        };
        async move {
            let node =
                step.node.clone().ok_or_else(|| ServiceError::Internal(format!("node {node_id} has no service")))?;
            let inputs = step.align_inputs(&node_id, &node, &received)?;
            if node.service.service_type.takes_llm_params() && step.req.opts.stream {
                let stream = step.call_streaming(&node_id, &node, &inputs, pending).await?;
                return Ok(stream);
            }
            let answer = step.call_json(&node_id, &node, &inputs).await?;
            let answer = step.align_outputs(&node_id, &node, answer, &inputs, &received)?;
            Ok((node_id, NodeOutput::Json(answer)))
        }
    }
}

/// The span of one node's call (its attempts are spans inside it): in a trace, which node took
/// the time, with its attempts, final status and bytes each way (recorded by the transport), and
/// an error status when the call failed. A streamed node's span ends when its answer starts
/// streaming.
fn node_span(node_id: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "node",
        otel.name = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
        node = node_id,
        node.attempts = tracing::field::Empty,
        node.status = tracing::field::Empty,
        node.request_bytes = tracing::field::Empty,
        node.response_bytes = tracing::field::Empty,
    );
    if crate::telemetry::enabled() {
        span.record("otel.name", format!("node {node_id}"));
    }
    span
}

/// Mark a node's span failed, with the error.
fn span_failed(span: &tracing::Span, e: &ServiceError) {
    if crate::telemetry::enabled() {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_message", e.to_string());
    }
}

/// What one node's call needs, owned so the call can run as its own future.
struct Step {
    node: Option<Arc<Node>>,
    nodes: Arc<HashMap<String, Arc<Node>>>,
    hooks: Arc<dyn Hooks>,
    transport: Arc<dyn NodeTransport>,
    metrics: OrchestratorMetrics,
    req: Arc<Request>,
    graph: Arc<Mutex<Dag>>,
}

impl Step {
    fn context<'a>(&'a self, node_id: &'a str, node: &'a Node, received: &'a Value, g: &'a mut Dag) -> NodeContext<'a> {
        NodeContext {
            node: node_id,
            service: &node.service,
            received,
            llm_params: self.req.opts.llm_params.as_ref(),
            extras: &self.req.opts.extras,
            graph: g,
            nodes: &self.nodes,
        }
    }

    /// OPEA's LLM parameters merged in (when the request has them), then the hooks' `align_inputs`.
    fn align_inputs(&self, node_id: &str, node: &Node, received: &Value) -> Result<Value, ServiceError> {
        let mut inputs = received.clone();
        if node.service.service_type.takes_llm_params()
            && let Some(params) = &self.req.opts.llm_params
        {
            inject_llm_params(&mut inputs, params);
        }
        let mut g = lock(&self.graph);
        let mut ctx = self.context(node_id, node, received, &mut g);
        self.hooks.align_inputs(inputs, &mut ctx)
    }

    fn align_outputs(
        &self,
        node_id: &str,
        node: &Node,
        answer: Value,
        inputs: &Value,
        received: &Value,
    ) -> Result<Value, ServiceError> {
        let mut g = lock(&self.graph);
        let mut ctx = self.context(node_id, node, received, &mut g);
        self.hooks.align_outputs(answer, inputs, &mut ctx)
    }

    fn target<'a>(node_id: &'a str, node: &'a Node, url: &'a str) -> Target<'a> {
        Target { node: node_id, url, api_key: node.service.api_key.as_deref(), policy: &node.policy }
    }

    /// A JSON call, timed and counted per node.
    async fn call_json(&self, node_id: &str, node: &Node, inputs: &Value) -> Result<Value, ServiceError> {
        let url = node.service.endpoint_path();
        let t0 = Instant::now();
        let span = node_span(node_id);
        let answer = self.transport.json(&Self::target(node_id, node, &url), inputs).instrument(span.clone()).await;
        self.metrics.node_latency.with_label_values(&[node_id]).observe(t0.elapsed().as_secs_f64());
        answer.inspect_err(|e| {
            self.metrics.node_failed(node_id, e);
            span_failed(&span, e);
        })
    }

    /// A streaming LLM call: its events go through the output guard (when one follows it) and
    /// `align_generator` to become the client's stream.
    async fn call_streaming(
        &self,
        node_id: &str,
        node: &Node,
        inputs: &Value,
        pending: Arc<Pending>,
    ) -> Result<(String, NodeOutput), ServiceError> {
        let url = node.service.endpoint_path();
        let t0 = Instant::now();
        let span = node_span(node_id);
        let events = self
            .transport
            .stream(&Self::target(node_id, node, &url), inputs)
            .instrument(span.clone())
            .await
            .inspect_err(|e| {
            self.metrics.node_failed(node_id, e);
            span_failed(&span, e);
        })?;
        self.metrics.node_latency.with_label_values(&[node_id]).observe(t0.elapsed().as_secs_f64());
        let downstream = lock(&self.graph).downstream(node_id);
        let (out_node, events) = match downstream.as_slice() {
            [] => (node_id.to_string(), events),
            [guard] => {
                let g = self
                    .nodes
                    .get(guard)
                    .cloned()
                    .ok_or_else(|| ServiceError::Internal(format!("node {guard} has no service")))?;
                let guarded = guard_stream(events, guard.clone(), g, self.transport.clone(), self.metrics.clone());
                (guard.clone(), guarded)
            }
            many => {
                return Err(ServiceError::Internal(format!(
                    "streaming node {node_id} has {} downstream nodes; only one (an output guard) is supported",
                    many.len()
                )));
            }
        };
        let events = count_tokens(&self.metrics, events, self.req.start);
        let bytes = self.hooks.align_generator(events, &self.req.stream_context(&out_node));
        let stream = finish_stream(&self.metrics, bytes, self.req.start, pending);
        Ok((out_node, NodeOutput::Stream(stream)))
    }
}

/// Apply a node's `downstream_black_list`: the edges to downstream nodes matching a pattern are
/// cut. Returns the downstream nodes still linked and those cut.
fn cut_black_listed(g: &mut Dag, node: &str, output: &NodeOutput) -> (Vec<String>, Vec<String>) {
    let mut downstreams = g.downstream(node);
    let mut cut = Vec::new();
    let patterns: Vec<&str> = match output {
        NodeOutput::Json(v) => v
            .get("downstream_black_list")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
        NodeOutput::Stream(_) => Vec::new(),
    };
    for pattern in patterns {
        let re = match Regex::new(pattern) {
            Ok(re) => re,
            Err(e) => {
                tracing::warn!(node = %node, pattern = %pattern, error = %e, "invalid downstream_black_list pattern ignored");
                continue;
            }
        };
        downstreams.retain(|d| {
            if re.is_match(d) {
                let _ = g.delete_edge(node, d);
                cut.push(d.clone());
                false
            } else {
                true
            }
        });
    }
    (downstreams, cut)
}

/// The inputs of `node` when it can start now: still in the graph, not started, and every
/// predecessor answered (their answers merged). `None` when it cannot start yet (or ever).
fn ready_inputs(
    g: &Dag,
    node: &str,
    started: &HashSet<String>,
    results: &BTreeMap<String, NodeOutput>,
) -> Result<Option<Value>, ServiceError> {
    if started.contains(node) || !g.contains(node) {
        return Ok(None);
    }
    let preds = g.predecessors(node);
    if preds.is_empty() || !preds.iter().all(|p| results.contains_key(p)) {
        return Ok(None);
    }
    merge_inputs(&preds, results, node).map(Some)
}

/// The request's graph pruned to what the entry nodes still reach.
fn reached(graph: &Dag, entry: &[String]) -> Dag {
    let mut runtime_graph = graph.clone();
    let mut keep: HashSet<String> = entry.iter().cloned().collect();
    for e in entry {
        keep.extend(runtime_graph.all_downstreams(e));
    }
    for n in runtime_graph.nodes() {
        if !keep.contains(&n) {
            runtime_graph.delete_node_if_exists(&n);
        }
    }
    runtime_graph
}

/// Observe first-token and inter-token latency on each event with text.
fn count_tokens(metrics: &OrchestratorMetrics, events: EventStream, start: Instant) -> EventStream {
    let first = metrics.first_token.clone();
    let inter = metrics.inter_token.clone();
    let mut last: Option<Instant> = None;
    events
        .inspect(move |item| {
            if let Ok(p) = item {
                if event_text(p).is_none_or(|t| t.is_empty()) {
                    return;
                }
                let now = Instant::now();
                match last {
                    None => first.observe(now.duration_since(start).as_secs_f64()),
                    Some(prev) => inter.observe(now.duration_since(prev).as_secs_f64()),
                }
                last = Some(now);
            }
        })
        .boxed()
}

/// Record the request latency when the stream ends, and hold the pending guard until the
/// stream ends or is dropped (client gone).
fn finish_stream(
    metrics: &OrchestratorMetrics,
    bytes: ByteStream,
    start: Instant,
    pending: Arc<Pending>,
) -> ByteStream {
    let request = metrics.request.clone();
    async_stream::stream! {
        let _pending = pending;
        let mut bytes = bytes;
        let mut failed = false;
        while let Some(item) = bytes.next().await {
            failed |= item.is_err();
            yield item;
        }
        if !failed {
            request.observe(start.elapsed().as_secs_f64());
        }
    }
    .boxed()
}

fn lock(g: &Mutex<Dag>) -> std::sync::MutexGuard<'_, Dag> {
    g.lock().unwrap_or_else(|e| e.into_inner())
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    }
}

/// OPEA injects every `LLMParams` field into LLM/LVM inputs; we skip `id` and unset (`null`)
/// values so a request's own `model` is not overwritten with nothing.
fn inject_llm_params(inputs: &mut Value, params: &LLMParams) {
    let Value::Object(obj) = inputs else { return };
    if let Ok(Value::Object(p)) = serde_json::to_value(params) {
        for (k, v) in p {
            if k == "id" || v.is_null() {
                continue;
            }
            obj.insert(k, v);
        }
    }
}

fn merge_inputs(preds: &[String], results: &BTreeMap<String, NodeOutput>, target: &str) -> Result<Value, ServiceError> {
    let mut merged = Map::new();
    for p in preds {
        match results.get(p) {
            Some(NodeOutput::Json(Value::Object(o))) => merged.extend(o.iter().map(|(k, v)| (k.clone(), v.clone()))),
            Some(NodeOutput::Json(other)) => {
                return Err(ServiceError::Upstream(format!(
                    "node {p} answered {} where a JSON object was needed to feed {target}",
                    kind_of(other)
                )));
            }
            Some(NodeOutput::Stream(_)) => {
                return Err(ServiceError::Internal(format!(
                    "node {p} streams its answer; a stream cannot feed {target}"
                )));
            }
            None => {}
        }
    }
    Ok(Value::Object(merged))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Pass the LLM's text through an output guard sentence by sentence; the guard's answers become
/// the stream's tokens (OPEA's `\s?\S+\s?` split), each as an OpenAI chunk payload.
fn guard_stream(
    events: EventStream,
    guard_id: String,
    guard: Arc<Node>,
    transport: Arc<dyn NodeTransport>,
    metrics: OrchestratorMetrics,
) -> EventStream {
    async_stream::stream! {
        let token_re = Regex::new(r"\s?\S+\s?").expect("valid regex");
        let id = completion_id();
        let url = guard.service.endpoint_path();
        let mut events = events;
        let mut buffer = String::new();
        let mut ended = false;
        while !ended {
            match events.next().await {
                Some(Err(e)) => {
                    yield Err(e);
                    return;
                }
                Some(Ok(p)) => {
                    if let Some(t) = event_text(&p) {
                        buffer.push_str(&t);
                    }
                }
                None => ended = true,
            }
            // Cut every complete sentence; at the end, whatever is left.
            loop {
                let cut = if ended && !buffer.is_empty() {
                    Some(buffer.len())
                } else {
                    buffer.char_indices().find(|(_, c)| SENTENCE_ENDS.contains(c)).map(|(i, c)| i + c.len_utf8())
                };
                let Some(cut) = cut else { break };
                let sentence: String = buffer.drain(..cut).collect();
                let target = Step::target(&guard_id, &guard, &url);
                let t0 = Instant::now();
                let answer = transport.json(&target, &serde_json::json!({ "text": sentence })).await;
                metrics.node_latency.with_label_values(&[guard_id.as_str()]).observe(t0.elapsed().as_secs_f64());
                let answer = match answer {
                    Ok(a) => a,
                    Err(e) => {
                        metrics.node_failed(&guard_id, &e);
                        yield Err(e);
                        return;
                    }
                };
                let Some(text) = answer.get("text").map(text_of) else {
                    yield Err(ServiceError::Upstream(format!("node {guard_id} answered without a 'text' field: {answer}")));
                    return;
                };
                for m in token_re.find_iter(&text) {
                    yield Ok(chunk_payload(&id, "opea", m.as_str()));
                }
                // A guard that blocks what follows (a policy violation) ends the answer: the
                // rest of the LLM's text is not shown.
                if answer.get("downstream_black_list").and_then(Value::as_array).is_some_and(|l| !l.is_empty()) {
                    return;
                }
            }
        }
    }
    .boxed()
}
