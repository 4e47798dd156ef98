//! # comps-embedding
//!
//! An embedding microservice a TEI user can switch to: sentence-embedding models run
//! in-process with candle on CPU behind a dynamic batcher, or requests are proxied to a remote
//! TEI (`/embed`) or OpenAI-compatible (`/v1/embeddings`) server. It speaks OpenAI
//! (`POST /v1/embeddings`), OPEA (`TextDoc` → `EmbedDoc` on the same route) and TEI
//! (`POST /embed`, `GET /info`).
//!
//! ```text
//! scripts/fetch-models.sh
//! comps-embedding --model models/all-MiniLM-L6-v2 --port 6006
//! curl localhost:6006/v1/embeddings -d '{"input": ["hello", "world"]}'
//! curl localhost:6006/embed -d '{"inputs": "hello"}'
//! curl localhost:6006/v1/embeddings -d '{"text": "hello"}'      # OPEA EmbedDoc
//! ```

pub mod embedder;
pub mod routes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use comps_core::{CommonArgs, MicroService, Server, ServiceType};
use comps_models::hub::{self, HubConfig};
use comps_models::{BatchArgs, Pooling};

pub use embedder::{EmbedInput, EmbedOptions, Embedded, Embedder, EmbedderInfo, LocalEmbedder, RemoteEmbedder};

/// Default port (OPEA's compose).
pub const DEFAULT_PORT: u16 = 6006;

/// Command-line flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about = "Embedding microservice (OpenAI, OPEA and TEI APIs)")]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Model directory (config.json, model.safetensors, tokenizer.json), or a Hugging Face Hub
    /// id (read from the HF cache; downloaded unless HF_HUB_OFFLINE=1; HF_ENDPOINT, HF_TOKEN).
    #[arg(long, env = "EMBEDDING_MODEL", default_value = "models/all-MiniLM-L6-v2")]
    pub model: String,
    /// Pooling override: mean, cls or last_token (default: the model's 1_Pooling/config.json).
    #[arg(long, env = "EMBEDDING_POOLING")]
    pub pooling: Option<String>,
    /// Proxy to this TEI `/embed` or OpenAI `/v1/embeddings` URL instead of running a model.
    #[arg(long, env = "EMBEDDING_REMOTE_URL")]
    pub remote_url: Option<String>,
    /// Bearer key for the remote endpoint.
    #[arg(long, env = "EMBEDDING_REMOTE_API_KEY", hide_env_values = true)]
    pub remote_api_key: Option<String>,
    /// `model` sent to an OpenAI-compatible remote.
    #[arg(long, env = "EMBEDDING_REMOTE_MODEL")]
    pub remote_model: Option<String>,
    /// Seconds to wait for the remote endpoint.
    #[arg(long, env = "EMBEDDING_REMOTE_TIMEOUT", default_value_t = 60)]
    pub remote_timeout_secs: u64,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Most inputs in one TEI `/embed` or OPEA `TextDoc` request (422 above); OpenAI
    /// `/v1/embeddings` requests take up to OpenAI's 2048.
    #[arg(long, env = "MAX_CLIENT_BATCH_SIZE", default_value_t = 32)]
    pub max_client_batch_size: usize,
    /// The model prompt (from its `config_sentence_transformers.json`) put before inputs of
    /// requests that name none (TEI's --default-prompt-name).
    #[arg(long, env = "DEFAULT_PROMPT_NAME")]
    pub default_prompt_name: Option<String>,
    /// Truncate over-long inputs when a request does not say (TEI's --auto-truncate).
    #[arg(long, env = "AUTO_TRUNCATE", default_value_t = false)]
    pub auto_truncate: bool,
}

/// Shared state of the routes.
#[derive(Clone)]
pub struct AppState {
    /// The compute.
    pub embedder: Arc<dyn Embedder>,
    /// Most inputs per TEI / OPEA request (OpenAI requests have their own limit).
    pub max_client_batch_size: usize,
    /// Default for `truncate`.
    pub auto_truncate: bool,
}

/// Resolve `--model`: a directory, or a Hugging Face Hub id (cached, or downloaded unless
/// `HF_HUB_OFFLINE` is set).
pub async fn resolve_model(model: &str, hub: &HubConfig) -> anyhow::Result<PathBuf> {
    hub::resolve(model, hub::ENCODER_FILES, hub::SENTENCE_FILES, hub)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (for a local model run scripts/fetch-models.sh or pass --model DIR)"))
}

/// Build the embedder the flags describe.
pub async fn build_embedder(args: &Args) -> anyhow::Result<Arc<dyn Embedder>> {
    if let Some(url) = &args.remote_url {
        return Ok(Arc::new(RemoteEmbedder::new(
            url,
            args.remote_api_key.clone(),
            args.remote_model.clone(),
            Duration::from_secs(args.remote_timeout_secs.max(1)),
        )?));
    }
    let dir = resolve_model(&args.model, &HubConfig::from_env()).await?;
    let pooling = match &args.pooling {
        Some(p) => Some(Pooling::parse(p).ok_or_else(|| anyhow::anyhow!("--pooling must be mean, cls or last_token"))?),
        None => None,
    };
    let batch = args.batch.config(args.common.max_concurrent_requests);
    Ok(Arc::new(LocalEmbedder::load(&dir, pooling, batch)?.with_default_prompt(args.default_prompt_name.clone())?))
}

/// The server for an embedder (tests use this with port 0); its `/health` fails while the
/// embedder's model worker is down.
pub fn server(state: AppState, common: &CommonArgs, default_port: u16) -> Server {
    let info = state.embedder.info().clone();
    let tei = routes::tei_info(&state, common.max_concurrent_requests);
    let health = state.embedder.health();
    let batchers = state.embedder.batchers();
    let svc = common
        .apply(MicroService::new("embedding"), default_port)
        .endpoint("/v1/embeddings")
        .service_type(ServiceType::Embedding)
        .datatypes("TextDoc", "EmbedDoc")
        .description(format!("Embedding service ({})", info.model_id))
        .version(env!("CARGO_PKG_VERSION"));
    use utoipa::OpenApi;
    let server = Server::new(svc, common.server_config())
        .health_check_with(health)
        .models(move || vec![comps_core::protocol::ModelCard::new(&info.model_id, "comps-rs", 0)])
        .info(move || tei.clone())
        .merge(routes::router(state))
        .openapi(routes::EmbeddingApi::openapi());
    batchers.iter().for_each(|b| b.register_into(&server.metrics()));
    server
}

/// Load the model (or connect the proxy) and serve until SIGTERM / ctrl-c.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // A taken port is said now, not after the model has loaded.
    args.common.check_port("embedding", DEFAULT_PORT)?;
    let embedder = build_embedder(&args).await?;
    tracing::info!(info = ?embedder.info(), "embedder ready");
    let state = AppState {
        embedder,
        max_client_batch_size: args.max_client_batch_size.max(1),
        auto_truncate: args.auto_truncate,
    };
    server(state, &args.common, DEFAULT_PORT).bind().await?.serve().await?;
    Ok(())
}
