//! The transport under every client: one pooled HTTP client, per-node timeouts, bounded
//! retries with backoff on connect errors and 502/503/504, and every failure turned into an
//! error naming the node.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tracing::Instrument;

use crate::error::ServiceError;
use crate::sse::{EventStream, read_events};

/// How a node is called.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePolicy {
    /// Whole-call timeout for JSON calls; time to response headers for streams.
    pub timeout: Duration,
    /// Longest wait between two events of a stream.
    pub stream_idle_timeout: Duration,
    /// Extra attempts after a connect error or a 502/503/504 (nothing had been received).
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one.
    pub backoff: Duration,
}

impl Default for NodePolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            stream_idle_timeout: Duration::from_secs(120),
            retries: 2,
            backoff: Duration::from_millis(100),
        }
    }
}

/// Where and how to call one node.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// Node id, for error messages and metrics.
    pub node: &'a str,
    /// Full URL.
    pub url: &'a str,
    /// Bearer key, sent only when set.
    pub api_key: Option<&'a str>,
    /// Timeouts and retries.
    pub policy: &'a NodePolicy,
}

fn excerpt(body: &str) -> String {
    crate::limits::excerpt_to(body.trim(), crate::limits::UPSTREAM_BODY_EXCERPT_CHARS)
}

fn retryable(status: StatusCode) -> bool {
    matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)
}

fn timeout_error(t: &Target<'_>) -> ServiceError {
    ServiceError::UpstreamTimeout(format!(
        "node {} did not answer within {:.1} s ({})",
        t.node,
        t.policy.timeout.as_secs_f64(),
        t.url
    ))
}

/// Send `body` and return the response once its status is a success, retrying as the policy
/// allows. The returned response's body is not read yet.
async fn send(t: &Target<'_>, body: &Value, stream: bool) -> Result<reqwest::Response, ServiceError> {
    let client = crate::utils::http_client();
    let payload = bytes::Bytes::from(serde_json::to_vec(body).map_err(|e| ServiceError::Internal(e.to_string()))?);
    // The orchestrator's node span (the current one, when there is one) gets the attempts, the
    // status and the bytes; other spans have no such fields and ignore them.
    let node_span = tracing::Span::current();
    let traced = crate::telemetry::enabled();
    if traced {
        node_span.record("node.request_bytes", payload.len());
    }
    let mut attempt = 0;
    loop {
        if traced {
            node_span.record("node.attempts", attempt + 1);
        }
        let mut req =
            client.post(t.url).header(reqwest::header::CONTENT_TYPE, "application/json").body(payload.clone());
        if stream {
            req = req.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        if let Some(key) = t.api_key {
            req = req.bearer_auth(key);
        }
        // One client span per attempt; its trace context goes with the request.
        let span = tracing::info_span!(
            "call",
            otel.name = tracing::field::Empty,
            otel.kind = "client",
            node = t.node,
            attempt = attempt + 1,
            url.full = t.url,
            http.response.status_code = tracing::field::Empty,
        );
        if crate::telemetry::enabled() {
            span.record("otel.name", format!("POST {}", t.node));
            req = req.headers(crate::telemetry::headers_of(&span));
        }
        // The whole JSON call is bounded below; for a stream only the wait for headers is.
        let outcome = tokio::time::timeout(t.policy.timeout, req.send()).instrument(span.clone()).await;
        if let Ok(Ok(resp)) = &outcome {
            span.record("http.response.status_code", resp.status().as_u16());
            if traced {
                node_span.record("node.status", resp.status().as_u16());
            }
        }
        let failure = match outcome {
            Err(_) => return Err(timeout_error(t)),
            Ok(Ok(resp)) if resp.status().is_success() => return Ok(resp),
            Ok(Ok(resp)) => {
                let status = resp.status();
                if retryable(status) && attempt < t.policy.retries {
                    format!("{status}")
                } else {
                    let text = resp.text().await.unwrap_or_default();
                    if let Some(e) = model_not_found(t, status, &text) {
                        return Err(e);
                    }
                    return Err(ServiceError::Upstream(format!(
                        "node {} answered {} at {}: {}",
                        t.node,
                        status,
                        t.url,
                        excerpt(&text)
                    )));
                }
            }
            Ok(Err(e)) if e.is_connect() && attempt < t.policy.retries => format!("connect error: {e}"),
            Ok(Err(e)) => return Err(send_error(t, &e)),
        };
        let wait = t.policy.backoff * 2u32.saturating_pow(attempt);
        tracing::warn!(node = t.node, attempt = attempt + 1, reason = %failure, wait_ms = wait.as_millis() as u64, "retrying node");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// A node that says the request's model does not exist (OpenAI's 404 `model_not_found`, as
/// our llm, vLLM and OpenAI answer it) refused what the client asked for: that is the client's
/// 404 naming `model`, with the node's words, not a 502 blaming the node.
fn model_not_found(t: &Target<'_>, status: StatusCode, body: &str) -> Option<ServiceError> {
    if status != StatusCode::NOT_FOUND {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let e = v.get("error")?;
    let code = e.get("code").and_then(serde_json::Value::as_str);
    let param = e.get("param").and_then(serde_json::Value::as_str);
    if code != Some("model_not_found") && param != Some("model") {
        return None;
    }
    let message = e.get("message").and_then(serde_json::Value::as_str).unwrap_or("the model does not exist");
    Some(ServiceError::ModelNotFound(format!("node {}: {}", t.node, excerpt(message))))
}

/// A request to `t` that failed before an answer came: a timeout, or the node named as
/// unreachable (or failing) with the whole error chain.
pub(crate) fn send_error(t: &Target<'_>, e: &reqwest::Error) -> ServiceError {
    if e.is_timeout() {
        return timeout_error(t);
    }
    let what = if e.is_connect() { "could not be reached" } else { "failed" };
    ServiceError::Upstream(format!("node {} {what} at {}: {}", t.node, t.url, error_chain(e)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// POST JSON and read a JSON answer. Non-2xx, non-JSON, timeouts and transport errors all
/// become errors naming the node.
pub async fn call_json(t: &Target<'_>, body: &Value) -> Result<Value, ServiceError> {
    let started = tokio::time::Instant::now();
    let resp = send(t, body, false).await?;
    let remaining = t.policy.timeout.saturating_sub(started.elapsed());
    let bytes = match tokio::time::timeout(remaining, resp.bytes()).await {
        Err(_) => return Err(timeout_error(t)),
        Ok(Err(e)) if e.is_timeout() => return Err(timeout_error(t)),
        Ok(Err(e)) => {
            return Err(ServiceError::Upstream(format!(
                "node {} failed while sending its answer: {}",
                t.node,
                error_chain(&e)
            )));
        }
        Ok(Ok(b)) => b,
    };
    if crate::telemetry::enabled() {
        tracing::Span::current().record("node.response_bytes", bytes.len());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ServiceError::Upstream(format!(
            "node {} answered with invalid JSON ({e}): {}",
            t.node,
            excerpt(&String::from_utf8_lossy(&bytes))
        ))
    })
}

/// POST JSON and read the answer as SSE events. An upstream that answers plain JSON (it ignored
/// `stream`) yields that JSON as one event.
pub async fn call_stream(t: &Target<'_>, body: &Value) -> Result<EventStream, ServiceError> {
    use futures::StreamExt;
    let resp = send(t, body, true).await?;
    let is_sse = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if !is_sse {
        let v = call_json_body(t, resp).await?;
        return Ok(futures::stream::once(async move { Ok(v.to_string()) }).boxed());
    }
    let node = t.node.to_string();
    let node2 = node.clone();
    let idle = t.policy.stream_idle_timeout;
    Ok(read_events(
        resp.bytes_stream(),
        idle,
        move |e| ServiceError::Upstream(format!("node {node} broke off its stream: {e}")),
        move || ServiceError::UpstreamTimeout(format!("node {node2} sent nothing for {:.1} s", idle.as_secs_f64())),
    ))
}

async fn call_json_body(t: &Target<'_>, resp: reqwest::Response) -> Result<Value, ServiceError> {
    let bytes = tokio::time::timeout(t.policy.timeout, resp.bytes())
        .await
        .map_err(|_| timeout_error(t))?
        .map_err(|e| ServiceError::Upstream(format!("node {} failed: {}", t.node, error_chain(&e))))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ServiceError::Upstream(format!(
            "node {} answered with neither SSE nor JSON ({e}): {}",
            t.node,
            excerpt(&String::from_utf8_lossy(&bytes))
        ))
    })
}
