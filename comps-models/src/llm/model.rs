//! Loading a chat model: quantized GGUF (llama, qwen2, qwen3) or safetensors (llama, qwen2),
//! with its tokenizer, chat template and end-of-turn tokens.
//!
//! Every request decodes with its own copy of the model: the weights are reference counted, so
//! a copy costs only a fresh KV cache.

use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::encoder::load_safetensors as read_safetensors;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, quantized_llama, quantized_qwen2, quantized_qwen3, qwen2};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::native::{self, NativeLlama};
use super::tokenizer::from_gguf_metadata;

/// Requantization at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantize {
    /// Keep the file's types.
    None,
    /// Requantize to Q8_0 only the types without a SIMD kernel here: Q4_1, Q5_0 and Q5_1 for
    /// candle's models; nothing for a model the native backend runs (it has kernels for all).
    Auto,
    /// Every weight matrix to Q8_0.
    Q8_0,
    /// Every weight matrix to Q4_0.
    Q4_0,
}

impl Quantize {
    /// `none`, `auto`, `q8_0` or `q4_0`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "" => Some(Self::None),
            "auto" => Some(Self::Auto),
            "q8_0" => Some(Self::Q8_0),
            "q4_0" => Some(Self::Q4_0),
            _ => None,
        }
    }

    fn target(self, current: GgmlDType) -> Option<GgmlDType> {
        let target = match self {
            Self::None => return None,
            Self::Auto => match current {
                GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 => GgmlDType::Q8_0,
                _ => return None,
            },
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
        };
        (target != current).then_some(target)
    }
}

/// Which implementation runs a GGUF llama model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Our own forward pass (llama, qwen2, qwen3) when every matrix is in a format of
    /// `crate::quant`, candle's otherwise.
    Auto,
    /// Always candle-transformers' models.
    Candle,
}

impl Backend {
    /// `auto` or `candle`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "native" => Some(Self::Auto),
            "candle" => Some(Self::Candle),
            _ => None,
        }
    }
}

/// The weights of one architecture, without a KV cache.
#[derive(Clone)]
enum Weights {
    Native(Arc<NativeLlama>),
    QLlama(quantized_llama::ModelWeights),
    /// candle's GGUF qwen2 cannot be cloned: sequences borrow instances from a pool.
    QQwen2(Arc<Qwen2Pool>),
    QQwen3(quantized_qwen3::ModelWeights),
    Llama(llama::Llama, Box<llama::Config>),
    Qwen2(qwen2::ModelForCausalLM),
}

/// Instances of a GGUF qwen2 model, each with its own KV cache, loaded as sequences need them
/// (each costs the weights' memory again).
pub struct Qwen2Pool {
    path: PathBuf,
    quantize: Quantize,
    free: Mutex<Vec<quantized_qwen2::ModelWeights>>,
}

impl Qwen2Pool {
    fn take(&self) -> anyhow::Result<quantized_qwen2::ModelWeights> {
        if let Some(m) = self.free.lock().map_err(|_| anyhow::anyhow!("qwen2 pool poisoned"))?.pop() {
            return Ok(m);
        }
        tracing::info!(path = %self.path.display(), "loading another qwen2 instance for a concurrent sequence");
        let mut file = std::fs::File::open(&self.path)?;
        let content = gguf_file::Content::read(&mut file)?;
        Ok(match requantize(&content, &mut file, self.quantize)? {
            Some((c, mut cursor)) => quantized_qwen2::ModelWeights::from_gguf(c, &mut cursor, &Device::Cpu)?,
            None => quantized_qwen2::ModelWeights::from_gguf(content, &mut file, &Device::Cpu)?,
        })
    }

    fn put(&self, mut m: quantized_qwen2::ModelWeights) {
        m.clear_kv_cache();
        if let Ok(mut free) = self.free.lock() {
            free.push(m);
        }
    }
}

/// One sequence's model: shared weights and its own KV cache.
pub struct SequenceModel {
    weights: Weights,
    llama_cache: Option<llama::Cache>,
    /// The pooled qwen2 instance this sequence holds.
    qwen2: Option<quantized_qwen2::ModelWeights>,
    native_cache: Option<native::Cache>,
}

impl Drop for SequenceModel {
    fn drop(&mut self) {
        if let (Weights::QQwen2(pool), Some(m)) = (&self.weights, self.qwen2.take()) {
            pool.put(m);
        }
    }
}

impl SequenceModel {
    /// Run `ids` at positions `pos..pos+ids.len()` and return the logits of the last one.
    pub fn forward(&mut self, ids: &[u32], pos: usize) -> candle_core::Result<Vec<f32>> {
        if let Weights::Native(m) = &self.weights {
            let cache = self.native_cache.as_mut().ok_or_else(|| candle_core::Error::Msg("no native cache".into()))?;
            return m.forward(cache, ids, pos).map_err(|e| candle_core::Error::Msg(e.to_string()));
        }
        let x = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let logits = match &mut self.weights {
            Weights::Native(_) => unreachable!("handled above"),
            Weights::QLlama(m) => m.forward(&x, pos)?,
            Weights::QQwen2(_) => {
                let m = self.qwen2.as_mut().ok_or_else(|| candle_core::Error::Msg("no qwen2 instance".into()))?;
                m.forward(&x, pos)?
            }
            Weights::QQwen3(m) => m.forward(&x, pos)?,
            Weights::Llama(m, _) => {
                let cache =
                    self.llama_cache.as_mut().ok_or_else(|| candle_core::Error::Msg("no llama cache".into()))?;
                m.forward(&x, pos, cache)?
            }
            Weights::Qwen2(m) => m.forward(&x, pos)?,
        };
        // Every architecture returns the last position only: (1, vocab) or (1, 1, vocab).
        logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
    }
}

/// The keys and values of a sequence's first positions, kept to start later sequences whose
/// prompts begin with the same tokens (see [`SequenceModel::prefix_state`]).
pub struct PrefixState(pub(crate) native::Cache);

impl PrefixState {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.0.bytes()
    }
}

impl SequenceModel {
    /// A copy of the keys and values of this sequence's first `len` positions, where the
    /// backend can hand them over (the native one; `None` for candle's).
    pub fn prefix_state(&self, len: usize) -> Option<PrefixState> {
        self.native_cache.as_ref().map(|c| PrefixState(c.prefix(len)))
    }

    /// Start this sequence, which must not have run a token yet, from the first `len`
    /// positions of `state` (at most those held): its next tokens run at the positions after
    /// them. Returns the positions taken, 0 where the backend cannot take them over.
    pub fn start_from(&mut self, state: &PrefixState, len: usize) -> usize {
        match &mut self.native_cache {
            Some(cache) if cache.is_empty() => {
                *cache = state.0.prefix(len);
                cache.len()
            }
            _ => 0,
        }
    }
}

/// One sequence's part of [`ChatModel::forward_batch`].
pub struct BatchInput<'a> {
    /// The sequence.
    pub seq: &'a mut SequenceModel,
    /// The tokens to run at the end of its cache.
    pub ids: &'a [u32],
    /// Whether the logits of its last token are wanted.
    pub logits: bool,
}

/// A loaded chat model (cloning shares the weights).
#[derive(Clone)]
pub struct ChatModel {
    weights: Weights,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The Jinja chat template, when the model has one.
    pub chat_template: Option<String>,
    /// `bos_token` / `eos_token` strings for the template.
    pub bos_token: String,
    /// The end-of-sequence string.
    pub eos_token: String,
    /// Token ids that end a turn.
    pub stop_ids: BTreeSet<u32>,
    /// Longest prompt plus completion, in tokens.
    pub context_len: usize,
    /// The name served on `/v1/models`.
    pub name: String,
    /// `llama (GGUF, Q8_0)` and the like, for logs and `/v1/models`.
    pub description: String,
    /// Whether a prompt can be fed in several chunks (rectangular masks over the cache).
    pub chunked_prefill: bool,
}

impl ChatModel {
    /// A fresh sequence.
    pub fn sequence(&self) -> anyhow::Result<SequenceModel> {
        let llama_cache = match &self.weights {
            Weights::Llama(_, cfg) => Some(llama::Cache::new(true, DType::F32, cfg, &Device::Cpu)?),
            _ => None,
        };
        let qwen2 = match &self.weights {
            Weights::QQwen2(pool) => Some(pool.take()?),
            _ => None,
        };
        let native_cache = match &self.weights {
            Weights::Native(m) => Some(m.cache()),
            _ => None,
        };
        Ok(SequenceModel { weights: self.weights.clone(), llama_cache, qwen2, native_cache })
    }

    /// Whether several sequences can step together in one pass over the weights
    /// ([`ChatModel::forward_batch`]): the native backend.
    pub fn batched(&self) -> bool {
        matches!(self.weights, Weights::Native(_))
    }

    /// One step of several sequences of this model at once (see [`ChatModel::batched`]):
    /// per input, the logits of its last token where they were asked for.
    pub fn forward_batch(&self, inputs: &mut [BatchInput<'_>]) -> anyhow::Result<Vec<Option<Vec<f32>>>> {
        let Weights::Native(m) = &self.weights else {
            anyhow::bail!("batched steps need the native backend");
        };
        let mut steps = Vec::with_capacity(inputs.len());
        for input in inputs.iter_mut() {
            let cache = input.seq.native_cache.as_mut().ok_or_else(|| anyhow::anyhow!("no native cache"))?;
            steps.push(native::Step { cache, ids: input.ids, logits: input.logits });
        }
        m.forward_batch(&mut steps)
    }

    /// Which implementation runs this model: `native` or `candle`.
    pub fn backend(&self) -> &'static str {
        match self.weights {
            Weights::Native(_) => "native",
            _ => "candle",
        }
    }

    /// Load a `.gguf` file, a directory holding one `.gguf` file or a safetensors model, with
    /// the backend chosen automatically.
    pub fn load(path: &Path, quantize: Quantize) -> anyhow::Result<Self> {
        Self::load_with(path, quantize, Backend::Auto)
    }

    /// [`ChatModel::load`] with a choice of backend.
    pub fn load_with(path: &Path, quantize: Quantize, backend: Backend) -> anyhow::Result<Self> {
        if path.is_file() {
            return load_gguf(path, quantize, backend);
        }
        if !path.is_dir() {
            anyhow::bail!("{} is neither a file nor a directory", path.display());
        }
        let ggufs: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
            .collect();
        if path.join("config.json").is_file() && crate::encoder::safetensors_files(path).is_ok() {
            return load_safetensors(path);
        }
        match ggufs.as_slice() {
            [one] => load_gguf(one, quantize, backend),
            [] => anyhow::bail!("{} holds neither a .gguf file nor config.json + model.safetensors", path.display()),
            many => {
                anyhow::bail!("{} holds {} .gguf files; pass the one to use with --model", path.display(), many.len())
            }
        }
    }
}

fn md_string(md: &HashMap<String, gguf_file::Value>, key: &str) -> Option<String> {
    md.get(key).and_then(|v| v.to_string().ok()).cloned()
}

fn md_u32(md: &HashMap<String, gguf_file::Value>, key: &str) -> Option<u32> {
    md.get(key).and_then(|v| v.to_u32().ok())
}

/// Read every tensor, requantize the weight matrices `quantize` selects, and write the model
/// back out as an in-memory GGUF file that the architectures' loaders read as usual.
fn requantize(
    content: &gguf_file::Content,
    file: &mut std::fs::File,
    quantize: Quantize,
) -> anyhow::Result<Option<(gguf_file::Content, Cursor<Vec<u8>>)>> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let wanted = names.iter().any(|n| {
        let info = &content.tensor_infos[*n];
        info.shape.rank() == 2 && quantize.target(info.ggml_dtype).is_some()
    });
    if !wanted {
        return Ok(None);
    }
    let mut tensors = Vec::with_capacity(names.len());
    let mut changed = 0usize;
    for name in &names {
        let t = content.tensor(file, name, &Device::Cpu)?;
        let target = quantize.target(t.dtype()).filter(|_| t.shape().rank() == 2);
        let t = match target {
            Some(dt) if t.shape().dims()[1] % dt.block_size() == 0 => {
                changed += 1;
                QTensor::quantize(&t.dequantize(&Device::Cpu)?, dt)?
            }
            _ => t,
        };
        tensors.push((name.as_str(), t));
    }
    let md: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &refs)?;
    tracing::info!(tensors = changed, ?quantize, "requantized weight matrices at load");
    out.set_position(0);
    let content = gguf_file::Content::read(&mut out)?;
    Ok(Some((content, out)))
}

fn load_gguf(path: &Path, quantize: Quantize, backend: Backend) -> anyhow::Result<ChatModel> {
    let mut file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let md = content.metadata.clone();
    let arch = md_string(&md, "general.architecture").unwrap_or_default();
    let ctx_key = format!("{arch}.context_length");
    let mut context_len = md_u32(&md, &ctx_key).unwrap_or(2048) as usize;

    // A tokenizer.json next to the file wins over the metadata.
    let sibling = path.with_file_name("tokenizer.json");
    let tokenizer = if sibling.is_file() {
        Tokenizer::from_file(&sibling).map_err(|e| anyhow::anyhow!("{}: {e}", sibling.display()))?
    } else {
        from_gguf_metadata(&md)?
    };

    // The native backend has kernels for every format it accepts: `auto` leaves such a file
    // as it is.
    let quantize = if quantize == Quantize::Auto
        && native::ARCHITECTURES.contains(&arch.as_str())
        && backend == Backend::Auto
        && native::runs_natively(&content)
    {
        Quantize::None
    } else {
        quantize
    };
    let requantized = requantize(&content, &mut file, quantize)?;
    let device = Device::Cpu;
    let (weights, chunked_prefill) = match requantized {
        Some((content, mut cursor)) => load_arch(&arch, content, &mut cursor, &device, &mut context_len, backend)?,
        None => load_arch(&arch, content, &mut file, &device, &mut context_len, backend)?,
    };
    let backend_name = if matches!(weights, Loaded::Shared(Weights::Native(_))) { "native" } else { "candle" };
    let weights = match weights {
        Loaded::Shared(w) => w,
        Loaded::Qwen2(first) => {
            Weights::QQwen2(Arc::new(Qwen2Pool { path: path.to_path_buf(), quantize, free: Mutex::new(vec![first]) }))
        }
    };
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());

    let tokens = |key: &str| md_u32(&md, key).and_then(|id| tokenizer.id_to_token(id));
    let eos_token = tokens("tokenizer.ggml.eos_token_id").unwrap_or_default();
    let bos_token = tokens("tokenizer.ggml.bos_token_id").unwrap_or_default();
    let mut stop_ids = BTreeSet::new();
    if let Some(id) = md_u32(&md, "tokenizer.ggml.eos_token_id") {
        stop_ids.insert(id);
    }
    add_end_of_turn_tokens(&tokenizer, &mut stop_ids);
    let dtype = content_dtype_summary(path, quantize);
    Ok(ChatModel {
        weights,
        chat_template: md_string(&md, "tokenizer.chat_template"),
        tokenizer,
        bos_token,
        eos_token,
        stop_ids,
        context_len,
        description: format!("{arch} (GGUF, {dtype}, {backend_name})"),
        name,
        chunked_prefill,
    })
}

enum Loaded {
    Shared(Weights),
    Qwen2(quantized_qwen2::ModelWeights),
}

fn load_arch<R: std::io::Read + std::io::Seek>(
    arch: &str,
    content: gguf_file::Content,
    reader: &mut R,
    device: &Device,
    context_len: &mut usize,
    backend: Backend,
) -> anyhow::Result<(Loaded, bool)> {
    Ok(match arch {
        arch if backend == Backend::Auto
            && native::ARCHITECTURES.contains(&arch)
            && let Some(m) = NativeLlama::from_gguf(&content, reader)? =>
        {
            (Loaded::Shared(Weights::Native(Arc::new(m))), true)
        }
        "llama" => {
            // candle's llama precomputes rotary tables for this many positions.
            *context_len = (*context_len).min(quantized_llama::MAX_SEQ_LEN);
            (Loaded::Shared(Weights::QLlama(quantized_llama::ModelWeights::from_gguf(content, reader, device)?)), true)
        }
        "qwen2" => (Loaded::Qwen2(quantized_qwen2::ModelWeights::from_gguf(content, reader, device)?), false),
        "qwen3" => {
            (Loaded::Shared(Weights::QQwen3(quantized_qwen3::ModelWeights::from_gguf(content, reader, device)?)), false)
        }
        other => anyhow::bail!("GGUF architecture '{other}' is not supported (llama, qwen2 and qwen3 are)"),
    })
}

fn content_dtype_summary(path: &Path, quantize: Quantize) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let file_type = stem.rsplit('.').next().unwrap_or("").to_string();
    match quantize {
        Quantize::None => file_type,
        Quantize::Auto => format!("{file_type}, auto-requantized"),
        Quantize::Q8_0 => "Q8_0 (requantized)".into(),
        Quantize::Q4_0 => "Q4_0 (requantized)".into(),
    }
}

/// Chat models end a turn with a dedicated token that is not always the declared EOS.
fn add_end_of_turn_tokens(tokenizer: &Tokenizer, ids: &mut BTreeSet<u32>) {
    for t in ["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>"] {
        if let Some(id) = tokenizer.token_to_id(t) {
            ids.insert(id);
        }
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn token_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

fn load_safetensors(dir: &Path) -> anyhow::Result<ChatModel> {
    let config = read_json(&dir.join("config.json"))?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer =
        Tokenizer::from_file(&tokenizer_path).map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
    let tok_config = dir.join("tokenizer_config.json");
    let tok_config = if tok_config.is_file() { read_json(&tok_config)? } else { Value::Null };

    let device = Device::Cpu;
    // The builder converts each tensor to f32 as it is taken (bf16 / f16 checkpoints).
    let tensors = read_safetensors(dir, &device)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
    let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or_default().to_string();
    let max_pos = config.get("max_position_embeddings").and_then(Value::as_u64).unwrap_or(2048) as usize;
    let weights = match model_type.as_str() {
        "llama" => {
            let cfg: llama::LlamaConfig = serde_json::from_value(config.clone())?;
            let cfg = cfg.into_config(false);
            Weights::Llama(llama::Llama::load(vb, &cfg)?, Box::new(cfg))
        }
        "qwen2" => {
            let cfg: qwen2::Config = serde_json::from_value(config.clone())?;
            Weights::Qwen2(qwen2::ModelForCausalLM::new(&cfg, vb)?)
        }
        other => anyhow::bail!("safetensors model_type '{other}' is not supported (llama and qwen2 are)"),
    };

    let mut stop_ids = BTreeSet::new();
    match config.get("eos_token_id") {
        Some(Value::Number(n)) => stop_ids.extend(n.as_u64().map(|v| v as u32)),
        Some(Value::Array(a)) => stop_ids.extend(a.iter().filter_map(Value::as_u64).map(|v| v as u32)),
        _ => {}
    }
    let generation = dir.join("generation_config.json");
    if generation.is_file() {
        match read_json(&generation)?.get("eos_token_id") {
            Some(Value::Number(n)) => stop_ids.extend(n.as_u64().map(|v| v as u32)),
            Some(Value::Array(a)) => stop_ids.extend(a.iter().filter_map(Value::as_u64).map(|v| v as u32)),
            _ => {}
        }
    }
    let eos_token = token_string(tok_config.get("eos_token"));
    if let Some(id) = tokenizer.token_to_id(&eos_token) {
        stop_ids.insert(id);
    }
    add_end_of_turn_tokens(&tokenizer, &mut stop_ids);
    let name = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    Ok(ChatModel {
        weights,
        chat_template: tok_config.get("chat_template").and_then(Value::as_str).map(str::to_string),
        bos_token: token_string(tok_config.get("bos_token")),
        eos_token,
        tokenizer,
        stop_ids,
        context_len: max_pos,
        description: format!("{model_type} (safetensors, f32)"),
        name,
        chunked_prefill: false,
    })
}
