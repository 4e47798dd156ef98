//! Sentence embeddings: tokenizer + encoder + pooling from one model directory, runnable in the
//! batcher.

use std::path::Path;

use super::batcher::BatchModel;
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
        };
        Ok((Self { encoder, pooling }, tokenizer, info))
    }

    /// Pooled (not normalized) vectors for a batch of token sequences.
    pub fn embed(&self, items: &[&[u32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let hidden = self.encoder.forward(items, None)?;
        Ok(self.pooling.pool(&hidden))
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
