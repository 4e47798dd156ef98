//! HTTP routes: TEI `POST /rerank`, OPEA `POST /v1/reranking` (SearchedDoc → LLMParamsDoc,
//! RerankingRequest → RerankingResponse, ChatCompletionRequest → itself with reranked docs),
//! and `GET /info`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use comps_core::extract::parse_json;
use comps_core::protocol::{
    ChatCompletionRequest, Document, LLMParamsDoc, RerankingRequest, RerankingResponse, RerankingResponseData,
    SearchedDoc, Validate,
};
use comps_core::{ServiceError, ServiceResult};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::reranker::ScoreOptions;

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/rerank", post(tei_rerank))
        .route("/v1/reranking", post(opea_rerank))
        .route("/info", get(info))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct TeiRerankRequest {
    query: String,
    texts: Vec<String>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
    #[serde(default)]
    truncate: bool,
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
#[derive(Debug, Clone, Serialize)]
struct Rank {
    index: usize,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// Scores of `texts` for `query`, best first: (index, score).
async fn rank(s: &AppState, query: &str, texts: &[String], opts: ScoreOptions) -> ServiceResult<Vec<(usize, f32)>> {
    if texts.len() > s.max_client_batch_size {
        return Err(ServiceError::invalid(
            "texts",
            format!(
                "texts has {} items, more than the maximum client batch size of {}",
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

async fn tei_rerank(State(s): State<AppState>, comps_core::Json(req): comps_core::Json<TeiRerankRequest>) -> Response {
    let opts = ScoreOptions { raw_scores: req.raw_scores, truncate: req.truncate };
    match rank(&s, &req.query, &req.texts, opts).await {
        Ok(ranked) => {
            let out: Vec<Rank> = ranked
                .into_iter()
                .map(|(index, score)| Rank { index, score, text: req.return_text.then(|| req.texts[index].clone()) })
                .collect();
            axum::Json(out).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn opea_rerank(State(s): State<AppState>, body: Bytes) -> Response {
    let shape: Value = match parse_json(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let has = |k: &str| shape.get(k).is_some();
    // Told apart by their keys; anything else is read as a SearchedDoc, whose errors name the
    // missing fields.
    let result = if has("messages") {
        chat_request(&s, &body).await
    } else if has("input") && !has("initial_query") {
        reranking_request(&s, &body).await
    } else {
        searched_doc(&s, &body).await
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `SearchedDoc` → `LLMParamsDoc{query, documents: the top_n best texts}` (OPEA's reranking
/// microservice).
async fn searched_doc(s: &AppState, body: &[u8]) -> ServiceResult<Response> {
    let doc: SearchedDoc = parse_json(body)?;
    doc.validate()?;
    let texts: Vec<String> = doc.retrieved_docs.iter().map(|d| d.text_str()).collect();
    let ranked = rank(s, &doc.initial_query, &texts, ScoreOptions { raw_scores: false, truncate: true }).await?;
    let mut out = LLMParamsDoc::new(doc.initial_query.clone());
    out.documents =
        ranked.into_iter().take(doc.top_n as usize).map(|(i, _)| Document::Text(texts[i].clone())).collect();
    Ok(axum::Json(out).into_response())
}

/// `RerankingRequest` → `RerankingResponse`.
async fn reranking_request(s: &AppState, body: &[u8]) -> ServiceResult<Response> {
    let req: RerankingRequest = parse_json(body)?;
    req.validate()?;
    let texts: Vec<String> = req.retrieved_docs.iter().map(|d| d.text()).collect();
    let ranked = rank(s, &req.input, &texts, ScoreOptions { raw_scores: false, truncate: true }).await?;
    let reranked_docs = ranked
        .into_iter()
        .take(req.top_n as usize)
        .map(|(i, score)| RerankingResponseData { text: texts[i].clone(), score: Some(score) })
        .collect();
    Ok(axum::Json(RerankingResponse { reranked_docs }).into_response())
}

/// `ChatCompletionRequest` → itself with `reranked_docs` and `documents` filled.
async fn chat_request(s: &AppState, body: &[u8]) -> ServiceResult<Response> {
    let mut req: ChatCompletionRequest = parse_json(body)?;
    req.validate()?;
    let query = match &req.input {
        Some(comps_core::protocol::EmbeddingInput::Text(t)) => t.clone(),
        _ => req.last_user_text().unwrap_or_default(),
    };
    let texts: Vec<String> = req.retrieved_docs.iter().map(|d| d.text.clone()).collect();
    let ranked = rank(s, &query, &texts, ScoreOptions { raw_scores: false, truncate: true }).await?;
    let top: Vec<(usize, f32)> = ranked.into_iter().take(req.top_n as usize).collect();
    req.reranked_docs =
        top.iter().map(|(i, score)| RerankingResponseData { text: texts[*i].clone(), score: Some(*score) }).collect();
    req.documents = Some(top.iter().map(|(i, _)| Document::Text(texts[*i].clone())).collect());
    Ok(axum::Json(req).into_response())
}

async fn info(State(s): State<AppState>) -> impl IntoResponse {
    let i = s.reranker.info();
    axum::Json(json!({
        "model_id": i.model_id,
        "model_type": {"reranker": {"kind": i.kind}},
        "max_input_length": i.max_input_tokens,
        "max_client_batch_size": s.max_client_batch_size,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}
