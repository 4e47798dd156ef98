//! Tokenizers from `tokenizer.json`, with padding off (the batcher pads) and truncation at the
//! model's maximum, or none when the caller wants an over-long input refused.

use std::path::Path;
use std::sync::Arc;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::ModelError;
use crate::error::ServiceError;

/// An input longer than the model takes, with `truncate` off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input {index} has {tokens} tokens, more than the model maximum of {max}; shorten it or set truncate to true")]
pub struct TooLong {
    /// Index in the request.
    pub index: usize,
    /// Its length in tokens.
    pub tokens: usize,
    /// The limit.
    pub max: usize,
}

/// A tokenizer pair: truncating at `max_tokens`, and not truncating.
#[derive(Clone)]
pub struct TextTokenizer {
    truncating: Tokenizer,
    full: Tokenizer,
    max_tokens: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("max_tokens", &self.max_tokens).finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Load `tokenizer.json`; inputs are cut at `max_tokens` (special tokens included).
    pub fn from_file(path: &Path, max_tokens: usize) -> Result<Self, ModelError> {
        let mut full = Tokenizer::from_file(path).map_err(|e| ModelError::Load(format!("{}: {e}", path.display())))?;
        // A checkpoint's tokenizer.json may pad to a fixed length (MiniLM's pads to 128): the
        // batcher pads per batch instead.
        full.with_padding(None);
        full.with_truncation(None).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let mut truncating = full.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(Self { truncating, full, max_tokens })
    }

    /// The limit.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Token ids of each text (with special tokens). Over-long texts are cut when `truncate`,
    /// else refused naming the first one.
    pub fn encode(&self, texts: &[String], truncate: bool) -> Result<Result<Vec<Vec<u32>>, TooLong>, ModelError> {
        let tok = if truncate { &self.truncating } else { &self.full };
        let encs = tok.encode_batch(texts.to_vec(), true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let ids: Vec<Vec<u32>> = encs.into_iter().map(|e| e.get_ids().to_vec()).collect();
        if !truncate && let Some((index, seq)) = ids.iter().enumerate().find(|(_, s)| s.len() > self.max_tokens) {
            return Ok(Err(TooLong { index, tokens: seq.len(), max: self.max_tokens }));
        }
        Ok(Ok(ids))
    }

    /// Token ids of a (query, text) pair, truncated to the limit (cross-encoders).
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<(Vec<u32>, Vec<u32>), ModelError> {
        let e = self.truncating.encode((a, b), true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok((e.get_ids().to_vec(), e.get_type_ids().to_vec()))
    }

    /// Pairs of `query` with each text; over-long pairs are cut when `truncate`, else refused
    /// naming the first.
    #[allow(clippy::type_complexity)]
    pub fn encode_pairs(
        &self,
        query: &str,
        texts: &[String],
        truncate: bool,
    ) -> Result<Result<Vec<(Vec<u32>, Vec<u32>)>, TooLong>, ModelError> {
        let tok = if truncate { &self.truncating } else { &self.full };
        let inputs: Vec<(String, String)> = texts.iter().map(|t| (query.to_string(), t.clone())).collect();
        let encs = tok.encode_batch(inputs, true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let out: Vec<(Vec<u32>, Vec<u32>)> =
            encs.into_iter().map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec())).collect();
        if !truncate
            && let Some((index, (ids, _))) = out.iter().enumerate().find(|(_, (ids, _))| ids.len() > self.max_tokens)
        {
            return Ok(Err(TooLong { index, tokens: ids.len(), max: self.max_tokens }));
        }
        Ok(Ok(out))
    }

    /// [`Self::encode`] on the blocking pool (tokenizing a large request is real CPU work that
    /// must stay off the async runtime), an over-long input refused as a 422 naming `field`.
    pub async fn encode_off_runtime(
        self: &Arc<Self>,
        texts: Vec<String>,
        truncate: bool,
        field: &str,
    ) -> Result<Vec<Vec<u32>>, ServiceError> {
        let tok = self.clone();
        tokio::task::spawn_blocking(move || tok.encode(&texts, truncate))
            .await
            .map_err(|e| ServiceError::Internal(format!("tokenizer task failed: {e}")))?
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(|e| {
                ServiceError::invalid(
                    field,
                    format!(
                        "{field} {} has {} tokens, more than the model maximum of {}; shorten it or set truncate to true",
                        e.index, e.tokens, e.max
                    ),
                )
            })
    }

    /// Text back from ids (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.full.decode(ids, true).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }
}
