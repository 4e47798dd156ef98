//! What answers chat requests ([`Llm`]): a local model behind the scheduler, answering the typed
//! request, or a proxy to any OpenAI-compatible server, forwarding the client's body as it came.

use crate::metrics::{LlmMetrics, Metered, gen_ai_span};
use std::sync::Arc;
use std::time::Duration;

use comps_core::client::{ChatClient, Upstream};
use comps_core::health::HealthCheck;
use comps_core::protocol::{
    ChatCompletionRequest, ChatCompletionResponse, ChatCompletionResponseStreamChoice, ChatCompletionStreamResponse,
    CompletionResponse, ContentPart, DeltaMessage, FinishReason, MessageContent, Messages, ModelCard, Prompt,
    UsageInfo, completion_id, unix_now,
};
use comps_core::sse::EventStream;
use comps_core::{ServiceError, ServiceResult};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::template::{ChatTemplate, TemplateMessage, fill_prompt_template, is_prompt_template};
use comps_models::ModelError;
use comps_models::llm::engine::{Engine, EngineConfig, GenDone, GenEvent, GenRequest};
use comps_models::llm::model::ChatModel;
use comps_models::llm::sampling::SamplingParams;

/// An answer: one JSON body, or the payloads of `chat.completion.chunk` events.
pub enum Completion {
    /// A `chat.completion` object.
    Full(Value),
    /// Chunk payloads (JSON text), `[DONE]` not included.
    Stream(EventStream),
}

/// What answers this service's chat requests.
#[derive(Clone)]
pub enum Llm {
    /// A model in this process, answering the typed request.
    Local(Arc<LocalGenerator>),
    /// An OpenAI-compatible server the client's body is forwarded to, with the fields this
    /// service does not model (vLLM's and others' extensions) as they came.
    Proxy(Arc<RemoteGenerator>),
}

impl From<Arc<LocalGenerator>> for Llm {
    fn from(g: Arc<LocalGenerator>) -> Self {
        Self::Local(g)
    }
}

impl From<Arc<RemoteGenerator>> for Llm {
    fn from(g: Arc<RemoteGenerator>) -> Self {
        Self::Proxy(g)
    }
}

impl Llm {
    /// The served model name.
    pub fn model_name(&self) -> String {
        match self {
            Self::Local(g) => g.model.name.clone(),
            Self::Proxy(p) => p.model_name(),
        }
    }

    /// The `data` entries of `GET /v1/models`.
    pub fn models(&self) -> Vec<ModelCard> {
        match self {
            Self::Local(g) => g.models(),
            Self::Proxy(p) => vec![ModelCard::new(p.model_name(), "remote", unix_now())],
        }
    }

    /// The `/health` check: the local engine's; a proxy has nothing local to watch.
    pub fn health(&self) -> HealthCheck {
        match self {
            Self::Local(g) => g.engine.health(),
            Self::Proxy(_) => HealthCheck::always_healthy(),
        }
    }

    /// Answer a validated request; `body` is what the client sent (a proxy forwards it).
    pub async fn chat(&self, req: ChatCompletionRequest, body: Value) -> ServiceResult<Completion> {
        match self {
            Self::Local(g) => g.chat(req).await,
            Self::Proxy(p) => p.forward(&req, body).await,
        }
    }

    /// Answer a legacy completion: `prompt` and the sampling settings `req` read from the
    /// body; `body` is what the client sent (a proxy forwards it to `/v1/completions`).
    pub async fn complete(&self, prompt: Prompt, req: ChatCompletionRequest, body: Value) -> ServiceResult<Completion> {
        match self {
            Self::Local(g) => g.complete(prompt, req).await,
            Self::Proxy(p) => p.forward_completion(&req, body).await,
        }
    }
}

/// Options of the request that this service does not implement are refused, never ignored.
pub fn refuse_unsupported(req: &ChatCompletionRequest) -> ServiceResult<()> {
    let unsupported = |field: &str, what: &str| {
        Err(ServiceError::invalid(field, format!("{what} is not supported by this service - '{field}'")))
    };
    if req.n.unwrap_or(1) > 1 {
        return unsupported("n", "generating more than one choice (n > 1)");
    }
    if req.best_of.unwrap_or(1) > 1 {
        return unsupported("best_of", "best_of > 1");
    }
    if req.logprobs == Some(true) {
        return unsupported("logprobs", "returning log-probabilities");
    }
    if req.top_logprobs.unwrap_or(0) > 0 {
        return unsupported("top_logprobs", "returning log-probabilities");
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return unsupported("tools", "tool calling");
    }
    if req.echo == Some(true) {
        return unsupported("echo", "echo");
    }
    if req.suffix.is_some() {
        return unsupported("suffix", "suffix");
    }
    if let Some(f) = &req.response_format
        && f.r#type != "text"
    {
        return unsupported("response_format", &format!("response_format '{}'", f.r#type));
    }
    Ok(())
}

/// A model run in this process.
pub struct LocalGenerator {
    model: Arc<ChatModel>,
    template: Option<ChatTemplate>,
    engine: Engine,
    /// The `model` names a request may use besides none (the first is the model's name).
    names: Vec<String>,
    metrics: LlmMetrics,
}

/// A bare prompt for `{context}`-less RAG requests.
const DOCUMENTS_PROMPT: &str = "Answer the question using the documents below when they are relevant.\n\nDocuments:\n{context}\n\nQuestion: {question}";

impl LocalGenerator {
    /// Start the scheduler for `model`. `template` overrides the model's chat template.
    pub fn new(model: ChatModel, template: Option<String>, cfg: EngineConfig) -> anyhow::Result<Self> {
        let source = template.or_else(|| model.chat_template.clone());
        let template = match source {
            Some(src) => Some(
                ChatTemplate::new(&src, &model.bos_token, &model.eos_token)
                    .map_err(|e| anyhow::anyhow!("the chat template does not compile: {e}"))?,
            ),
            None => {
                tracing::warn!("the model has no chat template; prompts are the messages' text joined");
                None
            }
        };
        let model = Arc::new(model);
        let engine = Engine::start(model.clone(), cfg)?;
        let names = vec![model.name.clone()];
        let metrics = LlmMetrics::new(&model.name, engine.load_handle());
        Ok(Self { model, template, engine, names, metrics })
    }

    /// Its metrics (time to first token, inter-token latency, tokens, the scheduler's gauges).
    pub fn metrics(&self) -> &LlmMetrics {
        &self.metrics
    }

    /// Also answer requests naming one of `aliases` (the served name stays the model's).
    pub fn with_aliases(mut self, aliases: impl IntoIterator<Item = String>) -> Self {
        for a in aliases {
            if !a.is_empty() && !self.names.contains(&a) {
                self.names.push(a);
            }
        }
        self
    }

    /// A request naming a model this service does not serve is refused, as vLLM refuses it:
    /// a deployment pointing at the wrong model should fail loudly, not answer with another.
    fn check_model(&self, req: &ChatCompletionRequest) -> ServiceResult<()> {
        match req.model.as_deref() {
            None | Some("") => Ok(()),
            Some(m) if self.names.iter().any(|n| n == m) => Ok(()),
            Some(m) => Err(ServiceError::ModelNotFound(format!(
                "The model `{}` does not exist: this service serves {} - 'model'",
                comps_core::limits::excerpt(m),
                self.names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// The loaded model.
    pub fn model(&self) -> &ChatModel {
        &self.model
    }

    /// The scheduler.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The messages of a request as the template sees them (roles and content checked).
    pub fn messages(req: &ChatCompletionRequest) -> ServiceResult<Vec<TemplateMessage>> {
        let list = match &req.messages {
            Messages::Text(t) => return Ok(vec![TemplateMessage { role: "user".into(), content: t.clone() }]),
            Messages::List(list) => list,
        };
        let mut out = Vec::with_capacity(list.len());
        for (i, m) in list.iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
                return Err(ServiceError::invalid(
                    format!("messages.{i}.role"),
                    format!("unknown role '{}': expected system, user or assistant - 'messages.{i}.role'", m.role),
                ));
            }
            let content = match &m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t.clone(),
                Some(MessageContent::Parts(parts)) => {
                    let mut text = Vec::new();
                    for p in parts {
                        match p {
                            ContentPart::Text { text: t } => text.push(t.as_str()),
                            ContentPart::ImageUrl { .. } => {
                                return Err(ServiceError::invalid(
                                    format!("messages.{i}.content"),
                                    format!("image input is not supported by this text model - 'messages.{i}.content'"),
                                ));
                            }
                        }
                    }
                    text.join("\n")
                }
            };
            out.push(TemplateMessage { role: m.role.clone(), content });
        }
        Ok(out)
    }

    /// The prompt text a request renders to.
    pub fn render_prompt(&self, req: &ChatCompletionRequest) -> ServiceResult<String> {
        let mut messages = Self::messages(req)?;
        let docs: Vec<String> = req.documents.iter().flatten().map(|d| d.text()).filter(|t| !t.is_empty()).collect();
        let request_template = req.chat_template.as_deref().filter(|t| !t.trim().is_empty());
        let rag_template = match request_template {
            Some(t) if is_prompt_template(t) => Some(t),
            _ if !docs.is_empty() => Some(DOCUMENTS_PROMPT),
            _ => None,
        };
        if let Some(rag) = rag_template
            && let Some(last) = messages.iter_mut().rev().find(|m| m.role == "user")
        {
            last.content = fill_prompt_template(rag, &docs.join("\n"), &last.content);
        }
        let jinja = match request_template {
            Some(t) if !is_prompt_template(t) => {
                Some(ChatTemplate::new(t, &self.model.bos_token, &self.model.eos_token).map_err(|e| {
                    ServiceError::invalid("chat_template", format!("chat_template does not compile: {e}"))
                })?)
            }
            _ => None,
        };
        let add_generation_prompt = req.add_generation_prompt.unwrap_or(true);
        let kwargs = req.chat_template_kwargs.as_ref();
        match jinja.as_ref().or(self.template.as_ref()) {
            Some(t) => t.render(&messages, add_generation_prompt, kwargs).map_err(|e| {
                let field = if jinja.is_some() { "chat_template" } else { "messages" };
                ServiceError::invalid(field, format!("the chat template could not render these messages: {e}"))
            }),
            None => Ok(messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")),
        }
    }

    /// Tokenize a prompt (templates carry their own special tokens).
    pub fn tokenize(&self, prompt: &str) -> ServiceResult<Vec<u32>> {
        tokenize_with(&self.model, prompt, false)
    }

    fn sampling(&self, req: &ChatCompletionRequest) -> ServiceResult<SamplingParams> {
        let mut logit_bias = Vec::new();
        for (k, v) in req.logit_bias.iter().flatten() {
            let id: u32 = k
                .parse()
                .ok()
                .filter(|&id| (id as usize) < self.model.tokenizer.get_vocab_size(true))
                .ok_or_else(|| {
                    ServiceError::invalid("logit_bias", format!("'{k}' is not a token id of this model - 'logit_bias'"))
                })?;
            let bias = v.as_f64().filter(|b| (-100.0..=100.0).contains(b)).ok_or_else(|| {
                ServiceError::invalid(
                    "logit_bias",
                    format!("the bias of token {k} must be a number in [-100, 100] - 'logit_bias'"),
                )
            })?;
            logit_bias.push((id, bias as f32));
        }
        Ok(SamplingParams {
            temperature: req.temperature.unwrap_or(1.0) as f32,
            top_p: req.top_p.unwrap_or(1.0) as f32,
            top_k: req.top_k.filter(|&k| k > 0).map(|k| k as usize).unwrap_or(0),
            typical_p: req.typical_p.unwrap_or(1.0) as f32,
            repetition_penalty: req.repetition_penalty.unwrap_or(1.0) as f32,
            frequency_penalty: req.frequency_penalty.unwrap_or(0.0) as f32,
            presence_penalty: req.presence_penalty.unwrap_or(0.0) as f32,
            logit_bias,
            seed: req.seed.unwrap_or_else(rand::random),
        })
    }

    /// Everything a request needs before it is queued: prompt, token budget, sampling.
    /// Long RAG prompts take a while to tokenize: that runs on the blocking pool.
    pub async fn prepare(&self, req: &ChatCompletionRequest) -> ServiceResult<GenRequest> {
        refuse_unsupported(req)?;
        let prompt = self.render_prompt(req)?;
        tracing::debug!(%prompt, "rendered prompt");
        // Template output carries its own special tokens: none are added.
        let prompt_ids = self.tokenize_off_runtime(prompt, false).await?;
        self.gen_request(prompt_ids, req, "messages")
    }

    async fn tokenize_off_runtime(&self, prompt: String, special: bool) -> ServiceResult<Vec<u32>> {
        let model = self.model.clone();
        comps_core::telemetry::tokenize_off_runtime(1, move || tokenize_with(&model, &prompt, special))
            .await
            .map_err(|e| ServiceError::Internal(format!("tokenizing the prompt: {e}")))?
    }

    /// The queued form of a request whose prompt is `prompt_ids` (`field`: where the prompt
    /// came from, named in errors): its length and token budget checked against the context.
    fn gen_request(&self, prompt_ids: Vec<u32>, req: &ChatCompletionRequest, field: &str) -> ServiceResult<GenRequest> {
        let ctx = self.model.context_len;
        if prompt_ids.is_empty() {
            return Err(ServiceError::invalid(field, format!("the prompt is empty - '{field}'")));
        }
        if prompt_ids.len() >= ctx {
            return Err(ServiceError::invalid(
                field,
                format!(
                    "the prompt is {} tokens long, and this model's context window is {ctx} tokens - '{field}'",
                    prompt_ids.len()
                ),
            ));
        }
        let max_tokens = req.max_tokens.unwrap_or(1024) as usize;
        if prompt_ids.len() + max_tokens > ctx {
            return Err(ServiceError::invalid(
                "max_tokens",
                format!(
                    "the context window is {ctx} tokens, and {} (prompt) + {max_tokens} (max_tokens) exceeds it: ask for at most {} tokens - 'max_tokens'",
                    prompt_ids.len(),
                    ctx - prompt_ids.len()
                ),
            ));
        }
        let ignore_eos = req.ignore_eos.unwrap_or(false);
        tracing::info!(prompt_tokens = prompt_ids.len(), max_tokens, "generation requested");
        Ok(GenRequest {
            prompt_ids,
            max_tokens,
            sampling: self.sampling(req)?,
            stop: req.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default(),
            ignore_eos,
        })
    }

    /// The token ids of a legacy completion's prompt: text is tokenized as vLLM does it for
    /// `/v1/completions` (with the tokenizer's own special tokens, e.g. a BOS); ids must be
    /// this model's. One prompt per request.
    async fn completion_prompt(&self, prompt: Prompt) -> ServiceResult<Vec<u32>> {
        let one = |n: usize| {
            if n == 1 {
                Ok(())
            } else {
                Err(ServiceError::invalid(
                    "prompt",
                    format!("{n} prompts in one request: send one prompt per request - 'prompt'"),
                ))
            }
        };
        let ids = match prompt {
            Prompt::Text(t) => return self.tokenize_off_runtime(t, true).await,
            Prompt::Texts(mut list) => {
                one(list.len())?;
                return self.tokenize_off_runtime(list.remove(0), true).await;
            }
            Prompt::Tokens(ids) => ids,
            Prompt::TokenBatches(mut list) => {
                one(list.len())?;
                list.remove(0)
            }
        };
        let vocab = self.model.tokenizer.get_vocab_size(true);
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ServiceError::invalid(
                "prompt",
                format!("token id {bad} is outside this model's vocabulary of {vocab} - 'prompt'"),
            ));
        }
        Ok(ids)
    }
}

/// `special`: add the tokenizer's special tokens (a template's output carries its own).
fn tokenize_with(model: &ChatModel, prompt: &str, special: bool) -> ServiceResult<Vec<u32>> {
    let enc = model
        .tokenizer
        .encode(prompt, special)
        .map_err(|e| ServiceError::Internal(format!("tokenizing the prompt: {e}")))?;
    Ok(enc.get_ids().to_vec())
}

fn chunk(id: &str, created: u64, model: &str, delta: DeltaMessage, finish: Option<FinishReason>) -> String {
    let c = ChatCompletionStreamResponse {
        id: id.to_string(),
        object: "chat.completion.chunk".into(),
        created,
        model: model.to_string(),
        choices: vec![ChatCompletionResponseStreamChoice { index: 0, delta, finish_reason: finish }],
        usage: None,
    };
    serde_json::to_string(&c).unwrap_or_default()
}

impl LocalGenerator {
    /// The `data` entries of `GET /v1/models`: the model with its context length.
    pub fn models(&self) -> Vec<ModelCard> {
        let mut card = ModelCard::new(&self.model.name, "comps-rs", unix_now());
        card.max_model_len = Some(self.model.context_len);
        card.description = Some(self.model.description.clone());
        vec![card]
    }

    /// Answer a validated request.
    pub async fn chat(&self, req: ChatCompletionRequest) -> ServiceResult<Completion> {
        self.check_model(&req)?;
        let gen_req = self.prepare(&req).await?;
        let model = req.model.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| self.model.name.clone());
        let span = gen_ai_span("chat", &model, &gen_req);
        let mut events = self.metrics.meter(span.in_scope(|| self.engine.submit(gen_req))?, span);
        if !req.is_stream() {
            let (text, d) = whole(&mut events).await?;
            let usage = UsageInfo::new(d.prompt_tokens as u32, d.completion_tokens as u32);
            let resp = ChatCompletionResponse::single(model, text, d.finish, usage);
            return Ok(Completion::Full(serde_json::to_value(resp).unwrap_or_default()));
        }
        let include_usage = req.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
        let id = completion_id();
        let created = unix_now();
        let stream = async_stream::stream! {
            let role = DeltaMessage { role: Some("assistant".into()), content: Some(String::new()) };
            yield Ok(chunk(&id, created, &model, role, None));
            while let Some(ev) = events.recv().await {
                match ev {
                    GenEvent::Text(t) => {
                        yield Ok(chunk(&id, created, &model, DeltaMessage { role: None, content: Some(t) }, None));
                    }
                    GenEvent::Failed(e) => {
                        yield Err(ModelError::Failed(e).into());
                        return;
                    }
                    GenEvent::Done(d) => {
                        yield Ok(chunk(&id, created, &model, DeltaMessage::default(), Some(d.finish)));
                        if include_usage {
                            let usage = ChatCompletionStreamResponse {
                                id: id.clone(),
                                object: "chat.completion.chunk".into(),
                                created,
                                model: model.clone(),
                                choices: Vec::new(),
                                usage: Some(UsageInfo::new(d.prompt_tokens as u32, d.completion_tokens as u32)),
                            };
                            yield Ok(serde_json::to_string(&usage).unwrap_or_default());
                        }
                        return;
                    }
                }
            }
            yield Err(ModelError::Failed("the generation engine stopped".into()).into());
        };
        Ok(Completion::Stream(stream.boxed()))
    }
}

impl LocalGenerator {
    /// Answer a legacy completion: `prompt` continued as it is, no chat template; the
    /// sampling settings are `req`'s (its `messages` are not read).
    pub async fn complete(&self, prompt: Prompt, req: ChatCompletionRequest) -> ServiceResult<Completion> {
        self.check_model(&req)?;
        refuse_unsupported(&req)?;
        let prompt_ids = self.completion_prompt(prompt).await?;
        let gen_req = self.gen_request(prompt_ids, &req, "prompt")?;
        let model = req.model.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| self.model.name.clone());
        let span = gen_ai_span("text_completion", &model, &gen_req);
        let mut events = self.metrics.meter(span.in_scope(|| self.engine.submit(gen_req))?, span);
        let id = format!("cmpl-{}", comps_core::protocol::new_id());
        let created = unix_now();
        let json = |c: &CompletionResponse| serde_json::to_string(c).unwrap_or_default();
        if !req.is_stream() {
            let (text, d) = whole(&mut events).await?;
            let mut resp = CompletionResponse::new(&id, created, &model, Some((text, Some(d.finish))));
            resp.usage = Some(UsageInfo::new(d.prompt_tokens as u32, d.completion_tokens as u32));
            return Ok(Completion::Full(serde_json::to_value(resp).unwrap_or_default()));
        }
        let include_usage = req.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
        let stream = async_stream::stream! {
            while let Some(ev) = events.recv().await {
                match ev {
                    GenEvent::Text(t) => yield Ok(json(&CompletionResponse::new(&id, created, &model, Some((t, None))))),
                    GenEvent::Failed(e) => {
                        yield Err(ModelError::Failed(e).into());
                        return;
                    }
                    GenEvent::Done(d) => {
                        yield Ok(json(&CompletionResponse::new(&id, created, &model, Some((String::new(), Some(d.finish))))));
                        if include_usage {
                            let mut usage = CompletionResponse::new(&id, created, &model, None);
                            usage.usage = Some(UsageInfo::new(d.prompt_tokens as u32, d.completion_tokens as u32));
                            yield Ok(json(&usage));
                        }
                        return;
                    }
                }
            }
            yield Err(ModelError::Failed("the generation engine stopped".into()).into());
        };
        Ok(Completion::Stream(stream.boxed()))
    }
}

/// A whole generation: its text and how it ended.
async fn whole(events: &mut Metered) -> ServiceResult<(String, GenDone)> {
    let mut text = String::new();
    while let Some(ev) = events.recv().await {
        match ev {
            GenEvent::Text(t) => text.push_str(&t),
            GenEvent::Failed(e) => return Err(ModelError::Failed(e).into()),
            GenEvent::Done(d) => return Ok((text, d)),
        }
    }
    Err(ModelError::Failed("the generation engine stopped".into()).into())
}

/// A proxy to an OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama, ...).
pub struct RemoteGenerator {
    client: ChatClient,
}

/// The node name upstream failures are reported under.
pub const REMOTE_NODE: &str = "llm-upstream";

impl RemoteGenerator {
    /// `url` is the server's base (`http://host:8000`, `.../v1`) or its full
    /// `/v1/chat/completions` URL.
    pub fn new(url: &str, api_key: Option<String>, model: Option<String>, timeout: Duration) -> Self {
        let upstream = Upstream::new(REMOTE_NODE, url, timeout).with_api_key(api_key).with_retries(1);
        Self { client: ChatClient::new(upstream, model) }
    }
}

impl RemoteGenerator {
    /// The model it asks for (`remote` when the upstream chooses).
    pub fn model_name(&self) -> String {
        self.client.model().unwrap_or("remote").to_string()
    }

    /// Forward the client's `body` (its checked form is `req`): a text `messages` becomes the
    /// list OpenAI servers want; everything else goes as it came.
    /// Forward a legacy completion's body as it came, to the server's `/v1/completions`.
    pub async fn forward_completion(&self, req: &ChatCompletionRequest, body: Value) -> ServiceResult<Completion> {
        let client = self.client.completions();
        if req.is_stream() {
            Ok(Completion::Stream(client.stream(body).await?))
        } else {
            Ok(Completion::Full(client.complete(body).await?))
        }
    }

    pub async fn forward(&self, req: &ChatCompletionRequest, body: Value) -> ServiceResult<Completion> {
        let mut body = body;
        if let (Messages::Text(t), Some(obj)) = (&req.messages, body.as_object_mut()) {
            obj.insert("messages".into(), json!([{"role": "user", "content": t}]));
        }
        if req.is_stream() {
            Ok(Completion::Stream(self.client.stream(body).await?))
        } else {
            Ok(Completion::Full(self.client.complete(body).await?))
        }
    }
}
