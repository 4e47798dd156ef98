//! OPEA's DocArray-like documents (`comps/cores/proto/docarray.py`): the JSON that flows
//! between microservices of a megaservice. Field names and defaults are OPEA's; every doc has
//! an `id` of 32 lowercase hex chars, generated when absent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::params::{SamplingParams, SearchParams};
use super::validate::{Validate, positive};
use crate::error::ServiceError;

/// A new doc id: 32 lowercase hex characters, as docarray's `ID` default.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `str | List[str]`, used by `TextDoc.text` and `EmbedDoc.text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TextOrList {
    /// One text.
    Text(String),
    /// Several texts.
    List(Vec<String>),
}

impl TextOrList {
    /// The texts as a slice-like list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::Text(t) => vec![t.clone()],
            Self::List(l) => l.clone(),
        }
    }

    /// One string: the text, or the list joined by `\n`.
    pub fn joined(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::List(l) => l.join("\n"),
        }
    }
}

impl From<&str> for TextOrList {
    fn from(s: &str) -> Self {
        Self::Text(s.to_string())
    }
}

impl From<String> for TextOrList {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

/// A text, plus the downstream nodes (regexes) the orchestrator must not forward it to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TextDoc {
    /// Doc id.
    #[serde(default = "new_id")]
    pub id: String,
    /// The text (OPEA allows a list, and null).
    #[serde(default)]
    pub text: Option<TextOrList>,
    /// Regexes of downstream node names to cut for this request (`[".*"]` cuts all).
    #[serde(default, deserialize_with = "null_as_default")]
    pub downstream_black_list: Vec<String>,
    /// Where the text came from (a retrieved chunk's `source` file and `similarity`), as
    /// OPEA's `TextDoc.metadata` / `MetadataTextDoc`; left out when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

impl TextDoc {
    /// A doc holding `text`, with a fresh id and an empty black list.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            id: new_id(),
            text: Some(TextOrList::Text(text.into())),
            downstream_black_list: Vec::new(),
            metadata: None,
        }
    }

    /// The same doc with its metadata.
    pub fn with_metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The text, or `""` when absent.
    pub fn text_str(&self) -> String {
        self.text.as_ref().map(TextOrList::joined).unwrap_or_default()
    }
}

impl Validate for TextDoc {}

/// `List[float] | List[List[float]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Embedding {
    /// One vector.
    Single(Vec<f32>),
    /// One vector per text.
    Batch(Vec<Vec<f32>>),
}

/// A query with its embedding and the retriever's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbedDoc {
    /// Doc id.
    #[serde(default = "new_id")]
    pub id: String,
    /// The embedded text(s).
    pub text: TextOrList,
    /// The vector(s).
    pub embedding: Embedding,
    /// The retriever's search parameters.
    #[serde(flatten)]
    pub search: SearchParams,
    /// Metadata filters.
    #[serde(default)]
    pub constraints: Option<Value>,
    /// The collection to search.
    #[serde(default)]
    pub index_name: Option<String>,
}

impl Validate for EmbedDoc {
    fn validate(&self) -> Result<(), ServiceError> {
        self.search.validate()
    }
}

/// The retriever's answer: the docs found for `initial_query`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SearchedDoc {
    /// Doc id.
    #[serde(default = "new_id")]
    pub id: String,
    /// The docs found, best first.
    pub retrieved_docs: Vec<TextDoc>,
    /// The query they were found for.
    pub initial_query: String,
    /// How many the reranker should keep.
    #[serde(default = "default_top_n")]
    pub top_n: u32,
}

impl Validate for SearchedDoc {
    fn validate(&self) -> Result<(), ServiceError> {
        positive("top_n", self.top_n)
    }
}

/// The reranker's answer in OPEA's doc form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RerankedDoc {
    /// Doc id.
    #[serde(default = "new_id")]
    pub id: String,
    /// The kept docs, best first.
    pub reranked_docs: Vec<TextDoc>,
    /// The query.
    pub initial_query: String,
}

impl Validate for RerankedDoc {}

/// A RAG document: a plain string or a dict such as `{"title", "text"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Document {
    /// Plain text.
    Text(String),
    /// A dict of strings.
    Fields(std::collections::BTreeMap<String, String>),
}

impl Document {
    /// The document's text (`text` key of a dict, else its values joined).
    pub fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Fields(f) => {
                f.get("text").cloned().unwrap_or_else(|| f.values().cloned().collect::<Vec<_>>().join(" "))
            }
        }
    }
}

/// A prompt for the LLM plus its generation parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LLMParamsDoc {
    /// Doc id.
    #[serde(default = "new_id")]
    pub id: String,
    /// Model name (for OpenAI-compatible backends).
    #[serde(default)]
    pub model: Option<String>,
    /// The prompt.
    pub query: String,
    /// Sampling.
    #[serde(flatten)]
    pub sampling: SamplingParams,
    /// Stream the answer.
    #[serde(default = "default_true")]
    pub stream: bool,
    /// `auto`, `en` or `zh`.
    #[serde(default = "default_language")]
    pub language: String,
    /// Input guardrail settings, passed through.
    #[serde(default)]
    pub input_guardrail_params: Option<Value>,
    /// Output guardrail settings, passed through.
    #[serde(default)]
    pub output_guardrail_params: Option<Value>,
    /// Prompt template with `{context}` and `{question}`.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// RAG documents.
    #[serde(default, deserialize_with = "null_as_default")]
    pub documents: Vec<Document>,
}

impl LLMParamsDoc {
    /// A doc for `query` with OPEA's defaults.
    pub fn new(query: impl Into<String>) -> Self {
        serde_json::from_value(serde_json::json!({ "query": query.into() })).expect("defaults are valid")
    }
}

impl Validate for LLMParamsDoc {
    fn validate(&self) -> Result<(), ServiceError> {
        self.sampling.validate()
    }
}

/// The LLM's answer in OPEA's doc form (what an output guardrail receives).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GeneratedDoc {
    /// Doc id.
    #[serde(default = "new_id")]
    pub id: String,
    /// The generated text.
    pub text: String,
    /// The prompt it answers.
    pub prompt: String,
    /// Output guardrail settings, passed through.
    #[serde(default)]
    pub output_guardrail_params: Option<Value>,
}

impl Validate for GeneratedDoc {}

/// Per-request LLM parameters the orchestrator injects into LLM nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LLMParams {
    /// Doc id.
    #[serde(default = "new_id")]
    pub id: String,
    /// Model name.
    #[serde(default)]
    pub model: Option<String>,
    /// Sampling.
    #[serde(flatten)]
    pub sampling: SamplingParams,
    /// Stream the answer.
    #[serde(default = "default_true")]
    pub stream: bool,
    /// `auto`, `en` or `zh`.
    #[serde(default = "default_language")]
    pub language: String,
    /// The collection retrieval used.
    #[serde(default)]
    pub index_name: Option<String>,
    /// Prompt template with `{context}` and `{question}`.
    #[serde(default)]
    pub chat_template: Option<String>,
}

impl Default for LLMParams {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults are valid")
    }
}

impl Validate for LLMParams {
    fn validate(&self) -> Result<(), ServiceError> {
        self.sampling.validate()
    }
}

/// Per-request retriever parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetrieverParms {
    /// Doc id.
    #[serde(default = "new_id")]
    pub id: String,
    /// The retriever's search parameters.
    #[serde(flatten)]
    pub search: SearchParams,
}

impl Default for RetrieverParms {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults are valid")
    }
}

impl Validate for RetrieverParms {
    fn validate(&self) -> Result<(), ServiceError> {
        self.search.validate()
    }
}

/// Per-request reranker parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RerankerParms {
    /// Doc id.
    #[serde(default = "new_id")]
    pub id: String,
    /// How many docs to keep.
    #[serde(default = "default_top_n")]
    pub top_n: u32,
}

impl Default for RerankerParms {
    fn default() -> Self {
        Self { id: new_id(), top_n: default_top_n() }
    }
}

impl Validate for RerankerParms {
    fn validate(&self) -> Result<(), ServiceError> {
        positive("top_n", self.top_n)
    }
}

/// Deserialize JSON `null` as the type's default (pydantic `Optional[list] = []`).
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Extra keys of an object, kept so a doc round-trips unchanged.
pub type Extra = Map<String, Value>;

pub(crate) fn default_search_type() -> String {
    "similarity".into()
}
pub(crate) fn default_k() -> u32 {
    4
}
pub(crate) fn default_fetch_k() -> u32 {
    20
}
pub(crate) fn default_lambda_mult() -> f64 {
    0.5
}
pub(crate) fn default_score_threshold() -> f64 {
    0.2
}
pub(crate) fn default_top_n() -> u32 {
    1
}
pub(crate) fn default_max_tokens() -> u32 {
    1024
}
pub(crate) fn default_top_k() -> u32 {
    10
}
pub(crate) fn default_top_p() -> f64 {
    0.95
}
pub(crate) fn default_temperature() -> f64 {
    0.01
}
pub(crate) fn default_repetition_penalty() -> f64 {
    1.03
}
pub(crate) fn default_true() -> bool {
    true
}
pub(crate) fn default_language() -> String {
    "auto".into()
}
