//! # comps-retriever
//!
//! The knowledge side of ChatQnA: OPEA's dataprep routes upload documents (files and links),
//! cut them into chunks, embed them through the embedding service and store them durably;
//! `POST /v1/retrieval` finds the best chunks for a query. The default store is embedded (redb
//! on disk, an in-memory exact or HNSW index); `--pg-url` uses Postgres + pgvector instead.
//!
//! ```text
//! comps-embedding --port 6006 &
//! comps-retriever --embedding-url http://localhost:6006/embed --data-dir data/retriever
//! curl localhost:7000/v1/dataprep/ingest -F files=@notes.md -F chunk_size=500
//! curl localhost:7000/v1/retrieval -d '{"text": "what do the notes say about X?"}'
//! ```

pub mod chunking;
pub mod embed;
pub mod embedded;
pub mod html;
pub mod ingest;
pub mod metrics;
pub mod netcheck;
pub mod pg;
pub mod routes;
pub mod sandbox;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use comps_core::{CommonArgs, MicroService, Server, ServiceType, limits};

pub use chunking::DefaultChunking;
pub use embed::EmbeddingClient;
pub use embedded::EmbeddedStore;
pub use ingest::LinkPolicy;
pub use pg::PgStore;
pub use sandbox::{ExtractLimits, Extractor};
pub use store::{FileRecord, Hit, NewChunk, SearchType, StoreError, VectorStore};

/// Default port (OPEA's compose).
pub const DEFAULT_PORT: u16 = 7000;

/// Command-line flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about = "Retriever microservice with OPEA's dataprep routes")]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The embedding service: `http://host:6006/embed` (TEI form, truncating long chunks) or
    /// `.../v1/embeddings` (OpenAI form).
    #[arg(long, env = "TEI_EMBEDDING_ENDPOINT", default_value = "http://localhost:6006/embed")]
    pub embedding_url: String,
    /// TEI `prompt_name` sent with the chunks being ingested (`passage` for E5 models).
    #[arg(long, env = "EMBEDDING_PASSAGE_PROMPT_NAME")]
    pub passage_prompt_name: Option<String>,
    /// TEI `prompt_name` sent with a query text that comes without its embedding (`query`
    /// for E5 models).
    #[arg(long, env = "EMBEDDING_QUERY_PROMPT_NAME")]
    pub query_prompt_name: Option<String>,
    /// Texts per embedding call.
    #[arg(long, env = "EMBEDDING_BATCH_SIZE", default_value_t = 32)]
    pub embedding_batch: usize,
    /// Seconds to wait for one embedding call.
    #[arg(long, env = "EMBEDDING_TIMEOUT", default_value_t = 120)]
    pub embedding_timeout_secs: u64,
    /// The embedding model's tokenizer (`tokenizer.json`, or the model directory holding it).
    /// With it, a dataprep request that gives no `chunk_size` / `chunk_overlap` is cut into
    /// chunks that fit the embedder's window (`--chunk-tokens`); without it, into OPEA's
    /// 1,500 characters.
    #[arg(long, env = "CHUNK_TOKENIZER")]
    pub chunk_tokenizer: Option<PathBuf>,
    /// Tokens of one chunk with `--chunk-tokenizer`, the special tokens the embedder adds
    /// included: the embedder's window (256 for all-MiniLM-L6-v2).
    #[arg(long, env = "CHUNK_TOKENS", default_value_t = limits::DEFAULT_CHUNK_TOKENS)]
    pub chunk_tokens: usize,
    /// Tokens shared by consecutive chunks with `--chunk-tokenizer`.
    #[arg(long, env = "CHUNK_TOKEN_OVERLAP", default_value_t = limits::DEFAULT_CHUNK_TOKEN_OVERLAP)]
    pub chunk_token_overlap: usize,
    /// Where the embedded store and uploaded files live.
    #[arg(long, env = "RETRIEVER_DATA_DIR", default_value = "data/retriever")]
    pub data_dir: PathBuf,
    /// Use Postgres + pgvector at this URL instead of the embedded store.
    #[arg(long, env = "PG_CONNECTION_STRING")]
    pub pg_url: Option<String>,
    /// Vector size of the pgvector table (`vector(dim)`, fixed when the table is created).
    #[arg(long, env = "PG_VECTOR_DIM", default_value_t = 384)]
    pub pg_dim: usize,
    /// The collection used when a request names none (OPEA's INDEX_NAME).
    #[arg(long, env = "INDEX_NAME", default_value = "rag")]
    pub index_name: String,
    /// Serve only /v1/retrieval (no /v1/dataprep/* routes).
    #[arg(long, env = "DISABLE_DATAPREP", default_value_t = false)]
    pub disable_dataprep: bool,
    /// Largest upload, in bytes (413 above).
    #[arg(long, env = "MAX_UPLOAD_BYTES", default_value_t = limits::DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: usize,
    /// Largest text one uploaded document may expand to, in bytes (413 above).
    #[arg(long, env = "MAX_EXTRACTED_BYTES", default_value_t = limits::DEFAULT_MAX_EXTRACTED_BYTES)]
    pub max_extracted_bytes: usize,
    /// Memory (address space) of the worker process that reads one document, in MiB.
    #[arg(long, env = "EXTRACT_MEMORY_MB", default_value_t = limits::DEFAULT_EXTRACT_MEMORY_MB)]
    pub extract_memory_mb: u64,
    /// Seconds allowed to read one document.
    #[arg(long, env = "EXTRACT_TIMEOUT", default_value_t = limits::DEFAULT_EXTRACT_TIMEOUT_SECS)]
    pub extract_timeout_secs: u64,
    /// Fetch links that resolve to loopback, private or link-local addresses.
    #[arg(long, env = "ALLOW_PRIVATE_LINKS", default_value_t = false)]
    pub allow_private_links: bool,
    /// Seconds allowed to fetch one link.
    #[arg(long, env = "LINK_TIMEOUT", default_value_t = 20)]
    pub link_timeout_secs: u64,
    /// Largest link body, in bytes.
    #[arg(long, env = "MAX_LINK_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_link_bytes: usize,
}

/// Shared state of the routes.
#[derive(Clone)]
pub struct AppState {
    /// The vector store.
    pub store: Arc<dyn VectorStore>,
    /// The embedding service.
    pub embedder: EmbeddingClient,
    /// Default collection.
    pub index_name: String,
    /// Where uploaded files are kept.
    pub upload_dir: PathBuf,
    /// Largest upload.
    pub max_upload_bytes: usize,
    /// Link fetching limits.
    pub links: LinkPolicy,
    /// Reads uploaded documents in worker processes.
    pub extractor: Extractor,
    /// How documents are cut when a request does not say.
    pub chunking: DefaultChunking,
}

impl AppState {
    /// State for `args` over `store` (fails on an unreadable `--chunk-tokenizer`).
    pub fn new(args: &Args, store: Arc<dyn VectorStore>) -> anyhow::Result<Self> {
        let chunking = match &args.chunk_tokenizer {
            Some(p) => {
                DefaultChunking::tokens(chunking::TokenSizer::load(p)?, args.chunk_tokens, args.chunk_token_overlap)?
            }
            None => DefaultChunking::Characters,
        };
        tracing::info!(chunks = %chunking.describe(), "default chunking");
        Ok(Self {
            store,
            embedder: EmbeddingClient::new(
                &args.embedding_url,
                args.embedding_batch,
                Duration::from_secs(args.embedding_timeout_secs.max(1)),
            )
            .with_prompts(embed::Prompts {
                passage: args.passage_prompt_name.clone().filter(|p| !p.is_empty()),
                query: args.query_prompt_name.clone().filter(|p| !p.is_empty()),
            })?,
            index_name: args.index_name.clone(),
            upload_dir: args.data_dir.join("uploads"),
            max_upload_bytes: args.max_upload_bytes,
            links: LinkPolicy {
                allow_private: args.allow_private_links,
                timeout: Duration::from_secs(args.link_timeout_secs.max(1)),
                max_bytes: args.max_link_bytes,
            },
            extractor: Extractor::current(ExtractLimits {
                memory_bytes: args.extract_memory_mb.max(64) * 1024 * 1024,
                timeout: Duration::from_secs(args.extract_timeout_secs.max(1)),
                max_text_bytes: args.max_extracted_bytes,
            }),
            chunking,
        })
    }
}

/// Open the store the flags describe.
pub async fn open_store(args: &Args) -> anyhow::Result<Arc<dyn VectorStore>> {
    if let Some(url) = &args.pg_url {
        return Ok(Arc::new(pg::PgStore::connect(url, args.pg_dim).await?));
    }
    let dir = args.data_dir.join("store");
    Ok(Arc::new(tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir)).await??))
}

/// The server (tests use this with port 0); its store's searches and size are on `/metrics`.
pub fn server(mut state: AppState, common: &CommonArgs, default_port: u16, dataprep: bool) -> Server {
    let store = metrics::MeteredStore::new(state.store.clone());
    state.store = store.clone();
    let svc = common
        .apply(MicroService::new("retriever"), default_port)
        .endpoint("/v1/retrieval")
        .service_type(ServiceType::Retriever)
        .datatypes("EmbedDoc", "SearchedDoc")
        .description(format!("Retriever service ({} store)", state.store.kind()))
        .version(env!("CARGO_PKG_VERSION"));
    let mut cfg = common.server_config();
    cfg.max_body_bytes = cfg.max_body_bytes.max(state.max_upload_bytes + 1024 * 1024);
    use utoipa::OpenApi;
    let mut doc = routes::RetrievalApi::openapi();
    if dataprep {
        doc.merge(routes::DataprepApi::openapi());
    }
    let server = Server::new(svc, cfg).merge(routes::router(state, dataprep)).openapi(doc);
    store.register_into(&server.metrics());
    server
}

/// Open the store and serve until SIGTERM / ctrl-c.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // A taken port is said now, not after the model has loaded.
    args.common.check_port("retriever", DEFAULT_PORT)?;
    let store = open_store(&args).await?;
    let state = AppState::new(&args, store)?;
    server(state, &args.common, DEFAULT_PORT, !args.disable_dataprep).bind().await?.serve().await?;
    Ok(())
}
