//! Sentence embeddings: tokenizer + encoder + pooling from one model directory, runnable in the
//! batcher.

use std::collections::BTreeMap;
use std::path::Path;

use super::batcher::{BatchItem, BatchModel};
use super::encoder::{Encoder, ModelDir, Pooling};
use super::tokenize::TextTokenizer;
use super::{ModelError, cpu};

/// What an embedding model is.
#[derive(Debug, Clone)]
pub struct EmbeddingInfo {
    /// Model directory name (or hub id).
    pub model_id: String,
    /// Vector size.
    pub dim: usize,
    /// Longest input in tokens.
    pub max_input_tokens: usize,
    /// Pooling.
    pub pooling: Pooling,
    /// The model's named prompts.
    pub prompts: Prompts,
}

/// The named prompts of a sentence-transformers model (`config_sentence_transformers.json`:
/// `prompts` and `default_prompt_name`), put before a text when a request names one, as TEI's
/// `prompt_name` does. Asymmetric models such as E5 embed questions as `query: ...` and
/// documents as `passage: ...`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompts {
    /// Name -> the text put before the input.
    pub named: BTreeMap<String, String>,
    /// The prompt used when a request names none.
    pub default_name: Option<String>,
}

impl Prompts {
    /// The prompts of a model directory (none when it has no sentence-transformers config).
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config_sentence_transformers.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Self::default()) };
        #[derive(serde::Deserialize)]
        struct Config {
            #[serde(default)]
            prompts: BTreeMap<String, String>,
            #[serde(default)]
            default_prompt_name: Option<String>,
        }
        let c: Config =
            serde_json::from_str(&text).map_err(|e| ModelError::Load(format!("{}: {e}", path.display())))?;
        if let Some(d) = &c.default_prompt_name
            && !c.prompts.contains_key(d)
        {
            return Err(ModelError::Load(format!("{}: default_prompt_name {d:?} is not a prompt", path.display())));
        }
        Ok(Self { named: c.prompts, default_name: c.default_prompt_name })
    }

    /// The text of prompt `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.named.get(name).map(String::as_str)
    }

    /// The prompt for a request naming `name` (or the default when it names none); `Err`
    /// with the names there are when the model has no such prompt.
    pub fn resolve(&self, name: Option<&str>) -> Result<Option<&str>, String> {
        match name.or(self.default_name.as_deref()) {
            None => Ok(None),
            Some(n) => self.get(n).map(Some).ok_or_else(|| {
                let names: Vec<&str> = self.named.keys().map(String::as_str).collect();
                if names.is_empty() {
                    format!("the model has no prompts, so prompt_name {n:?} cannot be used")
                } else {
                    format!("prompt_name {n:?} is not one of the model's prompts: {}", names.join(", "))
                }
            }),
        }
    }
}

/// The encoder half, owned by the batcher thread.
pub struct EmbeddingModel {
    encoder: Encoder,
    pooling: Pooling,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel").field("pooling", &self.pooling).finish_non_exhaustive()
    }
}

impl EmbeddingModel {
    /// Load a sentence-embedding directory: the model (for the batcher), its tokenizer (for the
    /// request side) and a description. `pooling` overrides `1_Pooling/config.json`.
    pub fn load(dir: &Path, pooling: Option<Pooling>) -> Result<(Self, TextTokenizer, EmbeddingInfo), ModelError> {
        let md = ModelDir::open(dir)?;
        let (encoder, _) = md.load_encoder(&cpu())?;
        let cfg = encoder.config();
        let max = md.max_seq_length().unwrap_or(usize::MAX).min(cfg.max_input_tokens());
        let pooling = match pooling {
            Some(p) => p,
            None => Pooling::from_dir(dir)?,
        };
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max)?;
        let info = EmbeddingInfo {
            model_id: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            dim: cfg.hidden_size,
            max_input_tokens: max,
            pooling,
            prompts: Prompts::from_dir(dir)?,
        };
        Ok((Self { encoder, pooling }, tokenizer, info))
    }

    /// Pooled (not normalized) vectors for a batch of token sequences.
    pub fn embed(&self, items: &[&[u32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let hidden = self.encoder.forward(items, None)?;
        Ok(self.pooling.pool(&hidden))
    }
}

/// One input of an embedding service's batcher: token ids, and whether every token's vector is
/// wanted (TEI's `/embed_all`) instead of the pooled one.
#[derive(Debug, Clone)]
pub struct EmbedJob {
    /// The token ids.
    pub ids: Vec<u32>,
    /// Answer every token's row (`len × dim`, row after row), not the pooled vector.
    pub all_tokens: bool,
}

impl BatchItem for EmbedJob {
    fn tokens(&self) -> usize {
        self.ids.len()
    }
}

/// An [`EmbeddingModel`] that answers [`EmbedJob`]s: pooled vectors and per-token rows from
/// the same forward pass, so both kinds of request share one batch.
#[derive(Debug)]
pub struct EmbedJobs(pub EmbeddingModel);

impl BatchModel for EmbedJobs {
    type Input = EmbedJob;
    type Output = Vec<f32>;

    fn run(&mut self, items: &[&EmbedJob]) -> Result<Vec<Vec<f32>>, String> {
        let seqs: Vec<&[u32]> = items.iter().map(|j| j.ids.as_slice()).collect();
        let hidden = self.0.encoder.forward(&seqs, None).map_err(|e| e.to_string())?;
        let pooled = self.0.pooling.pool(&hidden);
        Ok(items
            .iter()
            .zip(pooled)
            .enumerate()
            .map(|(i, (job, v))| if job.all_tokens { hidden.sequence(i).to_vec() } else { v })
            .collect())
    }
}

impl BatchModel for EmbeddingModel {
    type Input = Vec<u32>;
    type Output = Vec<f32>;

    fn run(&mut self, items: &[&Vec<u32>]) -> Result<Vec<Vec<f32>>, String> {
        let seqs: Vec<&[u32]> = items.iter().map(|v| v.as_slice()).collect();
        self.embed(&seqs).map_err(|e| e.to_string())
    }
}
