//! Our own forward pass for GGUF llama, qwen2 and qwen3 models whose matrices are in a format
//! of `crate::quant` (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K: the
//! packaged SmolLM2 and Qwen2.5 files as they are): fused Q·K·V and gate·up products where a
//! layer's matrices share a format, QKV biases (qwen2), per-head Q/K norms (qwen3), grouped
//! KV heads, rotary embeddings in the file's layout (adjacent pairs for llama, halves for the
//! qwen family) with the base from the metadata, tied or separate output, and a KV cache that
//! grows in place (candle's quantized models concatenate their whole cache every step, so
//! their decode slows down as the context grows). Numerics follow llama.cpp: activations are
//! quantized to Q8_0 before each product, keys and values are cached as f16
//! (llama.cpp's default cache type), everything else is f32.

use std::io::{Read, Seek};

use crate::quant::{QActs, QKind, QMatrix, qgemm};
use candle_core::Device;
use candle_core::quantized::{GgmlDType, gguf_file};
use comps_core::vector::sigmoid;
use rayon::prelude::*;

use super::attention::{Heads, LayerKv, attend};

/// How rotary embeddings pair a head's dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rope {
    /// Adjacent pairs (2i, 2i + 1): GGUF llama files are permuted for this.
    Adjacent,
    /// Halves (i, i + d/2), as the qwen family is stored ("NEOX" in llama.cpp).
    Halves,
}

/// Shapes and constants from the GGUF metadata.
#[derive(Debug, Clone)]
pub struct Config {
    n_embd: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// `n_head * head_dim` (qwen3's heads are not `n_embd / n_head` wide).
    q_dim: usize,
    n_ff: usize,
    eps: f32,
    rope_base: f32,
    rope_dim: usize,
    rope: Rope,
    vocab: usize,
}

/// Matrices applied to the same input: neighbours whose formats agree stacked into one, the
/// rest run one after the other into the same output rows (Qwen2.5's Q4_K_M file has Q and K
/// in Q5_0 and V in Q8_0 in half of its layers: two products there, not three).
enum Proj {
    One(QMatrix),
    Split(Vec<QMatrix>),
}

impl Proj {
    fn new(parts: Vec<QMatrix>) -> Self {
        let mut merged: Vec<QMatrix> = Vec::with_capacity(parts.len());
        for part in parts {
            let stacked = merged.last().and_then(|last| QMatrix::stack(&[last, &part]).ok());
            match (stacked, merged.last_mut()) {
                (Some(m), Some(last)) => *last = m,
                _ => merged.push(part),
            }
        }
        if merged.len() == 1 { Self::One(merged.remove(0)) } else { Self::Split(merged) }
    }

    fn rows(&self) -> usize {
        match self {
            Self::One(m) => m.rows(),
            Self::Split(parts) => parts.iter().map(QMatrix::rows).sum(),
        }
    }

    fn cols(&self) -> usize {
        match self {
            Self::One(m) => m.cols(),
            Self::Split(parts) => parts[0].cols(),
        }
    }

    /// `out[t][..rows]`: every part's products side by side.
    fn run(&self, acts: &QActs, out: &mut [f32], scratch: &mut Vec<f32>) {
        match self {
            Self::One(m) => qgemm(m, acts, out),
            Self::Split(parts) => {
                let (t, width) = (acts.rows(), self.rows());
                let mut at = 0;
                for p in parts {
                    scratch.resize(t * p.rows(), 0.0);
                    qgemm(p, acts, scratch);
                    for (o, s) in out.chunks_exact_mut(width).zip(scratch.chunks_exact(p.rows())) {
                        o[at..at + p.rows()].copy_from_slice(s);
                    }
                    at += p.rows();
                }
            }
        }
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Q, K and V.
    qkv: Proj,
    /// Q, K and V's biases side by side (qwen2).
    qkv_bias: Option<Vec<f32>>,
    /// Per-head RMS norms of Q and K (qwen3).
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    /// Gate and up.
    gate_up: Proj,
    down: QMatrix,
}

/// A llama-family model's weights.
pub struct NativeLlama {
    cfg: Config,
    embd: QMatrix,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    /// `None`: tied to the embeddings.
    output: Option<QMatrix>,
}

/// One sequence's KV cache and scratch buffers.
#[derive(Default)]
pub struct Cache {
    /// Per layer.
    kv: Vec<LayerKv>,
    len: usize,
    acts: QActs,
    scratch: Vec<f32>,
}

impl Cache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A cache holding a copy of the first `len` positions of this one (at most those held),
    /// as running their tokens alone would have left it: the keys and values of a position
    /// depend on the tokens up to it only.
    pub fn prefix(&self, len: usize) -> Cache {
        let len = len.min(self.len);
        Cache { kv: self.kv.iter().map(|l| l.prefix(len)).collect(), len, ..Cache::default() }
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.kv.iter().map(LayerKv::bytes).sum()
    }

    /// A cache of `layers` layers holding `len` positions of one 16-wide KV head (tests).
    #[cfg(test)]
    pub(crate) fn filled(layers: usize, len: usize) -> Cache {
        let mut kv = vec![LayerKv::default(); layers];
        for l in &mut kv {
            for j in 0..len {
                l.push(1, &[j as f32; 16], &[j as f32; 16]);
            }
        }
        Cache { kv, len, ..Cache::default() }
    }
}

fn md_u32(md: &std::collections::HashMap<String, gguf_file::Value>, key: &str) -> Option<usize> {
    md.get(key).and_then(|v| v.to_u32().ok()).map(|v| v as usize)
}

fn md_f32(md: &std::collections::HashMap<String, gguf_file::Value>, key: &str) -> Option<f32> {
    md.get(key).and_then(|v| v.to_f32().ok())
}

/// The architectures this forward pass runs.
pub const ARCHITECTURES: [&str; 3] = ["llama", "qwen2", "qwen3"];

impl NativeLlama {
    /// Load a llama / qwen2 / qwen3 GGUF, or `None` when a matrix is in a format these kernels
    /// do not run (the caller then uses candle's implementation).
    pub fn from_gguf<R: Read + Seek>(content: &gguf_file::Content, reader: &mut R) -> anyhow::Result<Option<Self>> {
        let md = &content.metadata;
        let arch = md.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        if !ARCHITECTURES.contains(&arch.as_str()) || !runs_natively(content) {
            return Ok(None);
        }
        let key = |k: &str| format!("{arch}.{k}");
        let need = |k: &str| md_u32(md, &key(k)).ok_or_else(|| anyhow::anyhow!("GGUF metadata has no {}", key(k)));
        let n_embd = need("embedding_length")?;
        let n_head = need("attention.head_count")?;
        let n_kv_head = md_u32(md, &key("attention.head_count_kv")).unwrap_or(n_head);
        let n_layer = need("block_count")?;
        let n_ff = need("feed_forward_length")?;
        if n_head == 0 || n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) {
            anyhow::bail!("inconsistent {arch} shapes: {n_head} heads, {n_kv_head} KV heads");
        }
        let head_dim = md_u32(md, &key("attention.key_length")).unwrap_or(n_embd / n_head);
        let rope_dim = md_u32(md, &key("rope.dimension_count")).unwrap_or(head_dim);
        if head_dim == 0 || !head_dim.is_multiple_of(2) || rope_dim > head_dim || !rope_dim.is_multiple_of(2) {
            anyhow::bail!("inconsistent {arch} shapes: heads {head_dim} wide, rotary part {rope_dim}");
        }
        let has = |name: &str| content.tensor_infos.contains_key(name);
        let embd = matrix(content, reader, "token_embd.weight")?;
        let output = if has("output.weight") { Some(matrix(content, reader, "output.weight")?) } else { None };
        let (q_dim, kv) = (n_head * head_dim, n_kv_head * head_dim);
        let mut layers = Vec::with_capacity(n_layer);
        for l in 0..n_layer {
            let p = format!("blk.{l}");
            let mut m = |n: &str| matrix(content, &mut *reader, &format!("{p}.{n}.weight"));
            let qkv = Proj::new(vec![m("attn_q")?, m("attn_k")?, m("attn_v")?]);
            let gate_up = Proj::new(vec![m("ffn_gate")?, m("ffn_up")?]);
            let wo = m("attn_output")?;
            let down = m("ffn_down")?;
            let qkv_bias = if has(&format!("{p}.attn_q.bias")) {
                let mut b = Vec::with_capacity(q_dim + 2 * kv);
                for n in ["attn_q", "attn_k", "attn_v"] {
                    b.extend(vector(content, reader, &format!("{p}.{n}.bias"))?);
                }
                Some(b)
            } else {
                None
            };
            let qk_norm = if has(&format!("{p}.attn_q_norm.weight")) {
                Some((
                    vector(content, reader, &format!("{p}.attn_q_norm.weight"))?,
                    vector(content, reader, &format!("{p}.attn_k_norm.weight"))?,
                ))
            } else {
                None
            };
            let layer = Layer {
                attn_norm: vector(content, reader, &format!("{p}.attn_norm.weight"))?,
                qkv,
                qkv_bias,
                qk_norm,
                wo,
                ffn_norm: vector(content, reader, &format!("{p}.ffn_norm.weight"))?,
                gate_up,
                down,
            };
            let shapes_ok = layer.qkv.rows() == q_dim + 2 * kv
                && layer.qkv.cols() == n_embd
                && layer.qkv_bias.as_ref().is_none_or(|b| b.len() == q_dim + 2 * kv)
                && layer.qk_norm.as_ref().is_none_or(|(q, k)| q.len() == head_dim && k.len() == head_dim)
                && (layer.wo.rows(), layer.wo.cols()) == (n_embd, q_dim)
                && (layer.gate_up.rows(), layer.gate_up.cols()) == (2 * n_ff, n_embd)
                && (layer.down.rows(), layer.down.cols()) == (n_embd, n_ff)
                && layer.attn_norm.len() == n_embd
                && layer.ffn_norm.len() == n_embd;
            if !shapes_ok {
                anyhow::bail!("layer {l}'s tensors do not have {arch}'s shapes for width {n_embd}");
            }
            layers.push(layer);
        }
        let cfg = Config {
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            q_dim,
            n_ff,
            eps: md_f32(md, &key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
            rope_base: md_f32(md, &key("rope.freq_base")).unwrap_or(10_000.0),
            rope_dim,
            rope: if arch == "llama" { Rope::Adjacent } else { Rope::Halves },
            vocab: embd.rows(),
        };
        if embd.cols() != n_embd || output.as_ref().is_some_and(|o| o.cols() != n_embd) {
            anyhow::bail!("the embedding or output matrix is not {n_embd} wide");
        }
        let out_norm = vector(content, reader, "output_norm.weight")?;
        Ok(Some(Self { cfg, embd, layers, out_norm, output }))
    }

    /// A fresh cache.
    pub fn cache(&self) -> Cache {
        Cache { kv: vec![LayerKv::default(); self.layers.len()], ..Cache::default() }
    }

    /// Run `ids` at positions `pos..` (which must continue the cache) and return the logits of
    /// the last one.
    pub fn forward(&self, cache: &mut Cache, ids: &[u32], pos: usize) -> anyhow::Result<Vec<f32>> {
        if pos != cache.len {
            anyhow::bail!("position {pos} does not continue a cache of {} positions", cache.len);
        }
        let mut out = self.forward_batch(&mut [Step { cache, ids, logits: true }])?;
        out.pop().flatten().ok_or_else(|| anyhow::anyhow!("no logits"))
    }

    /// One step of several sequences at once: each runs its `ids` at the end of its own cache,
    /// and all of their rows go through every weight matrix in one pass (continuous batching:
    /// prompt chunks and single decode tokens side by side). Returns, per sequence, the logits
    /// of its last token where `logits` asked for them. Nothing is changed when an input is
    /// refused.
    pub fn forward_batch(&self, steps: &mut [Step<'_>]) -> anyhow::Result<Vec<Option<Vec<f32>>>> {
        let c = &self.cfg;
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        for s in steps.iter() {
            if s.ids.is_empty() {
                anyhow::bail!("no tokens to run");
            }
            if let Some(id) = s.ids.iter().find(|&&id| id as usize >= c.vocab) {
                anyhow::bail!("token id {id} is outside the vocabulary of {}", c.vocab);
            }
        }
        let (e, qd, kv, hd) = (c.n_embd, c.q_dim, c.n_kv_head * c.head_dim, c.head_dim);
        // Row offsets of each sequence in the batch, and each row's position.
        let mut offsets = Vec::with_capacity(steps.len() + 1);
        let mut positions = Vec::new();
        offsets.push(0);
        for s in steps.iter() {
            positions.extend(s.cache.len..s.cache.len + s.ids.len());
            offsets.push(positions.len());
        }
        let t = positions.len();
        // The first sequence lends its scratch buffers to the whole batch.
        let mut acts = std::mem::take(&mut steps[0].cache.acts);
        let mut scratch = std::mem::take(&mut steps[0].cache.scratch);
        let mut x = vec![0f32; t * e];
        for (row, &id) in x.chunks_exact_mut(e).zip(steps.iter().flat_map(|s| s.ids.iter())) {
            self.embd.dequantize_row(id as usize, row);
        }
        let (cos, sin) = rope_tables(c, &positions);
        let half = c.rope_dim / 2;
        let heads = Heads { n_head: c.n_head, n_kv_head: c.n_kv_head, head_dim: hd };
        let mut h = vec![0f32; t * e];
        let mut qkv = vec![0f32; t * (qd + 2 * kv)];
        let mut q = vec![0f32; t * qd];
        let mut attn = vec![0f32; t * qd];
        let mut proj = vec![0f32; t * e];
        let mut gu = vec![0f32; t * 2 * c.n_ff];
        let mut act = vec![0f32; t * c.n_ff];
        for (l, layer) in self.layers.iter().enumerate() {
            rms_norm(&x, &layer.attn_norm, c.eps, &mut h);
            acts.quantize(&h, t, e);
            layer.qkv.run(&acts, &mut qkv, &mut scratch);
            for (si, s) in steps.iter_mut().enumerate() {
                let cache = &mut s.cache.kv[l];
                for i in offsets[si]..offsets[si + 1] {
                    let row = &mut qkv[i * (qd + 2 * kv)..(i + 1) * (qd + 2 * kv)];
                    if let Some(b) = &layer.qkv_bias {
                        row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                    }
                    let (qr, rest) = row.split_at_mut(qd);
                    let (kr, vr) = rest.split_at_mut(kv);
                    if let Some((qn, kn)) = &layer.qk_norm {
                        qr.chunks_exact_mut(hd).for_each(|head| rms_norm_in_place(head, qn, c.eps));
                        kr.chunks_exact_mut(hd).for_each(|head| rms_norm_in_place(head, kn, c.eps));
                    }
                    let (cs, sn) = (&cos[i * half..(i + 1) * half], &sin[i * half..(i + 1) * half]);
                    for head in qr.chunks_exact_mut(hd).chain(kr.chunks_exact_mut(hd)) {
                        rope(c.rope, &mut head[..c.rope_dim], cs, sn);
                    }
                    q[i * qd..(i + 1) * qd].copy_from_slice(qr);
                    cache.push(c.n_kv_head, kr, vr);
                }
            }
            let parts: Vec<(&LayerKv, usize)> =
                steps.iter().enumerate().map(|(si, s)| (&s.cache.kv[l], offsets[si + 1] - offsets[si])).collect();
            attend(heads, &q, &parts, &mut attn);
            acts.quantize(&attn, t, qd);
            qgemm(&layer.wo, &acts, &mut proj);
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);

            rms_norm(&x, &layer.ffn_norm, c.eps, &mut h);
            acts.quantize(&h, t, e);
            layer.gate_up.run(&acts, &mut gu, &mut scratch);
            // Spans of every row in parallel, so that the few rows of a decode step use both
            // cores too.
            gu.par_chunks_exact(2 * c.n_ff).zip(act.par_chunks_exact_mut(c.n_ff)).for_each(|(row, out)| {
                let (gate, up) = row.split_at(c.n_ff);
                out.par_chunks_mut(SILU_SPAN).zip(gate.par_chunks(SILU_SPAN)).zip(up.par_chunks(SILU_SPAN)).for_each(
                    |((o, gate), up)| {
                        for ((o, &g), u) in o.iter_mut().zip(gate).zip(up) {
                            *o = g * sigmoid(g) * u;
                        }
                    },
                );
            });
            acts.quantize(&act, t, c.n_ff);
            qgemm(&layer.down, &acts, &mut proj);
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);
        }
        for (si, s) in steps.iter_mut().enumerate() {
            s.cache.len += offsets[si + 1] - offsets[si];
        }
        // The output head, for the last row of each sequence that wants logits.
        let wanted: Vec<usize> = (0..steps.len()).filter(|&si| steps[si].logits).collect();
        let mut last = vec![0f32; wanted.len() * e];
        for (o, &si) in last.chunks_exact_mut(e).zip(&wanted) {
            let r = offsets[si + 1] - 1;
            rms_norm(&x[r * e..(r + 1) * e], &self.out_norm, c.eps, o);
        }
        let head = self.output.as_ref().unwrap_or(&self.embd);
        let mut logits = vec![0f32; wanted.len() * head.rows()];
        if !wanted.is_empty() {
            acts.quantize(&last, wanted.len(), e);
            qgemm(head, &acts, &mut logits);
        }
        steps[0].cache.acts = acts;
        steps[0].cache.scratch = scratch;
        let mut rows = logits.chunks_exact(head.rows().max(1));
        Ok(steps.iter().map(|s| if s.logits { rows.next().map(<[f32]>::to_vec) } else { None }).collect())
    }
}

/// Values of the SiLU-gated product per task (a few microseconds of work).
const SILU_SPAN: usize = 2048;

/// One sequence's part of [`NativeLlama::forward_batch`].
pub struct Step<'a> {
    /// Its cache: the tokens run at its end.
    pub cache: &'a mut Cache,
    /// The tokens.
    pub ids: &'a [u32],
    /// Whether the logits of the last token are wanted (not for a prompt chunk that others follow).
    pub logits: bool,
}

/// The quantized formats of `crate::quant`.
fn qkind(t: GgmlDType) -> Option<QKind> {
    Some(match t {
        GgmlDType::Q8_0 => QKind::Q8_0,
        GgmlDType::Q4_0 => QKind::Q4_0,
        GgmlDType::Q4_1 => QKind::Q4_1,
        GgmlDType::Q5_0 => QKind::Q5_0,
        GgmlDType::Q5_1 => QKind::Q5_1,
        GgmlDType::Q4K => QKind::Q4K,
        GgmlDType::Q5K => QKind::Q5K,
        GgmlDType::Q6K => QKind::Q6K,
        _ => return None,
    })
}

/// Whether every matrix of the file is in a format these kernels run.
pub fn runs_natively(content: &gguf_file::Content) -> bool {
    content.tensor_infos.values().all(|i| i.shape.rank() != 2 || qkind(i.ggml_dtype).is_some())
}

fn matrix<R: Read + Seek>(content: &gguf_file::Content, reader: &mut R, name: &str) -> anyhow::Result<QMatrix> {
    let t = content.tensor(reader, name, &Device::Cpu)?;
    let kind = qkind(t.dtype()).ok_or_else(|| anyhow::anyhow!("{name} is {:?}", t.dtype()))?;
    let &[rows, cols] = t.shape().dims() else { anyhow::bail!("{name} is not a matrix") };
    QMatrix::from_ggml(kind, rows, cols, &t.data()?).map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

fn vector<R: Read + Seek>(content: &gguf_file::Content, reader: &mut R, name: &str) -> anyhow::Result<Vec<f32>> {
    Ok(content.tensor(reader, name, &Device::Cpu)?.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
}

fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter_mut().zip(w).for_each(|(v, g)| *v *= inv * g);
}

/// `out[row] = x[row] / rms(x[row]) * w`, a prompt's rows in parallel.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    x.par_chunks_exact(w.len()).zip(out.par_chunks_exact_mut(w.len())).with_min_len(16).for_each(|(row, o)| {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), g) in o.iter_mut().zip(row).zip(w) {
            *o = v * inv * g;
        }
    });
}

/// cos / sin of each rotated pair at each of `positions`, `[row][rope_dim / 2]`.
fn rope_tables(c: &Config, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let half = c.rope_dim / 2;
    let freqs: Vec<f32> = (0..half).map(|i| 1.0 / c.rope_base.powf(2.0 * i as f32 / c.rope_dim as f32)).collect();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for &freq in &freqs {
            let angle = p as f32 * freq;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Rotate the pairs of `head` (its rotary part) by the angles of one position.
fn rope(style: Rope, head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = head.len() / 2;
    for (i, (c, s)) in cos.iter().zip(sin).enumerate() {
        let (a, b) = match style {
            Rope::Adjacent => (2 * i, 2 * i + 1),
            Rope::Halves => (i, i + half),
        };
        let (x, y) = (head[a], head[b]);
        head[a] = x * c - y * s;
        head[b] = x * s + y * c;
    }
}
