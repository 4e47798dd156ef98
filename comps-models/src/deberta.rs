//! DeBERTa-v2/v3 sequence classifiers (e.g. protectai/deberta-v3-base-prompt-injection-v2),
//! run with candle-transformers' `debertav2` on the batcher thread like the other models.

use std::path::Path;

use crate::BatchModel;
use crate::encoder::load_safetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::debertav2::{Config, DebertaV2SeqClassificationModel};

/// A DeBERTa-v2 `*ForSequenceClassification` directory, loaded.
pub struct DebertaClassifier {
    model: DebertaV2SeqClassificationModel,
    labels: Vec<String>,
    /// Longest input in tokens.
    pub max_tokens: usize,
}

impl DebertaClassifier {
    /// Whether `dir` holds a DeBERTa-v2 model (`model_type` in config.json).
    pub fn is_deberta(dir: &Path) -> bool {
        std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .is_some_and(|v| v["model_type"] == "deberta-v2")
    }

    /// Load config.json and model.safetensors from `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| anyhow::anyhow!("{}: {e}", cfg_path.display()))?;
        let cfg: Config = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", cfg_path.display()))?;
        let mut labels: Vec<(u32, String)> = cfg.id2label.clone().unwrap_or_default().into_iter().collect();
        labels.sort();
        if labels.is_empty() {
            anyhow::bail!("{}: id2label is missing; the classifier's labels are needed", cfg_path.display());
        }
        let device = Device::Cpu;
        // The builder converts each tensor to f32 as it is taken (bf16 / f16 checkpoints).
        let weights = load_safetensors(dir, &device)?;
        let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
        let model = DebertaV2SeqClassificationModel::load(vb.pp("deberta"), &cfg, cfg.id2label.clone())?;
        let max_tokens = cfg.max_position_embeddings;
        Ok(Self { model, labels: labels.into_iter().map(|(_, l)| l).collect(), max_tokens })
    }

    /// Label names, by logit index.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Logits of a padded batch of token id sequences.
    pub fn logits(&self, inputs: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let len = inputs.iter().map(|i| i.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(inputs.len() * len);
        let mut mask = Vec::with_capacity(inputs.len() * len);
        for i in inputs {
            ids.extend(i.iter().copied().chain(std::iter::repeat_n(0, len - i.len())));
            mask.extend(std::iter::repeat_n(1i64, i.len()).chain(std::iter::repeat_n(0i64, len - i.len())));
        }
        let ids = Tensor::from_vec(ids, (inputs.len(), len), &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (inputs.len(), len), &Device::Cpu)?;
        self.model.forward(&ids, None, Some(mask))?.to_dtype(DType::F32)?.to_vec2::<f32>()
    }
}

impl BatchModel for DebertaClassifier {
    type Input = (Vec<u32>, Vec<u32>);
    type Output = Vec<f32>;

    fn run(&mut self, items: &[&(Vec<u32>, Vec<u32>)]) -> Result<Vec<Vec<f32>>, String> {
        let ids: Vec<&[u32]> = items.iter().map(|(i, _)| i.as_slice()).collect();
        self.logits(&ids).map_err(|e| e.to_string())
    }
}
