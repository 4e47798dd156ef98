//! Our own forward pass for GGUF llama models whose matrices are Q8_0, Q4_0 or Q4_1 (the
//! packaged SmolLM2 as it is, or requantized): the block-quantized products of `comps_core::models::quant`
//! on fused Q·K·V and gate·up matrices, a KV cache that grows in place (candle's quantized
//! llama concatenates its whole cache every step, so its decode slows down as the context
//! grows), and attention spread over the heads. Numerics follow llama.cpp: activations are
//! quantized to Q8_0 before each product, everything else is f32.

use std::io::{Read, Seek};

use candle_core::Device;
use candle_core::quantized::{GgmlDType, gguf_file};
use comps_core::models::kernels::dot;
use comps_core::models::quant::{QActs, QKind, QMatrix, qgemm};
use rayon::prelude::*;

/// Shapes and constants from the GGUF metadata.
#[derive(Debug, Clone)]
pub struct Config {
    n_embd: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    n_ff: usize,
    eps: f32,
    rope_base: f32,
    rope_dim: usize,
    vocab: usize,
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Q, K and V stacked.
    qkv: QMatrix,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    /// Gate and up stacked.
    gate_up: QMatrix,
    down: QMatrix,
}

/// A llama model's weights.
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
    /// Per layer, `[position][kv_head * head_dim]`.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    acts: QActs,
}

fn md_u32(md: &std::collections::HashMap<String, gguf_file::Value>, key: &str) -> Option<usize> {
    md.get(key).and_then(|v| v.to_u32().ok()).map(|v| v as usize)
}

fn md_f32(md: &std::collections::HashMap<String, gguf_file::Value>, key: &str) -> Option<f32> {
    md.get(key).and_then(|v| v.to_f32().ok())
}

impl NativeLlama {
    /// Load a llama GGUF, or `None` when a matrix is in a format these kernels do not run
    /// (the caller then uses candle's implementation).
    pub fn from_gguf<R: Read + Seek>(content: &gguf_file::Content, reader: &mut R) -> anyhow::Result<Option<Self>> {
        let md = &content.metadata;
        let need = |k: &str| md_u32(md, k).ok_or_else(|| anyhow::anyhow!("GGUF metadata has no {k}"));
        let n_embd = need("llama.embedding_length")?;
        let n_head = need("llama.attention.head_count")?;
        let n_kv_head = md_u32(md, "llama.attention.head_count_kv").unwrap_or(n_head);
        let n_layer = need("llama.block_count")?;
        let n_ff = need("llama.feed_forward_length")?;
        let head_dim = n_embd / n_head;
        let rope_dim = md_u32(md, "llama.rope.dimension_count").unwrap_or(head_dim);
        if n_head == 0 || n_embd % n_head != 0 || n_head % n_kv_head.max(1) != 0 || rope_dim > head_dim {
            anyhow::bail!("inconsistent llama shapes: {n_embd} wide, {n_head} heads, {n_kv_head} KV heads");
        }
        if !runs_natively(content) {
            return Ok(None);
        }
        let embd = matrix(content, reader, "token_embd.weight")?;
        let output = if content.tensor_infos.contains_key("output.weight") {
            Some(matrix(content, reader, "output.weight")?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(n_layer);
        for l in 0..n_layer {
            let p = format!("blk.{l}");
            let (q, k, v) = (
                matrix(content, reader, &format!("{p}.attn_q.weight"))?,
                matrix(content, reader, &format!("{p}.attn_k.weight"))?,
                matrix(content, reader, &format!("{p}.attn_v.weight"))?,
            );
            let (gate, up) = (
                matrix(content, reader, &format!("{p}.ffn_gate.weight"))?,
                matrix(content, reader, &format!("{p}.ffn_up.weight"))?,
            );
            // Files that mix formats inside a layer (Q and V in different types, say) are left to
            // candle: the stacked products need one format.
            let (Ok(qkv), Ok(gate_up)) = (QMatrix::stack(&[&q, &k, &v]), QMatrix::stack(&[&gate, &up])) else {
                return Ok(None);
            };
            layers.push(Layer {
                attn_norm: vector(content, reader, &format!("{p}.attn_norm.weight"))?,
                qkv,
                wo: matrix(content, reader, &format!("{p}.attn_output.weight"))?,
                ffn_norm: vector(content, reader, &format!("{p}.ffn_norm.weight"))?,
                gate_up,
                down: matrix(content, reader, &format!("{p}.ffn_down.weight"))?,
            });
        }
        let cfg = Config {
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            n_ff,
            eps: md_f32(md, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_base: md_f32(md, "llama.rope.freq_base").unwrap_or(10_000.0),
            rope_dim,
            vocab: embd.rows(),
        };
        let kv = n_kv_head * head_dim;
        for (l, layer) in layers.iter().enumerate() {
            let shapes_ok = layer.qkv.rows() == n_embd + 2 * kv
                && layer.qkv.cols() == n_embd
                && (layer.wo.rows(), layer.wo.cols()) == (n_embd, n_embd)
                && (layer.gate_up.rows(), layer.gate_up.cols()) == (2 * n_ff, n_embd)
                && (layer.down.rows(), layer.down.cols()) == (n_embd, n_ff)
                && layer.attn_norm.len() == n_embd
                && layer.ffn_norm.len() == n_embd;
            if !shapes_ok {
                anyhow::bail!("layer {l}'s tensors do not have llama's shapes for width {n_embd}");
            }
        }
        let out_norm = vector(content, reader, "output_norm.weight")?;
        Ok(Some(Self { cfg, embd, layers, out_norm, output }))
    }

    /// A fresh cache.
    pub fn cache(&self) -> Cache {
        Cache { k: vec![Vec::new(); self.layers.len()], v: vec![Vec::new(); self.layers.len()], ..Cache::default() }
    }

    /// Run `ids` at positions `pos..` (which must continue the cache) and return the logits of
    /// the last one.
    pub fn forward(&self, cache: &mut Cache, ids: &[u32], pos: usize) -> anyhow::Result<Vec<f32>> {
        let c = &self.cfg;
        if pos != cache.len {
            anyhow::bail!("position {pos} does not continue a cache of {} positions", cache.len);
        }
        if ids.is_empty() {
            anyhow::bail!("no tokens to run");
        }
        let (t, e, kv) = (ids.len(), c.n_embd, c.n_kv_head * c.head_dim);
        let mut x = vec![0f32; t * e];
        for (row, &id) in x.chunks_exact_mut(e).zip(ids) {
            if id as usize >= c.vocab {
                anyhow::bail!("token id {id} is outside the vocabulary of {}", c.vocab);
            }
            self.embd.dequantize_row(id as usize, row);
        }
        let (cos, sin) = rope_tables(c, pos, t);
        let mut h = vec![0f32; t * e];
        let mut qkv = vec![0f32; t * (e + 2 * kv)];
        let mut q = vec![0f32; t * e];
        let mut attn = vec![0f32; t * e];
        let mut proj = vec![0f32; t * e];
        let mut gu = vec![0f32; t * 2 * c.n_ff];
        let mut act = vec![0f32; t * c.n_ff];
        for (l, layer) in self.layers.iter().enumerate() {
            rms_norm(&x, &layer.attn_norm, c.eps, &mut h);
            cache.acts.quantize(&h, t, e);
            qgemm(&layer.qkv, &cache.acts, &mut qkv);
            let (kc, vc) = (&mut cache.k[l], &mut cache.v[l]);
            for (i, row) in qkv.chunks_exact_mut(e + 2 * kv).enumerate() {
                let (qr, rest) = row.split_at_mut(e);
                let (kr, vr) = rest.split_at_mut(kv);
                for head in qr.chunks_exact_mut(c.head_dim).chain(kr.chunks_exact_mut(c.head_dim)) {
                    rope(
                        head,
                        &cos[i * c.rope_dim / 2..(i + 1) * c.rope_dim / 2],
                        &sin[i * c.rope_dim / 2..(i + 1) * c.rope_dim / 2],
                    );
                }
                q[i * e..(i + 1) * e].copy_from_slice(qr);
                kc.extend_from_slice(kr);
                vc.extend_from_slice(vr);
            }
            attention(c, &q, kc, vc, pos, &mut attn);
            cache.acts.quantize(&attn, t, e);
            qgemm(&layer.wo, &cache.acts, &mut proj);
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);

            rms_norm(&x, &layer.ffn_norm, c.eps, &mut h);
            cache.acts.quantize(&h, t, e);
            qgemm(&layer.gate_up, &cache.acts, &mut gu);
            for (row, out) in gu.chunks_exact(2 * c.n_ff).zip(act.chunks_exact_mut(c.n_ff)) {
                let (gate, up) = row.split_at(c.n_ff);
                for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            }
            cache.acts.quantize(&act, t, c.n_ff);
            qgemm(&layer.down, &cache.acts, &mut proj);
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);
        }
        cache.len += t;
        let mut last = vec![0f32; e];
        rms_norm(&x[(t - 1) * e..], &self.out_norm, c.eps, &mut last);
        cache.acts.quantize(&last, 1, e);
        let head = self.output.as_ref().unwrap_or(&self.embd);
        let mut logits = vec![0f32; head.rows()];
        qgemm(head, &cache.acts, &mut logits);
        Ok(logits)
    }
}

/// Whether every matrix of the file is in a format these kernels run.
pub fn runs_natively(content: &gguf_file::Content) -> bool {
    content
        .tensor_infos
        .values()
        .all(|i| i.shape.rank() != 2 || matches!(i.ggml_dtype, GgmlDType::Q8_0 | GgmlDType::Q4_0 | GgmlDType::Q4_1))
}

fn matrix<R: Read + Seek>(content: &gguf_file::Content, reader: &mut R, name: &str) -> anyhow::Result<QMatrix> {
    let t = content.tensor(reader, name, &Device::Cpu)?;
    let kind = match t.dtype() {
        GgmlDType::Q8_0 => QKind::Q8_0,
        GgmlDType::Q4_0 => QKind::Q4_0,
        GgmlDType::Q4_1 => QKind::Q4_1,
        other => anyhow::bail!("{name} is {other:?}"),
    };
    let &[rows, cols] = t.shape().dims() else { anyhow::bail!("{name} is not a matrix") };
    QMatrix::from_ggml(kind, rows, cols, &t.data()?).map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

fn vector<R: Read + Seek>(content: &gguf_file::Content, reader: &mut R, name: &str) -> anyhow::Result<Vec<f32>> {
    Ok(content.tensor(reader, name, &Device::Cpu)?.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
}

/// `out[row] = x[row] / rms(x[row]) * w`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    for (row, o) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), g) in o.iter_mut().zip(row).zip(w) {
            *o = v * inv * g;
        }
    }
}

/// cos / sin of each rotated pair at positions `pos..pos + t`, `[t][rope_dim / 2]`.
fn rope_tables(c: &Config, pos: usize, t: usize) -> (Vec<f32>, Vec<f32>) {
    let half = c.rope_dim / 2;
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for p in pos..pos + t {
        for i in 0..half {
            let freq = 1.0 / c.rope_base.powf(2.0 * i as f32 / c.rope_dim as f32);
            let angle = p as f32 * freq;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Rotate adjacent pairs (GGUF llama's weights are permuted for this layout).
fn rope(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for (i, (c, s)) in cos.iter().zip(sin).enumerate() {
        let (a, b) = (head[2 * i], head[2 * i + 1]);
        head[2 * i] = a * c - b * s;
        head[2 * i + 1] = a * s + b * c;
    }
}

/// Causal attention of the `t` new queries (at `pos..`) over the whole cache, heads in
/// parallel; grouped-query heads share their KV head.
fn attention(c: &Config, q: &[f32], k: &[f32], v: &[f32], pos: usize, out: &mut [f32]) {
    let (hd, kv) = (c.head_dim, c.n_kv_head * c.head_dim);
    let group = c.n_head / c.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(hd).enumerate().for_each(|(idx, o)| {
        let (i, h) = (idx / c.n_head, idx % c.n_head);
        let g = h / group;
        let qh = &q[i * c.n_embd + h * hd..][..hd];
        let n = pos + i + 1;
        let mut scores: Vec<f32> = (0..n).map(|j| dot(qh, &k[j * kv + g * hd..][..hd]) * scale).collect();
        let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - m).exp();
            total += *s;
        }
        o.iter_mut().for_each(|x| *x = 0.0);
        for (j, s) in scores.iter().enumerate() {
            let w = s / total;
            for (x, vv) in o.iter_mut().zip(&v[j * kv + g * hd..][..hd]) {
                *x += w * vv;
            }
        }
    });
}
