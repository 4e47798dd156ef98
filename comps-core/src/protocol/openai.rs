//! OpenAI-compatible requests and responses with OPEA's extras
//! (`comps/cores/proto/api_protocol.py`): names and defaults as OPEA, unknown fields ignored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::docarray::{Document, default_language, default_max_tokens, default_temperature, default_top_n, new_id};
use super::params::SearchParams;
use super::validate::{Validate, one_of, positive, positive_opt, within, within_opt};
use crate::error::ServiceError;

/// Seconds since the Unix epoch, for `created`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One served model, as OpenAI's `GET /v1/models` lists it (vLLM adds `max_model_len`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelCard {
    /// The name requests may give as `model`.
    pub id: String,
    /// `model`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Who serves it.
    pub owned_by: String,
    /// The longest context (prompt + answer) in tokens, where the service knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<usize>,
    /// What the model is and how it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ModelCard {
    /// `id`, owned by `owned_by`, created at `created` (Unix seconds).
    pub fn new(id: impl Into<String>, owned_by: impl Into<String>, created: u64) -> Self {
        Self {
            id: id.into(),
            object: "model".into(),
            created,
            owned_by: owned_by.into(),
            max_model_len: None,
            description: None,
        }
    }
}

/// OpenAI's `GET /v1/models` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    /// The served models.
    pub data: Vec<ModelCard>,
}

/// TEI's `GET /info`: the served model and the service's limits. Fields a service does not have
/// are left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TeiInfo {
    /// The model's name.
    pub model_id: String,
    /// Always `null`: no model revision is tracked.
    pub model_sha: Option<String>,
    /// The weights' type (`float32`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_dtype: Option<String>,
    /// The kind of model, as TEI writes it: `{"embedding": {"pooling": ...}}`,
    /// `{"reranker": {...}}`.
    #[schema(value_type = Object)]
    pub model_type: Value,
    /// The longest input in tokens, when known.
    pub max_input_length: Option<usize>,
    /// The most inputs in one request.
    pub max_client_batch_size: usize,
    /// Requests served at once (more are refused with 429).
    pub max_concurrent_requests: usize,
    /// Padded tokens per forward pass, for a model in this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_tokens: Option<usize>,
    /// Inputs per forward pass, for a model in this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_requests: Option<usize>,
    /// Whether over-long inputs are truncated when a request does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_truncate: Option<bool>,
    /// The vector size, when known (embedding services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_dimension: Option<usize>,
    /// `local` (a model in this process) or `remote` (a proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The service's version.
    pub version: String,
}

/// A completion id (`chatcmpl-<32 hex>`).
pub fn completion_id() -> String {
    format!("chatcmpl-{}", new_id())
}

/// Token accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageInfo {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Prompt plus completion.
    #[serde(default)]
    pub total_tokens: u32,
    /// Tokens generated (absent for embeddings, as OpenAI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
}

impl UsageInfo {
    /// Usage with `total_tokens` filled in.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens: Some(completion_tokens),
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// `{"type": "text" | "json_object"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResponseFormat {
    /// `text` or `json_object`.
    #[serde(rename = "type")]
    pub r#type: String,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk carrying `usage`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// An image reference inside a message part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageUrl {
    /// `https://...`, `data:image/png;base64,...`, a local path, or raw base64.
    pub url: String,
    /// OpenAI's `detail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One part of a multi-part message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image.
    ImageUrl {
        /// Where the image is.
        image_url: ImageUrl,
    },
}

/// A message's content: a string or a list of parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Text and image parts.
    Parts(Vec<ContentPart>),
}

/// A chat message in a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequestMessage {
    /// `system`, `user`, `assistant` (others are rejected where a prompt is built).
    pub role: String,
    /// The content; `null` is read as empty.
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// Optional author name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl RequestMessage {
    /// A text message.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: Some(MessageContent::Text(content.into())), name: None }
    }
}

/// `messages`: OPEA accepts a plain string as well as the OpenAI list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Messages {
    /// A bare prompt.
    Text(String),
    /// OpenAI chat messages.
    List(Vec<RequestMessage>),
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

fn default_stop() -> Option<Stop> {
    Some(Stop::Many(Vec::new()))
}

/// `input` of an embedding request: text(s) or token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One pre-tokenized input.
    Tokens(Vec<u32>),
    /// Several pre-tokenized inputs.
    TokenBatches(Vec<Vec<u32>>),
}

/// An embedding as a request field: OPEA accepts a whole `EmbeddingResponse` or a bare vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EmbeddingField {
    /// A bare vector.
    Vector(Vec<f32>),
    /// An OpenAI embedding response.
    Response(EmbeddingResponse),
}

impl Default for EmbeddingField {
    fn default() -> Self {
        Self::Vector(Vec::new())
    }
}

impl EmbeddingField {
    /// The first vector, if any float vector is present.
    pub fn vector(&self) -> Option<&[f32]> {
        match self {
            Self::Vector(v) if !v.is_empty() => Some(v),
            Self::Vector(_) => None,
            Self::Response(r) => r.data.first().and_then(|d| match &d.embedding {
                EmbeddingData::Float(v) => Some(v.as_slice()),
                EmbeddingData::Base64(_) => None,
            }),
        }
    }
}

/// A retrieved chunk: `text` plus its metadata; other keys are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetrievalResponseData {
    /// The chunk text.
    pub text: String,
    /// Source, file id, score, ...
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

/// A reranked chunk with its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RerankingResponseData {
    /// The chunk text.
    pub text: String,
    /// Relevance score.
    #[serde(default = "zero_score")]
    pub score: Option<f32>,
}

fn zero_score() -> Option<f32> {
    Some(0.0)
}

/// OpenAI chat completion request with OPEA's extras (embedding, retrieval and reranking stage
/// fields included, so one request can travel through a whole pipeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatCompletionRequest {
    /// The conversation, or a bare prompt.
    pub messages: Messages,
    /// Model name.
    #[serde(default)]
    pub model: Option<String>,
    /// Output modalities.
    #[serde(default = "default_modalities")]
    pub modalities: Vec<String>,
    /// OpenAI frequency penalty in [-2, 2].
    #[serde(default = "zero")]
    pub frequency_penalty: Option<f64>,
    /// Token bias.
    #[serde(default)]
    pub logit_bias: Option<Map<String, Value>>,
    /// Return log-probabilities.
    #[serde(default = "some_false")]
    pub logprobs: Option<bool>,
    /// How many top log-probabilities.
    #[serde(default = "some_zero_u32")]
    pub top_logprobs: Option<u32>,
    /// Maximum tokens to generate.
    #[serde(default = "some_max_tokens")]
    pub max_tokens: Option<u32>,
    /// Choices to generate.
    #[serde(default = "some_one")]
    pub n: Option<u32>,
    /// OpenAI presence penalty in [-2, 2].
    #[serde(default = "zero")]
    pub presence_penalty: Option<f64>,
    /// `text` or `json_object`.
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// OpenAI service tier.
    #[serde(default)]
    pub service_tier: Option<String>,
    /// Stop strings.
    #[serde(default = "default_stop")]
    pub stop: Option<Stop>,
    /// Stream the answer (OPEA default false; ChatQnA overrides to true when absent).
    #[serde(default = "some_false")]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Keep generating past the end-of-sequence token, up to `max_tokens` (vLLM's extension).
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    /// Sampling temperature in [0, 2].
    #[serde(default = "some_temperature")]
    pub temperature: Option<f64>,
    /// Nucleus sampling in [0, 1].
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Tool definitions.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// Tool choice.
    #[serde(default = "default_tool_choice")]
    pub tool_choice: Option<Value>,
    /// Parallel tool calls.
    #[serde(default = "some_true")]
    pub parallel_tool_calls: Option<bool>,
    /// End-user id.
    #[serde(default)]
    pub user: Option<String>,
    /// `auto`, `en` or `zh`.
    #[serde(default = "default_language")]
    pub language: String,
    /// Image input (multimodal pipelines).
    #[serde(default)]
    pub image_path: Option<String>,
    /// Audio input (audio pipelines).
    #[serde(default)]
    pub audio_path: Option<String>,
    /// Completions' `best_of`.
    #[serde(default = "some_one")]
    pub best_of: Option<u32>,
    /// Completions' `suffix`.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Repetition penalty (vLLM), > 0.
    #[serde(default = "one_f64")]
    pub repetition_penalty: Option<f64>,
    /// Top-k sampling: -1 (off) or >= 1.
    #[serde(default)]
    pub top_k: Option<i32>,
    /// Typical sampling.
    #[serde(default)]
    pub typical_p: Option<f64>,
    /// Request timeout in seconds.
    #[serde(default)]
    pub timeout: Option<u32>,
    /// Echo the last message.
    #[serde(default = "some_false")]
    pub echo: Option<bool>,
    /// Add the generation prompt in the chat template.
    #[serde(default = "some_true")]
    pub add_generation_prompt: Option<bool>,
    /// Add special tokens on top of the template's.
    #[serde(default = "some_false")]
    pub add_special_tokens: Option<bool>,
    /// RAG documents.
    #[serde(default)]
    pub documents: Option<Vec<Document>>,
    /// Prompt template with `{context}` and `{question}`.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// Extra variables for the chat template.
    #[serde(default)]
    pub chat_template_kwargs: Option<Map<String, Value>>,

    // Embedding stage.
    /// The text to embed (filled from the last user message).
    #[serde(default)]
    pub input: Option<EmbeddingInput>,
    /// `float` or `base64`.
    #[serde(default = "default_encoding_format")]
    pub encoding_format: Option<String>,
    /// Truncate embeddings to this size.
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// The query embedding.
    #[serde(default)]
    pub embedding: EmbeddingField,

    // Retrieval stage.
    /// The retriever's search parameters.
    #[serde(flatten)]
    pub search: SearchParams,
    /// Retrieved chunks.
    #[serde(default)]
    pub retrieved_docs: Vec<RetrievalResponseData>,
    /// Collection.
    #[serde(default)]
    pub index_name: Option<String>,

    // Reranking stage.
    /// Docs the reranker keeps.
    #[serde(default = "default_top_n")]
    pub top_n: u32,
    /// Reranked chunks.
    #[serde(default)]
    pub reranked_docs: Vec<RerankingResponseData>,

    /// Always `chat`.
    #[serde(default = "request_type_chat")]
    pub request_type: String,
}

impl ChatCompletionRequest {
    /// A request for a bare prompt, with OPEA's defaults.
    pub fn from_prompt(prompt: impl Into<String>) -> Self {
        serde_json::from_value(serde_json::json!({ "messages": prompt.into() })).expect("defaults are valid")
    }

    /// The last user message's text (OPEA's `input` for the embedding stage).
    pub fn last_user_text(&self) -> Option<String> {
        match &self.messages {
            Messages::Text(t) => Some(t.clone()),
            Messages::List(list) => list.iter().rev().find(|m| m.role == "user").map(|m| match &m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t.clone(),
                Some(MessageContent::Parts(parts)) => parts
                    .iter()
                    .filter_map(|p| match p {
                        ContentPart::Text { text } => Some(text.as_str()),
                        ContentPart::ImageUrl { .. } => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            }),
        }
    }

    /// `stream`, with `None` read as false (OpenAI's default).
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }
}

impl Validate for ChatCompletionRequest {
    fn validate(&self) -> Result<(), ServiceError> {
        if let Messages::List(list) = &self.messages
            && list.is_empty()
        {
            return Err(ServiceError::invalid("messages", "messages must not be empty - 'messages'"));
        }
        positive_opt("max_tokens", self.max_tokens)?;
        positive_opt("n", self.n)?;
        positive_opt("best_of", self.best_of)?;
        within_opt("temperature", self.temperature, 0.0, 2.0)?;
        within_opt("top_p", self.top_p, 0.0, 1.0)?;
        within_opt("typical_p", self.typical_p, 0.0, 1.0)?;
        within_opt("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        within_opt("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        if let Some(rp) = self.repetition_penalty {
            within("repetition_penalty", rp, 0.0, f64::MAX)?;
            if rp == 0.0 {
                return Err(ServiceError::invalid(
                    "repetition_penalty",
                    "0 is less than or equal to the minimum of 0 - 'repetition_penalty'",
                ));
            }
        }
        if let Some(k) = self.top_k
            && k != -1
            && k < 1
        {
            return Err(ServiceError::invalid("top_k", format!("{k} is out of Range. Either set top_k to -1 or >=1.")));
        }
        if let Some(f) = &self.encoding_format {
            one_of("encoding_format", f, &["float", "base64"])?;
        }
        if let Some(d) = self.dimensions {
            positive("dimensions", d)?;
        }
        positive("top_n", self.top_n)?;
        self.search.validate()
    }
}

/// An answer message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatMessage {
    /// `assistant`, usually.
    pub role: String,
    /// The text.
    pub content: String,
    /// Audio output, for audio pipelines.
    #[serde(default)]
    pub audio: Option<Map<String, Value>>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop string or end-of-sequence token.
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// One choice of a non-streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatCompletionResponseChoice {
    /// Choice index.
    pub index: u32,
    /// The answer.
    pub message: ChatMessage,
    /// Why it ended.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    /// Extra data.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

/// A non-streamed chat completion (`chat.completion`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatCompletionResponse {
    /// `chatcmpl-...`.
    #[serde(default = "completion_id")]
    pub id: String,
    /// `chat.completion`.
    #[serde(default = "object_chat_completion")]
    pub object: String,
    /// Unix seconds.
    #[serde(default = "unix_now")]
    pub created: u64,
    /// Model name.
    pub model: String,
    /// The answers.
    pub choices: Vec<ChatCompletionResponseChoice>,
    /// Token accounting.
    pub usage: UsageInfo,
}

impl ChatCompletionResponse {
    /// A one-choice assistant answer.
    pub fn single(model: impl Into<String>, text: impl Into<String>, finish: FinishReason, usage: UsageInfo) -> Self {
        Self {
            id: completion_id(),
            object: object_chat_completion(),
            created: unix_now(),
            model: model.into(),
            choices: vec![ChatCompletionResponseChoice {
                index: 0,
                message: ChatMessage { role: "assistant".into(), content: text.into(), audio: None },
                finish_reason: Some(finish),
                metadata: None,
            }],
            usage,
        }
    }
}

/// A streamed delta.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeltaMessage {
    /// Set on the first chunk.
    #[serde(default)]
    pub role: Option<String>,
    /// The new text.
    #[serde(default)]
    pub content: Option<String>,
}

/// One choice of a streamed chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatCompletionResponseStreamChoice {
    /// Choice index.
    pub index: u32,
    /// The new text.
    pub delta: DeltaMessage,
    /// Set on the last chunk.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

/// A streamed chunk (`chat.completion.chunk`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatCompletionStreamResponse {
    /// Same id on every chunk of one answer.
    #[serde(default = "completion_id")]
    pub id: String,
    /// `chat.completion.chunk`.
    #[serde(default = "object_chunk")]
    pub object: String,
    /// Unix seconds.
    #[serde(default = "unix_now")]
    pub created: u64,
    /// Model name.
    pub model: String,
    /// The deltas (empty on the usage chunk).
    pub choices: Vec<ChatCompletionResponseStreamChoice>,
    /// Only on the last chunk when `stream_options.include_usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageInfo>,
}

/// `prompt` of a legacy completion (`/v1/completions`): text or token ids. The SDKs send one
/// prompt as a list of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Prompt {
    /// One prompt.
    Text(String),
    /// Prompts (one is served per request).
    Texts(Vec<String>),
    /// One prompt as token ids.
    Tokens(Vec<u32>),
    /// Prompts as token ids.
    TokenBatches(Vec<Vec<u32>>),
}

/// One choice of a legacy completion, whole or streamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CompletionChoice {
    /// Choice index.
    pub index: u32,
    /// The text (in a stream: the new text).
    pub text: String,
    /// Log-probabilities (not returned: always null).
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// Why it ended (in a stream: on the last chunk only).
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

/// A legacy completion (`text_completion`), whole or one streamed chunk of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CompletionResponse {
    /// `cmpl-...`, the same on every chunk of one answer.
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model name.
    pub model: String,
    /// The answers (empty on the usage chunk of a stream).
    pub choices: Vec<CompletionChoice>,
    /// Token accounting (a stream's last chunk with `stream_options.include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageInfo>,
}

impl CompletionResponse {
    /// A completion or chunk with one choice (`text`, `finish`) or, with `choice: None`, none.
    pub fn new(id: &str, created: u64, model: &str, choice: Option<(String, Option<FinishReason>)>) -> Self {
        let choices = choice
            .map(|(text, finish_reason)| CompletionChoice { index: 0, text, logprobs: None, finish_reason })
            .into_iter()
            .collect();
        Self { id: id.into(), object: "text_completion".into(), created, model: model.into(), choices, usage: None }
    }
}

/// OpenAI / OPEA embedding request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingRequest {
    /// Model name.
    #[serde(default)]
    pub model: Option<String>,
    /// Text(s) or token ids.
    pub input: EmbeddingInput,
    /// `float` or `base64`.
    #[serde(default = "default_encoding_format")]
    pub encoding_format: Option<String>,
    /// Truncate to this many dimensions (then renormalise).
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// End-user id.
    #[serde(default)]
    pub user: Option<String>,
    /// Always `embedding`.
    #[serde(default = "request_type_embedding")]
    pub request_type: String,
}

impl Validate for EmbeddingRequest {
    fn validate(&self) -> Result<(), ServiceError> {
        if let Some(f) = &self.encoding_format {
            one_of("encoding_format", f, &["float", "base64"])?;
        }
        if let Some(d) = self.dimensions {
            positive("dimensions", d)?;
        }
        Ok(())
    }
}

/// A vector as floats or as base64 of little-endian f32.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EmbeddingData {
    /// Floats.
    Float(Vec<f32>),
    /// Base64 of little-endian f32 bytes.
    Base64(String),
}

/// One embedding of a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingResponseData {
    /// Input index.
    pub index: u32,
    /// `embedding`.
    #[serde(default = "object_embedding")]
    pub object: String,
    /// The vector.
    pub embedding: EmbeddingData,
}

/// OpenAI embedding response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingResponse {
    /// `list`.
    #[serde(default = "object_list")]
    pub object: String,
    /// Model name.
    #[serde(default)]
    pub model: Option<String>,
    /// One per input.
    pub data: Vec<EmbeddingResponseData>,
    /// Token accounting.
    #[serde(default)]
    pub usage: Option<UsageInfo>,
}

/// OPEA retrieval request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetrievalRequest {
    /// The query vector (or a whole embedding response).
    #[serde(default)]
    pub embedding: Option<EmbeddingField>,
    /// The query text.
    #[serde(default)]
    pub input: Option<String>,
    /// The retriever's search parameters.
    #[serde(flatten)]
    pub search: SearchParams,
    /// Always `retrieval`.
    #[serde(default = "request_type_retrieval")]
    pub request_type: String,
}

impl Validate for RetrievalRequest {
    fn validate(&self) -> Result<(), ServiceError> {
        self.search.validate()
    }
}

/// OPEA retrieval response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetrievalResponse {
    /// The chunks found.
    pub retrieved_docs: Vec<RetrievalResponseData>,
}

/// A doc to rerank: OPEA accepts `{text, metadata}`, any dict with `text`, or a bare string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum RerankInputDoc {
    /// A bare string.
    Text(String),
    /// `{text, metadata}` or any object with `text`, kept whole.
    Object(Map<String, Value>),
}

impl RerankInputDoc {
    /// The text to score.
    pub fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Object(m) => m.get("text").and_then(Value::as_str).unwrap_or_default().to_string(),
        }
    }
}

/// OPEA reranking request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RerankingRequest {
    /// The query.
    pub input: String,
    /// The candidates.
    pub retrieved_docs: Vec<RerankInputDoc>,
    /// How many to keep.
    #[serde(default = "default_top_n")]
    pub top_n: u32,
    /// Always `reranking`.
    #[serde(default = "request_type_reranking")]
    pub request_type: String,
}

impl Validate for RerankingRequest {
    fn validate(&self) -> Result<(), ServiceError> {
        positive("top_n", self.top_n)
    }
}

/// OPEA reranking response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RerankingResponse {
    /// The kept chunks, best first.
    pub reranked_docs: Vec<RerankingResponseData>,
}

impl Validate for ChatCompletionResponse {}
impl Validate for EmbeddingResponse {}
impl Validate for RetrievalResponse {}
impl Validate for RerankingResponse {}

/// Check that a count fits, naming the field (used by services for client batch limits).
pub fn check_max_items(field: &str, len: usize, max: usize) -> Result<(), ServiceError> {
    if len > max {
        return Err(ServiceError::invalid(field, format!("{len} items is more than the maximum of {max} - '{field}'")));
    }
    Ok(())
}

fn default_modalities() -> Vec<String> {
    vec!["text".into()]
}
fn zero() -> Option<f64> {
    Some(0.0)
}
fn one_f64() -> Option<f64> {
    Some(1.0)
}
fn some_false() -> Option<bool> {
    Some(false)
}
fn some_true() -> Option<bool> {
    Some(true)
}
fn some_zero_u32() -> Option<u32> {
    Some(0)
}
fn some_one() -> Option<u32> {
    Some(1)
}
fn some_max_tokens() -> Option<u32> {
    Some(default_max_tokens())
}
fn some_temperature() -> Option<f64> {
    Some(default_temperature())
}
fn default_tool_choice() -> Option<Value> {
    Some(Value::String("none".into()))
}
fn default_encoding_format() -> Option<String> {
    Some("float".into())
}
fn request_type_chat() -> String {
    "chat".into()
}
fn request_type_embedding() -> String {
    "embedding".into()
}
fn request_type_retrieval() -> String {
    "retrieval".into()
}
fn request_type_reranking() -> String {
    "reranking".into()
}
fn object_chat_completion() -> String {
    "chat.completion".into()
}
fn object_chunk() -> String {
    "chat.completion.chunk".into()
}
fn object_embedding() -> String {
    "embedding".into()
}
fn object_list() -> String {
    "list".into()
}
