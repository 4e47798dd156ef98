//! Tokenizers from `tokenizer.json`, with padding off (the batcher pads) and truncation at the
//! model's maximum, or none when the caller wants an over-long input refused.
//!
//! The tokenizer never sees more of a text than the window can use: an input longer than
//! [`TextTokenizer::max_bytes`] (`max_tokens ×` [`TOKENIZE_BYTES_PER_TOKEN`]) is cut to that
//! prefix when truncating — its first `max_tokens` tokens are the same for any real text — and
//! refused by its size when not, so a 10 MB input costs what a long one does.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use tokenizers::{PostProcessor, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::ModelError;
use comps_core::limits::TOKENIZE_BYTES_PER_TOKEN;

/// Which input of a request is over-long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    /// The text at this index of the request's list (for a pair: this text with the query).
    Text(usize),
    /// The query every pair shares, too long on its own whatever the text.
    Query,
}

/// How an over-long input was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// Its tokens (special tokens included).
    Tokens(usize),
    /// Its size, over the most bytes read for the model's window: refused before tokenizing,
    /// so no token count is known.
    Bytes {
        /// The input's length in bytes.
        bytes: usize,
        /// [`TextTokenizer::max_bytes`].
        max_bytes: usize,
    },
}

/// An input longer than the model takes, with `truncate` off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong {
    /// Which input.
    pub culprit: Culprit,
    /// How long it is.
    pub length: Length,
    /// The model's maximum in tokens.
    pub max: usize,
}

impl TooLong {
    /// The message for a client, calling the input `subject` (`"input 3"`,
    /// `"texts.3 with the query"`); it says how to fix the request.
    pub fn describe(&self, subject: &str) -> String {
        let max = self.max;
        match self.length {
            Length::Tokens(tokens) => format!(
                "{subject} has {tokens} tokens, more than the model maximum of {max}; shorten it or set truncate to true"
            ),
            Length::Bytes { bytes, max_bytes } => format!(
                "{subject} is {bytes} bytes long, more than the {max_bytes} bytes read for the model maximum of \
                 {max} tokens; shorten it or set truncate to true"
            ),
        }
    }
}

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = match self.culprit {
            Culprit::Text(i) => format!("input {i}"),
            Culprit::Query => "the query".to_string(),
        };
        f.write_str(&self.describe(&subject))
    }
}

impl std::error::Error for TooLong {}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a char boundary.
fn prefix(text: &str, max_bytes: usize) -> &str {
    &text[..text.floor_char_boundary(max_bytes)]
}

/// Tokenizer classes whose encodings, in transformers, carry no `token_type_ids` (their model
/// inputs are `input_ids` and `attention_mask`), by name without the `Fast` suffix. The generic
/// classes are among them: transformers 5 saves a tokenizer built from a `tokenizers` object as
/// `TokenizersBackend` (`PreTrainedTokenizerFast` is the same class there).
const CLASSES_WITHOUT_TYPE_IDS: &[&str] = &[
    "TokenizersBackend",
    "PreTrainedTokenizer",
    "XLMRobertaTokenizer",
    "RobertaTokenizer",
    "CamembertTokenizer",
    "DistilBertTokenizer",
    "MPNetTokenizer",
    "FunnelTokenizer",
    "BertJapaneseTokenizer",
    "BertweetTokenizer",
    "RemBertTokenizer",
    "RoCBertTokenizer",
];

/// Whether transformers hands a model in `dir` the token type (segment) ids of its inputs, as
/// its tokenizer decides: `model_input_names` in `tokenizer_config.json` when it lists them,
/// else the default of its `tokenizer_class` (BERT's tokenizers yes, the generic and RoBERTa
/// family ones no), else the tokenizer of `model_type` (`bert` yes, the RoBERTa family no).
/// When it does not, the model runs on all-zero token types even for the second text of a
/// pair, whatever `tokenizer.json`'s pair template says; an unknown class counts as yes.
pub fn model_takes_token_type_ids(dir: &Path, model_type: Option<&str>) -> Result<bool, ModelError> {
    let path = dir.join("tokenizer_config.json");
    let config: serde_json::Value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| ModelError::Load(format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Value::Null,
        Err(e) => return Err(ModelError::Load(format!("{}: {e}", path.display()))),
    };
    if let Some(names) = config.get("model_input_names").and_then(serde_json::Value::as_array) {
        return Ok(names.iter().any(|n| n.as_str() == Some("token_type_ids")));
    }
    if let Some(class) = config.get("tokenizer_class").and_then(serde_json::Value::as_str) {
        let class = class.strip_suffix("Fast").unwrap_or(class);
        return Ok(!CLASSES_WITHOUT_TYPE_IDS.contains(&class));
    }
    Ok(!matches!(model_type, Some("xlm-roberta" | "roberta" | "camembert" | "distilbert" | "mpnet")))
}

/// One token of a text: its id, its text (the input's bytes `start..stop`, or the token itself
/// for a special token, which has no place in the input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpan {
    /// Token id.
    pub id: u32,
    /// Its text.
    pub text: String,
    /// Whether it is a special token (`[CLS]`, `</s>`).
    pub special: bool,
    /// Byte offset of its start in the input.
    pub start: Option<usize>,
    /// Byte offset of its end in the input.
    pub stop: Option<usize>,
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

    /// The most bytes of one text the tokenizer is given: `max_tokens ×`
    /// [`TOKENIZE_BYTES_PER_TOKEN`]. Longer texts are cut to this (truncating) or refused.
    pub fn max_bytes(&self) -> usize {
        self.max_tokens.saturating_mul(TOKENIZE_BYTES_PER_TOKEN)
    }

    /// `text` cut to [`Self::max_bytes`] on a char boundary, for a truncating tokenizer.
    fn window<'t>(&self, text: &'t str) -> &'t str {
        prefix(text, self.max_bytes())
    }

    /// `text` cut to its last [`Self::max_bytes`] bytes on a char boundary (for cutting on the
    /// left).
    fn window_end<'t>(&self, text: &'t str) -> &'t str {
        let max = self.max_bytes();
        if text.len() <= max { text } else { &text[text.ceil_char_boundary(text.len() - max)..] }
    }

    /// Token ids of each text cut on the left (TEI's `truncation_direction: "left"`): an
    /// over-long text keeps its end, and the special tokens are added after the cut, as a
    /// tokenizer truncating on the left adds them.
    pub fn encode_keep_end(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, ModelError> {
        let added = self.full.get_post_processor().map_or(0, |p| p.added_tokens(false));
        let keep = self.max_tokens.saturating_sub(added).max(1);
        let err = |e: tokenizers::Error| ModelError::Tokenizer(e.to_string());
        texts
            .iter()
            .map(|t| {
                let mut enc = self.full.encode(self.window_end(t), false).map_err(err)?;
                enc.truncate(keep, 0, TruncationDirection::Left);
                Ok(self.full.post_process(enc, None, true).map_err(err)?.get_ids().to_vec())
            })
            .collect()
    }

    /// [`Self::encode_keep_end`] on the blocking pool.
    pub async fn encode_keep_end_off_runtime(
        self: &Arc<Self>,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<u32>>, ModelError> {
        let tok = self.clone();
        comps_core::telemetry::tokenize_off_runtime(texts.len(), move || tok.encode_keep_end(&texts))
            .await
            .map_err(|e| ModelError::Failed(format!("the tokenizer task failed: {e}")))?
    }

    /// A refusal of `culprit` by its size, when it is longer than [`Self::max_bytes`].
    fn too_many_bytes(&self, culprit: Culprit, text: &str) -> Option<TooLong> {
        let max_bytes = self.max_bytes();
        (text.len() > max_bytes).then_some(TooLong {
            culprit,
            length: Length::Bytes { bytes: text.len(), max_bytes },
            max: self.max_tokens,
        })
    }

    /// Token ids of each text (with special tokens). Over-long texts are cut when `truncate`,
    /// else refused: first any text too large to read (by its size, without tokenizing), else
    /// the first with too many tokens.
    pub fn encode(&self, texts: &[String], truncate: bool) -> Result<Result<Vec<Vec<u32>>, TooLong>, ModelError> {
        if !truncate
            && let Some(e) = texts.iter().enumerate().find_map(|(i, t)| self.too_many_bytes(Culprit::Text(i), t))
        {
            return Ok(Err(e));
        }
        let tok = if truncate { &self.truncating } else { &self.full };
        let inputs: Vec<&str> = texts.iter().map(|t| self.window(t)).collect();
        let encs = tok.encode_batch(inputs, true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let ids: Vec<Vec<u32>> = encs.into_iter().map(|e| e.get_ids().to_vec()).collect();
        if !truncate && let Some((index, seq)) = ids.iter().enumerate().find(|(_, s)| s.len() > self.max_tokens) {
            return Ok(Err(TooLong {
                culprit: Culprit::Text(index),
                length: Length::Tokens(seq.len()),
                max: self.max_tokens,
            }));
        }
        Ok(Ok(ids))
    }

    /// Token ids of a (query, text) pair, truncated to the limit (cross-encoders).
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<(Vec<u32>, Vec<u32>), ModelError> {
        let e = self
            .truncating
            .encode((self.window(a), self.window(b)), true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok((e.get_ids().to_vec(), e.get_type_ids().to_vec()))
    }

    /// Pairs of `query` with each text; over-long pairs are cut when `truncate`, else refused:
    /// the query when it is too long on its own, else the first text too large to read or,
    /// with the query, of too many tokens.
    #[allow(clippy::type_complexity)]
    pub fn encode_pairs(
        &self,
        query: &str,
        texts: &[String],
        truncate: bool,
    ) -> Result<Result<Vec<(Vec<u32>, Vec<u32>)>, TooLong>, ModelError> {
        if !truncate {
            let too_large = self
                .too_many_bytes(Culprit::Query, query)
                .or_else(|| texts.iter().enumerate().find_map(|(i, t)| self.too_many_bytes(Culprit::Text(i), t)));
            if let Some(e) = too_large {
                return Ok(Err(e));
            }
        }
        let tok = if truncate { &self.truncating } else { &self.full };
        // A query over the window is cut like a text: longest-first truncation takes the pair's
        // tokens from whichever side is longer, so the result is unchanged.
        let query = self.window(query);
        let inputs: Vec<(&str, &str)> = texts.iter().map(|t| (query, self.window(t))).collect();
        let encs = tok.encode_batch(inputs, true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let out: Vec<(Vec<u32>, Vec<u32>)> =
            encs.into_iter().map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec())).collect();
        if !truncate
            && let Some((index, (ids, _))) = out.iter().enumerate().find(|(_, (ids, _))| ids.len() > self.max_tokens)
        {
            // Every pair is over the limit when the query alone is: name the query then.
            let alone = self.full.encode(query, true).map_err(|e| ModelError::Tokenizer(e.to_string()))?.len();
            let (culprit, tokens) =
                if alone > self.max_tokens { (Culprit::Query, alone) } else { (Culprit::Text(index), ids.len()) };
            return Ok(Err(TooLong { culprit, length: Length::Tokens(tokens), max: self.max_tokens }));
        }
        Ok(Ok(out))
    }

    /// [`Self::encode`] on the blocking pool (tokenizing a large request is real CPU work that
    /// must stay off the async runtime); the caller turns an over-long input into its error.
    pub async fn try_encode_off_runtime(
        self: &Arc<Self>,
        texts: Vec<String>,
        truncate: bool,
    ) -> Result<Result<Vec<Vec<u32>>, TooLong>, ModelError> {
        let tok = self.clone();
        comps_core::telemetry::tokenize_off_runtime(texts.len(), move || tok.encode(&texts, truncate))
            .await
            .map_err(|e| ModelError::Failed(format!("the tokenizer task failed: {e}")))?
    }

    /// [`Self::encode`] on the blocking pool, an over-long input refused as a 422 naming
    /// `field` (and the input's index in the message).
    pub async fn encode_off_runtime(
        self: &Arc<Self>,
        texts: Vec<String>,
        truncate: bool,
        field: &str,
    ) -> Result<Vec<Vec<u32>>, ModelError> {
        self.try_encode_off_runtime(texts, truncate).await?.map_err(|e| {
            let subject = match e.culprit {
                Culprit::Text(i) => format!("{field} {i}"),
                Culprit::Query => "query".to_string(),
            };
            ModelError::InvalidInput { field: field.to_string(), message: e.describe(&subject) }
        })
    }

    /// Text back from ids (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.decode_with(ids, true)
    }

    /// Text back from ids, special tokens kept unless `skip_special`.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String, ModelError> {
        self.full.decode(ids, skip_special).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// The vocabulary's size (special tokens included).
    pub fn vocab_size(&self) -> usize {
        self.full.get_vocab_size(true)
    }

    /// The tokens of `text` and where each lies in it, as TEI's `/tokenize` lists them: nothing
    /// cut; a text larger than [`Self::max_bytes`] is refused by its size before tokenizing.
    pub fn spans(&self, text: &str, add_special_tokens: bool) -> Result<Result<Vec<TokenSpan>, TooLong>, ModelError> {
        if let Some(e) = self.too_many_bytes(Culprit::Text(0), text) {
            return Ok(Err(e));
        }
        let enc = self.full.encode(text, add_special_tokens).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let spans = enc
            .get_ids()
            .iter()
            .zip(enc.get_tokens())
            .zip(enc.get_offsets())
            .zip(enc.get_special_tokens_mask())
            .map(|(((&id, token), &(start, stop)), &special)| {
                if special == 1 {
                    TokenSpan { id, text: token.clone(), special: true, start: None, stop: None }
                } else {
                    let text = text.get(start..stop).unwrap_or(token).to_string();
                    TokenSpan { id, text, special: false, start: Some(start), stop: Some(stop) }
                }
            })
            .collect();
        Ok(Ok(spans))
    }
}

#[cfg(test)]
mod tests {
    use super::model_takes_token_type_ids;

    /// `model_takes_token_type_ids` on a fresh directory holding only this
    /// `tokenizer_config.json` (none when `config` is `None`).
    fn takes(config: Option<&str>, model_type: Option<&str>) -> bool {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("comps-type-ids-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(c) = config {
            std::fs::write(dir.join("tokenizer_config.json"), c).unwrap();
        }
        let got = model_takes_token_type_ids(&dir, model_type).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        got
    }

    #[test]
    fn segment_ids_follow_the_tokenizers_model_inputs() {
        // Listed inputs decide, whatever the class.
        let listed = r#"{"tokenizer_class": "TokenizersBackend", "model_input_names": ["input_ids", "token_type_ids", "attention_mask"]}"#;
        assert!(takes(Some(listed), Some("bert")));
        let unlisted = r#"{"tokenizer_class": "BertTokenizer", "model_input_names": ["input_ids", "attention_mask"]}"#;
        assert!(!takes(Some(unlisted), Some("bert")));
        // Else the class's default: BERT's (ms-marco cross-encoders) yes, generic and RoBERTa no.
        assert!(takes(Some(r#"{"tokenizer_class": "BertTokenizerFast"}"#), Some("bert")));
        assert!(takes(Some(r#"{"tokenizer_class": "BertTokenizer"}"#), Some("bert")));
        assert!(takes(Some(r#"{"tokenizer_class": "ElectraTokenizer"}"#), Some("bert")));
        assert!(!takes(Some(r#"{"tokenizer_class": "TokenizersBackend", "backend": "tokenizers"}"#), Some("bert")));
        assert!(!takes(Some(r#"{"tokenizer_class": "PreTrainedTokenizerFast"}"#), Some("bert")));
        assert!(!takes(Some(r#"{"tokenizer_class": "XLMRobertaTokenizer"}"#), Some("xlm-roberta")));
        // Else the family's tokenizer.
        assert!(takes(None, Some("bert")));
        assert!(takes(Some("{}"), None));
        assert!(!takes(None, Some("xlm-roberta")));
        assert!(!takes(Some(r#"{"model_max_length": 512}"#), Some("roberta")));
    }
}
