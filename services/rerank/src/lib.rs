//! # comps-rerank
//!
//! A reranking microservice compatible with TEI's `POST /rerank` and OPEA's
//! `POST /v1/reranking`. It runs cross-encoders (BERT / XLM-RoBERTa sequence classification, e.g.
//! ms-marco MiniLM, bge-reranker) or a bi-encoder (cosine of sentence embeddings — the offline
//! default, since no cross-encoder weights can be fetched from the package registries) with
//! candle in-process, or proxies a remote TEI.
//!
//! ```text
//! comps-rerank --mode bi-encoder --model models/all-MiniLM-L6-v2 --port 8808
//! curl localhost:8808/rerank -d '{"query": "capital of France", "texts": ["Paris is...", "Berlin is..."]}'
//! ```

pub mod reranker;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use comps_core::{CommonArgs, MicroService, Server, ServiceType};
use comps_models::BatchArgs;
use comps_models::hub::{self, HubConfig};

pub use reranker::{BiEncoder, CrossEncoder, RemoteReranker, Reranker, RerankerInfo, ScoreOptions};

/// Default port (OPEA's compose).
pub const DEFAULT_PORT: u16 = 8808;

/// What computes the scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Cosine of sentence embeddings (a sentence-transformers model).
    BiEncoder,
    /// A sequence-classification cross-encoder.
    CrossEncoder,
}

/// Command-line flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about = "Reranking microservice (TEI /rerank and OPEA /v1/reranking)")]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// bi-encoder or cross-encoder.
    #[arg(long, env = "RERANK_MODE", value_enum, default_value_t = Mode::BiEncoder)]
    pub mode: Mode,
    /// Model directory or Hugging Face Hub id (cached, or downloaded unless HF_HUB_OFFLINE=1).
    #[arg(long, env = "RERANK_MODEL", default_value = "models/all-MiniLM-L6-v2")]
    pub model: String,
    /// Bi-encoder vectors from this embedding service (`.../v1/embeddings`) instead of a local model.
    #[arg(long, env = "RERANK_EMBEDDING_URL")]
    pub embedding_url: Option<String>,
    /// Proxy to this TEI `/rerank` URL instead of running a model.
    #[arg(long, env = "RERANK_REMOTE_URL")]
    pub remote_url: Option<String>,
    /// Bearer key for the remote endpoint.
    #[arg(long, env = "RERANK_REMOTE_API_KEY", hide_env_values = true)]
    pub remote_api_key: Option<String>,
    /// Seconds to wait for a remote endpoint.
    #[arg(long, env = "RERANK_REMOTE_TIMEOUT", default_value_t = 60)]
    pub remote_timeout_secs: u64,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Most texts in one request (422 above).
    #[arg(long, env = "MAX_CLIENT_BATCH_SIZE", default_value_t = 128)]
    pub max_client_batch_size: usize,
}

/// Shared state of the routes.
#[derive(Clone)]
pub struct AppState {
    /// The compute.
    pub reranker: Arc<dyn Reranker>,
    /// Most texts per request.
    pub max_client_batch_size: usize,
}

/// Build the reranker the flags describe.
pub async fn build_reranker(args: &Args) -> anyhow::Result<Arc<dyn Reranker>> {
    let timeout = Duration::from_secs(args.remote_timeout_secs.max(1));
    if let Some(url) = &args.remote_url {
        return Ok(Arc::new(RemoteReranker::new(url, args.remote_api_key.clone(), timeout)?));
    }
    if let (Mode::BiEncoder, Some(url)) = (args.mode, &args.embedding_url) {
        return Ok(Arc::new(BiEncoder::remote(url, timeout)));
    }
    let batch = args.batch.config(args.common.max_concurrent_requests);
    let optional: &[&str] = match args.mode {
        Mode::BiEncoder => hub::SENTENCE_FILES,
        Mode::CrossEncoder => &["tokenizer_config.json"],
    };
    let dir = hub::resolve(&args.model, hub::ENCODER_FILES, optional, &HubConfig::from_env()).await?;
    Ok(match args.mode {
        Mode::BiEncoder => Arc::new(BiEncoder::load(&dir, batch)?),
        Mode::CrossEncoder => Arc::new(CrossEncoder::load(&dir, batch)?),
    })
}

/// The server for a reranker (tests use this with port 0); its `/health` fails while the
/// reranker's model worker is down.
pub fn server(state: AppState, common: &CommonArgs, default_port: u16) -> Server {
    let info = state.reranker.info().clone();
    let tei = routes::tei_info(&state, common.max_concurrent_requests);
    let health = state.reranker.health();
    let batchers = state.reranker.batchers();
    let svc = common
        .apply(MicroService::new("reranking"), default_port)
        .endpoint("/v1/reranking")
        .service_type(ServiceType::Rerank)
        .datatypes("SearchedDoc", "LLMParamsDoc")
        .description(format!("Reranking service ({} {})", info.kind, info.model_id))
        .version(env!("CARGO_PKG_VERSION"));
    use utoipa::OpenApi;
    let server = Server::new(svc, common.server_config())
        .health_check_with(health)
        .info(move || tei.clone())
        .merge(routes::router(state))
        .openapi(routes::RerankApi::openapi());
    batchers.iter().for_each(|b| b.register_into(&server.metrics()));
    server
}

/// Load the model (or connect the proxy) and serve until SIGTERM / ctrl-c.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // A taken port is said now, not after the model has loaded.
    args.common.check_port("reranking", DEFAULT_PORT)?;
    let reranker = build_reranker(&args).await?;
    tracing::info!(info = ?reranker.info(), "reranker ready");
    let state = AppState { reranker, max_client_batch_size: args.max_client_batch_size.max(1) };
    server(state, &args.common, DEFAULT_PORT).bind().await?.serve().await?;
    Ok(())
}
