//! Sequence classification on our encoder: the heads of `BertForSequenceClassification`
//! (pooler `tanh(W·h[CLS])`, then a linear classifier) and `XLMRobertaForSequenceClassification`
//! (`out_proj(tanh(dense(h[CLS])))`). Cross-encoder rerankers (ms-marco MiniLM, bge-reranker)
//! and prompt-injection classifiers of these families load as they are saved.
//!
//! A pair's token type (segment) ids reach the encoder only when transformers would pass them,
//! which its tokenizer decides ([`model_takes_token_type_ids`]): ms-marco's `BertTokenizer`
//! does, a generic tokenizer saved by transformers 5 does not, and then BERT sees type 0 for
//! the passage too.

use std::path::Path;

use candle_nn::VarBuilder;

use super::batcher::BatchModel;
use super::encoder::{Arch, Encoder, ModelDir, get_vec};
use super::tokenize::{TextTokenizer, model_takes_token_type_ids};
use super::{ModelError, cpu};

/// `y = W·x + b` for one vector.
#[derive(Debug, Clone)]
struct Dense {
    w: Vec<f32>,
    b: Vec<f32>,
    inputs: usize,
}

impl Dense {
    fn load(vb: &VarBuilder, outputs: usize, inputs: usize) -> Result<Self, ModelError> {
        Ok(Self { w: get_vec(vb, &[outputs, inputs], "weight")?, b: get_vec(vb, &[outputs], "bias")?, inputs })
    }

    fn apply(&self, x: &[f32]) -> Vec<f32> {
        self.w
            .chunks_exact(self.inputs)
            .zip(&self.b)
            .map(|(row, b)| row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + b)
            .collect()
    }
}

#[derive(Debug, Clone)]
enum Head {
    /// BERT: pooler then classifier.
    Bert { pooler: Dense, classifier: Dense },
    /// RoBERTa family: dense, tanh, out_proj.
    Roberta { dense: Dense, out_proj: Dense },
}

/// An encoder with a sequence-classification head.
pub struct SequenceClassifier {
    encoder: Encoder,
    head: Head,
    labels: Vec<String>,
    /// Whether the inputs' token type ids are used (else all zeros, as in transformers).
    token_types: bool,
}

impl std::fmt::Debug for SequenceClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequenceClassifier")
            .field("labels", &self.labels)
            .field("token_types", &self.token_types)
            .finish_non_exhaustive()
    }
}

impl SequenceClassifier {
    /// Load a `*ForSequenceClassification` directory and its tokenizer (pairs truncated to the
    /// model's maximum).
    pub fn load(dir: &Path) -> Result<(Self, TextTokenizer), ModelError> {
        let md = ModelDir::open(dir)?;
        let (encoder, root) = md.load_encoder(&cpu())?;
        let cfg = encoder.config().clone();
        let h = cfg.hidden_size;
        let classifier_vb = root.pp("classifier");
        // Label count from the classifier's shape: `classifier.weight` (BERT) or
        // `classifier.out_proj.weight` (RoBERTa).
        let n_labels = cfg.id2label.as_ref().map(|m| m.len()).filter(|n| *n > 0).unwrap_or(1);
        let head = match cfg.arch()? {
            Arch::Bert => {
                let pooler_vb = ["bert.pooler.dense", "pooler.dense"]
                    .iter()
                    .map(|p| root.pp(*p))
                    .find(|vb| vb.contains_tensor("weight"))
                    .ok_or_else(|| ModelError::Load(format!("{}: no pooler.dense weights", dir.display())))?;
                Head::Bert {
                    pooler: Dense::load(&pooler_vb, h, h)?,
                    classifier: Dense::load(&classifier_vb, n_labels, h)?,
                }
            }
            Arch::XlmRoberta => Head::Roberta {
                dense: Dense::load(&classifier_vb.pp("dense"), h, h)?,
                out_proj: Dense::load(&classifier_vb.pp("out_proj"), n_labels, h)?,
            },
        };
        let mut labels: Vec<(usize, String)> = cfg
            .id2label
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| k.parse().ok().map(|i| (i, v)))
            .collect();
        labels.sort();
        let labels = if labels.len() == n_labels {
            labels.into_iter().map(|(_, v)| v).collect()
        } else {
            (0..n_labels).map(|i| format!("LABEL_{i}")).collect()
        };
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), cfg.max_input_tokens())?;
        let token_types = model_takes_token_type_ids(dir, cfg.model_type.as_deref())?;
        Ok((Self { encoder, head, labels, token_types }, tokenizer))
    }

    /// Label names, by logit index.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Whether the model is given its inputs' token type ids (see the module docs); when not,
    /// [`Self::logits`] ignores them.
    pub fn takes_token_type_ids(&self) -> bool {
        self.token_types
    }

    /// Logits for each (ids, type ids) input.
    pub fn logits(&self, items: &[(&[u32], &[u32])]) -> Result<Vec<Vec<f32>>, ModelError> {
        let ids: Vec<&[u32]> = items.iter().map(|(i, _)| *i).collect();
        let types: Vec<&[u32]> = items.iter().map(|(_, t)| *t).collect();
        let hidden = self.encoder.forward(&ids, self.token_types.then_some(types.as_slice()))?;
        let h = hidden.hidden;
        Ok((0..hidden.batch())
            .map(|i| {
                let cls = &hidden.sequence(i)[..h];
                match &self.head {
                    Head::Bert { pooler, classifier } => {
                        let pooled: Vec<f32> = pooler.apply(cls).into_iter().map(f32::tanh).collect();
                        classifier.apply(&pooled)
                    }
                    Head::Roberta { dense, out_proj } => {
                        let x: Vec<f32> = dense.apply(cls).into_iter().map(f32::tanh).collect();
                        out_proj.apply(&x)
                    }
                }
            })
            .collect())
    }
}

impl BatchModel for SequenceClassifier {
    type Input = (Vec<u32>, Vec<u32>);
    type Output = Vec<f32>;

    fn run(&mut self, items: &[&(Vec<u32>, Vec<u32>)]) -> Result<Vec<Vec<f32>>, String> {
        let pairs: Vec<(&[u32], &[u32])> = items.iter().map(|(i, t)| (i.as_slice(), t.as_slice())).collect();
        self.logits(&pairs).map_err(|e| e.to_string())
    }
}
