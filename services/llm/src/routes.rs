//! HTTP routes: OpenAI `POST /v1/chat/completions` (also taking OPEA's `LLMParamsDoc`, as
//! OPEA's LLM microservice does) and `GET /v1/models`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use comps_core::extract::parse_json;
use comps_core::protocol::{ChatCompletionRequest, GeneratedDoc, LLMParamsDoc, Validate, new_id};
use comps_core::sse::{frame_events, frame_opea, sse_response};
use comps_core::{ServiceError, ServiceResult};
use serde_json::{Value, json};

use crate::AppState;
use crate::generator::Completion;

/// The OpenAPI document of the service's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(chat_completions, models), tags((name = "llm", description = "OpenAI chat completions")))]
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

/// The model list.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
struct ModelList {
    /// `list`.
    object: String,
    /// The served models (`id`, `object`, `created`, `owned_by`, `max_model_len`).
    data: Vec<Value>,
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .with_state(state)
}

/// The served model.
#[utoipa::path(get, path = "/v1/models", tag = "llm",
    responses((status = 200, description = "The served model", body = ModelList)))]
async fn models(State(s): State<AppState>) -> Response {
    axum::Json(json!({"object": "list", "data": s.generator.models()})).into_response()
}

/// A chat completion: OpenAI (`messages`) or OPEA `LLMParamsDoc` (`query`), told apart by
/// their keys. `stream: true` answers server-sent events (OpenAI chunks, or OPEA's
/// `data: b'...'` frames for an `LLMParamsDoc`).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "llm",
    request_body = ChatBody,
    responses((status = 200, description = "The answer, whole or streamed",
        content((ChatAnswer = "application/json"), (String = "text/event-stream")))))]
async fn chat_completions(State(s): State<AppState>, body: Bytes) -> Response {
    let shape: Value = match parse_json(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let result = if shape.get("messages").is_none() && shape.get("query").is_some() {
        opea(&s, &body).await
    } else {
        openai(&s, &body, shape).await
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn openai(s: &AppState, body: &[u8], raw: Value) -> ServiceResult<Response> {
    let req: ChatCompletionRequest = parse_json(body)?;
    req.validate()?;
    Ok(match s.generator.chat(req, raw).await? {
        Completion::Full(v) => axum::Json(v).into_response(),
        Completion::Stream(events) => sse_response(frame_events(events)),
    })
}

/// OPEA's `LLMParamsDoc`: the query is the user's message; streamed answers use OPEA's
/// `data: b'...'` framing, others come back as a `GeneratedDoc`.
async fn opea(s: &AppState, body: &[u8]) -> ServiceResult<Response> {
    let doc: LLMParamsDoc = parse_json(body)?;
    doc.validate()?;
    let mut raw = json!({
        "messages": [{"role": "user", "content": doc.query}],
        "max_tokens": doc.max_tokens,
        "top_k": doc.top_k,
        "top_p": doc.top_p,
        "typical_p": doc.typical_p,
        "temperature": doc.temperature,
        "frequency_penalty": doc.frequency_penalty,
        "presence_penalty": doc.presence_penalty,
        "repetition_penalty": doc.repetition_penalty,
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
    match s.generator.chat(req, raw).await? {
        Completion::Stream(events) => Ok(sse_response(frame_opea(events))),
        Completion::Full(v) => {
            let text = v["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string();
            let out = GeneratedDoc { id: new_id(), text, prompt: doc.query, output_guardrail_params: None };
            Ok(axum::Json(out).into_response())
        }
    }
}
