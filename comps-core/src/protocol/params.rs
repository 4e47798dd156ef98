//! The parameter groups several wire types share, declared once with OPEA's defaults and
//! checks: the retriever's search parameters and the LLM's sampling parameters. A doc carries a
//! group flattened (`#[serde(flatten)]`), so the JSON stays flat.
//!
//! serde cannot tell which field of a flattened struct failed to parse, so each field here
//! deserializes through a wrapper that names itself in the error (`field `k`: ...`); the
//! extractor turns that into the usual 422 naming the field.

use serde::{Deserialize, Serialize};

use super::docarray::{
    default_fetch_k, default_k, default_lambda_mult, default_max_tokens, default_repetition_penalty,
    default_score_threshold, default_search_type, default_temperature, default_top_k, default_top_p,
};
use super::validate::{SEARCH_TYPES, Validate, one_of, positive, within};
use crate::error::ServiceError;

/// The prefix a group field's parse error starts with: `field `name`: `.
pub(crate) const FIELD_ERROR_PREFIX: &str = "field `";

macro_rules! named_fields {
    ($($field:ident: $ty:ty),* $(,)?) => {
        $(
            pub(super) fn $field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                <$ty as serde::Deserialize>::deserialize(d).map_err(|e| {
                    <D::Error as serde::de::Error>::custom(format_args!(
                        "{}{}`: {e}",
                        super::FIELD_ERROR_PREFIX,
                        stringify!($field)
                    ))
                })
            }
        )*
    };
}

/// Field deserializers that name their field in errors.
mod named {
    named_fields!(
        search_type: String,
        k: u32,
        distance_threshold: Option<f64>,
        fetch_k: u32,
        lambda_mult: f64,
        score_threshold: f64,
        max_tokens: u32,
        max_new_tokens: u32,
        top_k: u32,
        top_p: f64,
        typical_p: f64,
        temperature: f64,
        frequency_penalty: f64,
        presence_penalty: f64,
        repetition_penalty: f64,
    );
}

/// The retriever's search parameters (LangChain's names, OPEA's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SearchParams {
    /// `similarity` | `similarity_distance_threshold` | `similarity_score_threshold` | `mmr`.
    #[serde(default = "default_search_type", deserialize_with = "named::search_type")]
    pub search_type: String,
    /// How many docs to return.
    #[serde(default = "default_k", deserialize_with = "named::k")]
    pub k: u32,
    /// Maximum distance for `similarity_distance_threshold`.
    #[serde(default, deserialize_with = "named::distance_threshold")]
    pub distance_threshold: Option<f64>,
    /// Candidates fetched before MMR.
    #[serde(default = "default_fetch_k", deserialize_with = "named::fetch_k")]
    pub fetch_k: u32,
    /// MMR diversity (0 = most diverse, 1 = most relevant).
    #[serde(default = "default_lambda_mult", deserialize_with = "named::lambda_mult")]
    pub lambda_mult: f64,
    /// Minimum relevance for `similarity_score_threshold`.
    #[serde(default = "default_score_threshold", deserialize_with = "named::score_threshold")]
    pub score_threshold: f64,
}

impl Default for SearchParams {
    fn default() -> Self {
        Self {
            search_type: default_search_type(),
            k: default_k(),
            distance_threshold: None,
            fetch_k: default_fetch_k(),
            lambda_mult: default_lambda_mult(),
            score_threshold: default_score_threshold(),
        }
    }
}

impl Validate for SearchParams {
    fn validate(&self) -> Result<(), ServiceError> {
        one_of("search_type", &self.search_type, SEARCH_TYPES)?;
        positive("k", self.k)?;
        positive("fetch_k", self.fetch_k)?;
        within("lambda_mult", self.lambda_mult, 0.0, 1.0)?;
        within("score_threshold", self.score_threshold, 0.0, f64::MAX)?;
        if self.search_type == "similarity_distance_threshold" && self.distance_threshold.is_none() {
            return Err(ServiceError::invalid(
                "distance_threshold",
                "distance_threshold is required when search_type is 'similarity_distance_threshold'",
            ));
        }
        Ok(())
    }
}

/// The LLM's sampling parameters in OPEA's docs (`LLMParams`, `LLMParamsDoc`), OPEA's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SamplingParams {
    /// Maximum tokens to generate.
    #[serde(default = "default_max_tokens", deserialize_with = "named::max_tokens")]
    pub max_tokens: u32,
    /// TGI's name for `max_tokens`.
    #[serde(default = "default_max_tokens", deserialize_with = "named::max_new_tokens")]
    pub max_new_tokens: u32,
    /// Top-k sampling.
    #[serde(default = "default_top_k", deserialize_with = "named::top_k")]
    pub top_k: u32,
    /// Nucleus sampling.
    #[serde(default = "default_top_p", deserialize_with = "named::top_p")]
    pub top_p: f64,
    /// Typical sampling.
    #[serde(default = "default_top_p", deserialize_with = "named::typical_p")]
    pub typical_p: f64,
    /// Sampling temperature.
    #[serde(default = "default_temperature", deserialize_with = "named::temperature")]
    pub temperature: f64,
    /// OpenAI frequency penalty in [-2, 2].
    #[serde(default, deserialize_with = "named::frequency_penalty")]
    pub frequency_penalty: f64,
    /// OpenAI presence penalty in [-2, 2].
    #[serde(default, deserialize_with = "named::presence_penalty")]
    pub presence_penalty: f64,
    /// Repetition penalty (1 = none).
    #[serde(default = "default_repetition_penalty", deserialize_with = "named::repetition_penalty")]
    pub repetition_penalty: f64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_tokens: default_max_tokens(),
            max_new_tokens: default_max_tokens(),
            top_k: default_top_k(),
            top_p: default_top_p(),
            typical_p: default_top_p(),
            temperature: default_temperature(),
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repetition_penalty: default_repetition_penalty(),
        }
    }
}

impl Validate for SamplingParams {
    fn validate(&self) -> Result<(), ServiceError> {
        positive("max_tokens", self.max_tokens)?;
        positive("max_new_tokens", self.max_new_tokens)?;
        positive("top_k", self.top_k)?;
        within("top_p", self.top_p, 0.0, 1.0)?;
        within("typical_p", self.typical_p, 0.0, 1.0)?;
        within("temperature", self.temperature, 0.0, 2.0)?;
        within("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        within("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        within("repetition_penalty", self.repetition_penalty, 0.0, f64::MAX)
    }
}
