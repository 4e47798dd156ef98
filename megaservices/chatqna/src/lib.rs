//! # comps-chatqna
//!
//! The ChatQnA RAG megaservice on the comps-core orchestrator: the question is embedded, the
//! nearest chunks are retrieved and reranked, and the LLM answers from them.
//!
//! ```text
//! chatqna --port 8888          # backends from OPEA's env names, or flags; see --help
//! curl -N localhost:8888/v1/chatqna -H 'content-type: application/json' \
//!      -d '{"messages": "What is the revenue of Nike in 2023?"}'
//! ```
//!
//! Routes: `POST /v1/chatqna` (streams by default, OPEA's `data: b'...'` framing; `"stream":
//! false` gives a `chat.completion` with `model: "chatqna"`), `POST /v1/chat/completions` (the
//! same pipeline as an OpenAI model, standard chunks), `GET /v1/models`, and
//! `/v1/dataprep/*` forwarded to the dataprep service (the retriever) so a UI needs one origin.
//!
//! Variants: the default graph is embedding → retriever → rerank → llm; `--without-rerank`
//! drops rerank, `--with-guardrails` puts an input guardrail first (a refused question never
//! reaches the LLM), `--with-output-guard` checks the answer sentence by sentence.

pub mod hooks;
pub mod prompt;
pub mod request;
pub mod routes;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use comps_core::client::Upstream;
use comps_core::orchestrator::NodePolicy;
use comps_core::{CommonArgs, MicroService, Server, ServiceOrchestrator, ServiceRoleType, ServiceType};

pub use hooks::{ChatQnaHooks, Framing, MODEL};
pub use request::RequestContext;

/// Command-line flags. Backend addresses take OPEA's ChatQnA environment names.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about = "ChatQnA RAG megaservice")]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Port to serve on when `--port` / `COMPS_PORT` is not given (OPEA's name).
    #[arg(long, env = "MEGA_SERVICE_PORT", default_value_t = 8888)]
    pub mega_service_port: u16,

    /// Embedding server host (TEI `/embed` or ours).
    #[arg(long, env = "EMBEDDING_SERVER_HOST_IP", default_value = "127.0.0.1")]
    pub embedding_host: String,
    /// Embedding server port.
    #[arg(long, env = "EMBEDDING_SERVER_PORT", default_value_t = 6006)]
    pub embedding_port: u16,
    /// Embedding route (TEI shape: `{"inputs"}` -> `[[f32]]`).
    #[arg(long, env = "EMBEDDING_SERVER_ENDPOINT", default_value = "/embed")]
    pub embedding_endpoint: String,

    /// TEI `prompt_name` sent with the question to the embedding server (`query` for E5
    /// models, whose documents the retriever embeds with `passage`).
    #[arg(long, env = "EMBEDDING_QUERY_PROMPT_NAME")]
    pub embedding_prompt_name: Option<String>,

    /// Retriever service host.
    #[arg(long, env = "RETRIEVER_SERVICE_HOST_IP", default_value = "127.0.0.1")]
    pub retriever_host: String,
    /// Retriever service port.
    #[arg(long, env = "RETRIEVER_SERVICE_PORT", default_value_t = 7000)]
    pub retriever_port: u16,
    /// Retriever route (OPEA `EmbedDoc` -> `SearchedDoc`).
    #[arg(long, env = "RETRIEVER_SERVICE_ENDPOINT", default_value = "/v1/retrieval")]
    pub retriever_endpoint: String,

    /// Rerank server host (TEI `/rerank` or ours).
    #[arg(long, env = "RERANK_SERVER_HOST_IP", default_value = "127.0.0.1")]
    pub rerank_host: String,
    /// Rerank server port.
    #[arg(long, env = "RERANK_SERVER_PORT", default_value_t = 8808)]
    pub rerank_port: u16,
    /// Rerank route (TEI shape: `{"query", "texts"}` -> `[{"index", "score"}]`).
    #[arg(long, env = "RERANK_SERVER_ENDPOINT", default_value = "/rerank")]
    pub rerank_endpoint: String,

    /// LLM server host (any OpenAI-compatible server: vLLM, TGI, ours).
    #[arg(long, env = "LLM_SERVER_HOST_IP", default_value = "127.0.0.1")]
    pub llm_host: String,
    /// LLM server port.
    #[arg(long, env = "LLM_SERVER_PORT", default_value_t = 9009)]
    pub llm_port: u16,
    /// LLM route.
    #[arg(long, env = "LLM_SERVER_ENDPOINT", default_value = "/v1/chat/completions")]
    pub llm_endpoint: String,
    /// Model name sent to the LLM when the request names none (vLLM requires the served name).
    #[arg(long, env = "LLM_MODEL")]
    pub llm_model: Option<String>,
    /// Bearer key for the LLM server.
    #[arg(long, env = "LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,

    /// Guardrail service host.
    #[arg(long, env = "GUARDRAIL_SERVICE_HOST_IP", default_value = "127.0.0.1")]
    pub guardrail_host: String,
    /// Guardrail service port.
    #[arg(long, env = "GUARDRAIL_SERVICE_PORT", default_value_t = 9090)]
    pub guardrail_port: u16,
    /// Guardrail route (`TextDoc` -> `TextDoc`).
    #[arg(long, env = "GUARDRAIL_SERVICE_ENDPOINT", default_value = "/v1/guardrails")]
    pub guardrail_endpoint: String,

    /// Dataprep service host (`/v1/dataprep/*` is forwarded there); the retriever's by default.
    #[arg(long, env = "DATAPREP_SERVICE_HOST_IP")]
    pub dataprep_host: Option<String>,
    /// Dataprep service port; the retriever's by default.
    #[arg(long, env = "DATAPREP_SERVICE_PORT")]
    pub dataprep_port: Option<u16>,

    /// Leave rerank out: the retriever's top `k` chunks go to the LLM.
    #[arg(long, env = "CHATQNA_WITHOUT_RERANK")]
    pub without_rerank: bool,
    /// Check the question with the guardrail service before anything else.
    #[arg(long, env = "CHATQNA_WITH_GUARDRAILS")]
    pub with_guardrails: bool,
    /// Check the answer with the guardrail service, sentence by sentence as it streams.
    #[arg(long, env = "CHATQNA_WITH_OUTPUT_GUARD")]
    pub with_output_guard: bool,

    /// Reranked chunks given to the LLM when a request sets no `top_n` (OPEA's default is 1).
    #[arg(long, env = "CHATQNA_TOP_N", default_value_t = 1)]
    pub top_n: u32,
    /// The RAG prompt: `opea` (OPEA ChatQnA's English / Chinese templates, exactly) or `comps`
    /// (a shorter wording; a bare question when nothing was retrieved).
    #[arg(long, env = "CHATQNA_RAG_TEMPLATE", default_value = "opea")]
    pub rag_template: prompt::RagTemplate,

    /// Timeout of each call to a backend (for a stream: until its headers), in seconds.
    #[arg(long, env = "CHATQNA_NODE_TIMEOUT", default_value_t = 120)]
    pub node_timeout_secs: u64,
    /// Longest wait between two events of the LLM's stream, in seconds.
    #[arg(long, env = "CHATQNA_STREAM_IDLE_TIMEOUT", default_value_t = 120)]
    pub stream_idle_timeout_secs: u64,
    /// Extra attempts after a connect error or a 502/503/504 from a backend.
    #[arg(long, env = "CHATQNA_RETRIES", default_value_t = 2)]
    pub retries: u32,
    /// Timeout of a forwarded dataprep call (ingesting embeds every chunk), in seconds.
    #[arg(long, env = "CHATQNA_DATAPREP_TIMEOUT", default_value_t = 600)]
    pub dataprep_timeout_secs: u64,
}

fn url(host: &str, port: u16, endpoint: &str) -> String {
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    let sep = if endpoint.is_empty() || endpoint.starts_with('/') { "" } else { "/" };
    format!("http://{host}:{port}{sep}{endpoint}")
}

fn node(name: &str, ty: ServiceType, host: &str, port: u16, endpoint: &str) -> anyhow::Result<MicroService> {
    let u = url(host, port, endpoint);
    let svc = MicroService::from_url(name, &u).map_err(|e| anyhow::anyhow!("{name} address {u}: {e}"))?;
    Ok(svc.service_type(ty))
}

/// The pipeline's graph for these flags.
pub fn orchestrator(args: &Args) -> anyhow::Result<ServiceOrchestrator> {
    let policy = NodePolicy {
        timeout: Duration::from_secs(args.node_timeout_secs.max(1)),
        stream_idle_timeout: Duration::from_secs(args.stream_idle_timeout_secs.max(1)),
        retries: args.retries,
        ..NodePolicy::default()
    };
    let embedding =
        node("embedding", ServiceType::Embedding, &args.embedding_host, args.embedding_port, &args.embedding_endpoint)?;
    let retriever =
        node("retriever", ServiceType::Retriever, &args.retriever_host, args.retriever_port, &args.retriever_endpoint)?;
    let rerank = node("rerank", ServiceType::Rerank, &args.rerank_host, args.rerank_port, &args.rerank_endpoint)?;
    let llm = node("llm", ServiceType::Llm, &args.llm_host, args.llm_port, &args.llm_endpoint)?
        .api_key(args.llm_api_key.clone().filter(|k| !k.is_empty()));
    let guard = |name: &str| {
        node(name, ServiceType::Guardrail, &args.guardrail_host, args.guardrail_port, &args.guardrail_endpoint)
    };

    let mut chain = Vec::new();
    if args.with_guardrails {
        chain.push(guard("guardrail_in")?);
    }
    chain.push(embedding);
    chain.push(retriever);
    if !args.without_rerank {
        chain.push(rerank);
    }
    chain.push(llm);
    if args.with_output_guard {
        chain.push(guard("guardrail_out")?);
    }

    let mut orch = ServiceOrchestrator::new()
        .with_hooks(Arc::new(
            ChatQnaHooks::new(args.rag_template).with_query_prompt(args.embedding_prompt_name.clone()),
        ))
        .with_default_policy(policy);
    for s in &chain {
        orch.add(s.clone())?;
    }
    for pair in chain.windows(2) {
        orch.flow_to(&pair[0], &pair[1])?;
    }
    Ok(orch)
}

/// The dataprep base URL (`http://host:port`) these flags point at.
pub fn dataprep_base(args: &Args) -> String {
    let host = args.dataprep_host.clone().unwrap_or_else(|| args.retriever_host.clone());
    let port = args.dataprep_port.unwrap_or(args.retriever_port);
    url(&host, port, "")
}

/// The megaservice's server (tests use this with port 0).
pub fn server(args: &Args) -> anyhow::Result<Server> {
    let orch = orchestrator(args)?;
    tracing::info!(nodes = ?orch.graph().nodes(), edges = ?orch.graph().edges(), "ChatQnA pipeline");
    let port = args.common.port.unwrap_or(args.mega_service_port);
    let service = MicroService::new("chatqna")
        .host(args.common.host.clone())
        .port(port)
        .endpoint("/v1/chatqna")
        .service_type(ServiceType::Gateway)
        .service_role(ServiceRoleType::MegaService)
        .description("ChatQnA RAG megaservice");
    let server = Server::new(service, args.common.server_config());
    orch.metrics().register_into(&server.metrics());
    let state = routes::AppState {
        orch: Arc::new(orch),
        defaults: request::Defaults {
            model: args.llm_model.clone().filter(|m| !m.is_empty()),
            top_n: args.top_n.max(1),
        },
        dataprep: Arc::new(Upstream::new(
            "dataprep",
            dataprep_base(args),
            Duration::from_secs(args.dataprep_timeout_secs.max(1)),
        )),
    };
    let rerank = !args.without_rerank;
    let ui_config = ui::config(server.requires_api_key(), rerank, state.defaults.top_n);
    use utoipa::OpenApi;
    Ok(ui::routes(server, ui_config)
        .models(|| vec![comps_core::protocol::ModelCard::new(hooks::MODEL, "comps-rs", 0)])
        .merge(routes::router(state))
        .openapi(routes::ChatQnaApi::openapi()))
}

/// Serve until SIGTERM / ctrl-c.
pub async fn run(args: Args) -> anyhow::Result<()> {
    server(&args)?.bind().await?.serve().await?;
    Ok(())
}
