//! HTTP routes: `POST /v1/retrieval` (OPEA `EmbedDoc` → `SearchedDoc`, `RetrievalRequest` →
//! `RetrievalResponse`, `ChatCompletionRequest` → itself with the documents filled) and OPEA's
//! dataprep routes.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use comps_core::extract::{JsonBody, parse_json};
use comps_core::protocol::{
    ChatCompletionRequest, DataprepDeleteRequest, DataprepFile, DataprepGetRequest, DataprepIngestForm, Document,
    EmbedDoc, RetrievalRequest, RetrievalResponse, RetrievalResponseData, SearchParams, SearchedDoc, TextDoc, Validate,
    new_id,
};
use comps_core::{ServiceError, ServiceResult};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::chunking::Chunking;
use crate::embed::Role;
use crate::ingest::{IngestError, check_file_name, fetch_link};
use crate::store::{FileRecord, Hit, NewChunk, SearchType, StoreError, search};

/// The OpenAPI document of the retrieval route.
#[derive(utoipa::OpenApi)]
#[openapi(paths(retrieval), tags((name = "retrieval", description = "OPEA's retriever")))]
pub struct RetrievalApi;

/// The OpenAPI document of the dataprep routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(ingest, get_files, delete_files),
    tags((name = "dataprep", description = "OPEA's dataprep: upload, list and delete documents"))
)]
pub struct DataprepApi;

/// The request shapes `/v1/retrieval` takes (told apart by their keys).
#[allow(dead_code, clippy::large_enum_variant)]
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
enum RetrievalBody {
    /// OPEA `EmbedDoc` (`text`, optional `embedding`).
    EmbedDoc(EmbedDoc),
    /// OPEA `RetrievalRequest` (`input` and/or `embedding`).
    RetrievalRequest(RetrievalRequest),
    /// A `ChatCompletionRequest` (`messages`): answered with its documents filled.
    Chat(ChatCompletionRequest),
}

/// The answers of `/v1/retrieval`, one per request shape.
#[allow(dead_code, clippy::large_enum_variant)]
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
enum RetrievalAnswer {
    /// To an `EmbedDoc`.
    SearchedDoc(SearchedDoc),
    /// To a `RetrievalRequest`.
    RetrievalResponse(RetrievalResponse),
    /// To a `ChatCompletionRequest`.
    Chat(ChatCompletionRequest),
}

/// The routes; the dataprep ones only when `dataprep`.
pub fn router(state: AppState, dataprep: bool) -> Router {
    let mut r = Router::new().route("/v1/retrieval", post(retrieval));
    if dataprep {
        r = r
            .route("/v1/dataprep/ingest", post(ingest))
            .route("/v1/dataprep/get", post(get_files))
            .route("/v1/dataprep/delete", post(delete_files));
    }
    r.with_state(state)
}

fn store_error(e: StoreError) -> ServiceError {
    match e {
        StoreError::Exists(_) => ServiceError::MalformedRequest(e.to_string()),
        StoreError::Dimension { .. } => ServiceError::invalid("embedding", e.to_string()),
        StoreError::Backend(m) => ServiceError::Internal(m),
    }
}

fn ingest_error(e: IngestError) -> ServiceError {
    match e {
        IngestError::BadInput(m) | IngestError::Fetch(m) => ServiceError::MalformedRequest(m),
        IngestError::TooLarge(m) => ServiceError::PayloadTooLarge(m),
        IngestError::TooCostly(m) => ServiceError::invalid("files", m),
        IngestError::Internal(m) => ServiceError::Internal(m),
    }
}

/// Whether `name` can name a collection: 1-128 letters, digits, '-', '_' or '.', starting with
/// a letter or digit. The name becomes a directory under the uploads, so `.`, `..` and hidden
/// names can never be one.
pub fn valid_collection_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn collection<'a>(s: &'a AppState, index_name: Option<&'a str>) -> ServiceResult<&'a str> {
    let name = index_name.filter(|n| !n.is_empty()).unwrap_or(&s.index_name);
    if !valid_collection_name(name) {
        return Err(ServiceError::invalid(
            "index_name",
            format!(
                "index_name {:?} must be 1-128 letters, digits, '-', '_' or '.', starting with a letter or digit",
                comps_core::limits::excerpt(name)
            ),
        ));
    }
    Ok(name)
}

async fn query_vector(s: &AppState, given: Option<&[f32]>, text: &str) -> ServiceResult<Vec<f32>> {
    let mut v = match given {
        Some(v) => v.to_vec(),
        None => {
            if text.trim().is_empty() {
                return Err(ServiceError::invalid("text", "a query text or an embedding is required - 'text'"));
            }
            s.embedder.embed(&[text.to_string()], Role::Query).await?.remove(0)
        }
    };
    comps_core::vector::normalize(&mut v);
    Ok(v)
}

async fn run_search(s: &AppState, coll: &str, q: &[f32], params: &SearchParams) -> ServiceResult<Vec<Hit>> {
    let (k, how) = (params.k, SearchType::from_params(params));
    search(s.store.as_ref(), coll, q, k as usize, &how).await.map_err(store_error)
}

/// Hits as OPEA's `retrieved_docs`, the similarity added to each one's metadata.
fn response_data(hits: &[Hit]) -> Vec<RetrievalResponseData> {
    hits.iter()
        .map(|h| {
            let mut m = h.metadata.clone();
            m.insert("similarity".into(), json!(h.similarity));
            RetrievalResponseData { text: h.text.clone(), metadata: Some(m) }
        })
        .collect()
}

/// Find the chunks nearest a query: an OPEA `EmbedDoc` gives a `SearchedDoc`, a
/// `RetrievalRequest` a `RetrievalResponse`, a `ChatCompletionRequest` itself with
/// `retrieved_docs` and `documents`. A query without an embedding is embedded first.
#[utoipa::path(post, path = "/v1/retrieval", tag = "retrieval",
    request_body = RetrievalBody,
    responses((status = 200, description = "The nearest chunks", body = RetrievalAnswer)))]
async fn retrieval(State(s): State<AppState>, body: JsonBody) -> ServiceResult<Response> {
    if body.has("messages") {
        chat_request(&s, &body).await
    } else if body.has("text") {
        embed_doc(&s, body).await
    } else {
        retrieval_request(&s, &body).await
    }
}

async fn embed_doc(s: &AppState, mut body: JsonBody) -> ServiceResult<Response> {
    // A query without a vector is embedded here.
    let missing = body.get("embedding").is_none_or(|e| e.is_null() || e.as_array().is_some_and(|a| a.is_empty()));
    if missing {
        let text = body.get("text").and_then(Value::as_str).unwrap_or_default().to_string();
        let v = query_vector(s, None, &text).await?;
        body.insert("embedding", json!(v));
    }
    let doc: EmbedDoc = body.typed()?;
    doc.validate()?;
    let query: Vec<f32> = match &doc.embedding {
        comps_core::protocol::Embedding::Single(v) => v.clone(),
        comps_core::protocol::Embedding::Batch(b) => b.first().cloned().unwrap_or_default(),
    };
    let text = doc.text.joined();
    let q = query_vector(s, Some(&query), &text).await?;
    let coll = collection(s, doc.index_name.as_deref())?;
    let hits = run_search(s, coll, &q, &doc.search).await?;
    let out = SearchedDoc {
        id: new_id(),
        retrieved_docs: response_data(&hits)
            .into_iter()
            .map(|d| {
                let doc = TextDoc::new(d.text);
                match d.metadata {
                    Some(m) => doc.with_metadata(m),
                    None => doc,
                }
            })
            .collect(),
        initial_query: text,
        top_n: 1,
    };
    Ok(axum::Json(out).into_response())
}

async fn retrieval_request(s: &AppState, body: &JsonBody) -> ServiceResult<Response> {
    let req: RetrievalRequest = body.typed()?;
    req.validate()?;
    let text = req.input.clone().unwrap_or_default();
    let q = query_vector(s, req.embedding.as_ref().and_then(|e| e.vector()), &text).await?;
    let coll = collection(s, None)?;
    let hits = run_search(s, coll, &q, &req.search).await?;
    let out = RetrievalResponse { retrieved_docs: response_data(&hits) };
    Ok(axum::Json(out).into_response())
}

async fn chat_request(s: &AppState, body: &JsonBody) -> ServiceResult<Response> {
    let mut req: ChatCompletionRequest = body.typed()?;
    req.validate()?;
    let text = match &req.input {
        Some(comps_core::protocol::EmbeddingInput::Text(t)) => t.clone(),
        _ => req.last_user_text().unwrap_or_default(),
    };
    let q = query_vector(s, req.embedding.vector(), &text).await?;
    let coll = collection(s, req.index_name.as_deref())?;
    let hits = run_search(s, coll, &q, &req.search).await?;
    req.retrieved_docs = response_data(&hits);
    req.documents = Some(hits.iter().map(|h| Document::Text(h.text.clone())).collect());
    Ok(axum::Json(req).into_response())
}

/// A staging directory removed when dropped (whatever happened).
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct IngestForm {
    files: Vec<(String, PathBuf)>,
    link_list: Option<String>,
    chunk_size: Option<String>,
    chunk_overlap: Option<String>,
    index_name: Option<String>,
}

async fn read_form(s: &AppState, mut mp: Multipart, staging: &Path) -> ServiceResult<IngestForm> {
    use tokio::io::AsyncWriteExt;
    let mut form = IngestForm::default();
    let mut total = 0usize;
    let too_large = |limit: usize| ServiceError::PayloadTooLarge(format!("the upload is larger than {limit} bytes"));
    let mut seen_any = false;
    loop {
        let next = mp.next_field().await;
        let mut field = match next {
            Ok(Some(f)) => f,
            Ok(None) => break,
            // A form with no part at all is not malformed, just empty.
            Err(e) if !seen_any && e.status() == axum::http::StatusCode::BAD_REQUEST => break,
            Err(e) => return Err(multipart_error(&e.to_string(), e.status())),
        };
        seen_any = true;
        let name = field.name().unwrap_or_default().to_string();
        if name == "files" || field.file_name().is_some() {
            let file_name = field.file_name().unwrap_or_default().to_string();
            check_file_name(&file_name).map_err(ingest_error)?;
            if form.files.iter().any(|(n, _)| *n == file_name) {
                return Err(ServiceError::MalformedRequest(format!(
                    "the file {file_name} is uploaded twice in one request"
                )));
            }
            let path = staging.join(&file_name);
            let mut out = tokio::fs::File::create(&path)
                .await
                .map_err(|e| ServiceError::Internal(format!("staging upload: {e}")))?;
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(&e.to_string(), e.status()))? {
                total += chunk.len();
                if total > s.max_upload_bytes {
                    return Err(too_large(s.max_upload_bytes));
                }
                out.write_all(&chunk).await.map_err(|e| ServiceError::Internal(format!("staging upload: {e}")))?;
            }
            out.flush().await.map_err(|e| ServiceError::Internal(format!("staging upload: {e}")))?;
            form.files.push((file_name, path));
        } else {
            let text = field.text().await.map_err(|e| multipart_error(&e.to_string(), e.status()))?;
            total += text.len();
            if total > s.max_upload_bytes {
                return Err(too_large(s.max_upload_bytes));
            }
            match name.as_str() {
                "link_list" => form.link_list = Some(text),
                "chunk_size" => form.chunk_size = Some(text),
                "chunk_overlap" => form.chunk_overlap = Some(text),
                "index_name" => form.index_name = Some(text),
                // OPEA's other options (process_table, table_strategy, ...) do not apply.
                _ => {}
            }
        }
    }
    Ok(form)
}

fn multipart_error(msg: &str, status: axum::http::StatusCode) -> ServiceError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ServiceError::PayloadTooLarge(format!("the upload is too large: {msg}"))
    } else {
        ServiceError::MalformedRequest(format!("invalid multipart body: {msg}"))
    }
}

fn parse_optional(field: &str, v: Option<&str>) -> ServiceResult<Option<usize>> {
    match v.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| {
            ServiceError::invalid(
                field,
                format!("{field} must be a whole number, got {:?} - '{field}'", comps_core::limits::excerpt(t)),
            )
        }),
    }
}

fn parse_links(v: Option<&str>) -> ServiceResult<Vec<String>> {
    let Some(text) = v.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(Vec::new()) };
    let links: Vec<String> = serde_json::from_str(text).map_err(|e| {
        ServiceError::MalformedRequest(format!(
            "link_list must be a JSON list of strings, like [\"https://example.com\"]: {e}"
        ))
    })?;
    Ok(links)
}

/// Extract, chunk, embed and store one document.
/// Chunks of one file embedded between two progress lines of its ingest.
const PROGRESS_EVERY: usize = 64;

async fn store_document(
    s: &AppState,
    coll: &str,
    name: &str,
    text: String,
    chunking: &Chunking,
) -> ServiceResult<usize> {
    // Token chunking tokenizes the text several times over: off the async workers. The text
    // (up to --max-extracted-bytes) moves there; only its length is needed afterwards.
    let text_bytes = text.len();
    let c = chunking.clone();
    let pieces = tokio::task::spawn_blocking(move || c.cut(&text))
        .await
        .map_err(|e| ServiceError::Internal(format!("chunking: {e}")))?
        .map_err(ingest_error)?;
    if pieces.is_empty() {
        return Err(ServiceError::MalformedRequest(format!("{name} contains no text")));
    }
    let started = std::time::Instant::now();
    // Embedding a long file takes seconds: say it is under way, and how far it got.
    let n = pieces.len();
    tracing::info!(file = name, chunks = n, text_bytes, "embedding");
    let mut vectors = Vec::with_capacity(n);
    for group in pieces.chunks(PROGRESS_EVERY) {
        vectors.extend(s.embedder.embed(group, Role::Passage).await?);
        if n > PROGRESS_EVERY {
            tracing::info!(file = name, embedded = vectors.len(), of = n, "embedding");
        }
    }
    let chunks = pieces
        .into_iter()
        .zip(vectors)
        .enumerate()
        .map(|(i, (text, vector))| {
            let mut metadata = Map::new();
            metadata.insert("chunk".into(), json!(i));
            NewChunk { text, vector, metadata }
        })
        .collect();
    let record =
        FileRecord { name: name.to_string(), chunks: n, text_bytes, created: comps_core::protocol::unix_now() };
    s.store.add_file(coll, record, chunks).await.map_err(store_error)?;
    tracing::info!(file = name, chunks = n, ms = started.elapsed().as_millis() as u64, collection = coll, "ingested");
    Ok(n)
}

/// Upload files and / or links: each is read, cut into chunks, embedded and stored durably
/// before the answer.
#[utoipa::path(post, path = "/v1/dataprep/ingest", tag = "dataprep",
    request_body(content = DataprepIngestForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "Stored: OPEA's answer with each file's chunk count", body = Object,
        example = json!({"status": 200, "message": "Data preparation succeeded", "files": [{"name": "a.txt", "chunks": 3}], "chunks": 3}))))]
async fn ingest(State(s): State<AppState>, mp: Multipart) -> ServiceResult<Response> {
    let s = &s;
    let staging_dir = s.upload_dir.join(format!(".staging-{}", new_id()));
    tokio::fs::create_dir_all(&staging_dir)
        .await
        .map_err(|e| ServiceError::Internal(format!("creating {}: {e}", staging_dir.display())))?;
    let staging = Staging(staging_dir);
    let form = read_form(s, mp, &staging.0).await?;
    let size = parse_optional("chunk_size", form.chunk_size.as_deref())?;
    let overlap = parse_optional("chunk_overlap", form.chunk_overlap.as_deref())?;
    let chunking = match Chunking::for_request(size, overlap, &s.chunking) {
        Ok(c) => c,
        Err(e) => {
            let in_range = (comps_core::limits::MIN_CHUNK_SIZE..=comps_core::limits::MAX_CHUNK_SIZE)
                .contains(&size.unwrap_or(comps_core::limits::DEFAULT_CHUNK_SIZE));
            let field = if in_range { "chunk_overlap" } else { "chunk_size" };
            return Err(ServiceError::invalid(field, format!("{e} - '{field}'")));
        }
    };
    let links = parse_links(form.link_list.as_deref())?;
    if form.files.is_empty() && links.is_empty() {
        return Err(ServiceError::MalformedRequest("Must provide either a file or a string list.".into()));
    }
    let coll = collection(s, form.index_name.as_deref())?.to_string();
    // Every check before anything is stored: names already present, texts readable, links allowed.
    for (name, _) in &form.files {
        if s.store.has_file(&coll, name).await.map_err(store_error)? {
            return Err(store_error(StoreError::Exists(name.clone())));
        }
    }
    for link in &links {
        if s.store.has_file(&coll, link).await.map_err(store_error)? {
            return Err(store_error(StoreError::Exists(link.clone())));
        }
    }
    let mut texts = Vec::new();
    for (name, path) in &form.files {
        // In a worker process with its own memory, CPU and output limits (see `sandbox`).
        let text = s.extractor.extract(name, path).await.map_err(ingest_error)?;
        texts.push((name.clone(), text, Some(path.clone())));
    }
    for link in &links {
        let text = fetch_link(link, &s.links).await.map_err(ingest_error)?;
        texts.push((link.clone(), text, None));
    }
    let keep_dir = s.upload_dir.join(&coll);
    tokio::fs::create_dir_all(&keep_dir)
        .await
        .map_err(|e| ServiceError::Internal(format!("creating {}: {e}", keep_dir.display())))?;
    let total = texts.len();
    let mut stored = Vec::with_capacity(total);
    for (i, (name, text, path)) in texts.into_iter().enumerate() {
        tracing::info!(file = %name, n = i + 1, of = total, "ingesting");
        let chunks = store_document(s, &coll, &name, text, &chunking).await?;
        if let Some(p) = path {
            let _ = tokio::fs::rename(&p, keep_dir.join(&name)).await;
        }
        stored.push(json!({"name": name, "chunks": chunks}));
    }
    // OPEA's answer, with what was stored: each file's chunk count and the total.
    let chunks: u64 = stored.iter().filter_map(|f| f["chunks"].as_u64()).sum();
    let answer = json!({"status": 200, "message": "Data preparation succeeded", "files": stored, "chunks": chunks});
    Ok(axum::Json(answer).into_response())
}

fn index_from_body(body: &[u8]) -> ServiceResult<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = parse_json(body)?;
    Ok(v.get("index_name").and_then(Value::as_str).map(str::to_string))
}

/// The files stored in a collection.
#[utoipa::path(post, path = "/v1/dataprep/get", tag = "dataprep",
    request_body(content = Option<DataprepGetRequest>, content_type = "application/json"),
    responses((status = 200, description = "The stored files", body = Vec<DataprepFile>)))]
async fn get_files(State(s): State<AppState>, body: Bytes) -> ServiceResult<Response> {
    let index = index_from_body(&body)?;
    let coll = collection(&s, index.as_deref())?;
    let files = s.store.list_files(coll).await.map_err(store_error)?;
    let list: Vec<Value> =
        files.iter().map(|f| json!({"name": f.name, "id": f.name, "type": "File", "parent": ""})).collect();
    Ok(axum::Json(list).into_response())
}

/// Delete one file (or link) and its chunks, or `all` of a collection.
#[utoipa::path(post, path = "/v1/dataprep/delete", tag = "dataprep",
    request_body = DataprepDeleteRequest,
    responses((status = 200, description = "Deleted", body = Object, example = json!({"status": true}))))]
async fn delete_files(State(s): State<AppState>, body: JsonBody) -> ServiceResult<Response> {
    let v = body.value();
    let path = v.get("file_path").and_then(Value::as_str).ok_or_else(|| {
        ServiceError::invalid("file_path", "file_path is required: a file name, a link or \"all\" - 'file_path'")
    })?;
    let coll = collection(&s, v.get("index_name").and_then(Value::as_str))?;
    if path == "all" {
        s.store.delete_all(coll).await.map_err(store_error)?;
        let _ = tokio::fs::remove_dir_all(s.upload_dir.join(coll)).await;
    } else {
        if !s.store.delete_file(coll, path).await.map_err(store_error)? {
            return Err(ServiceError::NotFound(format!("File {path} not found. Please check file_path.")));
        }
        if check_file_name(path).is_ok() {
            let _ = tokio::fs::remove_file(s.upload_dir.join(coll).join(path)).await;
        }
    }
    Ok(axum::Json(json!({"status": true})).into_response())
}
