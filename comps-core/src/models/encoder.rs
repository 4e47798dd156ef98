//! BERT-family encoders (BERT, XLM-RoBERTa) on candle, with the pooling sentence-transformers
//! uses. Our own forward pass rather than candle-transformers' `BertModel`: the Q, K and V
//! projections are fused into one matmul and every projection runs on the flattened
//! `(batch × tokens, hidden)` matrix, which is where the time goes on CPU.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use super::ModelError;

/// Which encoder family a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// BERT (MiniLM, bge, e5, ms-marco cross-encoders).
    Bert,
    /// XLM-RoBERTa (multilingual-e5, bge-m3, bge-reranker): positions start after the pad id.
    XlmRoberta,
}

/// The fields of a Hugging Face `config.json` an encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct EncoderConfig {
    /// `bert`, `xlm-roberta`, `roberta`, ...
    #[serde(default)]
    pub model_type: Option<String>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward size.
    pub intermediate_size: usize,
    /// `gelu`, `gelu_new`, `relu`.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Position table size.
    pub max_position_embeddings: usize,
    /// Token type table size (1 for XLM-R).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: u32,
    /// Labels of a sequence-classification head, when there is one.
    #[serde(default)]
    pub id2label: Option<HashMap<String, String>>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl EncoderConfig {
    /// The family, from `model_type`.
    pub fn arch(&self) -> Result<Arch, ModelError> {
        match self.model_type.as_deref().unwrap_or("bert") {
            "bert" => Ok(Arch::Bert),
            "xlm-roberta" | "roberta" | "camembert" => Ok(Arch::XlmRoberta),
            other => {
                Err(ModelError::Unsupported(format!("model_type '{other}' (supported: bert, xlm-roberta, roberta)")))
            }
        }
    }

    /// Largest input in tokens (XLM-R reserves `pad_token_id + 1` positions).
    pub fn max_input_tokens(&self) -> usize {
        match self.arch() {
            Ok(Arch::XlmRoberta) => self.max_position_embeddings - self.pad_token_id as usize - 1,
            _ => self.max_position_embeddings,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Act {
    GeluErf,
    GeluTanh,
    Relu,
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: LayerNorm,
}

/// A loaded encoder.
pub struct Encoder {
    arch: Arch,
    cfg: EncoderConfig,
    word: Embedding,
    position: Embedding,
    token_type: Option<Embedding>,
    norm: LayerNorm,
    layers: Vec<Layer>,
    act: Act,
    device: Device,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("arch", &self.arch).field("layers", &self.layers.len()).finish()
    }
}

/// Read a safetensors file fully into tensors on `device` (no mmap: the crate forbids unsafe).
pub fn load_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, ModelError> {
    candle_core::safetensors::load(path, device).map_err(|e| ModelError::Load(format!("{}: {e}", path.display())))
}

/// Find the prefix under which the encoder's tensors live (`""`, `bert.`, `roberta.`, ...).
pub fn encoder_prefix(tensors: &HashMap<String, Tensor>) -> Option<String> {
    let key = "embeddings.word_embeddings.weight";
    let mut prefixes: Vec<String> = tensors.keys().filter_map(|k| k.strip_suffix(key).map(str::to_string)).collect();
    prefixes.sort_by_key(String::len);
    prefixes.into_iter().next()
}

fn linear(vb: &VarBuilder, in_dim: usize, out_dim: usize, name: &str) -> Result<Linear, ModelError> {
    candle_nn::linear(in_dim, out_dim, vb.pp(name)).map_err(|e| ModelError::Load(format!("{name}: {e}")))
}

fn norm(vb: &VarBuilder, dim: usize, eps: f64, name: &str) -> Result<LayerNorm, ModelError> {
    // Older BERT checkpoints call the parameters gamma/beta.
    let vb = vb.pp(name);
    let (w, b) = match (vb.get(dim, "weight"), vb.get(dim, "bias")) {
        (Ok(w), Ok(b)) => (w, b),
        _ => (
            vb.get(dim, "gamma").map_err(|e| ModelError::Load(format!("{name}: {e}")))?,
            vb.get(dim, "beta").map_err(|e| ModelError::Load(format!("{name}: {e}")))?,
        ),
    };
    Ok(LayerNorm::new(w, b, eps))
}

fn embedding(vb: &VarBuilder, n: usize, dim: usize, name: &str) -> Result<Embedding, ModelError> {
    candle_nn::embedding(n, dim, vb.pp(name)).map_err(|e| ModelError::Load(format!("{name}: {e}")))
}

impl Encoder {
    /// Build from a config and a VarBuilder rooted at the encoder (`embeddings.*`,
    /// `encoder.layer.N.*`).
    pub fn load(cfg: EncoderConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        let arch = cfg.arch()?;
        let h = cfg.hidden_size;
        if !h.is_multiple_of(cfg.num_attention_heads) {
            return Err(ModelError::Load(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                cfg.num_attention_heads
            )));
        }
        let act = match cfg.hidden_act.as_str() {
            "gelu" => Act::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Act::GeluTanh,
            "relu" => Act::Relu,
            other => return Err(ModelError::Unsupported(format!("hidden_act '{other}'"))),
        };
        let e = vb.pp("embeddings");
        let word = embedding(&e, cfg.vocab_size, h, "word_embeddings")?;
        let position = embedding(&e, cfg.max_position_embeddings, h, "position_embeddings")?;
        let token_type = embedding(&e, cfg.type_vocab_size, h, "token_type_embeddings").ok();
        let emb_norm = norm(&e, h, cfg.layer_norm_eps, "LayerNorm")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            let q = linear(&a.pp("self"), h, h, "query")?;
            let k = linear(&a.pp("self"), h, h, "key")?;
            let v = linear(&a.pp("self"), h, h, "value")?;
            let cat = |f: fn(&Linear) -> Option<&Tensor>| -> Result<Option<Tensor>, ModelError> {
                match (f(&q), f(&k), f(&v)) {
                    (Some(a), Some(b), Some(c)) => Tensor::cat(&[a, b, c], 0).map(Some).map_err(ModelError::from),
                    _ => Ok(None),
                }
            };
            let w = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
            let qkv = Linear::new(w, cat(Linear::bias)?);
            layers.push(Layer {
                qkv,
                attn_out: linear(&a.pp("output"), h, h, "dense")?,
                attn_norm: norm(&a.pp("output"), h, cfg.layer_norm_eps, "LayerNorm")?,
                ffn_in: linear(&l.pp("intermediate"), h, cfg.intermediate_size, "dense")?,
                ffn_out: linear(&l.pp("output"), cfg.intermediate_size, h, "dense")?,
                ffn_norm: norm(&l.pp("output"), h, cfg.layer_norm_eps, "LayerNorm")?,
            });
        }
        Ok(Self { arch, device: vb.device().clone(), cfg, word, position, token_type, norm: emb_norm, layers, act })
    }

    /// The config.
    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Hidden states `(batch, tokens, hidden)` for right-padded ids; `lengths[i]` real tokens
    /// of row `i`, the rest masked out. `type_ids` defaults to zeros.
    pub fn forward(&self, ids: &[Vec<u32>], type_ids: Option<&[Vec<u32>]>) -> Result<(Tensor, Vec<usize>), ModelError> {
        let b = ids.len();
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let t = lengths.iter().copied().max().unwrap_or(0).max(1);
        let h = self.cfg.hidden_size;
        let pad = self.cfg.pad_token_id;
        let mut flat_ids = Vec::with_capacity(b * t);
        let mut flat_pos = Vec::with_capacity(b * t);
        let mut flat_types = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t);
        for (row, seq) in ids.iter().enumerate() {
            for j in 0..t {
                let real = j < seq.len();
                flat_ids.push(if real { seq[j] } else { pad });
                let p = match self.arch {
                    Arch::Bert => j as u32,
                    Arch::XlmRoberta if real => pad + 1 + j as u32,
                    Arch::XlmRoberta => pad,
                };
                flat_pos.push(p);
                flat_types.push(type_ids.and_then(|ty| ty.get(row)).and_then(|r| r.get(j)).copied().unwrap_or(0));
                mask.push(if real { 0f32 } else { -1e9f32 });
            }
        }
        let dev = &self.device;
        let ids_t = Tensor::from_vec(flat_ids, b * t, dev)?;
        let pos_t = Tensor::from_vec(flat_pos, b * t, dev)?;
        let mut x = (self.word.forward(&ids_t)? + self.position.forward(&pos_t)?)?;
        if let Some(tt) = &self.token_type {
            let types_t = Tensor::from_vec(flat_types, b * t, dev)?;
            x = (x + tt.forward(&types_t)?)?;
        }
        let mut x = self.norm.forward(&x)?; // (b*t, h)
        let mask = Tensor::from_vec(mask, (b, 1, 1, t), dev)?;
        let heads = self.cfg.num_attention_heads;
        let hd = h / heads;
        let scale = 1.0 / (hd as f64).sqrt();
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?; // (b*t, 3h)
            let qkv = qkv.reshape((b, t, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?; // (3, b, heads, t, hd)
            let q = (qkv.get(0)? * scale)?.contiguous()?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&mask)?; // (b, heads, t, t)
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b * t, h))?;
            let attn = layer.attn_norm.forward(&(layer.attn_out.forward(&ctx)? + &x)?)?;
            let inner = layer.ffn_in.forward(&attn)?;
            let inner = match self.act {
                Act::GeluErf => inner.gelu_erf()?,
                Act::GeluTanh => inner.gelu()?,
                Act::Relu => inner.relu()?,
            };
            x = layer.ffn_norm.forward(&(layer.ffn_out.forward(&inner)? + &attn)?)?;
        }
        Ok((x.reshape((b, t, h))?, lengths))
    }
}

/// How token states become one vector (sentence-transformers' `1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over real tokens.
    Mean,
    /// The first token.
    Cls,
    /// The last real token.
    LastToken,
}

impl Pooling {
    /// Read `1_Pooling/config.json` in `dir`; mean when there is none.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        #[derive(Deserialize)]
        struct P {
            #[serde(default)]
            pooling_mode_cls_token: bool,
            #[serde(default)]
            pooling_mode_mean_tokens: bool,
            #[serde(default)]
            pooling_mode_lasttoken: bool,
        }
        let path = dir.join("1_Pooling").join("config.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Self::Mean) };
        let p: P = serde_json::from_str(&text).map_err(|e| ModelError::Load(format!("{}: {e}", path.display())))?;
        Ok(if p.pooling_mode_cls_token {
            Self::Cls
        } else if p.pooling_mode_lasttoken {
            Self::LastToken
        } else if p.pooling_mode_mean_tokens {
            Self::Mean
        } else {
            return Err(ModelError::Unsupported(format!("{}: no supported pooling mode", path.display())));
        })
    }

    /// Parse `mean`, `cls`, `last_token`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mean" => Some(Self::Mean),
            "cls" => Some(Self::Cls),
            "last_token" | "lasttoken" => Some(Self::LastToken),
            _ => None,
        }
    }

    /// TEI's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::LastToken => "last_token",
        }
    }

    /// Pool `(batch, tokens, hidden)` states into one vector per row.
    pub fn pool(self, states: &Tensor, lengths: &[usize]) -> Result<Vec<Vec<f32>>, ModelError> {
        let (b, t, _) = states.dims3()?;
        match self {
            Self::Cls => Ok(states.narrow(1, 0, 1)?.squeeze(1)?.to_vec2()?),
            Self::LastToken => {
                let mut out = Vec::with_capacity(b);
                for (i, len) in lengths.iter().enumerate() {
                    out.push(states.get(i)?.get(len.saturating_sub(1))?.to_vec1()?);
                }
                Ok(out)
            }
            Self::Mean => {
                let mut m = Vec::with_capacity(b * t);
                for len in lengths {
                    m.extend((0..t).map(|j| if j < *len { 1f32 } else { 0f32 }));
                }
                let mask = Tensor::from_vec(m, (b, t, 1), states.device())?;
                let summed = states.broadcast_mul(&mask)?.sum(1)?; // (b, h)
                let counts: Vec<f32> = lengths.iter().map(|l| (*l).max(1) as f32).collect();
                let counts = Tensor::from_vec(counts, (b, 1), states.device())?;
                Ok(summed.broadcast_div(&counts)?.to_vec2()?)
            }
        }
    }
}

/// Scale each vector to unit L2 norm (zero vectors stay zero).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// A model directory as Hugging Face / sentence-transformers lay it out.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The directory.
    pub path: PathBuf,
}

impl ModelDir {
    /// Check the directory has a config, weights and a tokenizer.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ModelError> {
        let path = path.into();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            if !path.join(f).is_file() {
                return Err(ModelError::Load(format!(
                    "{} has no {f} (expected a Hugging Face model directory; run scripts/fetch-models.sh)",
                    path.display()
                )));
            }
        }
        Ok(Self { path })
    }

    /// `config.json` parsed as an encoder config.
    pub fn encoder_config(&self) -> Result<EncoderConfig, ModelError> {
        let p = self.path.join("config.json");
        let text = std::fs::read_to_string(&p).map_err(|e| ModelError::Load(format!("{}: {e}", p.display())))?;
        serde_json::from_str(&text).map_err(|e| ModelError::Load(format!("{}: {e}", p.display())))
    }

    /// sentence-transformers' `max_seq_length`, if the directory has one.
    pub fn max_seq_length(&self) -> Option<usize> {
        let text = std::fs::read_to_string(self.path.join("sentence_bert_config.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("max_seq_length").and_then(serde_json::Value::as_u64).map(|n| n as usize)
    }

    /// Load the encoder weights (f32) on `device`, returning the encoder and all tensors (for
    /// heads that live beside it).
    pub fn load_encoder(&self, device: &Device) -> Result<(Encoder, VarBuilder<'static>), ModelError> {
        let cfg = self.encoder_config()?;
        let tensors = load_safetensors(&self.path.join("model.safetensors"), device)?;
        let prefix = encoder_prefix(&tensors).ok_or_else(|| {
            ModelError::Load(format!("{}: no embeddings.word_embeddings.weight tensor", self.path.display()))
        })?;
        let root = VarBuilder::from_tensors(tensors, DType::F32, device);
        let vb = if prefix.is_empty() { root.clone() } else { root.pp(prefix.trim_end_matches('.')) };
        Ok((Encoder::load(cfg, vb)?, root))
    }
}

/// Cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}
