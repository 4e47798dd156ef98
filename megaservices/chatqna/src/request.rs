//! One ChatQnA request, read once from its body: the question, how to answer it (framing,
//! streaming), and what each node gets from it (search parameters, `top_n`, the LLM's body, the
//! prompt's language and template). The route builds it; the hooks only read it.

use comps_core::extract::JsonBody;
use comps_core::orchestrator::NodeContext;
use comps_core::protocol::SearchParams;
use comps_core::protocol::{ChatCompletionRequest, Validate};
use comps_core::{ServiceError, handle_message};
use serde_json::{Map, Value, json};

use crate::hooks::{Framing, MODEL};

/// What the megaservice falls back to when a request does not say.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// `LLM_MODEL`: the model sent to the LLM when the request names none.
    pub model: Option<String>,
    /// `--top-n`: the reranked chunks that reach the LLM.
    pub top_n: u32,
}

/// OPEA's defaults for the LLM when the request leaves them out.
const MAX_TOKENS: u32 = 1024;
const TEMPERATURE: f64 = 0.01;
const TOP_P: f64 = 0.95;

/// One request's context.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The question (the last user message).
    pub question: String,
    /// How the answer is written to the client.
    pub framing: Framing,
    /// Whether the answer streams.
    pub stream: bool,
    /// `auto`, `en` or `zh`: the RAG template's language.
    pub language: String,
    /// The request's own RAG template (`{context}` and `{question}`), if it gave one.
    pub chat_template: Option<String>,
    /// The retriever's search parameters.
    pub search: SearchParams,
    /// How many reranked chunks reach the LLM.
    pub top_n: u32,
    /// The OpenAI body for the LLM, without `messages`.
    pub llm_body: Map<String, Value>,
    /// `rerank: false` takes the reranker out of this request's graph (the retrieved chunks go
    /// to the LLM in the retriever's order). Default true.
    pub rerank: bool,
    /// `return_sources: true` asks for the chunks the answer was built from (an opt-in: OPEA's
    /// answer shapes are unchanged without it).
    pub return_sources: bool,
    /// Those chunks, filled in by the hooks as the request runs.
    pub sources: Sources,
}

/// The chunks the LLM was given: `{source, text, score}` (the rerank score, or the retrieval
/// similarity when nothing was reranked) with `retrieval_score`, best first.
#[derive(Debug, Clone, Default)]
pub struct Sources(std::sync::Arc<std::sync::Mutex<Vec<Value>>>);

impl Sources {
    /// Replace the list.
    pub fn set(&self, list: Vec<Value>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = list;
    }

    /// The list now.
    pub fn get(&self) -> Vec<Value> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An optional boolean field of the body, refused naming it when it is not one.
fn flag(raw: &Map<String, Value>, key: &'static str, default: bool) -> Result<bool, ServiceError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ServiceError::invalid(key, format!("{key} must be true or false, not {other}"))),
    }
}

impl RequestContext {
    /// Read and check a request. `/v1/chatqna` streams unless `"stream": false`;
    /// `/v1/chat/completions` streams only when asked, as OpenAI does.
    pub fn read(body: &JsonBody, framing: Framing, defaults: &Defaults) -> Result<Self, ServiceError> {
        let req: ChatCompletionRequest = body.typed()?;
        req.validate()?;
        let raw = body.as_map();
        let set = |k: &str| raw.get(k).is_some_and(|v| !v.is_null());
        let stream = if set("stream") { req.is_stream() } else { framing == Framing::Opea };
        let question = handle_message(&req.messages)?.text;
        if question.trim().is_empty() {
            return Err(ServiceError::invalid("messages", "the question is empty - 'messages'"));
        }
        let model = req.model.clone().filter(|m| !m.is_empty() && m != MODEL).or_else(|| defaults.model.clone());
        Ok(Self {
            question,
            framing,
            stream,
            language: req.language.clone(),
            chat_template: req.chat_template.clone().filter(|t| !t.trim().is_empty()),
            search: req.search.clone(),
            top_n: if set("top_n") { req.top_n } else { defaults.top_n },
            llm_body: llm_body(&req, &set, model, stream),
            rerank: flag(raw, "rerank", true)?,
            return_sources: flag(raw, "return_sources", false)?,
            sources: Sources::default(),
        })
    }

    /// The context of the request a hook is working for.
    pub fn of<'a>(ctx: &'a NodeContext<'_>) -> Result<&'a Self, ServiceError> {
        ctx.extras
            .get::<Self>()
            .ok_or_else(|| ServiceError::Internal(format!("node {} was called without a ChatQnA request", ctx.node)))
    }
}

/// The OpenAI body for the LLM, without `messages`: the request's sampling settings with
/// OPEA's defaults; `top_k`, `repetition_penalty`, `typical_p`, `seed` and `stop` only when the
/// request set them (so a plain OpenAI server is not sent vLLM's extensions it did not ask for).
fn llm_body(
    req: &ChatCompletionRequest,
    set: &dyn Fn(&str) -> bool,
    model: Option<String>,
    stream: bool,
) -> Map<String, Value> {
    let mut b = Map::new();
    if let Some(m) = model {
        b.insert("model".into(), json!(m));
    }
    b.insert("max_tokens".into(), json!(req.max_tokens.unwrap_or(MAX_TOKENS)));
    b.insert("temperature".into(), json!(req.temperature.unwrap_or(TEMPERATURE)));
    b.insert("top_p".into(), json!(req.top_p.unwrap_or(TOP_P)));
    b.insert("frequency_penalty".into(), json!(req.frequency_penalty.unwrap_or(0.0)));
    b.insert("presence_penalty".into(), json!(req.presence_penalty.unwrap_or(0.0)));
    b.insert("stream".into(), json!(stream));
    if set("top_k") {
        b.insert("top_k".into(), json!(req.top_k));
    }
    if set("repetition_penalty") {
        b.insert("repetition_penalty".into(), json!(req.repetition_penalty));
    }
    if set("typical_p") {
        b.insert("typical_p".into(), json!(req.typical_p));
    }
    if set("seed") {
        b.insert("seed".into(), json!(req.seed));
    }
    if let Some(stop) = req.stop.as_ref().filter(|s| !s.to_vec().is_empty()) {
        b.insert("stop".into(), json!(stop));
    }
    if stream && set("stream_options") {
        b.insert("stream_options".into(), json!(req.stream_options));
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: Value, framing: Framing) -> Result<RequestContext, ServiceError> {
        let body = JsonBody::parse(body.to_string().as_bytes())?;
        RequestContext::read(&body, framing, &Defaults { model: Some("served".into()), top_n: 2 })
    }

    #[test]
    fn defaults_fill_what_the_request_leaves_out() {
        let c = read(json!({"messages": "What is X?"}), Framing::Opea).unwrap();
        assert_eq!(c.question, "What is X?");
        assert!(c.stream, "OPEA's route streams unless told not to");
        assert_eq!(c.top_n, 2);
        assert_eq!(c.search, SearchParams::default());
        let b = Value::Object(c.llm_body);
        assert_eq!(b["model"], "served");
        assert_eq!(b["max_tokens"], 1024);
        assert_eq!(b["stream"], true);
        for k in ["top_k", "repetition_penalty", "typical_p", "seed", "stop", "messages"] {
            assert!(b.get(k).is_none(), "{k} sent unasked: {b}");
        }
        let c = read(json!({"messages": "What is X?"}), Framing::OpenAi).unwrap();
        assert!(!c.stream, "OpenAI's route streams only when asked");
    }

    #[test]
    fn the_request_s_own_settings_reach_each_node() {
        let c = read(
            json!({"messages": [{"role": "user", "content": "Q"}], "model": "m", "k": 7, "top_n": 3,
                   "top_k": 5, "seed": 9, "stream": true, "stream_options": {"include_usage": true},
                   "chat_template": "{context} {question}", "language": "en", "max_tokens": 16}),
            Framing::OpenAi,
        )
        .unwrap();
        assert!(c.stream);
        assert_eq!((c.search.k, c.top_n), (7, 3));
        assert_eq!(c.chat_template.as_deref(), Some("{context} {question}"));
        assert_eq!(c.language, "en");
        let b = Value::Object(c.llm_body);
        assert_eq!((b["model"].as_str(), b["top_k"].as_u64(), b["seed"].as_u64()), (Some("m"), Some(5), Some(9)));
        assert_eq!(b["max_tokens"], 16);
        assert_eq!(b["stream_options"]["include_usage"], true);
        // The megaservice's own name is not a model for the LLM.
        let c = read(json!({"messages": "Q", "model": MODEL}), Framing::OpenAi).unwrap();
        assert_eq!(c.llm_body["model"], "served");
    }

    #[test]
    fn an_empty_question_names_messages() {
        let e = read(json!({"messages": "  "}), Framing::Opea).unwrap_err();
        assert!(e.to_string().contains("messages"), "{e}");
    }
}
