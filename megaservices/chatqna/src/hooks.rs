//! ChatQnA's adaptations between nodes. Each service is called in its native wire format, so
//! real TEI, vLLM and OPEA services work as backends as well as ours:
//!
//! | node | sends | receives |
//! |---|---|---|
//! | guardrail | `TextDoc` `{"text"}` | `TextDoc` (a violation carries `downstream_black_list`) |
//! | embedding | TEI `{"inputs"}` | `[[f32]]` (also OpenAI `data[0].embedding` or an `EmbedDoc`) |
//! | retriever | OPEA `EmbedDoc` + the request's search parameters | `SearchedDoc` |
//! | rerank | TEI `{"query", "texts"}` | `[{"index", "score"}]` |
//! | llm | OpenAI chat completion | `chat.completion` / chunks (also OPEA `GeneratedDoc`) |
//!
//! When the retriever finds nothing, rerank is taken out of this request's graph and the LLM
//! gets the template with an empty context (OPEA's), or the question alone (`--rag-template comps`).

use comps_core::client::embeddings::parse_vector;
use comps_core::client::rerank::parse_scores;
use comps_core::client::shape_error;
use comps_core::orchestrator::{NodeContext, StreamContext};
use comps_core::sse::{ByteStream, DONE, EventStream, chunk_payload, data_frame, event_text, frame_opea};
use comps_core::{Hooks, ServiceError, ServiceType};
use futures::StreamExt;
use serde_json::{Map, Value, json};

use crate::prompt::{self, RagTemplate};
use crate::request::RequestContext;

/// How a request's stream is written to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// OPEA's `data: b'<token>'` frames (`/v1/chatqna`).
    #[default]
    Opea,
    /// OpenAI `chat.completion.chunk` objects (`/v1/chat/completions`).
    OpenAi,
}

/// The hooks. Each request's settings come from its [`RequestContext`]; a node's type from the
/// orchestrator.
#[derive(Debug, Clone)]
pub struct ChatQnaHooks {
    template: RagTemplate,
    query_prompt: Option<String>,
}

impl ChatQnaHooks {
    /// Hooks prompting with `template`.
    pub fn new(template: RagTemplate) -> Self {
        Self { template, query_prompt: None }
    }

    /// Ask the embedding node for this TEI `prompt_name` for the question (`query` for E5).
    pub fn with_query_prompt(mut self, name: Option<String>) -> Self {
        self.query_prompt = name.filter(|n| !n.is_empty());
        self
    }
}

fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    }
}

impl Hooks for ChatQnaHooks {
    fn align_inputs(&self, inputs: Value, ctx: &mut NodeContext<'_>) -> Result<Value, ServiceError> {
        match ctx.service.service_type {
            ServiceType::Guardrail => Ok(json!({ "text": text_of(inputs.get("text")) })),
            // Length never fails the pipeline: ask TEI (or ours) to cut an over-long question
            // to the model's window, as OPEA runs TEI with --auto-truncate.
            ServiceType::Embedding => {
                let mut body = json!({ "inputs": text_of(inputs.get("text")), "truncate": true });
                if let Some(p) = &self.query_prompt {
                    body["prompt_name"] = json!(p);
                }
                Ok(body)
            }
            ServiceType::Retriever => {
                let mut body = Map::new();
                body.insert("text".into(), inputs.get("text").cloned().unwrap_or(Value::Null));
                body.insert("embedding".into(), inputs.get("embedding").cloned().unwrap_or(Value::Null));
                if let Ok(Value::Object(p)) = serde_json::to_value(&RequestContext::of(ctx)?.search) {
                    body.extend(p.into_iter().filter(|(_, v)| !v.is_null()));
                }
                Ok(Value::Object(body))
            }
            ServiceType::Llm => {
                let mut body = RequestContext::of(ctx)?.llm_body.clone();
                let prompt = text_of(inputs.get("inputs"));
                body.insert("messages".into(), json!([{ "role": "user", "content": prompt }]));
                Ok(Value::Object(body))
            }
            _ => Ok(inputs),
        }
    }

    fn align_outputs(&self, data: Value, inputs: &Value, ctx: &mut NodeContext<'_>) -> Result<Value, ServiceError> {
        let node = ctx.node;
        match ctx.service.service_type {
            ServiceType::Embedding => {
                let vector = parse_vector(&data).ok_or_else(|| shape_error(node, &data, "an embedding vector"))?;
                Ok(json!({ "text": text_of(inputs.get("inputs")), "embedding": vector }))
            }
            ServiceType::Retriever => {
                let found: Vec<&Value> = data
                    .get("retrieved_docs")
                    .and_then(Value::as_array)
                    .ok_or_else(|| shape_error(node, &data, "a SearchedDoc with retrieved_docs"))?
                    .iter()
                    .filter(|d| !doc_text(d).trim().is_empty())
                    .collect();
                let docs: Vec<String> = found.iter().map(|d| doc_text(d)).collect();
                let request = RequestContext::of(ctx)?;
                if request.return_sources {
                    request.sources.set(found.iter().map(|d| source_of(d)).collect());
                }
                let rerank_wanted = request.rerank;
                let query = match data.get("initial_query") {
                    Some(q @ Value::String(_)) => text_of(Some(q)),
                    _ => text_of(inputs.get("text")),
                };
                let reranks: Vec<String> = ctx
                    .graph
                    .downstream(node)
                    .into_iter()
                    .filter(|d| ctx.service_of(d).is_some_and(|s| s.service_type == ServiceType::Rerank))
                    .collect();
                if !reranks.is_empty() && !docs.is_empty() && rerank_wanted {
                    // A chunk longer than the reranker's window is cut, not refused.
                    return Ok(json!({ "query": query, "texts": docs, "truncate": true }));
                }
                // Nothing to rerank: link the retriever straight to what follows rerank.
                for r in reranks {
                    for next in ctx.graph.downstream(&r) {
                        ctx.graph.add_edge(node, &next).map_err(|e| ServiceError::Internal(e.to_string()))?;
                    }
                    ctx.graph.delete_node_if_exists(&r);
                }
                Ok(json!({ "inputs": self.prompt(&query, &docs, ctx)? }))
            }
            ServiceType::Rerank => {
                let texts: Vec<String> = inputs
                    .get("texts")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|t| text_of(Some(t))).collect())
                    .unwrap_or_default();
                let mut ranked = parse_scores(node, &data, texts.len())?;
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                let request = RequestContext::of(ctx)?;
                let top_n = request.top_n as usize;
                let docs: Vec<String> = ranked.iter().take(top_n).map(|(i, _)| texts[*i].clone()).collect();
                if request.return_sources {
                    // The retriever's list is in the order of `texts`: reorder it, rerank scores in.
                    let found = request.sources.get();
                    let kept = ranked.iter().take(top_n).filter_map(|(i, score)| {
                        let mut s = found.get(*i)?.clone();
                        s["score"] = json!(score);
                        Some(s)
                    });
                    request.sources.set(kept.collect());
                }
                let query = text_of(inputs.get("query"));
                Ok(json!({ "inputs": self.prompt(&query, &docs, ctx)? }))
            }
            ServiceType::Llm => {
                // OpenAI answer, or an OPEA LLM microservice's GeneratedDoc.
                let choice = data.get("choices").and_then(|c| c.get(0));
                let text = match choice {
                    Some(c) => c.get("message").and_then(|m| m.get("content")),
                    None => data.get("text"),
                };
                let Some(Value::String(text)) = text else {
                    return Err(shape_error(node, &data, "a chat completion"));
                };
                let mut out = json!({ "text": text });
                if let Some(u) = data.get("usage") {
                    out["usage"] = u.clone();
                }
                if let Some(f) = choice.and_then(|c| c.get("finish_reason")) {
                    out["finish_reason"] = f.clone();
                }
                Ok(out)
            }
            // An output guard's answer is the final one: it keeps the LLM's usage and finish
            // reason, which it was not sent.
            ServiceType::Guardrail => {
                let mut out = data;
                if let Value::Object(o) = &mut out {
                    for key in ["usage", "finish_reason"] {
                        if let Some(v) = ctx.received.get(key).filter(|_| !o.contains_key(key)) {
                            o.insert(key.into(), v.clone());
                        }
                    }
                }
                Ok(out)
            }
            _ => Ok(data),
        }
    }

    fn align_generator(&self, events: EventStream, ctx: &StreamContext<'_>) -> ByteStream {
        match ctx.extras.get::<RequestContext>().map(|r| r.framing).unwrap_or_default() {
            Framing::Opea => frame_opea(events),
            Framing::OpenAi => openai_chunks(events),
        }
    }
}

/// A retrieved doc's text: OPEA's `{text, metadata}` or a bare string.
fn doc_text(d: &Value) -> String {
    if d.is_string() { text_of(Some(d)) } else { text_of(d.get("text")) }
}

/// A retrieved doc as a source: its file (the retriever's `source` metadata), text and
/// similarity.
fn source_of(d: &Value) -> Value {
    let meta = d.get("metadata");
    let similarity = meta.and_then(|m| m.get("similarity")).cloned().unwrap_or(Value::Null);
    json!({
        "source": meta.and_then(|m| m.get("source")).cloned().unwrap_or(Value::Null),
        "text": doc_text(d),
        "score": similarity,
        "retrieval_score": similarity,
    })
}

impl ChatQnaHooks {
    fn prompt(&self, query: &str, docs: &[String], ctx: &NodeContext<'_>) -> Result<String, ServiceError> {
        let r = RequestContext::of(ctx)?;
        Ok(prompt::build(query, docs, &r.language, r.chat_template.as_deref(), self.template))
    }
}

/// The model name ChatQnA answers as.
pub const MODEL: &str = "chatqna";

/// OpenAI chunks for the client: upstream chunks keep their deltas, finish reasons and usage
/// with `model` set to ChatQnA's; text from anything else (an output guard, a guardrail's
/// refusal, OPEA framing) is wrapped in a chunk. A final chunk carries `finish_reason: stop`
/// when no upstream chunk did.
fn openai_chunks(events: EventStream) -> ByteStream {
    async_stream::stream! {
        let id = comps_core::protocol::completion_id();
        let mut events = events;
        let mut finished = false;
        while let Some(item) = events.next().await {
            let payload = match item {
                Ok(p) => p,
                Err(e) => {
                    yield Err(e);
                    return;
                }
            };
            if let Ok(Value::Object(mut chunk)) = serde_json::from_str::<Value>(&payload)
                && chunk.get("choices").is_some_and(Value::is_array)
            {
                finished |= chunk["choices"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null())));
                chunk.insert("model".into(), MODEL.into());
                yield Ok(data_frame(&Value::Object(chunk).to_string()));
                continue;
            }
            if let Some(text) = event_text(&payload).filter(|t| !t.is_empty()) {
                yield Ok(data_frame(&chunk_payload(&id, MODEL, &text)));
            }
        }
        if !finished {
            let last = json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": comps_core::protocol::unix_now(),
                "model": MODEL,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            });
            yield Ok(data_frame(&last.to_string()));
        }
        yield Ok(bytes::Bytes::from(DONE));
    }
    .boxed()
}
