//! HTTP routes: TEI `POST /rerank`, OPEA `POST /v1/reranking` (SearchedDoc → LLMParamsDoc,
//! RerankingRequest → RerankingResponse, ChatCompletionRequest → itself with reranked docs),
//! the Cohere / Jina-style `POST /v1/rerank`, and `GET /info`.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use comps_core::extract::JsonBody;
use comps_core::protocol::{
    ChatCompletionRequest, Document, LLMParamsDoc, RerankingRequest, RerankingResponse, RerankingResponseData,
    SearchedDoc, TeiInfo, Validate,
};
use comps_core::{ServiceError, ServiceResult};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::AppState;
use crate::reranker::ScoreOptions;

/// The OpenAPI document of the service's routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(tei_rerank, opea_rerank, cohere_rerank),
    tags((name = "reranking", description = "OPEA's reranking"),
         (name = "tei", description = "Text Embeddings Inference's routes"))
)]
pub struct RerankApi;

/// The request shapes `/v1/reranking` takes (told apart by their keys).
#[allow(dead_code, clippy::large_enum_variant)]
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
enum RerankingBody {
    /// OPEA `SearchedDoc` (`initial_query`, `retrieved_docs`, `top_n`).
    SearchedDoc(SearchedDoc),
    /// OPEA `RerankingRequest` (`input`, `retrieved_docs`, `top_n`).
    RerankingRequest(RerankingRequest),
    /// A `ChatCompletionRequest` (`messages`, with `retrieved_docs`): answered with its
    /// `reranked_docs` and `documents` filled.
    Chat(ChatCompletionRequest),
}

/// The answers of `/v1/reranking`, one per request shape.
#[allow(dead_code, clippy::large_enum_variant)]
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
enum RerankingAnswer {
    /// To a `SearchedDoc`: the query with the `top_n` best texts as its documents.
    LlmParamsDoc(LLMParamsDoc),
    /// To a `RerankingRequest`: the `top_n` best texts with their scores.
    RerankingResponse(RerankingResponse),
    /// To a `ChatCompletionRequest`.
    Chat(ChatCompletionRequest),
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/rerank", post(tei_rerank))
        .route("/v1/reranking", post(opea_rerank))
        .route("/v1/rerank", post(cohere_rerank))
        .with_state(state)
}

/// TEI's rerank request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct TeiRerankRequest {
    /// The query the texts are scored against.
    query: String,
    /// The candidate texts (at most the service's `--max-client-batch-size`).
    texts: Vec<String>,
    /// Answer the model's raw scores (logits) instead of scores in 0..1.
    #[serde(default)]
    raw_scores: bool,
    /// Echo each text in its rank.
    #[serde(default)]
    return_text: bool,
    /// Cut over-long inputs to the model's limit instead of refusing them.
    #[serde(default)]
    truncate: bool,
    /// Which end to cut: only `right` is supported.
    #[serde(default)]
    truncation_direction: Option<String>,
}

impl Validate for TeiRerankRequest {
    fn validate(&self) -> Result<(), ServiceError> {
        if let Some(d) = self.truncation_direction.as_deref()
            && !d.eq_ignore_ascii_case("right")
        {
            return Err(ServiceError::invalid("truncation_direction", "only 'right' truncation is supported"));
        }
        Ok(())
    }
}

/// One ranked text, as TEI answers it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
struct Rank {
    /// The text's index in `texts`.
    index: usize,
    /// Its relevance to the query (higher is more relevant).
    score: f32,
    /// The text, when `return_text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// Scores of `texts` for `query`, best first: (index, score).
/// `field` names the texts in a refusal (`texts`, `retrieved_docs`, `documents`).
async fn rank(
    s: &AppState,
    query: &str,
    (field, texts): (&str, &[String]),
    opts: ScoreOptions,
) -> ServiceResult<Vec<(usize, f32)>> {
    if texts.len() > s.max_client_batch_size {
        return Err(ServiceError::invalid(
            field,
            format!(
                "{field} has {} items, more than the maximum client batch size of {}",
                texts.len(),
                s.max_client_batch_size
            ),
        ));
    }
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let scores = s.reranker.score(query, texts, opts).await?;
    let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
    // Stable: equal scores keep their input order.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(ranked)
}

/// TEI's rerank: the texts' indices and scores, best first.
#[utoipa::path(post, path = "/rerank", tag = "tei",
    request_body = TeiRerankRequest,
    responses((status = 200, description = "The texts ranked, best first", body = Vec<Rank>)))]
async fn tei_rerank(
    State(s): State<AppState>,
    comps_core::Json(req): comps_core::Json<TeiRerankRequest>,
) -> ServiceResult<Response> {
    if req.texts.is_empty() {
        // TEI's answer to an empty batch (OPEA's route passes an empty retrieval through).
        return Err(ServiceError::bad_request("texts", "`texts` cannot be empty"));
    }
    let opts = ScoreOptions { raw_scores: req.raw_scores, truncate: req.truncate };
    let ranked = rank(&s, &req.query, ("texts", &req.texts), opts).await?;
    let out: Vec<Rank> = ranked
        .into_iter()
        .map(|(index, score)| Rank { index, score, text: req.return_text.then(|| req.texts[index].clone()) })
        .collect();
    Ok(axum::Json(out).into_response())
}

/// Rerank retrieved documents for a query, as OPEA asks.
///
/// An OPEA `SearchedDoc` gives an `LLMParamsDoc` with the `top_n` best texts as its documents,
/// a `RerankingRequest` a `RerankingResponse`, a `ChatCompletionRequest` itself with
/// `reranked_docs` and `documents` filled; they are told apart by their keys.
#[utoipa::path(post, path = "/v1/reranking", tag = "reranking",
    request_body = RerankingBody,
    responses((status = 200, description = "The best documents, best first", body = RerankingAnswer)))]
async fn opea_rerank(State(s): State<AppState>, body: JsonBody) -> ServiceResult<Response> {
    // Told apart by their keys; anything else is read as a SearchedDoc, whose errors name the
    // missing fields.
    if body.has("messages") {
        chat_request(&s, &body).await
    } else if body.has("input") && !body.has("initial_query") {
        reranking_request(&s, &body).await
    } else {
        searched_doc(&s, &body).await
    }
}

/// `SearchedDoc` → `LLMParamsDoc{query, documents: the top_n best texts}` (OPEA's reranking
/// microservice).
async fn searched_doc(s: &AppState, body: &JsonBody) -> ServiceResult<Response> {
    let doc: SearchedDoc = body.typed()?;
    doc.validate()?;
    let texts: Vec<String> = doc.retrieved_docs.iter().map(|d| d.text_str()).collect();
    let ranked =
        rank(s, &doc.initial_query, ("texts", &texts), ScoreOptions { raw_scores: false, truncate: true }).await?;
    let mut out = LLMParamsDoc::new(doc.initial_query.clone());
    out.documents =
        ranked.into_iter().take(doc.top_n as usize).map(|(i, _)| Document::Text(texts[i].clone())).collect();
    Ok(axum::Json(out).into_response())
}

/// `RerankingRequest` → `RerankingResponse`.
async fn reranking_request(s: &AppState, body: &JsonBody) -> ServiceResult<Response> {
    let req: RerankingRequest = body.typed()?;
    req.validate()?;
    let texts: Vec<String> = req.retrieved_docs.iter().map(|d| d.text()).collect();
    let ranked = rank(s, &req.input, ("texts", &texts), ScoreOptions { raw_scores: false, truncate: true }).await?;
    let reranked_docs = ranked
        .into_iter()
        .take(req.top_n as usize)
        .map(|(i, score)| RerankingResponseData { text: texts[i].clone(), score: Some(score) })
        .collect();
    Ok(axum::Json(RerankingResponse { reranked_docs }).into_response())
}

/// `ChatCompletionRequest` → itself with `reranked_docs` and `documents` filled.
async fn chat_request(s: &AppState, body: &JsonBody) -> ServiceResult<Response> {
    let mut req: ChatCompletionRequest = body.typed()?;
    req.validate()?;
    let query = match &req.input {
        Some(comps_core::protocol::EmbeddingInput::Text(t)) => t.clone(),
        _ => req.last_user_text().unwrap_or_default(),
    };
    let texts: Vec<String> = req.retrieved_docs.iter().map(|d| d.text.clone()).collect();
    let ranked = rank(s, &query, ("texts", &texts), ScoreOptions { raw_scores: false, truncate: true }).await?;
    let top: Vec<(usize, f32)> = ranked.into_iter().take(req.top_n as usize).collect();
    req.reranked_docs =
        top.iter().map(|(i, score)| RerankingResponseData { text: texts[*i].clone(), score: Some(*score) }).collect();
    req.documents = Some(top.iter().map(|(i, _)| Document::Text(texts[*i].clone())).collect());
    Ok(axum::Json(req).into_response())
}

/// TEI's `/info` for this service: the model and the limits.
pub fn tei_info(s: &AppState, max_concurrent_requests: usize) -> TeiInfo {
    let i = s.reranker.info();
    TeiInfo {
        model_id: i.model_id.clone(),
        model_sha: None,
        model_dtype: None,
        model_type: json!({"reranker": {"kind": i.kind}}),
        max_input_length: i.max_input_tokens,
        max_client_batch_size: s.max_client_batch_size,
        max_concurrent_requests,
        max_batch_tokens: None,
        max_batch_requests: None,
        auto_truncate: None,
        embedding_dimension: None,
        backend: None,
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// A document of a Cohere / Jina rerank request: its text, or an object holding it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum RerankDocument {
    /// The text.
    Text(String),
    /// `{"text": ...}`.
    Object {
        /// The text.
        text: String,
    },
}

/// The rerank request of Cohere's API (and Jina's, and vLLM's `/v1/rerank`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct CohereRerankRequest {
    /// Model name (accepted, not checked: the service serves one model).
    #[serde(default)]
    model: Option<String>,
    /// The query the documents are scored against.
    query: String,
    /// The documents (at most the service's `--max-client-batch-size`).
    documents: Vec<RerankDocument>,
    /// How many of the best to answer (default: all).
    #[serde(default)]
    #[schema(minimum = 1)]
    top_n: Option<usize>,
    /// Echo each document in its result.
    #[serde(default)]
    return_documents: bool,
}

impl Validate for CohereRerankRequest {
    fn validate(&self) -> Result<(), ServiceError> {
        if self.documents.is_empty() {
            return Err(ServiceError::bad_request("documents", "documents must not be empty - 'documents'"));
        }
        if self.top_n == Some(0) {
            return Err(ServiceError::bad_request("top_n", "top_n must be at least 1 - 'top_n'"));
        }
        Ok(())
    }
}

/// One result of a Cohere-style rerank.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CohereResult {
    /// The document's index in `documents`.
    index: usize,
    /// Its relevance to the query (higher is more relevant).
    relevance_score: f32,
    /// `{"text": ...}`, when `return_documents`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    document: Option<serde_json::Value>,
}

/// The answer of a Cohere-style rerank.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CohereRerankResponse {
    /// A request id.
    id: String,
    /// The model that scored.
    model: String,
    /// The best `top_n` documents, best first.
    results: Vec<CohereResult>,
}

/// Rerank as Cohere's, Jina's and vLLM's `/v1/rerank` do (LangChain's and LlamaIndex's Cohere
/// and Jina rerankers, Dify): the `top_n` best documents with their `relevance_score`.
#[utoipa::path(post, path = "/v1/rerank", tag = "reranking",
    request_body = CohereRerankRequest,
    responses((status = 200, description = "The best documents, best first", body = CohereRerankResponse)))]
async fn cohere_rerank(State(s): State<AppState>, body: comps_core::extract::JsonBody) -> ServiceResult<Response> {
    let answer = async {
        let req: CohereRerankRequest = body.typed()?;
        req.validate()?;
        let texts: Vec<String> = req
            .documents
            .into_iter()
            .map(|d| match d {
                RerankDocument::Text(t) | RerankDocument::Object { text: t } => t,
            })
            .collect();
        // Cohere cuts over-long documents rather than refusing them.
        let opts = ScoreOptions { raw_scores: false, truncate: true };
        let ranked = rank(&s, &req.query, ("documents", &texts), opts).await?;
        let results = ranked
            .into_iter()
            .take(req.top_n.unwrap_or(usize::MAX))
            .map(|(index, score)| CohereResult {
                index,
                relevance_score: score,
                document: req.return_documents.then(|| json!({"text": texts[index]})),
            })
            .collect();
        let model = req.model.filter(|m| !m.is_empty()).unwrap_or_else(|| s.reranker.info().model_id.clone());
        Ok::<_, ServiceError>(CohereRerankResponse { id: comps_core::protocol::new_id(), model, results })
    };
    // Cohere's API answers a bad request 400, as OpenAI's does.
    Ok(axum::Json(answer.await.map_err(ServiceError::openai)?).into_response())
}
