//! HTTP routes: OpenAI `POST /v1/chat/completions` (also taking OPEA's `LLMParamsDoc`, as
//! OPEA's LLM microservice does); `GET /v1/models` is the server's shared route.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use comps_core::extract::JsonBody;
use comps_core::protocol::{ChatCompletionRequest, GeneratedDoc, LLMParamsDoc, Validate, new_id};
use comps_core::sse::{frame_events, frame_opea, sse_response};
use comps_core::{ServiceError, ServiceResult};
use serde_json::json;

use crate::AppState;
use crate::generator::Completion;

/// The OpenAPI document of the service's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(chat_completions), tags((name = "llm", description = "OpenAI chat completions")))]
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
    Router::new().route("/v1/chat/completions", post(chat_completions)).with_state(state)
}

/// A chat completion: OpenAI (`messages`) or OPEA `LLMParamsDoc` (`query`), told apart by
/// their keys. `stream: true` answers server-sent events (OpenAI chunks, or OPEA's
/// `data: b'...'` frames for an `LLMParamsDoc`).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "llm",
    request_body = ChatBody,
    responses((status = 200, description = "The answer, whole or streamed",
        content((ChatAnswer = "application/json"), (String = "text/event-stream")))))]
async fn chat_completions(State(s): State<AppState>, body: JsonBody) -> ServiceResult<Response> {
    if !body.has("messages") && body.has("query") { opea(&s, &body).await } else { openai(&s, body).await }
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
