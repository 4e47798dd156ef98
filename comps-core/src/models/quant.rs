//! Block-quantized matrix products for LLM inference: ggml's Q8_0 and Q4_0 weight rows
//! (32 values and one scale per block) against activations quantized to Q8_0, as llama.cpp
//! computes them. Weights are repacked once at load (scales as f32, Q8_0 values offset to
//! unsigned) so the inner loop is one AVX-512 VNNI `dpbusd` per block. Besides
//! [`super::kernels`], this is the one module that needs `unsafe` (the SIMD intrinsics); every
//! slice is bounds-checked before them.

#![allow(unsafe_code)]

use rayon::prelude::*;

/// Values per block.
pub const BLOCK: usize = 32;

/// A weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QKind {
    /// 32 × i8 and an f16 scale (34 bytes in GGUF).
    Q8_0,
    /// 32 × 4-bit (value − 8) and an f16 scale (18 bytes in GGUF).
    Q4_0,
}

impl QKind {
    /// Bytes of one block in a GGUF file.
    pub fn ggml_block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
        }
    }

    /// Bytes of one block's values once repacked.
    fn packed(self) -> usize {
        match self {
            Self::Q8_0 => 32,
            Self::Q4_0 => 16,
        }
    }
}

/// A row-major matrix of quantized rows (`cols` a multiple of 32).
#[derive(Debug, Clone)]
pub struct QMatrix {
    kind: QKind,
    rows: usize,
    cols: usize,
    /// Q8_0: value + 128 as u8; Q4_0: ggml's nibbles (byte j = value j | value j+16 << 4).
    qs: Vec<u8>,
    /// One scale per block.
    d: Vec<f32>,
}

fn f16_to_f32(lo: u8, hi: u8) -> f32 {
    half::f16::from_le_bytes([lo, hi]).to_f32()
}

impl QMatrix {
    /// Read `rows × cols` values stored as ggml blocks.
    pub fn from_ggml(kind: QKind, rows: usize, cols: usize, data: &[u8]) -> Result<Self, String> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(format!("{cols} columns is not a multiple of {BLOCK}"));
        }
        let nb = cols / BLOCK;
        let bb = kind.ggml_block_bytes();
        if data.len() != rows * nb * bb {
            return Err(format!(
                "{} bytes for a {rows}×{cols} {kind:?} matrix, expected {}",
                data.len(),
                rows * nb * bb
            ));
        }
        let mut qs = Vec::with_capacity(rows * nb * kind.packed());
        let mut d = Vec::with_capacity(rows * nb);
        for block in data.chunks_exact(bb) {
            d.push(f16_to_f32(block[0], block[1]));
            match kind {
                QKind::Q8_0 => qs.extend(block[2..].iter().map(|&b| (b as i8 as i16 + 128) as u8)),
                QKind::Q4_0 => qs.extend_from_slice(&block[2..]),
            }
        }
        Ok(Self { kind, rows, cols, qs, d })
    }

    /// Several matrices with the same format and width stacked row-wise (one product instead
    /// of several: Q, K and V; gate and up).
    pub fn stack(parts: &[&QMatrix]) -> Result<Self, String> {
        let first = parts.first().ok_or("nothing to stack")?;
        if parts.iter().any(|p| p.kind != first.kind || p.cols != first.cols) {
            return Err("stacked matrices must share their format and width".into());
        }
        Ok(Self {
            kind: first.kind,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            qs: parts.iter().flat_map(|p| p.qs.iter().copied()).collect(),
            d: parts.iter().flat_map(|p| p.d.iter().copied()).collect(),
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The format.
    pub fn kind(&self) -> QKind {
        self.kind
    }

    /// Row `r` as f32 (an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows && out.len() == self.cols, "dequantize_row out of range");
        let nb = self.cols / BLOCK;
        for b in 0..nb {
            let d = self.d[r * nb + b];
            let o = &mut out[b * BLOCK..(b + 1) * BLOCK];
            match self.kind {
                QKind::Q8_0 => {
                    let q = &self.qs[(r * nb + b) * 32..][..32];
                    for (v, &x) in o.iter_mut().zip(q) {
                        *v = (x as i32 - 128) as f32 * d;
                    }
                }
                QKind::Q4_0 => {
                    let q = &self.qs[(r * nb + b) * 16..][..16];
                    for (j, &x) in q.iter().enumerate() {
                        o[j] = ((x & 0x0f) as i32 - 8) as f32 * d;
                        o[j + 16] = ((x >> 4) as i32 - 8) as f32 * d;
                    }
                }
            }
        }
    }
}

/// Activation rows quantized to Q8_0 (reused between calls to keep allocations out of the
/// decode loop).
#[derive(Debug, Clone, Default)]
pub struct QActs {
    n: usize,
    cols: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    /// Sum of each block's values (for the weight offsets).
    sums: Vec<i32>,
}

impl QActs {
    /// Empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantize `n` rows of `cols` values (`x.len() == n * cols`, `cols` a multiple of 32).
    pub fn quantize(&mut self, x: &[f32], n: usize, cols: usize) {
        assert!(cols.is_multiple_of(BLOCK) && x.len() == n * cols, "quantize: {} values for {n}×{cols}", x.len());
        self.n = n;
        self.cols = cols;
        self.qs.resize(n * cols, 0);
        self.d.resize(n * cols / BLOCK, 0.0);
        self.sums.resize(n * cols / BLOCK, 0);
        for (b, block) in x.chunks_exact(BLOCK).enumerate() {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let q = &mut self.qs[b * BLOCK..(b + 1) * BLOCK];
            let mut s = 0i32;
            for (o, v) in q.iter_mut().zip(block) {
                let r = (v * id).round() as i8;
                s += r as i32;
                *o = r;
            }
            // ggml stores the scale as f16 (the values were rounded with the f32 one).
            self.d[b] = half::f16::from_f32(d).to_f32();
            self.sums[b] = s;
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.n
    }
}

/// Output rows handed to one task.
const CHUNK: usize = 32;

/// `out[t * w.rows + r] = w[r] · x[t]` for every weight row `r` and activation row `t`, split
/// over the rayon pool by weight rows.
pub fn qgemm(w: &QMatrix, x: &QActs, out: &mut [f32]) {
    assert_eq!(w.cols, x.cols, "qgemm: weight columns vs activation columns");
    assert_eq!(out.len(), x.n * w.rows, "qgemm: output size");
    if x.n == 1 {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
            for (i, v) in o.iter_mut().enumerate() {
                *v = dot_row(w, c * CHUNK + i, x, 0);
            }
        });
        return;
    }
    // Several activation rows: each task keeps its weight rows hot while it runs them against
    // every activation row, into a row-major [weight row][activation row] buffer.
    let n = x.n;
    let mut tmp = vec![0f32; w.rows * n];
    tmp.par_chunks_mut(CHUNK * n).enumerate().for_each(|(c, o)| {
        for (i, row) in o.chunks_exact_mut(n).enumerate() {
            for (t, v) in row.iter_mut().enumerate() {
                *v = dot_row(w, c * CHUNK + i, x, t);
            }
        }
    });
    for (r, row) in tmp.chunks_exact(n).enumerate() {
        for (t, v) in row.iter().enumerate() {
            out[t * w.rows + r] = *v;
        }
    }
}

fn dot_row(w: &QMatrix, r: usize, x: &QActs, t: usize) -> f32 {
    let nb = w.cols / BLOCK;
    let wd = &w.d[r * nb..(r + 1) * nb];
    let xd = &x.d[t * nb..(t + 1) * nb];
    let xs = &x.sums[t * nb..(t + 1) * nb];
    let xq = &x.qs[t * w.cols..(t + 1) * w.cols];
    let packed = w.kind.packed();
    let wq = &w.qs[r * nb * packed..(r + 1) * nb * packed];
    match w.kind {
        QKind::Q8_0 => dot_q8(wq, wd, xq, xd, xs),
        QKind::Q4_0 => dot_q4(wq, wd, xq, xd, xs),
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512vnni", target_feature = "avx512vl", target_feature = "fma"))]
fn dot_q8(wq: &[u8], wd: &[f32], xq: &[i8], xd: &[f32], xs: &[i32]) -> f32 {
    let nb = wd.len();
    assert!(wq.len() == nb * 32 && xq.len() == nb * 32 && xd.len() == nb && xs.len() == nb);
    // SAFETY: the target features are enabled at compile time (cfg above) and every load
    // reads 32 bytes at `b * 32` for `b < nb`, inside `wq` and `xq` (asserted above).
    unsafe {
        use std::arch::x86_64::*;
        let zero = _mm256_setzero_si256();
        // Two accumulators, so consecutive blocks do not wait on each other's FMA.
        let mut acc = [_mm256_setzero_ps(); 2];
        for b in 0..nb {
            let wv = _mm256_loadu_si256(wq.as_ptr().add(b * 32) as *const __m256i);
            let xv = _mm256_loadu_si256(xq.as_ptr().add(b * 32) as *const __m256i);
            // Remove the +128 offset of the weights in integers (from one lane), so the
            // float sum never holds the large offset term.
            let off = _mm256_zextsi128_si256(_mm_cvtsi32_si128(128 * xs[b]));
            let dp = _mm256_sub_epi32(_mm256_dpbusd_epi32(zero, wv, xv), off);
            acc[b & 1] = _mm256_fmadd_ps(_mm256_set1_ps(wd[b] * xd[b]), _mm256_cvtepi32_ps(dp), acc[b & 1]);
        }
        hsum256(_mm256_add_ps(acc[0], acc[1]))
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512vnni", target_feature = "avx512vl", target_feature = "fma"))]
fn dot_q4(wq: &[u8], wd: &[f32], xq: &[i8], xd: &[f32], xs: &[i32]) -> f32 {
    let nb = wd.len();
    assert!(wq.len() == nb * 16 && xq.len() == nb * 32 && xd.len() == nb && xs.len() == nb);
    // SAFETY: as in `dot_q8`; the weight loads read 16 bytes at `b * 16`, inside `wq`.
    unsafe {
        use std::arch::x86_64::*;
        let zero = _mm256_setzero_si256();
        let low = _mm_set1_epi8(0x0f);
        let mut acc = [_mm256_setzero_ps(); 2];
        for b in 0..nb {
            let v = _mm_loadu_si128(wq.as_ptr().add(b * 16) as *const __m128i);
            let lo = _mm_and_si128(v, low);
            let hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
            let wv = _mm256_set_m128i(hi, lo);
            let xv = _mm256_loadu_si256(xq.as_ptr().add(b * 32) as *const __m256i);
            let off = _mm256_zextsi128_si256(_mm_cvtsi32_si128(8 * xs[b]));
            let dp = _mm256_sub_epi32(_mm256_dpbusd_epi32(zero, wv, xv), off);
            acc[b & 1] = _mm256_fmadd_ps(_mm256_set1_ps(wd[b] * xd[b]), _mm256_cvtepi32_ps(dp), acc[b & 1]);
        }
        hsum256(_mm256_add_ps(acc[0], acc[1]))
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512vnni", target_feature = "avx512vl", target_feature = "fma"))]
#[inline(always)]
fn hsum256(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    // SAFETY: register-only operations; AVX is enabled at compile time (cfg above).
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx512vnni",
    target_feature = "avx512vl",
    target_feature = "fma"
)))]
fn dot_q8(wq: &[u8], wd: &[f32], xq: &[i8], xd: &[f32], xs: &[i32]) -> f32 {
    dot_q8_scalar(wq, wd, xq, xd, xs)
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx512vnni",
    target_feature = "avx512vl",
    target_feature = "fma"
)))]
fn dot_q4(wq: &[u8], wd: &[f32], xq: &[i8], xd: &[f32], xs: &[i32]) -> f32 {
    dot_q4_scalar(wq, wd, xq, xd, xs)
}

/// Portable Q8_0 · Q8_0 (also the reference the SIMD kernel is tested against).
pub fn dot_q8_scalar(wq: &[u8], wd: &[f32], xq: &[i8], xd: &[f32], _xs: &[i32]) -> f32 {
    let mut total = 0f32;
    for b in 0..wd.len() {
        let mut s = 0i32;
        for i in 0..BLOCK {
            s += (wq[b * 32 + i] as i32 - 128) * xq[b * 32 + i] as i32;
        }
        total += wd[b] * xd[b] * s as f32;
    }
    total
}

/// Portable Q4_0 · Q8_0.
pub fn dot_q4_scalar(wq: &[u8], wd: &[f32], xq: &[i8], xd: &[f32], _xs: &[i32]) -> f32 {
    let mut total = 0f32;
    for b in 0..wd.len() {
        let mut s = 0i32;
        for j in 0..16 {
            let byte = wq[b * 16 + j];
            s += ((byte & 0x0f) as i32 - 8) * xq[b * 32 + j] as i32;
            s += ((byte >> 4) as i32 - 8) * xq[b * 32 + j + 16] as i32;
        }
        total += wd[b] * xd[b] * s as f32;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// ggml blocks of `w` (rows × cols), quantized as ggml does.
    fn ggml_blocks(kind: QKind, w: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for block in w.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            match kind {
                QKind::Q8_0 => {
                    let d = amax / 127.0;
                    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
                    out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
                }
                QKind::Q4_0 => {
                    // ggml: the value of largest magnitude maps to -8.
                    let max = block.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
                    let d = max / -8.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
                    let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                    for j in 0..16 {
                        out.push(q(block[j]) | (q(block[j + 16]) << 4));
                    }
                }
            }
        }
        out
    }

    fn check(kind: QKind, rows: usize, cols: usize, n: usize) {
        let w = values(rows * cols, 1);
        // Activations with a bias, as residual streams have: large block sums.
        let x: Vec<f32> = values(n * cols, 2).iter().map(|v| v + 0.8).collect();
        let m = QMatrix::from_ggml(kind, rows, cols, &ggml_blocks(kind, &w)).unwrap();
        let mut acts = QActs::new();
        acts.quantize(&x, n, cols);
        let mut out = vec![0f32; n * rows];
        qgemm(&m, &acts, &mut out);
        let mut row = vec![0f32; cols];
        let nb = cols / BLOCK;
        for r in 0..rows {
            m.dequantize_row(r, &mut row);
            for t in 0..n {
                // Against the exact integer arithmetic of the portable kernel...
                let wq = &m.qs[r * nb * kind.packed()..(r + 1) * nb * kind.packed()];
                let args =
                    (&m.d[r * nb..(r + 1) * nb], &acts.qs[t * cols..(t + 1) * cols], &acts.d[t * nb..(t + 1) * nb]);
                let exact = match kind {
                    QKind::Q8_0 => dot_q8_scalar(wq, args.0, args.1, args.2, &[]),
                    QKind::Q4_0 => dot_q4_scalar(wq, args.0, args.1, args.2, &[]),
                };
                let got = out[t * rows + r];
                assert!((got - exact).abs() <= 1e-4 * exact.abs().max(1.0), "{kind:?} r{r} t{t}: {got} vs {exact}");
                // ...and close to the f32 product of the dequantized row with the real input.
                let f: f32 = row.iter().zip(&x[t * cols..(t + 1) * cols]).map(|(a, b)| a * b).sum();
                assert!((got - f).abs() <= 0.02 * (cols as f32).sqrt(), "{kind:?} r{r} t{t}: {got} vs f32 {f}");
            }
        }
    }

    #[test]
    fn q8_0_products_match_the_reference() {
        check(QKind::Q8_0, 70, 96, 1);
        check(QKind::Q8_0, 45, 576, 3);
    }

    #[test]
    fn q4_0_products_match_the_reference() {
        check(QKind::Q4_0, 70, 96, 1);
        check(QKind::Q4_0, 45, 576, 3);
    }

    #[test]
    fn dequantized_rows_and_stacking() {
        let w = values(4 * 64, 3);
        let a = QMatrix::from_ggml(QKind::Q8_0, 2, 64, &ggml_blocks(QKind::Q8_0, &w[..128])).unwrap();
        let b = QMatrix::from_ggml(QKind::Q8_0, 2, 64, &ggml_blocks(QKind::Q8_0, &w[128..])).unwrap();
        let s = QMatrix::stack(&[&a, &b]).unwrap();
        assert_eq!((s.rows(), s.cols()), (4, 64));
        let mut row = vec![0f32; 64];
        s.dequantize_row(3, &mut row);
        for (got, want) in row.iter().zip(&w[192..]) {
            assert!((got - want).abs() < 0.01, "{got} vs {want}");
        }
        assert!(QMatrix::from_ggml(QKind::Q8_0, 2, 63, &[]).is_err());
        assert!(QMatrix::from_ggml(QKind::Q4_0, 2, 64, &[0; 10]).is_err());
    }
}
