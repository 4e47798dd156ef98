//! ChatQnA's routes: the pipeline as `/v1/chatqna` (OPEA) and `/v1/chat/completions`
//! (OpenAI), `GET /v1/models`, and the dataprep forwarder.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use comps_core::extract::JsonBody;
use comps_core::orchestrator::RunOptions;
use comps_core::protocol::{ChatCompletionRequest, FinishReason, UsageInfo};
use comps_core::sse::sse_response;
use comps_core::{Extras, ServiceError, ServiceOrchestrator, ServiceResult};
use futures::StreamExt;
use serde_json::{Value, json};

use comps_core::client::Upstream;

use crate::hooks::{Framing, MODEL};
use crate::request::{Defaults, RequestContext};

/// Shared state of the routes.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The pipeline.
    pub orch: Arc<ServiceOrchestrator>,
    /// What a request falls back to (`LLM_MODEL`, `--top-n`).
    pub defaults: Defaults,
    /// Where `/v1/dataprep/*` goes: node `dataprep` at `http://host:port`.
    pub dataprep: Arc<Upstream>,
}

/// The OpenAPI document of ChatQnA's routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(chatqna, chat_completions, forwarded::ingest, forwarded::get, forwarded::delete),
    tags((name = "chatqna", description = "The ChatQnA RAG pipeline"),
         (name = "dataprep", description = "Forwarded as they come to the dataprep service"))
)]
pub struct ChatQnaApi;

/// The dataprep routes as the forwarder passes them on (one handler serves them all).
#[allow(dead_code)]
mod forwarded {
    use comps_core::protocol::{DataprepDeleteRequest, DataprepFile, DataprepGetRequest, DataprepIngestForm};

    /// Upload files and / or links to the dataprep service.
    #[utoipa::path(post, path = "/v1/dataprep/ingest", tag = "dataprep",
        request_body(content = DataprepIngestForm, content_type = "multipart/form-data"),
        responses((status = 200, description = "Stored", body = Object)))]
    pub fn ingest() {}

    /// The files stored in a collection.
    #[utoipa::path(post, path = "/v1/dataprep/get", tag = "dataprep",
        request_body(content = Option<DataprepGetRequest>, content_type = "application/json"),
        responses((status = 200, description = "The stored files", body = Vec<DataprepFile>)))]
    pub fn get() {}

    /// Delete one file or `all`.
    #[utoipa::path(post, path = "/v1/dataprep/delete", tag = "dataprep",
        request_body = DataprepDeleteRequest,
        responses((status = 200, description = "Deleted", body = Object)))]
    pub fn delete() {}
}

/// The routes, with their state.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chatqna", post(chatqna))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/dataprep/{*rest}", any(dataprep))
        .with_state(state)
}

/// Ask the pipeline (OPEA): streams `data: b'<token>'` frames unless `"stream": false`, which
/// answers a `chat.completion`.
#[utoipa::path(post, path = "/v1/chatqna", tag = "chatqna",
    request_body = ChatCompletionRequest,
    responses((status = 200, description = "The answer, streamed or whole",
        content((String = "text/event-stream"), (comps_core::protocol::ChatCompletionResponse = "application/json")))))]
async fn chatqna(State(s): State<AppState>, body: JsonBody) -> ServiceResult<Response> {
    answer(&s, &body, Framing::Opea).await
}

/// Ask the pipeline as an OpenAI model (`chatqna`): `chat.completion.chunk` events when
/// `"stream": true`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "chatqna",
    request_body = ChatCompletionRequest,
    responses((status = 200, description = "The answer, whole or streamed",
        content((comps_core::protocol::ChatCompletionResponse = "application/json"), (String = "text/event-stream")))))]
async fn chat_completions(State(s): State<AppState>, body: JsonBody) -> ServiceResult<Response> {
    // A bad field is OpenAI's 400 here; /v1/chatqna is OPEA's route and answers 422.
    answer(&s, &body, Framing::OpenAi).await.map_err(ServiceError::openai)
}

/// Run the pipeline for one request: its context is read once and goes to the hooks; the
/// answer is the last node's (the LLM's, or an output guard's carrying the LLM's usage).
async fn answer(s: &AppState, body: &JsonBody, framing: Framing) -> ServiceResult<Response> {
    let request = RequestContext::read(body, framing, &s.defaults)?;
    let (inputs, stream) = (json!({ "text": request.question }), request.stream);
    let sources = request.return_sources.then(|| request.sources.clone());
    let mut extras = Extras::new();
    extras.insert(request);
    let mut result = s.orch.run(inputs, RunOptions { stream, llm_params: None, extras }).await?;
    if stream && let Some(frames) = result.take_stream() {
        // The retriever and reranker are done once the LLM streams: the sources go first, as
        // a named event that OPEA's and OpenAI's readers of `data:` lines never see asked for.
        let frames = match sources {
            Some(list) => {
                let event = format!("event: sources\ndata: {}\n\n", json!({ "sources": list.get() }));
                futures::stream::once(async move { Ok(Bytes::from(event)) }).chain(frames).boxed()
            }
            None => frames,
        };
        return Ok(sse_response(frames));
    }
    let leaf = result.leaf_json().ok_or_else(|| ServiceError::Internal("the pipeline produced no answer".into()))?;
    let text = match leaf.get("text") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"),
        _ => return Err(ServiceError::Internal(format!("the pipeline's last answer has no text: {leaf}"))),
    };
    // A refused question never reached the LLM: no usage, and it stopped.
    let usage: UsageInfo = leaf.get("usage").and_then(|u| serde_json::from_value(u.clone()).ok()).unwrap_or_default();
    let finish = match leaf.get("finish_reason").and_then(Value::as_str) {
        Some("length") => FinishReason::Length,
        _ => FinishReason::Stop,
    };
    let answer = comps_core::protocol::ChatCompletionResponse::single(MODEL, text, finish, usage);
    match sources {
        Some(list) => {
            let mut v = serde_json::to_value(answer).map_err(|e| ServiceError::Internal(e.to_string()))?;
            v["sources"] = Value::Array(list.get());
            Ok(axum::Json(v).into_response())
        }
        None => Ok(axum::Json(answer).into_response()),
    }
}

/// Forward `/v1/dataprep/*` to the dataprep service: method, query, body and content type go
/// as they came; its status, content type and body come back. Failures name the `dataprep`
/// node like any other upstream.
async fn dataprep(
    State(s): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ServiceResult<Response> {
    let path_and_query = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    s.dataprep.relay(method, path_and_query, &headers, body).await
}
