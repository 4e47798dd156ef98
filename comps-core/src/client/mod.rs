//! The one layer through which a comps service calls another: the transport ([`transport`]:
//! pooled connections, timeouts, retries, errors naming the node) and a typed adapter per kind
//! of upstream, each reading an answer once, strictly, whatever wire it speaks:
//!
//! | adapter | wires |
//! |---|---|
//! | [`EmbeddingsClient`] | OpenAI `/v1/embeddings` (ours, vLLM, any compatible server), TEI `/embed` |
//! | [`RerankClient`] | TEI `/rerank` |
//! | [`ChatClient`] | OpenAI `/v1/chat/completions`, whole or streamed |
//! | [`Upstream::relay`] | any route, passed through (chatqna's dataprep) |
//!
//! The orchestrator's hops use the same transport, and the megaservice hooks read the answers
//! of the embedding and rerank nodes with the same parsers ([`embeddings::parse_vector`],
//! [`rerank::parse_scores`]).

pub mod chat;
pub mod embeddings;
pub mod rerank;
pub mod transport;

use std::time::Duration;
use tracing::Instrument;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

pub use chat::ChatClient;
pub use embeddings::{EmbedInputs, EmbedRequest, Embeddings, EmbeddingsClient, EmbeddingsWire};
pub use rerank::RerankClient;
pub use transport::{NodePolicy, Target, call_json, call_stream};

use crate::error::ServiceError;
use crate::sse::EventStream;

/// One upstream node: its name in errors, its URL, its key and how it is called.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The node's name, as errors and logs report it.
    pub node: String,
    /// The URL calls go to.
    pub url: String,
    /// Bearer key, sent only when set.
    pub api_key: Option<String>,
    /// Timeouts and retries.
    pub policy: NodePolicy,
}

impl Upstream {
    /// `node` at `url`, with the default policy but `timeout` for whole calls and stream gaps.
    pub fn new(node: impl Into<String>, url: impl Into<String>, timeout: Duration) -> Self {
        Self {
            node: node.into(),
            url: url.into(),
            api_key: None,
            policy: NodePolicy { timeout, stream_idle_timeout: timeout, ..NodePolicy::default() },
        }
    }

    /// Send this bearer key (an empty one is none).
    pub fn with_api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }

    /// Extra attempts after a connect error or a 502/503/504.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.policy.retries = retries;
        self
    }

    /// The transport's view of this node.
    pub fn target(&self) -> Target<'_> {
        Target { node: &self.node, url: &self.url, api_key: self.api_key.as_deref(), policy: &self.policy }
    }

    /// POST JSON, read JSON.
    pub async fn json(&self, body: &Value) -> Result<Value, ServiceError> {
        call_json(&self.target(), body).await
    }

    /// POST JSON, read SSE events.
    pub async fn stream(&self, body: &Value) -> Result<EventStream, ServiceError> {
        call_stream(&self.target(), body).await
    }

    /// An error naming this node: it answered something this client cannot use.
    pub fn bad_answer(&self, what: impl std::fmt::Display) -> ServiceError {
        ServiceError::Upstream(format!("node {} at {} answered {what}", self.node, self.url))
    }

    /// Pass a request through to `{url}{path_and_query}` as it came (method, body, content type
    /// and accept headers) and its answer back as it went (status, body, content type). Only
    /// the transport's failures become errors, naming the node; the whole call is bounded by
    /// the policy's timeout.
    pub async fn relay(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, ServiceError> {
        let target = format!("{}{path_and_query}", self.url.trim_end_matches('/'));
        let mut request = crate::http_client().request(method, &target).timeout(self.policy.timeout).body(body);
        for name in [header::CONTENT_TYPE, header::ACCEPT] {
            if let Some(v) = headers.get(&name) {
                request = request.header(name, v);
            }
        }
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let target = Target { url: &target, ..self.target() };
        let span = tracing::info_span!(
            "relay",
            otel.name = tracing::field::Empty,
            otel.kind = "client",
            node = target.node,
            url.full = target.url,
        );
        if crate::telemetry::enabled() {
            span.record("otel.name", format!("relay to {}", target.node));
            request = request.headers(crate::telemetry::headers_of(&span));
        }
        let upstream = request.send().instrument(span).await.map_err(|e| transport::send_error(&target, &e))?;
        let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = upstream.bytes().await.map_err(|e| {
            ServiceError::Upstream(format!("node {}'s answer was cut off ({}): {e}", target.node, target.url))
        })?;
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = status;
        if let Some(ct) = content_type {
            response.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        Ok(response)
    }
}

/// An answer `node` gave that its caller cannot use, quoted (cut short) with what was expected.
pub fn shape_error(node: &str, got: &Value, expected: &str) -> ServiceError {
    let shown = crate::limits::excerpt_to(&got.to_string(), crate::limits::UPSTREAM_BODY_EXCERPT_CHARS);
    ServiceError::Upstream(format!("node {node} answered {shown}, expected {expected}"))
}

/// A JSON array of numbers as f32s; `None` when anything in it is not a number.
pub(crate) fn floats(v: &Value) -> Option<Vec<f32>> {
    v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect()
}
