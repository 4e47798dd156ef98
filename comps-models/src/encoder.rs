//! BERT-family encoders (BERT, XLM-RoBERTa) on candle, with the pooling sentence-transformers
//! uses. Our own forward pass rather than candle-transformers' `BertModel`: the Q, K and V
//! projections are fused into one matmul and every projection runs on the flattened
//! `(batch × tokens, hidden)` matrix, which is where the time goes on CPU.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::ModelError;
use super::kernels::{self, View};

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

/// Hidden states of a batch, packed without padding: the rows of sequence `i` are
/// `offsets[i]..offsets[i + 1]`, each `hidden` wide.
#[derive(Debug, Clone)]
pub struct Hidden {
    /// Row-major `(total tokens, hidden)`.
    pub data: Vec<f32>,
    /// Row offsets of each sequence (`len = batch + 1`).
    pub offsets: Vec<usize>,
    /// Width.
    pub hidden: usize,
}

impl Hidden {
    /// The rows of sequence `i`.
    pub fn sequence(&self, i: usize) -> &[f32] {
        &self.data[self.offsets[i] * self.hidden..self.offsets[i + 1] * self.hidden]
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.offsets.len() - 1
    }
}

struct Layer {
    qkv_w: Vec<f32>,
    qkv_b: Vec<f32>,
    o_w: Vec<f32>,
    o_b: Vec<f32>,
    ln1_g: Vec<f32>,
    ln1_b: Vec<f32>,
    i_w: Vec<f32>,
    i_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    ln2_g: Vec<f32>,
    ln2_b: Vec<f32>,
}

/// A loaded encoder. Weights live as plain `f32` rows; the forward pass packs the batch
/// without padding, runs every projection as one large matrix multiply, and attention per
/// sequence over its real tokens only.
pub struct Encoder {
    arch: Arch,
    cfg: EncoderConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Option<Vec<f32>>,
    norm_g: Vec<f32>,
    norm_b: Vec<f32>,
    layers: Vec<Layer>,
    act: kernels::Activation,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("arch", &self.arch).field("layers", &self.layers.len()).finish()
    }
}

/// Read a safetensors file fully into tensors on `device` (no mmap: the crate forbids unsafe).
pub fn load_safetensors(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut all = HashMap::new();
    for path in safetensors_files(dir)? {
        let part = candle_core::safetensors::load(&path, device)
            .map_err(|e| ModelError::Load(format!("{}: {e}", path.display())))?;
        all.extend(part);
    }
    Ok(all)
}

/// The index `save_pretrained` writes beside a sharded checkpoint.
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// A directory's weight files: `model.safetensors`, or else the shards its
/// `model.safetensors.index.json` names (as `save_pretrained` splits a large model).
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(SHARD_INDEX);
    if !index.is_file() {
        return Err(ModelError::Load(format!("{} has neither model.safetensors nor {SHARD_INDEX}", dir.display())));
    }
    let text = std::fs::read_to_string(&index).map_err(|e| ModelError::Load(format!("{}: {e}", index.display())))?;
    let shards = shard_names(&text).map_err(|e| ModelError::Load(format!("{}: {e}", index.display())))?;
    Ok(shards.into_iter().map(|s| dir.join(s)).collect())
}

/// The shard files a `model.safetensors.index.json` names, each once, in order: plain file
/// names only (a shard elsewhere would be read from outside the model directory).
pub fn shard_names(index: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_str(index).map_err(|e| e.to_string())?;
    let map = v.get("weight_map").and_then(serde_json::Value::as_object).ok_or("no weight_map object")?;
    let mut names: Vec<String> = Vec::new();
    for file in map.values() {
        let file = file.as_str().ok_or("a weight_map value is not a string")?;
        if file.is_empty() || file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(format!("shard '{file}' is not a plain file name"));
        }
        if !names.iter().any(|n| n == file) {
            names.push(file.to_string());
        }
    }
    if names.is_empty() {
        return Err("weight_map is empty".into());
    }
    names.sort();
    Ok(names)
}

/// Find the prefix under which the encoder's tensors live (`""`, `bert.`, `roberta.`, ...).
pub fn encoder_prefix(tensors: &HashMap<String, Tensor>) -> Option<String> {
    let key = "embeddings.word_embeddings.weight";
    let mut prefixes: Vec<String> = tensors.keys().filter_map(|k| k.strip_suffix(key).map(str::to_string)).collect();
    prefixes.sort_by_key(String::len);
    prefixes.into_iter().next()
}

/// A tensor of the given shape as plain f32s.
pub fn get_vec(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Vec<f32>, ModelError> {
    let t = vb.get(shape, name).map_err(|e| ModelError::Load(format!("{}.{name}: {e}", vb.prefix())))?;
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

fn norm_pair(vb: &VarBuilder, dim: usize) -> Result<(Vec<f32>, Vec<f32>), ModelError> {
    // Older BERT checkpoints call the parameters gamma/beta.
    match (get_vec(vb, &[dim], "weight"), get_vec(vb, &[dim], "bias")) {
        (Ok(w), Ok(b)) => Ok((w, b)),
        _ => Ok((get_vec(vb, &[dim], "gamma")?, get_vec(vb, &[dim], "beta")?)),
    }
}

/// A linear layer's weight transposed to `(in, out)` row-major (the layout the multiply packs
/// fastest) and its bias.
fn dense(vb: &VarBuilder, out_dim: usize, in_dim: usize) -> Result<(Vec<f32>, Vec<f32>), ModelError> {
    let w = vb
        .get(&[out_dim, in_dim][..], "weight")
        .map_err(|e| ModelError::Load(format!("{}.weight: {e}", vb.prefix())))?;
    let wt = w.to_dtype(DType::F32)?.t()?.contiguous()?.flatten_all()?.to_vec1()?;
    Ok((wt, get_vec(vb, &[out_dim], "bias")?))
}

/// Columns side by side: `(in, a)`, `(in, b)`, `(in, c)` → `(in, a + b + c)`.
fn concat_cols(parts: &[&[f32]], rows: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for r in 0..rows {
        for p in parts {
            let w = p.len() / rows;
            out.extend_from_slice(&p[r * w..(r + 1) * w]);
        }
    }
    out
}

/// Rows per parallel task for row-wise kernels: enough work to beat the fork cost.
fn rows_per_task(rows: usize, width: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (rows.div_ceil(threads)).max(16_384 / width.max(1)).max(1)
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
            "gelu" => kernels::Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => kernels::Activation::GeluTanh,
            "relu" => kernels::Activation::Relu,
            other => return Err(ModelError::Unsupported(format!("hidden_act '{other}'"))),
        };
        let e = vb.pp("embeddings");
        let word = get_vec(&e.pp("word_embeddings"), &[cfg.vocab_size, h], "weight")?;
        let position = get_vec(&e.pp("position_embeddings"), &[cfg.max_position_embeddings, h], "weight")?;
        // No table (or type_vocab_size 0): every token is type 0 and adds nothing. A table whose
        // shape disagrees with the config is an error, not a silently dropped segment signal.
        let tt = e.pp("token_type_embeddings");
        let token_type = if cfg.type_vocab_size > 0 && tt.contains_tensor("weight") {
            Some(get_vec(&tt, &[cfg.type_vocab_size, h], "weight")?)
        } else {
            None
        };
        let (norm_g, norm_b) = norm_pair(&e.pp("LayerNorm"), h)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            let (q_w, q_b) = dense(&a.pp("self").pp("query"), h, h)?;
            let (k_w, k_b) = dense(&a.pp("self").pp("key"), h, h)?;
            let (v_w, v_b) = dense(&a.pp("self").pp("value"), h, h)?;
            let (o_w, o_b) = dense(&a.pp("output").pp("dense"), h, h)?;
            let (ln1_g, ln1_b) = norm_pair(&a.pp("output").pp("LayerNorm"), h)?;
            let (i_w, i_b) = dense(&l.pp("intermediate").pp("dense"), cfg.intermediate_size, h)?;
            let (out_w, out_b) = dense(&l.pp("output").pp("dense"), h, cfg.intermediate_size)?;
            let (ln2_g, ln2_b) = norm_pair(&l.pp("output").pp("LayerNorm"), h)?;
            layers.push(Layer {
                qkv_w: concat_cols(&[&q_w, &k_w, &v_w], h),
                qkv_b: [q_b, k_b, v_b].concat(),
                o_w,
                o_b,
                ln1_g,
                ln1_b,
                i_w,
                i_b,
                out_w,
                out_b,
                ln2_g,
                ln2_b,
            });
        }
        Ok(Self { arch, cfg, word, position, token_type, norm_g, norm_b, layers, act })
    }

    /// The config.
    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// Hidden states of each sequence (ids with special tokens; `type_ids` default to zeros).
    pub fn forward(&self, ids: &[&[u32]], type_ids: Option<&[&[u32]]>) -> Result<Hidden, ModelError> {
        use rayon::prelude::*;
        let h = self.cfg.hidden_size;
        let mut offsets = Vec::with_capacity(ids.len() + 1);
        offsets.push(0usize);
        for s in ids {
            if s.len() > self.cfg.max_input_tokens() {
                return Err(ModelError::Unsupported(format!(
                    "sequence of {} tokens is longer than the model's {}",
                    s.len(),
                    self.cfg.max_input_tokens()
                )));
            }
            offsets.push(offsets.last().copied().unwrap_or(0) + s.len());
        }
        let n = *offsets.last().unwrap_or(&0);
        let pad = self.cfg.pad_token_id as usize;
        // Embeddings: word + position + token type, then LayerNorm.
        let mut x = vec![0f32; n * h];
        for (si, seq) in ids.iter().enumerate() {
            for (j, &tok) in seq.iter().enumerate() {
                let tok = tok as usize;
                if tok >= self.cfg.vocab_size {
                    return Err(ModelError::Unsupported(format!("token id {tok} is outside the vocabulary")));
                }
                let pos = match self.arch {
                    Arch::Bert => j,
                    Arch::XlmRoberta => pad + 1 + j,
                };
                let ty = type_ids.and_then(|t| t.get(si)).and_then(|r| r.get(j)).copied().unwrap_or(0) as usize;
                let row = &mut x[(offsets[si] + j) * h..(offsets[si] + j + 1) * h];
                let w = &self.word[tok * h..(tok + 1) * h];
                let p = &self.position[pos * h..(pos + 1) * h];
                for ((r, a), b) in row.iter_mut().zip(w).zip(p) {
                    *r = a + b;
                }
                if let Some(tt) = &self.token_type {
                    let ty = ty.min(self.cfg.type_vocab_size - 1);
                    for (r, t) in row.iter_mut().zip(&tt[ty * h..(ty + 1) * h]) {
                        *r += t;
                    }
                }
            }
        }
        let eps = self.cfg.layer_norm_eps as f32;
        let chunk = rows_per_task(n, h) * h;
        x.par_chunks_mut(chunk).for_each(|c| kernels::layer_norm(c, &self.norm_g, &self.norm_b, eps));

        let threads = rayon::current_num_threads();
        let heads = self.cfg.num_attention_heads;
        let hd = h / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let inter = self.cfg.intermediate_size;
        let mut qkv = vec![0f32; n * 3 * h];
        let mut ctx = vec![0f32; n * h];
        let mut attn = vec![0f32; n * h];
        let mut mid = vec![0f32; n * inter];
        for layer in &self.layers {
            // Q, K and V in one multiply: (n, h) · (3h, h)ᵀ.
            kernels::matmul(
                &mut qkv,
                View::rows(0, n, 3 * h, 3 * h),
                &x,
                View::rows(0, n, h, h),
                &layer.qkv_w,
                View::rows(0, h, 3 * h, 3 * h),
                threads,
            );
            let c3 = rows_per_task(n, 3 * h) * 3 * h;
            qkv.par_chunks_mut(c3).for_each(|c| kernels::bias_act(c, &layer.qkv_b, kernels::Activation::Identity));
            // Attention, one task per sequence, over its real tokens only.
            let mut parts: Vec<(usize, &mut [f32])> = Vec::with_capacity(ids.len());
            let mut rest: &mut [f32] = &mut ctx;
            for si in 0..ids.len() {
                let len = offsets[si + 1] - offsets[si];
                let (head, tail) = rest.split_at_mut(len * h);
                parts.push((si, head));
                rest = tail;
            }
            let qkv_ref = &qkv;
            parts.into_par_iter().for_each(|(si, out)| {
                let len = offsets[si + 1] - offsets[si];
                if len == 0 {
                    return;
                }
                let base = offsets[si] * 3 * h;
                let mut scores = vec![0f32; len * len];
                for hi in 0..heads {
                    let q = View { offset: base + hi * hd, rows: len, cols: hd, rs: 3 * h, cs: 1 };
                    let k = View { offset: base + h + hi * hd, rows: len, cols: hd, rs: 3 * h, cs: 1 };
                    let v = View { offset: base + 2 * h + hi * hd, rows: len, cols: hd, rs: 3 * h, cs: 1 };
                    kernels::matmul(&mut scores, View::rows(0, len, len, len), qkv_ref, q, qkv_ref, k.t(), 1);
                    kernels::softmax_rows(&mut scores, len, len, scale);
                    kernels::matmul(
                        out,
                        View { offset: hi * hd, rows: len, cols: hd, rs: h, cs: 1 },
                        &scores,
                        View::rows(0, len, len, len),
                        qkv_ref,
                        v,
                        1,
                    );
                }
            });
            // Output projection + residual + LayerNorm.
            kernels::matmul(
                &mut attn,
                View::rows(0, n, h, h),
                &ctx,
                View::rows(0, n, h, h),
                &layer.o_w,
                View::rows(0, h, h, h),
                threads,
            );
            attn.par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk))
                .for_each(|(a, r)| kernels::bias_residual_norm(a, &layer.o_b, r, &layer.ln1_g, &layer.ln1_b, eps));
            // Feed-forward.
            kernels::matmul(
                &mut mid,
                View::rows(0, n, inter, inter),
                &attn,
                View::rows(0, n, h, h),
                &layer.i_w,
                View::rows(0, h, inter, inter),
                threads,
            );
            let ci = rows_per_task(n, inter) * inter;
            let act = self.act;
            mid.par_chunks_mut(ci).for_each(|c| kernels::bias_act(c, &layer.i_b, act));
            kernels::matmul(
                &mut x,
                View::rows(0, n, h, h),
                &mid,
                View::rows(0, n, inter, inter),
                &layer.out_w,
                View::rows(0, inter, h, h),
                threads,
            );
            x.par_chunks_mut(chunk)
                .zip(attn.par_chunks(chunk))
                .for_each(|(o, r)| kernels::bias_residual_norm(o, &layer.out_b, r, &layer.ln2_g, &layer.ln2_b, eps));
        }
        Ok(Hidden { data: x, offsets, hidden: h })
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

    /// One vector per sequence.
    pub fn pool(self, hidden: &Hidden) -> Vec<Vec<f32>> {
        let h = hidden.hidden;
        (0..hidden.batch())
            .map(|i| {
                let rows = hidden.sequence(i);
                let len = rows.len() / h;
                match self {
                    _ if len == 0 => vec![0.0; h],
                    Self::Cls => rows[..h].to_vec(),
                    Self::LastToken => rows[(len - 1) * h..].to_vec(),
                    Self::Mean => {
                        let mut acc = vec![0f32; h];
                        for row in rows.chunks_exact(h) {
                            acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                        }
                        let inv = 1.0 / len as f32;
                        acc.iter_mut().for_each(|a| *a *= inv);
                        acc
                    }
                }
            })
            .collect()
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
        safetensors_files(&path)?;
        for f in ["config.json", "tokenizer.json"] {
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
        let tensors = load_safetensors(&self.path, device)?;
        let prefix = encoder_prefix(&tensors).ok_or_else(|| {
            ModelError::Load(format!("{}: no embeddings.word_embeddings.weight tensor", self.path.display()))
        })?;
        let root = VarBuilder::from_tensors(tensors, DType::F32, device);
        let vb = if prefix.is_empty() { root.clone() } else { root.pp(prefix.trim_end_matches('.')) };
        Ok((Encoder::load(cfg, vb)?, root))
    }
}
