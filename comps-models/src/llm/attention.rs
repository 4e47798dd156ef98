//! Causal attention over one sequence's KV cache for the native forward pass.
//!
//! Keys are kept in blocks of [`KB`] positions, each block laid out `[kv_head][dim][position]`,
//! so the scores of one query against a block come out of `head_dim` multiply-adds of
//! [`KB`]-wide vectors with no horizontal sum per key (the per-key dot product it replaces
//! spent most of its time reducing lanes). Values stay `[position][kv_head * head_dim]`: a
//! query's output accumulates whole value rows, in registers for head widths that are
//! multiples of 16. The softmax uses a vectorisable `exp`.

use comps_core::vector::exp_nonpositive;
use rayon::prelude::*;

/// Positions per key block (one 512-bit vector of f32).
pub const KB: usize = 16;

/// One layer's keys and values of one sequence.
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    /// `[block][kv_head][dim][KB]`; lanes past `len` are zero.
    k: Vec<f32>,
    /// `[position][kv_head * head_dim]`.
    v: Vec<f32>,
    len: usize,
}

impl LayerKv {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append one position's keys and values (`k.len() == v.len()`: every KV head's).
    pub fn push(&mut self, k: &[f32], v: &[f32]) {
        debug_assert_eq!(k.len(), v.len());
        let width = k.len();
        let lane = self.len % KB;
        if lane == 0 {
            self.k.resize(self.k.len() + width * KB, 0.0);
        }
        let block = &mut self.k[self.len / KB * width * KB..][..width * KB];
        for (j, &x) in k.iter().enumerate() {
            block[j * KB + lane] = x;
        }
        self.v.extend_from_slice(v);
        self.len += 1;
    }
}

/// Attention shapes.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (query heads are grouped onto them).
    pub n_kv_head: usize,
    /// Values per head.
    pub head_dim: usize,
}

/// Causal attention of `q.len() / (n_head * head_dim)` new queries, the last rows of `kv`
/// (whose keys and values are already in it), over everything before and including each of
/// them. `out` is laid out as `q`: `[row][head][dim]`. Query heads run in parallel.
pub fn attend(h: Heads, q: &[f32], kv: &LayerKv, out: &mut [f32]) {
    let (hd, qd) = (h.head_dim, h.n_head * h.head_dim);
    let rows = q.len() / qd;
    assert!(q.len() == rows * qd && out.len() == q.len() && rows <= kv.len, "attend: shapes");
    let first = kv.len - rows;
    let group = h.n_head / h.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(hd).enumerate().with_min_len(4).for_each_init(Vec::new, |scores, (idx, o)| {
        let (i, head) = (idx / h.n_head, idx % h.n_head);
        let qh: Vec<f32> = q[i * qd + head * hd..][..hd].iter().map(|x| x * scale).collect();
        one_head(&qh, kv, head / group, h.n_kv_head * hd, first + i + 1, scores, o);
    });
}

/// One query head (`q`, already scaled) over the first `n` positions of KV head `g`.
fn one_head(q: &[f32], kv: &LayerKv, g: usize, width: usize, n: usize, scores: &mut Vec<f32>, out: &mut [f32]) {
    let hd = q.len();
    let blocks = n.div_ceil(KB);
    scores.clear();
    scores.resize(blocks * KB, 0.0);
    for (b, s) in scores.chunks_exact_mut(KB).enumerate() {
        let kb = &kv.k[(b * width + g * hd) * KB..][..hd * KB];
        s.copy_from_slice(&block_scores(q, kb));
    }
    let scores = &mut scores[..n];
    let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    scores.iter_mut().for_each(|s| *s = exp_nonpositive(*s - m));
    let total: f32 = scores.iter().sum();
    let values = &kv.v[g * hd..];
    let mut at = 0;
    // Widths of 64, then of 16, then what is left, each accumulated in registers.
    while hd - at >= 64 {
        weighted_sum::<64>(scores, values, width, at, &mut out[at..at + 64]);
        at += 64;
    }
    while hd - at >= 16 {
        weighted_sum::<16>(scores, values, width, at, &mut out[at..at + 16]);
        at += 16;
    }
    while at < hd {
        weighted_sum::<1>(scores, values, width, at, &mut out[at..at + 1]);
        at += 1;
    }
    let inv = 1.0 / total;
    out.iter_mut().for_each(|x| *x *= inv);
}

/// `q · k` for the [`KB`] positions of one key block (`kb`: `[dim][KB]`), over four
/// independent chains of dimensions. Written as one array per chain and a fused multiply-add
/// over whole arrays: the form the compiler turns into one vector register per chain (a 2-D
/// accumulator array stayed scalar, in memory).
#[inline(always)]
fn block_scores(q: &[f32], kb: &[f32]) -> [f32; KB] {
    let (mut a0, mut a1, mut a2, mut a3) = ([0f32; KB], [0f32; KB], [0f32; KB], [0f32; KB]);
    let (q4s, q_rest) = q.as_chunks::<4>();
    let (rows, _) = kb.as_chunks::<KB>();
    let (k4s, k_rest) = rows.as_chunks::<4>();
    for (q4, k4) in q4s.iter().zip(k4s) {
        axpy(&mut a0, q4[0], &k4[0]);
        axpy(&mut a1, q4[1], &k4[1]);
        axpy(&mut a2, q4[2], &k4[2]);
        axpy(&mut a3, q4[3], &k4[3]);
    }
    for (&qv, k) in q_rest.iter().zip(k_rest) {
        axpy(&mut a0, qv, k);
    }
    std::array::from_fn(|l| (a0[l] + a1[l]) + (a2[l] + a3[l]))
}

/// `acc += a · x`, fused.
#[inline(always)]
fn axpy<const W: usize>(acc: &mut [f32; W], a: f32, x: &[f32; W]) {
    for (o, v) in acc.iter_mut().zip(x) {
        *o = a.mul_add(*v, *o);
    }
}

/// `out[d] = Σ_j p[j] · rows[j * stride + at + d]` for `d < W`, the sum held in registers.
#[inline(always)]
fn weighted_sum<const W: usize>(p: &[f32], rows: &[f32], stride: usize, at: usize, out: &mut [f32]) {
    let mut acc = [0f32; W];
    for (j, &w) in p.iter().enumerate() {
        let row: &[f32; W] = rows[j * stride + at..][..W].try_into().expect("W values");
        axpy(&mut acc, w, row);
    }
    out.copy_from_slice(&acc);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Softmax attention as written in the papers, in f64, keys and values `[position][kv]`.
    fn reference(h: Heads, q: &[f32], k: &[f32], v: &[f32], len: usize) -> Vec<f32> {
        let (hd, qd, kvw) = (h.head_dim, h.n_head * h.head_dim, h.n_kv_head * h.head_dim);
        let rows = q.len() / qd;
        let mut out = vec![0f32; q.len()];
        for i in 0..rows {
            let n = len - rows + i + 1;
            for head in 0..h.n_head {
                let g = head / (h.n_head / h.n_kv_head);
                let qh = &q[i * qd + head * hd..][..hd];
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        let kj = &k[j * kvw + g * hd..][..hd];
                        qh.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let total: f64 = e.iter().sum();
                for d in 0..hd {
                    let o: f64 = (0..n).map(|j| e[j] * v[j * kvw + g * hd + d] as f64).sum::<f64>() / total;
                    out[i * qd + head * hd + d] = o as f32;
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_textbook_formula() {
        // Head widths on the register path (64, 128), with a 16-wide part (80) and odd ones
        // (the scalar tails); lengths inside one key block, on its edge and across several.
        for (hd, n_head, n_kv_head) in [(64, 6, 2), (128, 2, 1), (80, 3, 3), (10, 4, 2), (6, 1, 1)] {
            for (len, rows) in [(1, 1), (5, 3), (16, 16), (17, 1), (40, 7), (70, 70)] {
                let h = Heads { n_head, n_kv_head, head_dim: hd };
                let kvw = n_kv_head * hd;
                // Scaled up so that some softmaxes are sharp.
                let k: Vec<f32> = values(len * kvw, 1).iter().map(|x| x * 4.0).collect();
                let v = values(len * kvw, 2);
                let q = values(rows * n_head * hd, 3);
                let mut kv = LayerKv::default();
                for j in 0..len {
                    kv.push(&k[j * kvw..][..kvw], &v[j * kvw..][..kvw]);
                }
                assert_eq!(kv.len(), len);
                let mut out = vec![0f32; q.len()];
                attend(h, &q, &kv, &mut out);
                let want = reference(h, &q, &k, &v, len);
                for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= 2e-5, "hd {hd}, len {len}, rows {rows}: [{i}] {a} vs {b}");
                }
            }
        }
    }
}
