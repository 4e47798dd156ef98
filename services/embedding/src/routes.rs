//! HTTP routes: OpenAI and OPEA on `/v1/embeddings`, TEI on `/embed`, `/embed_all`,
//! `/similarity`, `/tokenize`, `/decode` and `/info`, and `/v1/models`. OpenAI requests take up to [`OPENAI_MAX_EMBEDDING_INPUTS`] inputs, as OpenAI
//! does; TEI and OPEA requests keep TEI's `--max-client-batch-size`.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use comps_core::extract::JsonBody;
use comps_core::limits::OPENAI_MAX_EMBEDDING_INPUTS;
use comps_core::protocol::{
    EmbedDoc, Embedding, EmbeddingData, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingResponseData,
    TeiInfo, TextDoc, TextOrList, UsageInfo, Validate,
};
use comps_core::{ServiceError, ServiceResult};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::embedder::{EmbedInput, EmbedOptions};

/// The OpenAPI document of the service's routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(embeddings, tei_embed, tei_embed_all, tei_similarity, tei_tokenize, tei_decode),
    tags((name = "embedding", description = "OpenAI and OPEA embeddings"),
         (name = "tei", description = "Text Embeddings Inference's routes"))
)]
pub struct EmbeddingApi;

/// The request shapes `/v1/embeddings` takes (told apart by their keys).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
enum EmbeddingsBody {
    /// OpenAI's embedding request (`input`).
    OpenAi(EmbeddingRequest),
    /// OPEA `TextDoc` (`text`).
    Opea(TextDoc),
}

/// The answers of `/v1/embeddings`, one per request shape.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
enum EmbeddingsAnswer {
    /// To an OpenAI request: one embedding per input.
    OpenAi(EmbeddingResponse),
    /// To a `TextDoc`: its text with the embedding (a list of vectors for a list of texts).
    Opea(EmbedDoc),
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/embed", post(tei_embed))
        .route("/tokenize", post(tei_tokenize))
        .route("/decode", post(tei_decode))
        .route("/embed_all", post(tei_embed_all))
        .route("/similarity", post(tei_similarity))
        .with_state(state)
}

/// The most inputs a request may carry, and what that limit is called in the refusal.
#[derive(Debug, Clone, Copy)]
enum InputLimit {
    /// TEI's `--max-client-batch-size` (on `/embed` and OPEA's `TextDoc`).
    ClientBatch(usize),
    /// OpenAI's own bound on one `/v1/embeddings` request.
    OpenAi,
}

fn check_count(field: &'static str, n: usize, limit: InputLimit) -> ServiceResult<()> {
    if n == 0 {
        return Err(ServiceError::invalid(field, format!("{field} must not be empty")));
    }
    let (max, what) = match limit {
        InputLimit::ClientBatch(max) => (max, "the maximum client batch size"),
        InputLimit::OpenAi => (OPENAI_MAX_EMBEDDING_INPUTS, "the maximum number of inputs per request"),
    };
    if n > max {
        return Err(ServiceError::invalid(field, format!("{field} has {n} items, more than {what} of {max}")));
    }
    Ok(())
}

/// Embed texts, as OpenAI or OPEA asks.
///
/// OpenAI `{"input": ...}` answers an `EmbeddingResponse`, OPEA `{"text": ...}` (a `TextDoc`)
/// an `EmbedDoc`; the two are told apart by their keys.
#[utoipa::path(post, path = "/v1/embeddings", tag = "embedding",
    request_body = EmbeddingsBody,
    responses((status = 200, description = "The embeddings", body = EmbeddingsAnswer)))]
async fn embeddings(State(s): State<AppState>, body: JsonBody) -> ServiceResult<Response> {
    // OpenAI's shape answers a bad field as OpenAI does (400); OPEA's as FastAPI does (422).
    if body.has("input") || !body.has("text") {
        openai(&s, &body).await.map_err(ServiceError::openai)
    } else {
        opea(&s, &body).await
    }
}

async fn openai(s: &AppState, body: &JsonBody) -> ServiceResult<Response> {
    let req: EmbeddingRequest = body.typed()?;
    req.validate()?;
    let input = match req.input {
        EmbeddingInput::Text(t) => EmbedInput::Texts(with_prompt(s, None, vec![t])?),
        EmbeddingInput::Texts(t) => EmbedInput::Texts(with_prompt(s, None, t)?),
        EmbeddingInput::Tokens(t) => EmbedInput::Tokens(vec![t]),
        EmbeddingInput::TokenBatches(t) => EmbedInput::Tokens(t),
    };
    // OpenAI clients send up to OpenAI's limit in one call (the SDK's batching assumes it);
    // the batcher splits the work into forward passes whatever the count.
    check_count("input", input.len(), InputLimit::OpenAi)?;
    let dim = s.embedder.info().dim;
    if let (Some(d), Some(dim)) = (req.dimensions, dim)
        && d as usize > dim
    {
        return Err(ServiceError::invalid("dimensions", format!("dimensions {d} is larger than the model's {dim}")));
    }
    let opts = EmbedOptions { normalize: true, truncate: s.auto_truncate, field: "input", keep_end: false };
    let out = s.embedder.embed(input, opts).await?;
    let base64 = req.encoding_format.as_deref() == Some("base64");
    let data = out
        .vectors
        .into_iter()
        .enumerate()
        .map(|(i, mut v)| {
            if let Some(d) = req.dimensions {
                v.truncate(d as usize);
                comps_core::vector::normalize(&mut v);
            }
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                EmbeddingData::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingData::Float(v)
            };
            EmbeddingResponseData { index: i as u32, object: "embedding".into(), embedding }
        })
        .collect();
    let tokens = out.prompt_tokens as u32;
    let resp = EmbeddingResponse {
        object: "list".into(),
        model: Some(req.model.unwrap_or_else(|| s.embedder.info().model_id.clone())),
        data,
        usage: Some(UsageInfo { prompt_tokens: tokens, total_tokens: tokens, completion_tokens: None }),
    };
    Ok(axum::Json(resp).into_response())
}

async fn opea(s: &AppState, body: &JsonBody) -> ServiceResult<Response> {
    let doc: TextDoc = body.typed()?;
    let (texts, single) = match doc.text.clone() {
        Some(TextOrList::Text(t)) => (vec![t], true),
        Some(TextOrList::List(l)) => (l, false),
        None => return Err(ServiceError::invalid("text", "text must not be null")),
    };
    check_count("text", texts.len(), InputLimit::ClientBatch(s.max_client_batch_size))?;
    let opts = EmbedOptions { normalize: true, truncate: true, field: "text", keep_end: false };
    let out = s.embedder.embed(EmbedInput::Texts(with_prompt(s, None, texts.clone())?), opts).await?;
    let embedding = if single {
        Embedding::Single(out.vectors.into_iter().next().unwrap_or_default())
    } else {
        Embedding::Batch(out.vectors)
    };
    let text =
        if single { TextOrList::Text(texts.into_iter().next().unwrap_or_default()) } else { TextOrList::List(texts) };
    let mut ed: EmbedDoc = serde_json::from_value(json!({"text": "", "embedding": []}))
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    ed.id = doc.id;
    ed.text = text;
    ed.embedding = embedding;
    Ok(axum::Json(ed).into_response())
}

/// `texts` with the prompt a request names (or the model's default) put before each; `Err`
/// naming `prompt_name` when the model has no such prompt.
fn with_prompt(s: &AppState, name: Option<&str>, texts: Vec<String>) -> ServiceResult<Vec<String>> {
    match s.embedder.info().prompts.resolve(name) {
        Ok(None) => Ok(texts),
        Ok(Some(p)) => Ok(texts.into_iter().map(|t| format!("{p}{t}")).collect()),
        Err(e) => Err(ServiceError::invalid("prompt_name", format!("{e} - 'prompt_name'"))),
    }
}

/// TEI's embed request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct TeiEmbedRequest {
    /// The text or texts to embed.
    inputs: TextOrList,
    /// Scale each vector to unit length.
    #[serde(default = "yes")]
    #[schema(default = true)]
    normalize: bool,
    /// Cut over-long inputs to the model's limit instead of refusing them (default: the
    /// service's `--auto-truncate`).
    #[serde(default)]
    truncate: Option<bool>,
    /// Which end of an over-long input to cut when truncating: `Right` (keep the start, the
    /// default) or `Left` (keep the end).
    #[serde(default)]
    truncation_direction: Option<String>,
    /// Keep only the first this many dimensions (renormalised when `normalize`).
    #[serde(default)]
    #[schema(minimum = 1)]
    dimensions: Option<u32>,
    /// A prompt of the model (`config_sentence_transformers.json`) to put before each input,
    /// e.g. `query` or `passage` for E5; default: the service's `--default-prompt-name`.
    #[serde(default)]
    prompt_name: Option<String>,
}

fn yes() -> bool {
    true
}

/// TEI's `truncation_direction`: `Right` or `Left`, any case.
fn check_direction(field: &'static str, d: Option<&str>) -> Result<(), ServiceError> {
    match d {
        Some(d) if !d.eq_ignore_ascii_case("right") && !d.eq_ignore_ascii_case("left") => {
            Err(ServiceError::invalid(field, format!("{field} must be Right or Left")))
        }
        _ => Ok(()),
    }
}

/// How a TEI route embeds: its `truncate` (default `--auto-truncate`) and
/// `truncation_direction`.
fn tei_options(
    s: &AppState,
    truncate: Option<bool>,
    direction: Option<&str>,
    normalize: bool,
    field: &'static str,
) -> EmbedOptions {
    let keep_end = direction.is_some_and(|d| d.eq_ignore_ascii_case("left"));
    EmbedOptions { normalize, truncate: truncate.unwrap_or(s.auto_truncate), field, keep_end }
}

impl Validate for TeiEmbedRequest {
    fn validate(&self) -> Result<(), ServiceError> {
        check_direction("truncation_direction", self.truncation_direction.as_deref())?;
        if self.dimensions == Some(0) {
            return Err(ServiceError::invalid("dimensions", "dimensions must be at least 1"));
        }
        Ok(())
    }
}

/// TEI's embed: one vector per input, in order.
#[utoipa::path(post, path = "/embed", tag = "tei",
    request_body = TeiEmbedRequest,
    responses((status = 200, description = "One vector per input", body = Vec<Vec<f32>>)))]
async fn tei_embed(
    State(s): State<AppState>,
    comps_core::Json(req): comps_core::Json<TeiEmbedRequest>,
) -> ServiceResult<Response> {
    let texts = req.inputs.to_vec();
    check_count("inputs", texts.len(), InputLimit::ClientBatch(s.max_client_batch_size))?;
    let texts = with_prompt(&s, req.prompt_name.as_deref(), texts)?;
    let opts = tei_options(&s, req.truncate, req.truncation_direction.as_deref(), req.normalize, "inputs");
    let mut vectors = s.embedder.embed(EmbedInput::Texts(texts), opts).await?.vectors;
    if let Some(d) = req.dimensions {
        for v in &mut vectors {
            v.truncate(d as usize);
            if req.normalize {
                comps_core::vector::normalize(v);
            }
        }
    }
    Ok(axum::Json(vectors).into_response())
}

/// TEI's embed_all request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct TeiEmbedAllRequest {
    /// The text or texts.
    inputs: TextOrList,
    /// Cut over-long inputs (default: the service's `--auto-truncate`).
    #[serde(default)]
    truncate: Option<bool>,
    /// `Right` (keep the start, the default) or `Left` (keep the end).
    #[serde(default)]
    truncation_direction: Option<String>,
    /// A prompt of the model to put before each input (its tokens get rows too).
    #[serde(default)]
    prompt_name: Option<String>,
}

impl Validate for TeiEmbedAllRequest {
    fn validate(&self) -> Result<(), ServiceError> {
        check_direction("truncation_direction", self.truncation_direction.as_deref())
    }
}

/// TEI's embed_all: per input, every token's vector (the encoder's last layer, special tokens
/// included, neither pooled nor normalized).
#[utoipa::path(post, path = "/embed_all", tag = "tei",
    request_body = TeiEmbedAllRequest,
    responses((status = 200, description = "Per input, one vector per token", body = Vec<Vec<Vec<f32>>>)))]
async fn tei_embed_all(
    State(s): State<AppState>,
    comps_core::Json(req): comps_core::Json<TeiEmbedAllRequest>,
) -> ServiceResult<Response> {
    let texts = req.inputs.to_vec();
    check_count("inputs", texts.len(), InputLimit::ClientBatch(s.max_client_batch_size))?;
    let texts = with_prompt(&s, req.prompt_name.as_deref(), texts)?;
    let opts = tei_options(&s, req.truncate, req.truncation_direction.as_deref(), false, "inputs");
    Ok(axum::Json(s.embedder.embed_tokens(EmbedInput::Texts(texts), opts).await?).into_response())
}

/// The texts `/similarity` compares.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct SimilarityInput {
    /// The text the others are compared with.
    source_sentence: String,
    /// The texts to compare with it.
    sentences: Vec<String>,
}

/// `/similarity`'s optional settings.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
struct SimilarityParameters {
    /// Cut over-long inputs (default: the service's `--auto-truncate`).
    #[serde(default)]
    truncate: Option<bool>,
    /// `Right` (keep the start, the default) or `Left` (keep the end).
    #[serde(default)]
    truncation_direction: Option<String>,
    /// A prompt of the model to put before every text.
    #[serde(default)]
    prompt_name: Option<String>,
}

/// TEI's similarity request (the Hugging Face sentence-similarity task).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct TeiSimilarityRequest {
    /// The source sentence and the sentences to compare with it.
    inputs: SimilarityInput,
    /// Truncation and prompt.
    #[serde(default)]
    parameters: Option<SimilarityParameters>,
}

impl Validate for TeiSimilarityRequest {
    fn validate(&self) -> Result<(), ServiceError> {
        let p = self.parameters.as_ref();
        check_direction("parameters.truncation_direction", p.and_then(|p| p.truncation_direction.as_deref()))
    }
}

/// TEI's similarity: the cosine similarity of the source sentence with each sentence, in order
/// (the same vectors as `/embed`).
#[utoipa::path(post, path = "/similarity", tag = "tei",
    request_body = TeiSimilarityRequest,
    responses((status = 200, description = "One similarity per sentence", body = Vec<f32>)))]
async fn tei_similarity(
    State(s): State<AppState>,
    comps_core::Json(req): comps_core::Json<TeiSimilarityRequest>,
) -> ServiceResult<Response> {
    let SimilarityInput { source_sentence, sentences } = req.inputs;
    check_count(
        "inputs.sentences",
        sentences.len(),
        InputLimit::ClientBatch(s.max_client_batch_size.saturating_sub(1)),
    )?;
    let p = req.parameters.unwrap_or_default();
    let texts = with_prompt(&s, p.prompt_name.as_deref(), std::iter::once(source_sentence).chain(sentences).collect())?;
    let opts = tei_options(&s, p.truncate, p.truncation_direction.as_deref(), true, "inputs");
    let vectors = s.embedder.embed(EmbedInput::Texts(texts), opts).await?.vectors;
    let (source, rest) =
        vectors.split_first().ok_or_else(|| ServiceError::Internal("no vector for the source".into()))?;
    let sims: Vec<f32> = rest.iter().map(|v| comps_core::vector::cosine(source, v)).collect();
    Ok(axum::Json(sims).into_response())
}

/// TEI's `/info` for this service: the model and the limits (`max_concurrent_requests`: the
/// server's).
pub fn tei_info(s: &AppState, max_concurrent_requests: usize) -> TeiInfo {
    let i = s.embedder.info();
    TeiInfo {
        model_id: i.model_id.clone(),
        model_sha: None,
        model_dtype: Some("float32".into()),
        model_type: json!({"embedding": {"pooling": i.pooling}}),
        max_input_length: i.max_input_tokens,
        max_client_batch_size: s.max_client_batch_size,
        max_concurrent_requests,
        max_batch_tokens: i.batch.map(|b| b.0),
        max_batch_requests: i.batch.map(|b| b.1),
        auto_truncate: Some(s.auto_truncate),
        embedding_dimension: i.dim,
        backend: Some(i.backend.to_string()),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// TEI's tokenize request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct TeiTokenizeRequest {
    /// The text or texts to tokenize.
    inputs: TextOrList,
    /// Add the model's special tokens (`[CLS]`, `[SEP]`), as embedding does.
    #[serde(default = "yes")]
    #[schema(default = true)]
    add_special_tokens: bool,
    /// A prompt of the model to put before each input (as `/embed` takes it).
    #[serde(default)]
    prompt_name: Option<String>,
}

impl Validate for TeiTokenizeRequest {}

/// One token, as TEI's `/tokenize` lists it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct SimpleToken {
    /// Token id.
    id: u32,
    /// Its text: the input's bytes `start..stop`, or the special token itself.
    text: String,
    /// Whether it is a special token.
    special: bool,
    /// Byte offset of its start in the input (null for a special token).
    start: Option<usize>,
    /// Byte offset of its end in the input (null for a special token).
    stop: Option<usize>,
}

fn local_tokenizer(s: &AppState) -> ServiceResult<std::sync::Arc<comps_models::TextTokenizer>> {
    s.embedder.tokenizer().cloned().ok_or_else(|| {
        ServiceError::NotFound("this service proxies a remote embedder: tokenize where its model runs".into())
    })
}

/// TEI's tokenize: each input's tokens, with where they lie in it (nothing cut; an input
/// larger than the model's window × 32 bytes is refused).
#[utoipa::path(post, path = "/tokenize", tag = "tei",
    request_body = TeiTokenizeRequest,
    responses((status = 200, description = "Per input, its tokens", body = Vec<Vec<SimpleToken>>)))]
async fn tei_tokenize(
    State(s): State<AppState>,
    comps_core::Json(req): comps_core::Json<TeiTokenizeRequest>,
) -> ServiceResult<Response> {
    let tokenizer = local_tokenizer(&s)?;
    let texts = req.inputs.to_vec();
    check_count("inputs", texts.len(), InputLimit::ClientBatch(s.max_client_batch_size))?;
    let texts = with_prompt(&s, req.prompt_name.as_deref(), texts)?;
    let add = req.add_special_tokens;
    let out = tokio::task::spawn_blocking(move || -> ServiceResult<Vec<Vec<SimpleToken>>> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| match tokenizer.spans(t, add)? {
                Ok(spans) => Ok(spans
                    .into_iter()
                    .map(|t| SimpleToken { id: t.id, text: t.text, special: t.special, start: t.start, stop: t.stop })
                    .collect()),
                Err(too_long) => Err(ServiceError::invalid("inputs", too_long.describe(&format!("inputs {i}")))),
            })
            .collect()
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("the tokenizer task failed: {e}")))??;
    Ok(axum::Json(out).into_response())
}

/// TEI's decode request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct TeiDecodeRequest {
    /// Token ids, or one list of ids per text.
    ids: TokenIds,
    /// Leave out special tokens.
    #[serde(default = "yes")]
    #[schema(default = true)]
    skip_special_tokens: bool,
}

/// One list of ids or several.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum TokenIds {
    /// One text's ids.
    One(Vec<u32>),
    /// Several texts' ids.
    Many(Vec<Vec<u32>>),
}

impl Validate for TeiDecodeRequest {}

/// TEI's decode: the text of each list of ids.
#[utoipa::path(post, path = "/decode", tag = "tei",
    request_body = TeiDecodeRequest,
    responses((status = 200, description = "One text per list of ids", body = Vec<String>)))]
async fn tei_decode(
    State(s): State<AppState>,
    comps_core::Json(req): comps_core::Json<TeiDecodeRequest>,
) -> ServiceResult<Response> {
    let tokenizer = local_tokenizer(&s)?;
    let lists = match req.ids {
        TokenIds::One(ids) => vec![ids],
        TokenIds::Many(lists) => lists,
    };
    check_count("ids", lists.len(), InputLimit::ClientBatch(s.max_client_batch_size))?;
    let vocab = tokenizer.vocab_size();
    if let Some(bad) = lists.iter().flatten().find(|&&id| id as usize >= vocab) {
        return Err(ServiceError::invalid("ids", format!("token id {bad} is outside the vocabulary of {vocab}")));
    }
    let skip = req.skip_special_tokens;
    let texts = tokio::task::spawn_blocking(move || {
        lists.iter().map(|ids| tokenizer.decode_with(ids, skip)).collect::<Result<Vec<String>, _>>()
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("the tokenizer task failed: {e}")))??;
    Ok(axum::Json(texts).into_response())
}
