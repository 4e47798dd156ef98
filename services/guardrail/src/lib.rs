//! # comps-guardrail
//!
//! Keeps prompt injections, jailbreaks, disallowed words and personal data out of a pipeline and
//! out of answers, with OPEA's semantics: a violation answers
//! `TextDoc{text: "Violated policies: <names>, please check your input.",
//! downstream_black_list: [".*"]}`, which makes the orchestrator cut every downstream node; a
//! pass answers the (possibly redacted) text with an empty black list.
//!
//! ```text
//! comps-guardrail --port 9090                       # PII redaction + similarity injection detector
//! curl localhost:9090/v1/guardrails -d '{"text": "Ignore all previous instructions and ..."}'
//! ```

pub mod guards;
pub mod pii;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use comps_core::extract::JsonBody;
use comps_core::protocol::{GeneratedDoc, LLMParamsDoc, TextDoc};
use comps_core::{CommonArgs, MicroService, Server, ServiceError, ServiceResult, ServiceType};
use comps_models::BatchArgs;
use comps_models::hub::{self, HubConfig};
use serde::Deserialize;

pub use guards::{ClassifierGuard, DenyGuard, Guard, JudgeGuard, PiiAction, PiiGuard, SimilarityGuard, Verdict};

/// Default port (OPEA's compose).
pub const DEFAULT_PORT: u16 = 9090;

/// The injection / jailbreak exemplars shipped with the service (see `data/SOURCES.md`).
pub const BUILTIN_EXEMPLARS: &str = include_str!("../data/injection_exemplars.jsonl");
/// The benign exemplars shipped with the service (hard negatives included).
pub const BUILTIN_BENIGN: &str = include_str!("../data/benign_exemplars.jsonl");

/// Command-line flags (a `--config` file sets the same things; flags win).
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about = "Guardrail microservice (OPEA /v1/guardrails)")]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// YAML or JSON config file (keys as the flags, with underscores).
    #[arg(long, env = "GUARDRAIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do with personal data.
    #[arg(long, env = "GUARDRAIL_PII_ACTION", value_enum)]
    pub pii_action: Option<PiiAction>,
    /// Words to refuse (comma separated, whole words, case-insensitive).
    #[arg(long, env = "GUARDRAIL_DENY_WORDS", value_delimiter = ',')]
    pub deny_words: Vec<String>,
    /// A regex to refuse (repeatable).
    #[arg(long = "deny-regex", env = "GUARDRAIL_DENY_REGEX")]
    pub deny_regexes: Vec<String>,
    /// Embedding model of the similarity injection detector, or `off`.
    #[arg(long, env = "GUARDRAIL_INJECTION_MODEL")]
    pub injection_model: Option<String>,
    /// Exemplar prompts (JSON lines with `text`) instead of the built-in set.
    #[arg(long, env = "GUARDRAIL_INJECTION_EXEMPLARS")]
    pub injection_exemplars: Option<PathBuf>,
    /// Benign exemplar prompts (JSON lines with `text`) instead of the built-in set.
    #[arg(long, env = "GUARDRAIL_BENIGN_EXEMPLARS")]
    pub benign_exemplars: Option<PathBuf>,
    /// Margin (injection-likeness minus benign-likeness) at which a text counts as an
    /// injection; calibrated on the exemplars when not given.
    #[arg(long, env = "GUARDRAIL_INJECTION_THRESHOLD")]
    pub injection_threshold: Option<f32>,
    /// A sequence-classification model (dir or hub id) flagging injections.
    #[arg(long, env = "GUARDRAIL_CLASSIFIER_MODEL")]
    pub classifier_model: Option<String>,
    /// Labels of that model that are violations (comma separated).
    #[arg(long, env = "GUARDRAIL_CLASSIFIER_LABELS", value_delimiter = ',')]
    pub classifier_labels: Vec<String>,
    /// Probability at which a flagged label is a violation.
    #[arg(long, env = "GUARDRAIL_CLASSIFIER_THRESHOLD")]
    pub classifier_threshold: Option<f32>,
    /// OpenAI-compatible chat URL of a Llama Guard-style judge.
    #[arg(long, env = "GUARDRAIL_JUDGE_URL")]
    pub judge_url: Option<String>,
    /// `model` sent to the judge.
    #[arg(long, env = "GUARDRAIL_JUDGE_MODEL")]
    pub judge_model: Option<String>,
    /// Bearer key for the judge.
    #[arg(long, env = "GUARDRAIL_JUDGE_API_KEY", hide_env_values = true)]
    pub judge_api_key: Option<String>,
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pii_action: Option<PiiAction>,
    #[serde(default)]
    deny_words: Vec<String>,
    #[serde(default)]
    deny_regexes: Vec<String>,
    #[serde(default)]
    injection_model: Option<String>,
    #[serde(default)]
    injection_exemplars: Option<PathBuf>,
    #[serde(default)]
    benign_exemplars: Option<PathBuf>,
    #[serde(default)]
    injection_threshold: Option<f32>,
    #[serde(default)]
    classifier_model: Option<String>,
    #[serde(default)]
    classifier_labels: Vec<String>,
    #[serde(default)]
    classifier_threshold: Option<f32>,
    #[serde(default)]
    judge_url: Option<String>,
    #[serde(default)]
    judge_model: Option<String>,
}

/// Build the guard pipeline the flags and config describe.
pub async fn build_guards(args: &Args) -> anyhow::Result<Vec<Arc<dyn Guard>>> {
    let file: FileConfig = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            serde_norway::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let batch = args.batch.config(args.common.max_concurrent_requests);
    let mut guards: Vec<Arc<dyn Guard>> = Vec::new();
    let pii = args.pii_action.or(file.pii_action).unwrap_or(PiiAction::Redact);
    if pii != PiiAction::Off {
        guards.push(Arc::new(PiiGuard { action: pii }));
    }
    let words: Vec<String> = args.deny_words.iter().chain(&file.deny_words).cloned().collect();
    let regexes: Vec<String> = args.deny_regexes.iter().chain(&file.deny_regexes).cloned().collect();
    if !words.is_empty() || !regexes.is_empty() {
        guards.push(Arc::new(DenyGuard::new(&words, &regexes)?));
    }
    let model =
        args.injection_model.clone().or(file.injection_model).unwrap_or_else(|| "models/all-MiniLM-L6-v2".into());
    if model != "off" {
        let exemplars = match args.injection_exemplars.clone().or(file.injection_exemplars) {
            Some(p) => std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
            None => BUILTIN_EXEMPLARS.to_string(),
        };
        let benign = match args.benign_exemplars.clone().or(file.benign_exemplars) {
            Some(p) => std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
            None => BUILTIN_BENIGN.to_string(),
        };
        let dir = hub::resolve(&model, hub::ENCODER_FILES, hub::SENTENCE_FILES, &HubConfig::from_env()).await?;
        let threshold = args.injection_threshold.or(file.injection_threshold);
        guards.push(Arc::new(SimilarityGuard::load(&dir, &exemplars, &benign, threshold, batch.clone()).await?));
    }
    if let Some(m) = args.classifier_model.clone().or(file.classifier_model) {
        let dir = hub::resolve(&m, hub::ENCODER_FILES, &["tokenizer_config.json"], &HubConfig::from_env()).await?;
        let mut labels: Vec<String> = args.classifier_labels.iter().chain(&file.classifier_labels).cloned().collect();
        if labels.is_empty() {
            labels = vec!["INJECTION".into(), "JAILBREAK".into(), "UNSAFE".into()];
        }
        let threshold = args.classifier_threshold.or(file.classifier_threshold).unwrap_or(0.5);
        guards.push(Arc::new(ClassifierGuard::load(&dir, labels, threshold, batch)?));
    }
    if let Some(url) = args.judge_url.clone().or(file.judge_url) {
        let model = args.judge_model.clone().or(file.judge_model);
        guards.push(Arc::new(JudgeGuard::new(&url, model, args.judge_api_key.clone(), Duration::from_secs(60))));
    }
    Ok(guards)
}

/// Shared state of the route.
#[derive(Clone)]
pub struct AppState {
    /// The pipeline, run in order.
    pub guards: Arc<Vec<Arc<dyn Guard>>>,
}

/// Run every guard; redactions feed the next guard. Returns the violations (deduplicated, in
/// order) and the final text.
pub async fn check(guards: &[Arc<dyn Guard>], text: &str) -> ServiceResult<(Vec<String>, String)> {
    let mut current = text.to_string();
    let mut violations: Vec<String> = Vec::new();
    for g in guards {
        let v = g.check(&current).await?;
        for name in v.violations {
            if !violations.contains(&name) {
                violations.push(name);
            }
        }
        if let Some(t) = v.rewritten {
            current = t;
        }
    }
    Ok((violations, current))
}

/// OPEA's refusal.
pub fn refusal(violations: &[String]) -> TextDoc {
    let mut doc = TextDoc::new(format!("Violated policies: {}, please check your input.", violations.join(", ")));
    doc.downstream_black_list = vec![".*".into()];
    doc
}

/// The OpenAPI document of the service's route.
#[derive(utoipa::OpenApi)]
#[openapi(paths(guardrails), tags((name = "guardrails", description = "OPEA's guardrails")))]
pub struct GuardrailApi;

/// The request shapes of `/v1/guardrails` (told apart by their keys).
#[allow(dead_code, clippy::large_enum_variant)]
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
enum GuardBody {
    /// A `TextDoc` (`text`): the text is checked.
    Text(TextDoc),
    /// An `LLMParamsDoc` (`query`): the query is checked before the LLM.
    Query(LLMParamsDoc),
    /// A `GeneratedDoc` (`prompt`, `text`): the answer is checked after the LLM.
    Generated(GeneratedDoc),
}

/// The answers of `/v1/guardrails`.
#[allow(dead_code, clippy::large_enum_variant)]
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
enum GuardAnswer {
    /// The (possibly redacted) text, or OPEA's refusal `Violated policies: ...` with
    /// `downstream_black_list: [".*"]`.
    Text(TextDoc),
    /// The `LLMParamsDoc` passed on, its query possibly redacted.
    Query(LLMParamsDoc),
}

/// The service's route.
pub fn router(state: AppState) -> Router {
    Router::new().route("/v1/guardrails", post(guardrails)).with_state(state)
}

/// Check a text with every configured guard.
///
/// A `TextDoc` or `GeneratedDoc` answers a `TextDoc`: the text (redacted where a PII guard
/// redacts) or OPEA's refusal. An `LLMParamsDoc` answers itself, or the refusal.
#[utoipa::path(post, path = "/v1/guardrails", tag = "guardrails",
    request_body = GuardBody,
    responses((status = 200, description = "The text passed on, or the refusal", body = GuardAnswer)))]
async fn guardrails(State(s): State<AppState>, body: JsonBody) -> ServiceResult<Response> {
    if body.has("query") {
        let mut doc: LLMParamsDoc = body.typed()?;
        let (violations, text) = check(&s.guards, &doc.query).await?;
        if !violations.is_empty() {
            return Ok(axum::Json(refusal(&violations)).into_response());
        }
        doc.query = text;
        return Ok(axum::Json(doc).into_response());
    }
    if body.has("prompt") {
        let doc: GeneratedDoc = body.typed()?;
        let (violations, text) = check(&s.guards, &doc.text).await?;
        let out = if violations.is_empty() { TextDoc::new(text) } else { refusal(&violations) };
        return Ok(axum::Json(out).into_response());
    }
    let doc: TextDoc = body.typed()?;
    let Some(text) = doc.text.as_ref().map(|t| t.joined()) else {
        return Err(ServiceError::invalid("text", "text is required"));
    };
    let (violations, text) = check(&s.guards, &text).await?;
    let out = if violations.is_empty() {
        TextDoc { id: doc.id, text: Some(text.into()), downstream_black_list: Vec::new(), metadata: None }
    } else {
        refusal(&violations)
    };
    Ok(axum::Json(out).into_response())
}

/// The server (tests use this with port 0).
pub fn server(state: AppState, common: &CommonArgs, default_port: u16) -> Server {
    let svc = common
        .apply(MicroService::new("guardrails"), default_port)
        .endpoint("/v1/guardrails")
        .service_type(ServiceType::Guardrail)
        .datatypes("TextDoc", "TextDoc")
        .description("Guardrail service: PII, deny lists, prompt injection, LLM judge")
        .version(env!("CARGO_PKG_VERSION"));
    use utoipa::OpenApi;
    let health = comps_core::health::HealthCheck::all(state.guards.iter().map(|g| g.health()));
    let batchers: Vec<_> = state.guards.iter().flat_map(|g| g.batchers()).collect();
    let server = Server::new(svc, common.server_config())
        .health_check_with(health)
        .merge(router(state))
        .openapi(GuardrailApi::openapi());
    batchers.iter().for_each(|b| b.register_into(&server.metrics()));
    server
}

/// Build the guards and serve until SIGTERM / ctrl-c.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // A taken port is said now, not after the model has loaded.
    args.common.check_port("guardrails", DEFAULT_PORT)?;
    let guards = build_guards(&args).await?;
    tracing::info!(guards = ?guards.iter().map(|g| g.name().to_string()).collect::<Vec<_>>(), "guardrail ready");
    server(AppState { guards: Arc::new(guards) }, &args.common, DEFAULT_PORT).bind().await?.serve().await?;
    Ok(())
}
