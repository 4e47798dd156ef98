//! Chat completions from an OpenAI-compatible upstream (vLLM, TGI, llama.cpp, Ollama, ours):
//! whole answers as JSON, streams as SSE events with an `{"error"}` event mid-stream reported
//! as the node's failure.

use futures::StreamExt;
use serde_json::{Value, json};

use super::Upstream;
use crate::error::ServiceError;
use crate::sse::EventStream;

/// A client of one chat-completions upstream.
#[derive(Debug, Clone)]
pub struct ChatClient {
    upstream: Upstream,
    model: Option<String>,
}

impl ChatClient {
    /// `upstream.url` is the server's base (`http://host:8000`, `.../v1`) or its full
    /// `/v1/chat/completions` URL; calls go to the latter.
    pub fn new(mut upstream: Upstream, model: Option<String>) -> Self {
        let trimmed = upstream.url.trim_end_matches('/');
        upstream.url = if trimmed.ends_with("/chat/completions") {
            trimmed.to_string()
        } else if trimmed.ends_with("/v1") {
            format!("{trimmed}/chat/completions")
        } else {
            format!("{trimmed}/v1/chat/completions")
        };
        Self { upstream, model: model.filter(|m| !m.is_empty()) }
    }

    /// The same upstream's legacy `/v1/completions` (the prompt API vLLM and OpenAI keep): the
    /// same calls, that URL.
    pub fn completions(&self) -> Self {
        let mut upstream = self.upstream.clone();
        if let Some(base) = upstream.url.strip_suffix("/chat/completions") {
            upstream.url = format!("{base}/completions");
        }
        Self { upstream, model: self.model.clone() }
    }

    /// The model named in every call, if one was set.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The upstream it calls.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// `body` with this client's model, if it has one.
    fn with_model(&self, mut body: Value) -> Value {
        if let (Some(m), Some(obj)) = (&self.model, body.as_object_mut()) {
            obj.insert("model".into(), json!(m));
        }
        body
    }

    /// A whole answer.
    pub async fn complete(&self, body: Value) -> Result<Value, ServiceError> {
        self.upstream.json(&self.with_model(body)).await
    }

    /// The text of a whole answer's first choice.
    pub async fn complete_text(&self, body: Value) -> Result<String, ServiceError> {
        let v = self.complete(body).await?;
        v.pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.upstream.bad_answer("without choices[0].message.content"))
    }

    /// A streamed answer's events (their JSON payloads, `[DONE]` included as sent).
    pub async fn stream(&self, body: Value) -> Result<EventStream, ServiceError> {
        let events = self.upstream.stream(&self.with_model(body)).await?;
        let node = self.upstream.node.clone();
        Ok(events
            .map(move |item| {
                item.and_then(|payload| match serde_json::from_str::<Value>(&payload) {
                    Ok(v) if v.get("error").is_some() => Err(ServiceError::Upstream(format!(
                        "node {node} failed midway: {}",
                        v["error"].get("message").and_then(Value::as_str).unwrap_or(&payload)
                    ))),
                    _ => Ok(payload),
                })
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn urls_and_models() {
        let at = |url: &str| ChatClient::new(Upstream::new("llm", url, Duration::from_secs(1)), None).upstream.url;
        assert_eq!(at("http://h:8000"), "http://h:8000/v1/chat/completions");
        assert_eq!(at("http://h:8000/v1/"), "http://h:8000/v1/chat/completions");
        assert_eq!(at("http://h/v1/chat/completions"), "http://h/v1/chat/completions");
        let legacy = ChatClient::new(Upstream::new("n", "http://h:8000/v1", Duration::from_secs(1)), None);
        assert_eq!(legacy.completions().upstream().url, "http://h:8000/v1/completions");
        let c = ChatClient::new(Upstream::new("llm", "http://h", Duration::from_secs(1)), Some("qwen".into()));
        assert_eq!(c.with_model(json!({"model": "x", "messages": []}))["model"], "qwen");
        let none = ChatClient::new(Upstream::new("llm", "http://h", Duration::from_secs(1)), Some(String::new()));
        assert_eq!(none.with_model(json!({"model": "x"}))["model"], "x");
    }
}
