//! Mock backends for tests and benchmarks (the `comps-mock-backends` library): the other side of the wire,
//! speaking the exact formats of TEI (`/embed`, `/rerank`), OPEA microservices
//! (`/v1/embeddings` with `TextDoc`, `/v1/retrieval`, `/v1/reranking`) and OpenAI
//! (`/v1/embeddings`, `/v1/chat/completions` streamed and not), with configurable latency,
//! time to first token, per-token delay, token count, embedding size, failures, and several SSE
//! events per TCP chunk or one event split across chunks.

pub mod hub;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use comps_core::protocol::{UsageInfo, completion_id, unix_now};
use comps_core::sse::chunk_payload;

/// How the mocks behave.
#[derive(Debug, Clone, clap::Args)]
pub struct MockConfig {
    /// Delay before each JSON answer, in ms.
    #[arg(long, env = "MOCK_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Delay before the first streamed token, in ms.
    #[arg(long, env = "MOCK_TTFT_MS", default_value_t = 0)]
    pub ttft_ms: u64,
    /// Delay between streamed tokens, in ms.
    #[arg(long, env = "MOCK_TOKEN_DELAY_MS", default_value_t = 0)]
    pub token_delay_ms: u64,
    /// Tokens the LLM generates (when no --reply is set).
    #[arg(long, env = "MOCK_TOKENS", default_value_t = 32)]
    pub tokens: usize,
    /// A fixed reply, streamed as its whitespace-led pieces (" OPEA", " is", ...).
    #[arg(long, env = "MOCK_REPLY")]
    pub reply: Option<String>,
    /// Embedding size.
    #[arg(long, env = "MOCK_EMBED_DIM", default_value_t = 384)]
    pub embed_dim: usize,
    /// Documents the retriever returns.
    #[arg(long, env = "MOCK_DOCS", default_value_t = 4)]
    pub docs: usize,
    /// Fraction of requests answered with --error-status (deterministic spread).
    #[arg(long, env = "MOCK_FAILURE_RATE", default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Fail the first N requests with --error-status, then succeed (a transient fault).
    #[arg(long, env = "MOCK_FAIL_FIRST", default_value_t = 0)]
    pub fail_first: u64,
    /// Status of injected failures.
    #[arg(long, env = "MOCK_ERROR_STATUS", default_value_t = 500)]
    pub error_status: u16,
    /// SSE events written per TCP chunk.
    #[arg(long, env = "MOCK_EVENTS_PER_CHUNK", default_value_t = 1)]
    pub events_per_chunk: usize,
    /// Write each SSE chunk in two halves, splitting events across chunks.
    #[arg(long, env = "MOCK_SPLIT_EVENTS", default_value_t = false)]
    pub split_events: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            ttft_ms: 0,
            token_delay_ms: 0,
            tokens: 32,
            reply: None,
            embed_dim: 384,
            docs: 4,
            failure_rate: 0.0,
            fail_first: 0,
            error_status: 500,
            events_per_chunk: 1,
            split_events: false,
        }
    }
}

/// What the mocks saw.
#[derive(Debug, Default)]
pub struct MockStats {
    /// Requests received (all routes but `/mock/stats`).
    pub requests: AtomicU64,
    /// Failures injected.
    pub failures: AtomicU64,
    /// Streams started.
    pub streams_started: AtomicU64,
    /// Streams sent to the end.
    pub streams_completed: AtomicU64,
    /// Streams dropped before the end (the client went away).
    pub streams_dropped: AtomicU64,
}

impl MockStats {
    /// A JSON snapshot.
    pub fn snapshot(&self) -> Value {
        json!({
            "requests": self.requests.load(Ordering::SeqCst),
            "failures": self.failures.load(Ordering::SeqCst),
            "streams_started": self.streams_started.load(Ordering::SeqCst),
            "streams_completed": self.streams_completed.load(Ordering::SeqCst),
            "streams_dropped": self.streams_dropped.load(Ordering::SeqCst),
        })
    }
}

#[derive(Clone)]
struct Mock {
    cfg: Arc<MockConfig>,
    stats: Arc<MockStats>,
}

/// The mock router and its counters.
pub fn mock_router(cfg: MockConfig) -> (Router, Arc<MockStats>) {
    let stats = Arc::new(MockStats::default());
    let m = Mock { cfg: Arc::new(cfg), stats: stats.clone() };
    let router = Router::new()
        .route("/embed", post(tei_embed))
        .route("/v1/embeddings", post(embeddings))
        .route("/rerank", post(tei_rerank))
        .route("/v1/reranking", post(opea_rerank))
        .route("/v1/retrieval", post(retrieval))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/health_check", get(|| async { axum::Json(json!({"Service Title": "mock"})) }))
        .route("/mock/stats", get(mock_stats))
        .with_state(m);
    (router, stats)
}

/// Serve the mocks on `addr` (port 0 for any) on a background task; returns the bound address.
pub async fn spawn_mock(cfg: MockConfig) -> std::io::Result<(std::net::SocketAddr, Arc<MockStats>)> {
    use axum::serve::ListenerExt;
    let (router, stats) = mock_router(cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|t| {
        let _ = t.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((addr, stats))
}

async fn mock_stats(State(m): State<Mock>) -> impl IntoResponse {
    axum::Json(m.stats.snapshot())
}

impl Mock {
    /// Count the request and maybe inject a failure.
    fn admit(&self) -> Result<(), Box<Response>> {
        let n = self.stats.requests.fetch_add(1, Ordering::SeqCst);
        let rate = self.cfg.failure_rate.clamp(0.0, 1.0);
        // Deterministic spread: request n fails when the running total of `rate` crosses an
        // integer, so exactly rate × N of N requests fail.
        let by_rate = rate > 0.0 && ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor();
        if n < self.cfg.fail_first || by_rate {
            self.stats.failures.fetch_add(1, Ordering::SeqCst);
            let status = StatusCode::from_u16(self.cfg.error_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(Box::new(
                (status, axum::Json(json!({"error": "injected failure", "request": n}))).into_response(),
            ));
        }
        Ok(())
    }

    async fn delay(&self) {
        if self.cfg.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.cfg.latency_ms)).await;
        }
    }

    fn embed(&self, text: &str) -> Vec<f32> {
        // A deterministic unit vector from the text (FNV-1a seeded xorshift).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let mut v: Vec<f32> = (0..self.cfg.embed_dim)
            .map(|_| {
                h ^= h << 13;
                h ^= h >> 7;
                h ^= h << 17;
                ((h >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    fn tokens(&self) -> Vec<String> {
        match &self.cfg.reply {
            Some(r) => {
                let re = regex::Regex::new(r"\s*\S+").expect("valid regex");
                re.find_iter(r).map(|m| m.as_str().to_string()).collect()
            }
            None => (0..self.cfg.tokens).map(|i| format!("tok{i} ")).collect(),
        }
    }
}

fn texts_of(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

fn bad_request(msg: &str) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"error": msg}))).into_response()
}

async fn tei_embed(State(m): State<Mock>, axum::Json(body): axum::Json<Value>) -> Response {
    if let Err(r) = m.admit() {
        return *r;
    }
    m.delay().await;
    let Some(inputs) = body.get("inputs") else { return bad_request("missing inputs") };
    let out: Vec<Vec<f32>> = texts_of(inputs).iter().map(|t| m.embed(t)).collect();
    axum::Json(out).into_response()
}

async fn embeddings(State(m): State<Mock>, axum::Json(body): axum::Json<Value>) -> Response {
    if let Err(r) = m.admit() {
        return *r;
    }
    m.delay().await;
    if let Some(text) = body.get("text") {
        // OPEA: TextDoc -> EmbedDoc.
        let t = texts_of(text).join("\n");
        return axum::Json(json!({"id": comps_core::protocol::new_id(), "text": t, "embedding": m.embed(&t)}))
            .into_response();
    }
    let Some(input) = body.get("input") else { return bad_request("missing input") };
    let texts = texts_of(input);
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"index": i, "object": "embedding", "embedding": m.embed(t)}))
        .collect();
    let tokens = texts.iter().map(|t| t.split_whitespace().count() as u32).sum();
    axum::Json(json!({"object": "list", "model": "mock", "data": data, "usage": UsageInfo::new(tokens, 0)}))
        .into_response()
}

fn overlap(q: &str, t: &str) -> f32 {
    let qs: std::collections::HashSet<String> = q.split_whitespace().map(str::to_lowercase).collect();
    let ts: Vec<String> = t.split_whitespace().map(str::to_lowercase).collect();
    if ts.is_empty() {
        return 0.0;
    }
    ts.iter().filter(|w| qs.contains(*w)).count() as f32 / ts.len() as f32
}

async fn tei_rerank(State(m): State<Mock>, axum::Json(body): axum::Json<Value>) -> Response {
    if let Err(r) = m.admit() {
        return *r;
    }
    m.delay().await;
    let q = body.get("query").and_then(Value::as_str).unwrap_or_default();
    let texts = body.get("texts").map(texts_of).unwrap_or_default();
    let mut scored: Vec<(usize, f32)> = texts.iter().enumerate().map(|(i, t)| (i, overlap(q, t))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    axum::Json(scored.iter().map(|(i, s)| json!({"index": i, "score": s})).collect::<Vec<_>>()).into_response()
}

async fn opea_rerank(State(m): State<Mock>, axum::Json(body): axum::Json<Value>) -> Response {
    if let Err(r) = m.admit() {
        return *r;
    }
    m.delay().await;
    let query = body.get("initial_query").and_then(Value::as_str).unwrap_or_default().to_string();
    let top_n = body.get("top_n").and_then(Value::as_u64).unwrap_or(1) as usize;
    let docs: Vec<String> = body
        .get("retrieved_docs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|d| d.get("text").and_then(Value::as_str).map(str::to_string)).collect())
        .unwrap_or_default();
    let mut scored: Vec<(f32, String)> = docs.into_iter().map(|d| (overlap(&query, &d), d)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let documents: Vec<String> = scored.into_iter().take(top_n).map(|(_, d)| d).collect();
    axum::Json(json!({"id": comps_core::protocol::new_id(), "query": query, "documents": documents})).into_response()
}

async fn retrieval(State(m): State<Mock>, axum::Json(body): axum::Json<Value>) -> Response {
    if let Err(r) = m.admit() {
        return *r;
    }
    m.delay().await;
    let docs: Vec<String> = (0..m.cfg.docs).map(|i| format!("mock document {i}")).collect();
    if let Some(text) = body.get("text") {
        let q = texts_of(text).join("\n");
        let retrieved: Vec<Value> = docs
            .iter()
            .map(|d| json!({"id": comps_core::protocol::new_id(), "text": d, "downstream_black_list": []}))
            .collect();
        return axum::Json(
            json!({"id": comps_core::protocol::new_id(), "retrieved_docs": retrieved, "initial_query": q, "top_n": 1}),
        )
        .into_response();
    }
    if body.get("messages").is_some() {
        let mut out = body.clone();
        out["retrieved_docs"] = json!(docs.iter().map(|d| json!({"text": d, "metadata": {}})).collect::<Vec<_>>());
        out["documents"] = json!(docs);
        return axum::Json(out).into_response();
    }
    axum::Json(json!({"retrieved_docs": docs.iter().map(|d| json!({"text": d, "metadata": {}})).collect::<Vec<_>>()}))
        .into_response()
}

/// Marks a stream dropped unless it finished.
struct StreamGuard {
    stats: Arc<MockStats>,
    done: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let c = if self.done { &self.stats.streams_completed } else { &self.stats.streams_dropped };
        c.fetch_add(1, Ordering::SeqCst);
    }
}

async fn chat(State(m): State<Mock>, axum::Json(body): axum::Json<Value>) -> Response {
    if let Err(r) = m.admit() {
        return *r;
    }
    let tokens = m.tokens();
    let model = body.get("model").and_then(Value::as_str).unwrap_or("mock").to_string();
    let prompt_tokens = body.to_string().split_whitespace().count() as u32;
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        m.delay().await;
        let total = m.cfg.ttft_ms + m.cfg.token_delay_ms * tokens.len().saturating_sub(1) as u64;
        if total > 0 {
            tokio::time::sleep(Duration::from_millis(total)).await;
        }
        let text: String = tokens.concat();
        return axum::Json(json!({
            "id": completion_id(), "object": "chat.completion", "created": unix_now(), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
            "usage": UsageInfo::new(prompt_tokens, tokens.len() as u32),
        }))
        .into_response();
    }
    let include_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    m.stats.streams_started.fetch_add(1, Ordering::SeqCst);
    let cfg = m.cfg.clone();
    let stats = m.stats.clone();
    let id = completion_id();
    let body = async_stream::stream! {
        let mut guard = StreamGuard { stats, done: false };
        if cfg.ttft_ms > 0 {
            tokio::time::sleep(Duration::from_millis(cfg.ttft_ms)).await;
        }
        let mut events: Vec<String> = tokens.iter().map(|t| chunk_payload(&id, &model, t)).collect();
        let n = tokens.len() as u32;
        events.push(json!({
            "id": id, "object": "chat.completion.chunk", "created": unix_now(), "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
        }).to_string());
        if include_usage {
            events.push(json!({
                "id": id, "object": "chat.completion.chunk", "created": unix_now(), "model": model,
                "choices": [], "usage": UsageInfo::new(prompt_tokens, n),
            }).to_string());
        }
        let mut frames: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        frames.push("data: [DONE]\n\n".to_string());
        let per = cfg.events_per_chunk.max(1);
        for (i, group) in frames.chunks(per).enumerate() {
            if i > 0 && cfg.token_delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(cfg.token_delay_ms)).await;
            }
            let chunk = group.concat();
            if cfg.split_events {
                let mid = chunk.len() / 2;
                let (a, b) = chunk.split_at(mid);
                yield Ok::<Bytes, std::convert::Infallible>(Bytes::from(a.to_string()));
                tokio::time::sleep(Duration::from_millis(5)).await;
                yield Ok(Bytes::from(b.to_string()));
            } else {
                yield Ok(Bytes::from(chunk));
            }
        }
        guard.done = true;
    };
    ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(body)).into_response()
}

/// Every `$ref` in `v`.
fn schema_refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|v| schema_refs(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| schema_refs(v, out)),
        _ => {}
    }
}

/// `GET /v1/openapi.json` is an OpenAPI 3.1 JSON document whose `paths` hold `routes` (method,
/// path) and the server's own routes, every POST with a request body schema and every `$ref`
/// resolving; `GET /docs` is an HTML page. Panics (a test helper) naming what is missing.
pub async fn check_openapi(url: &str, routes: &[(&str, &str)]) -> serde_json::Value {
    let client = comps_core::http_client();
    let r = client.get(format!("{url}/v1/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    let builtin = [
        ("get", "/health"),
        ("get", "/v1/health_check"),
        ("get", "/metrics"),
        ("get", "/v1/openapi.json"),
        ("get", "/docs"),
    ];
    for (method, path) in routes.iter().chain(&builtin) {
        assert!(
            paths.get(*path).is_some_and(|i| i.get(*method).is_some()),
            "{method} {path} not in {:?}",
            paths.keys()
        );
    }
    for (path, item) in paths {
        if let Some(op) = item.get("post") {
            let content =
                op["requestBody"]["content"].as_object().unwrap_or_else(|| panic!("POST {path}: no requestBody"));
            assert!(!content.is_empty(), "POST {path}: empty requestBody");
            for (ty, c) in content {
                assert!(c["schema"].is_object(), "POST {path} {ty}: no schema");
            }
        }
    }
    let mut all = Vec::new();
    schema_refs(&doc, &mut all);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
        assert!(doc["components"]["schemas"].get(name).is_some(), "{r} does not resolve");
    }
    let r = client.get(format!("{url}/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    doc
}
