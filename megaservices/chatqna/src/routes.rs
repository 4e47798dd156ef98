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
use comps_core::protocol::{ChatCompletionRequest, FinishReason, UsageInfo, Validate};
use comps_core::sse::sse_response;
use comps_core::{
    Extras, LLMParams, RerankerParms, RetrieverParms, ServiceError, ServiceOrchestrator, ServiceResult, ServiceType,
    handle_message,
};
use serde_json::{Map, Value, json};

use comps_core::client::Upstream;

use crate::hooks::{Framing, MODEL, RequestOptions};

/// Shared state of the routes.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The pipeline.
    pub orch: Arc<ServiceOrchestrator>,
    /// `LLM_MODEL`: the model sent to the LLM when the request names none.
    pub default_model: Option<String>,
    /// `--top-n`: the reranked chunks that reach the LLM when the request gives no `top_n`.
    pub default_top_n: u32,
    /// The dataprep forwarder's target.
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
    answer(&s, &body, Framing::OpenAi).await
}

/// Run the pipeline for one request. `/v1/chatqna` streams unless `"stream": false`;
/// `/v1/chat/completions` streams only when asked, as OpenAI does.
async fn answer(s: &AppState, body: &JsonBody, framing: Framing) -> ServiceResult<Response> {
    let req: ChatCompletionRequest = body.typed()?;
    let raw = body.as_map();
    req.validate()?;
    let stream = match raw.get("stream") {
        None | Some(Value::Null) => framing == Framing::Opea,
        Some(_) => req.is_stream(),
    };
    let question = handle_message(&req.messages)?.text;
    if question.trim().is_empty() {
        return Err(ServiceError::invalid("messages", "the question is empty - 'messages'"));
    }

    let model = req.model.clone().filter(|m| !m.is_empty() && m != MODEL).or_else(|| s.default_model.clone());
    let params = LLMParams {
        model: model.clone(),
        max_tokens: req.max_tokens.unwrap_or(1024),
        max_new_tokens: req.max_tokens.unwrap_or(1024),
        top_k: req.top_k.and_then(|k| u32::try_from(k).ok()).filter(|k| *k > 0).unwrap_or(10),
        top_p: req.top_p.unwrap_or(0.95),
        temperature: req.temperature.unwrap_or(0.01),
        frequency_penalty: req.frequency_penalty.unwrap_or(0.0),
        presence_penalty: req.presence_penalty.unwrap_or(0.0),
        repetition_penalty: req.repetition_penalty.unwrap_or(1.03),
        stream,
        language: req.language.clone(),
        chat_template: req.chat_template.clone().filter(|t| !t.trim().is_empty()),
        ..LLMParams::default()
    };
    let mut extras = Extras::new();
    extras.insert(RetrieverParms {
        search_type: req.search_type.clone(),
        k: req.k,
        distance_threshold: req.distance_threshold,
        fetch_k: req.fetch_k,
        lambda_mult: req.lambda_mult,
        score_threshold: req.score_threshold,
        ..RetrieverParms::default()
    });
    let top_n = if raw.get("top_n").is_some_and(|v| !v.is_null()) { req.top_n } else { s.default_top_n };
    extras.insert(RerankerParms { top_n, ..RerankerParms::default() });
    extras.insert(RequestOptions { framing, language: req.language.clone(), llm_body: llm_body(&req, raw, &params) });

    let mut result = s.orch.schedule(json!({ "text": question }), params, extras).await?;
    if stream && let Some(frames) = result.take_stream() {
        return Ok(sse_response(frames));
    }
    let leaf = result.leaf_json().ok_or_else(|| ServiceError::Internal("the pipeline produced no answer".into()))?;
    let text = match leaf.get("text") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"),
        _ => return Err(ServiceError::Internal(format!("the pipeline's last answer has no text: {leaf}"))),
    };
    // Usage and finish reason are the LLM's; a refused question never reached it.
    let llm = s
        .orch
        .graph()
        .nodes()
        .into_iter()
        .find(|n| s.orch.service(n).is_some_and(|svc| svc.service_type == ServiceType::Llm));
    let llm_out = llm.and_then(|n| result.results.get(&n)).and_then(|o| o.json());
    let usage: UsageInfo =
        llm_out.and_then(|o| o.get("usage")).and_then(|u| serde_json::from_value(u.clone()).ok()).unwrap_or_default();
    let finish = match llm_out.and_then(|o| o.get("finish_reason")).and_then(Value::as_str) {
        Some("length") => FinishReason::Length,
        _ => FinishReason::Stop,
    };
    Ok(axum::Json(comps_core::protocol::ChatCompletionResponse::single(MODEL, text, finish, usage)).into_response())
}

/// The OpenAI body for the LLM, without `messages`: the request's sampling settings with
/// OPEA's defaults; `top_k`, `repetition_penalty`, `typical_p`, `seed` and `stop` only when the
/// request set them (so a plain OpenAI server is not sent vLLM's extensions it did not ask for).
fn llm_body(req: &ChatCompletionRequest, raw: &Map<String, Value>, params: &LLMParams) -> Map<String, Value> {
    let mut b = Map::new();
    if let Some(m) = &params.model {
        b.insert("model".into(), json!(m));
    }
    b.insert("max_tokens".into(), json!(params.max_tokens));
    b.insert("temperature".into(), json!(params.temperature));
    b.insert("top_p".into(), json!(params.top_p));
    b.insert("frequency_penalty".into(), json!(params.frequency_penalty));
    b.insert("presence_penalty".into(), json!(params.presence_penalty));
    b.insert("stream".into(), json!(params.stream));
    let set = |k: &str| raw.get(k).is_some_and(|v| !v.is_null());
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
    if params.stream && set("stream_options") {
        b.insert("stream_options".into(), json!(req.stream_options));
    }
    b
}

/// Forward `/v1/dataprep/*` to the dataprep service: method, query, body and content type go
/// as they came; its status, content type and body come back. Failures name the `dataprep`
/// node like any other upstream.
async fn dataprep(State(s): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path_and_query = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    s.dataprep.relay(method, path_and_query, &headers, body).await.unwrap_or_else(IntoResponse::into_response)
}
