//! Causal attention over the KV caches of a batch of sequences, for the native forward pass.
//!
//! Keys and values are stored as f16, as llama.cpp stores them by default: the caches of a
//! batch come from memory every step, and half the bytes is half that wait. Each KV head has
//! its own keys and values, each contiguous, so that a head's attention reads two sequential
//! streams. A task converts a key block or a chunk of value rows to f32 once, in L1, for all
//! the query heads that share the KV head.
//!
//! Keys are kept in blocks of [`KB`] positions laid out `[dim][position]`, so the scores of one
//! query against a block come out of `head_dim` multiply-adds of [`KB`]-wide vectors with no
//! horizontal sum per key (the per-key dot product it replaces spent most of its time reducing
//! lanes). Values are `[position][dim]`: a query's output accumulates whole value rows, in
//! registers for head widths that are multiples of 16. The softmax uses a vectorisable `exp`.

use comps_core::vector::exp_nonpositive;
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Positions per key block (one 512-bit vector of f32).
pub const KB: usize = 16;

/// One layer's keys and values of one sequence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerKv {
    /// Per KV head: `[block][dim][KB]`; lanes past `len` are zero.
    k: Vec<Vec<f16>>,
    /// Per KV head: `[position][dim]`.
    v: Vec<Vec<f16>>,
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

    /// Append one position's keys and values: `k` and `v` hold `heads` KV heads side by side
    /// (the same number at every position).
    pub fn push(&mut self, heads: usize, k: &[f32], v: &[f32]) {
        assert!(heads > 0 && k.len() == v.len() && k.len().is_multiple_of(heads), "LayerKv::push: shapes");
        if self.k.is_empty() {
            self.k = vec![Vec::new(); heads];
            self.v = vec![Vec::new(); heads];
        }
        assert_eq!(self.k.len(), heads, "LayerKv::push: KV heads");
        let hd = k.len() / heads;
        let lane = self.len % KB;
        for ((kh, vh), (kx, vx)) in self.k.iter_mut().zip(&mut self.v).zip(k.chunks_exact(hd).zip(v.chunks_exact(hd))) {
            if lane == 0 {
                kh.resize(kh.len() + hd * KB, f16::ZERO);
            }
            let block = &mut kh[self.len / KB * hd * KB..][..hd * KB];
            for (j, &x) in kx.iter().enumerate() {
                block[j * KB + lane] = f16::from_f32(x);
            }
            let at = vh.len();
            vh.resize(at + hd, f16::ZERO);
            vh[at..].convert_from_f32_slice(vx);
        }
        self.len += 1;
    }

    /// A copy of the first `len` positions (at most those held): what pushing them alone
    /// would have built.
    pub fn prefix(&self, len: usize) -> LayerKv {
        let len = len.min(self.len);
        if len == 0 {
            return LayerKv::default();
        }
        let hd = self.v[0].len() / self.len;
        let k = self
            .k
            .iter()
            .map(|kh| {
                let mut kh = kh[..len.div_ceil(KB) * hd * KB].to_vec();
                // The lanes past `len` in its last block are zero, as `push` leaves them.
                if !len.is_multiple_of(KB) {
                    let block = kh.len() - hd * KB;
                    kh[block..].chunks_exact_mut(KB).for_each(|lanes| lanes[len % KB..].fill(f16::ZERO));
                }
                kh
            })
            .collect();
        let v = self.v.iter().map(|vh| vh[..len * hd].to_vec()).collect();
        LayerKv { k, v, len }
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|h| h.len() * size_of::<f16>()).sum()
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

/// Causal attention for a batch of sequences in one parallel loop: `parts` are, in order, each
/// sequence's KV cache and how many new query rows it has. Those rows are the last ones of its
/// cache (their keys and values are already in it), and each attends over everything before and
/// including itself. `q` and `out` are laid out `[row][head][dim]`, the sequences' rows one
/// after the other. A task is one row's query heads that share a KV head, so a step of four
/// decoding sequences costs one fork-join, not four, and each key block and value row is read
/// from memory once per group, not once per query head.
pub fn attend(h: Heads, q: &[f32], parts: &[(&LayerKv, usize)], out: &mut [f32]) {
    let (hd, qd) = (h.head_dim, h.n_head * h.head_dim);
    let rows: usize = parts.iter().map(|p| p.1).sum();
    assert!(q.len() == rows * qd && out.len() == q.len(), "attend: shapes");
    assert!(parts.iter().all(|(kv, n)| *n <= kv.len), "attend: more rows than cached positions");
    assert!(h.n_kv_head > 0 && h.n_head.is_multiple_of(h.n_kv_head), "attend: query heads per KV head");
    // Per row: its cache and its length at that row (the row itself included).
    let mut row_kv = Vec::with_capacity(rows);
    for &(kv, n) in parts {
        row_kv.extend((0..n).map(|i| (kv, kv.len - n + i + 1)));
    }
    let group = h.n_head / h.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(group * hd).enumerate().for_each_init(
        || Scratch {
            q: vec![0.0; group * hd],
            scores: Vec::new(),
            totals: vec![0.0; group],
            keys: vec![0.0; hd * KB],
            values: vec![0.0; VCHUNK * hd],
        },
        |scratch, (idx, o)| {
            let (i, g) = (idx / h.n_kv_head, idx % h.n_kv_head);
            let qg = &q[i * qd + g * group * hd..][..group * hd];
            scratch.q.iter_mut().zip(qg).for_each(|(s, x)| *s = x * scale);
            let (kv, n) = row_kv[i];
            one_group(hd, kv, g, n, scratch, o);
        },
    );
}

/// A task's buffers.
struct Scratch {
    /// The group's query heads, scaled, `[head][dim]`.
    q: Vec<f32>,
    /// `[head][position]`, each head's row rounded up to whole key blocks.
    scores: Vec<f32>,
    /// Each head's softmax denominator.
    totals: Vec<f32>,
    /// One key block as f32.
    keys: Vec<f32>,
    /// [`VCHUNK`] value rows as f32.
    values: Vec<f32>,
}

/// Value rows converted and summed per pass over a group's heads (32 rows of a 64-wide head
/// are 8 KiB of f32, in L1).
const VCHUNK: usize = 32;

/// The query heads in `scratch.q` that share KV head `g`, over its first `n` positions.
fn one_group(hd: usize, kv: &LayerKv, g: usize, n: usize, scratch: &mut Scratch, out: &mut [f32]) {
    let Scratch { q, scores, totals, keys, values } = scratch;
    let blocks = n.div_ceil(KB);
    let span = blocks * KB;
    scores.clear();
    scores.resize(totals.len() * span, 0.0);
    // Block by block, converted once and every head of the group against it.
    for (b, kb) in kv.k[g].chunks_exact(hd * KB).take(blocks).enumerate() {
        kb.convert_to_f32_slice(keys);
        for (qh, s) in q.chunks_exact(hd).zip(scores.chunks_exact_mut(span)) {
            s[b * KB..(b + 1) * KB].copy_from_slice(&block_scores(qh, keys));
        }
    }
    for (s, total) in scores.chunks_exact_mut(span).zip(totals.iter_mut()) {
        let s = &mut s[..n];
        let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        s.iter_mut().for_each(|v| *v = exp_nonpositive(*v - m));
        *total = s.iter().sum();
    }
    out.fill(0.0);
    // A chunk of value rows at a time, converted once and summed into every head of the group.
    for c0 in (0..n).step_by(VCHUNK) {
        let c1 = (c0 + VCHUNK).min(n);
        let rows = &mut values[..(c1 - c0) * hd];
        kv.v[g][c0 * hd..c1 * hd].convert_to_f32_slice(rows);
        for (s, o) in scores.chunks_exact(span).zip(out.chunks_exact_mut(hd)) {
            let p = &s[c0..c1];
            let mut at = 0;
            // Widths of 64, then of 16, then what is left, each accumulated in registers.
            while hd - at >= 64 {
                weighted_sum::<64>(p, rows, hd, at, &mut o[at..at + 64]);
                at += 64;
            }
            while hd - at >= 16 {
                weighted_sum::<16>(p, rows, hd, at, &mut o[at..at + 16]);
                at += 16;
            }
            while at < hd {
                weighted_sum::<1>(p, rows, hd, at, &mut o[at..at + 1]);
                at += 1;
            }
        }
    }
    for (o, total) in out.chunks_exact_mut(hd).zip(totals.iter()) {
        let inv = 1.0 / total;
        o.iter_mut().for_each(|x| *x *= inv);
    }
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

/// `out[d] += Σ_j p[j] · rows[j * stride + at + d]` for `d < W`, the sum held in registers.
#[inline(always)]
fn weighted_sum<const W: usize>(p: &[f32], rows: &[f32], stride: usize, at: usize, out: &mut [f32]) {
    let mut acc: [f32; W] = out[..W].try_into().expect("W values");
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
                    kv.push(n_kv_head, &k[j * kvw..][..kvw], &v[j * kvw..][..kvw]);
                }
                assert_eq!(kv.len(), len);
                let mut out = vec![0f32; q.len()];
                attend(h, &q, &[(&kv, rows)], &mut out);
                // The cache holds keys and values as f16: the formula gets them rounded so.
                let f16_round = |x: &[f32]| x.iter().map(|&x| f16::from_f32(x).to_f32()).collect::<Vec<_>>();
                let want = reference(h, &q, &f16_round(&k), &f16_round(&v), len);
                for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= 2e-5, "hd {hd}, len {len}, rows {rows}: [{i}] {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn a_prefix_equals_pushing_its_positions_alone() {
        let (heads, hd) = (2, 24);
        let kvw = heads * hd;
        let (k, v) = (values(40 * kvw, 4), values(40 * kvw, 5));
        let built = |n: usize| {
            let mut kv = LayerKv::default();
            for j in 0..n {
                kv.push(heads, &k[j * kvw..][..kvw], &v[j * kvw..][..kvw]);
            }
            kv
        };
        let full = built(40);
        // Inside the first key block, on a block's edge, past it, all, and more than held.
        for n in [0, 1, 15, 16, 17, 33, 40] {
            let p = full.prefix(n);
            assert_eq!(p, built(n), "prefix of {n}");
            assert_eq!(p.bytes(), heads * (n.div_ceil(KB) * KB + n) * hd * 2, "bytes of {n}");
        }
        assert_eq!(full.prefix(99), full);
        // A prefix goes on growing as the cache it was cut from did.
        let mut p = full.prefix(17);
        for j in 17..40 {
            p.push(heads, &k[j * kvw..][..kvw], &v[j * kvw..][..kvw]);
        }
        assert_eq!(p, full);
    }

    #[test]
    fn a_batch_of_sequences_equals_each_alone() {
        // Decode rows and prompt chunks of caches of different lengths in one call.
        let h = Heads { n_head: 4, n_kv_head: 2, head_dim: 64 };
        let kvw = h.n_kv_head * h.head_dim;
        let qd = h.n_head * h.head_dim;
        let shapes = [(1, 1), (37, 1), (20, 20), (50, 9)];
        let caches: Vec<LayerKv> = shapes
            .iter()
            .enumerate()
            .map(|(s, &(len, _))| {
                let (k, v) = (values(len * kvw, 10 + s as u64), values(len * kvw, 20 + s as u64));
                let mut kv = LayerKv::default();
                for j in 0..len {
                    kv.push(h.n_kv_head, &k[j * kvw..][..kvw], &v[j * kvw..][..kvw]);
                }
                kv
            })
            .collect();
        let rows: usize = shapes.iter().map(|s| s.1).sum();
        let q = values(rows * qd, 30);
        let parts: Vec<(&LayerKv, usize)> = caches.iter().zip(&shapes).map(|(kv, s)| (kv, s.1)).collect();
        let mut together = vec![0f32; q.len()];
        attend(h, &q, &parts, &mut together);
        let mut at = 0;
        for (kv, n) in parts {
            let mut alone = vec![0f32; n * qd];
            attend(h, &q[at * qd..(at + n) * qd], &[(kv, n)], &mut alone);
            assert_eq!(&together[at * qd..(at + n) * qd], &alone[..], "a sequence of {} positions", kv.len());
            at += n;
        }
    }
}
