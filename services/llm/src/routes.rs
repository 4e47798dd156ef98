//! HTTP routes: OpenAI `POST /v1/chat/completions` (also taking OPEA's `LLMParamsDoc`, as
//! OPEA's LLM microservice does) and the legacy `POST /v1/completions` (a prompt continued as
//! it is, as vLLM serves it); `GET /v1/models` is the server's shared route.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use comps_core::extract::JsonBody;
use comps_core::protocol::{
    ChatCompletionRequest, CompletionResponse, GeneratedDoc, LLMParamsDoc, Prompt, Stop, StreamOptions, Validate,
    new_id,
};
use comps_core::sse::{frame_events, frame_opea, sse_response};
use comps_core::{ServiceError, ServiceResult};
use serde_json::json;

use crate::AppState;
use crate::generator::Completion;

/// The OpenAPI document of the service's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(chat_completions, completions), tags((name = "llm", description = "OpenAI chat and legacy completions")))]
pub struct LlmApi;

/// The request shapes of `/v1/chat/completions`.
#[allow(dead_code, clippy::large_enum_variant)]
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
enum ChatBody {
    /// OpenAI's chat completion request (with OPEA's extras).
    OpenAi(ChatCompletionRequest),
    /// OPEA's `LLMParamsDoc` (`query`).
    Opea(LLMParamsDoc),
}

/// The non-streamed answers of `/v1/chat/completions`.
#[allow(dead_code, clippy::large_enum_variant)]
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
enum ChatAnswer {
    /// To an OpenAI request.
    OpenAi(comps_core::protocol::ChatCompletionResponse),
    /// To an `LLMParamsDoc`.
    Opea(GeneratedDoc),
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .with_state(state)
}

/// A chat completion: OpenAI (`messages`) or OPEA `LLMParamsDoc` (`query`), told apart by
/// their keys. `stream: true` answers server-sent events (OpenAI chunks, or OPEA's
/// `data: b'...'` frames for an `LLMParamsDoc`).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "llm",
    request_body = ChatBody,
    responses((status = 200, description = "The answer, whole or streamed",
        content((ChatAnswer = "application/json"), (String = "text/event-stream")))))]
async fn chat_completions(State(s): State<AppState>, body: JsonBody) -> ServiceResult<Response> {
    // OpenAI's shape answers a bad field as OpenAI and vLLM do (400); OPEA's as FastAPI does (422).
    if !body.has("messages") && body.has("query") {
        opea(&s, &body).await
    } else {
        openai(&s, body).await.map_err(ServiceError::openai)
    }
}

async fn openai(s: &AppState, body: JsonBody) -> ServiceResult<Response> {
    let req: ChatCompletionRequest = body.typed()?;
    req.validate()?;
    Ok(match s.llm.chat(req, body.into_value()).await? {
        Completion::Full(v) => axum::Json(v).into_response(),
        Completion::Stream(events) => sse_response(frame_events(events)),
    })
}

/// OPEA's `LLMParamsDoc`: the query is the user's message; streamed answers use OPEA's
/// `data: b'...'` framing, others come back as a `GeneratedDoc`.
async fn opea(s: &AppState, body: &JsonBody) -> ServiceResult<Response> {
    let doc: LLMParamsDoc = body.typed()?;
    doc.validate()?;
    let mut raw = json!({
        "messages": [{"role": "user", "content": doc.query}],
        "max_tokens": doc.sampling.max_tokens,
        "top_k": doc.sampling.top_k,
        "top_p": doc.sampling.top_p,
        "typical_p": doc.sampling.typical_p,
        "temperature": doc.sampling.temperature,
        "frequency_penalty": doc.sampling.frequency_penalty,
        "presence_penalty": doc.sampling.presence_penalty,
        "repetition_penalty": doc.sampling.repetition_penalty,
        "stream": doc.stream,
        "chat_template": doc.chat_template,
        "documents": doc.documents,
    });
    if let Some(m) = &doc.model {
        raw["model"] = json!(m);
    }
    let req: ChatCompletionRequest = serde_json::from_value(raw.clone())
        .map_err(|e| ServiceError::Internal(format!("LLMParamsDoc conversion: {e}")))?;
    req.validate()?;
    match s.llm.chat(req, raw).await? {
        Completion::Stream(events) => Ok(sse_response(frame_opea(events))),
        Completion::Full(v) => {
            let text = v["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string();
            let out = GeneratedDoc { id: new_id(), text, prompt: doc.query, output_guardrail_params: None };
            Ok(axum::Json(out).into_response())
        }
    }
}

/// A legacy completion request (`/v1/completions`), as OpenAI and vLLM take it. The sampling
/// fields are those of a chat request; `n`, `best_of`, `logprobs`, `echo` and `suffix` are
/// refused unless at their defaults.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
struct CompletionBody {
    /// The prompt: text or token ids (one per request).
    prompt: Prompt,
    /// Model name.
    model: Option<String>,
    /// Tokens to generate (default 16, as OpenAI's).
    max_tokens: Option<u32>,
    /// Sampling temperature in [0, 2].
    temperature: Option<f64>,
    /// Nucleus sampling in [0, 1].
    top_p: Option<f64>,
    /// Top-k sampling (vLLM): -1 (off) or >= 1.
    top_k: Option<i32>,
    /// Stop strings.
    stop: Option<Stop>,
    /// Stream `text_completion` chunks.
    stream: Option<bool>,
    /// Streaming options (`include_usage`).
    stream_options: Option<StreamOptions>,
    /// Sampling seed.
    seed: Option<u64>,
    /// OpenAI presence penalty in [-2, 2].
    presence_penalty: Option<f64>,
    /// OpenAI frequency penalty in [-2, 2].
    frequency_penalty: Option<f64>,
    /// Repetition penalty (vLLM), > 0.
    repetition_penalty: Option<f64>,
    /// Keep generating past the end-of-sequence token (vLLM).
    ignore_eos: Option<bool>,
}

/// OpenAI's (and vLLM's) default `max_tokens` of a legacy completion.
const COMPLETION_MAX_TOKENS: u32 = 16;

/// A legacy completion: the prompt continued as it is, no chat template (LangChain's `OpenAI`,
/// evaluation harnesses). `stream: true` answers `text_completion` chunks then `[DONE]`.
#[utoipa::path(post, path = "/v1/completions", tag = "llm",
    request_body = CompletionBody,
    responses((status = 200, description = "The completion, whole or streamed",
        content((CompletionResponse = "application/json"), (String = "text/event-stream")))))]
async fn completions(State(s): State<AppState>, body: JsonBody) -> ServiceResult<Response> {
    complete(&s, body).await.map_err(ServiceError::openai)
}

async fn complete(s: &AppState, body: JsonBody) -> ServiceResult<Response> {
    let prompt: Prompt = match body.get("prompt") {
        Some(p) => comps_core::extract::from_value(p).map_err(|_| {
            ServiceError::invalid("prompt", "prompt must be a string, a list of strings or token ids - 'prompt'")
        })?,
        None => return Err(ServiceError::invalid("prompt", "missing field `prompt`")),
    };
    // Completions' logprobs is a count (chat's is a flag): any count is refused like chat's.
    if body.get("logprobs").is_some_and(|v| !v.is_null() && v != &json!(0) && v != &json!(false)) {
        return Err(ServiceError::invalid(
            "logprobs",
            "returning log-probabilities is not supported by this service - 'logprobs'",
        ));
    }
    // The sampling settings, read as a chat request's (its messages are not used): every key
    // but the prompt's, which can be long, is copied.
    let mut params: serde_json::Map<String, serde_json::Value> = body
        .as_map()
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "prompt" | "messages" | "logprobs"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.insert("messages".into(), json!(""));
    if params.get("max_tokens").is_none_or(|v| v.is_null()) {
        params.insert("max_tokens".into(), json!(COMPLETION_MAX_TOKENS));
    }
    let req: ChatCompletionRequest = comps_core::extract::from_value(&serde_json::Value::Object(params))?;
    req.validate()?;
    Ok(match s.llm.complete(prompt, req, body.into_value()).await? {
        Completion::Full(v) => axum::Json(v).into_response(),
        Completion::Stream(events) => sse_response(frame_events(events)),
    })
}
