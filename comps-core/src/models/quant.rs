//! Block-quantized matrix products for LLM inference: ggml's Q8_0, Q4_0 and Q4_1 weight rows
//! (32 values and one scale, for Q4_1 also a minimum, per block) against activations quantized
//! to Q8_0 (with Q8_1's block sums for Q4_1), as llama.cpp computes them. Weights are repacked once at load: rows in groups of eight, each block's
//! values interleaved four bytes at a time across the group (Q8_0 offset to unsigned), scales as
//! f32. One AVX-512 VNNI `dpbusd` then multiplies four values of eight rows at once against a
//! broadcast of four activation values, so a block of eight rows costs eight of them (Q4_0:
//! eight on four loads) and the activations are read once per group, not once per row. Besides
//! [`super::kernels`], this is the one module that needs `unsafe` (the SIMD intrinsics); every
//! slice is bounds-checked before them.

#![allow(unsafe_code)]

use rayon::prelude::*;

/// Values per block.
pub const BLOCK: usize = 32;

/// Rows interleaved together.
pub const GROUP: usize = 8;

/// A weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QKind {
    /// 32 × i8 and an f16 scale (34 bytes in GGUF).
    Q8_0,
    /// 32 × 4-bit (value − 8) and an f16 scale (18 bytes in GGUF).
    Q4_0,
    /// 32 × 4-bit, an f16 scale and an f16 minimum: value = q · d + m (20 bytes in GGUF).
    Q4_1,
}

impl QKind {
    /// Bytes of one block in a GGUF file.
    pub fn ggml_block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
        }
    }

    /// Bytes of one block's values once repacked.
    fn packed(self) -> usize {
        match self {
            Self::Q8_0 => 32,
            Self::Q4_0 | Self::Q4_1 => 16,
        }
    }

    /// A packed byte that holds zeros (the padding rows of a last, partial group).
    fn zero_byte(self) -> u8 {
        match self {
            Self::Q8_0 => 128,
            Self::Q4_0 => 0x88,
            Self::Q4_1 => 0,
        }
    }
}

/// A row-major matrix of quantized rows (`cols` a multiple of 32).
#[derive(Debug, Clone)]
pub struct QMatrix {
    kind: QKind,
    rows: usize,
    cols: usize,
    /// `[group][block][piece][row in group][4 bytes]`: piece `k` holds packed bytes `4k..4k+4`
    /// of the block (Q8_0: value + 128 as u8; Q4_0: ggml's nibbles, byte j = value j | value
    /// j+16 << 4). Rows past `rows` are zeros.
    qs: Vec<u8>,
    /// `[group][block][row in group]`.
    d: Vec<f32>,
    /// Q4_1's minimums, laid out as `d` (empty for the other formats).
    m: Vec<f32>,
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
        let mut m = Vec::new();
        for block in data.chunks_exact(bb) {
            d.push(f16_to_f32(block[0], block[1]));
            match kind {
                QKind::Q8_0 => qs.extend(block[2..].iter().map(|&b| (b as i8 as i16 + 128) as u8)),
                QKind::Q4_0 => qs.extend_from_slice(&block[2..]),
                QKind::Q4_1 => {
                    m.push(f16_to_f32(block[2], block[3]));
                    qs.extend_from_slice(&block[4..]);
                }
            }
        }
        Ok(Self::interleave(kind, rows, cols, &qs, &d, &m))
    }

    /// Lay out row-major packed blocks (`rq`: `[row][block][packed bytes]`, `rd` and `rm`:
    /// `[row][block]`, `rm` empty but for Q4_1) in groups.
    fn interleave(kind: QKind, rows: usize, cols: usize, rq: &[u8], rd: &[f32], rm: &[f32]) -> Self {
        let (nb, p) = (cols / BLOCK, kind.packed());
        let groups = rows.div_ceil(GROUP);
        let mut qs = vec![kind.zero_byte(); groups * nb * GROUP * p];
        let mut d = vec![0f32; groups * nb * GROUP];
        let mut m = vec![0f32; if rm.is_empty() { 0 } else { groups * nb * GROUP }];
        for r in 0..rows {
            let (g, i) = (r / GROUP, r % GROUP);
            for b in 0..nb {
                let src = &rq[(r * nb + b) * p..][..p];
                let base = (g * nb + b) * GROUP * p;
                for (k, piece) in src.chunks_exact(4).enumerate() {
                    qs[base + (k * GROUP + i) * 4..][..4].copy_from_slice(piece);
                }
                d[(g * nb + b) * GROUP + i] = rd[r * nb + b];
                if !rm.is_empty() {
                    m[(g * nb + b) * GROUP + i] = rm[r * nb + b];
                }
            }
        }
        Self { kind, rows, cols, qs, d, m }
    }

    /// Row `r`'s packed blocks, scales and minimums (empty but for Q4_1), row-major.
    fn row_blocks(&self, r: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let (nb, p) = (self.cols / BLOCK, self.kind.packed());
        let (g, i) = (r / GROUP, r % GROUP);
        let mut q = Vec::with_capacity(nb * p);
        let mut d = Vec::with_capacity(nb);
        let mut m = Vec::new();
        for b in 0..nb {
            let base = (g * nb + b) * GROUP * p;
            for k in 0..p / 4 {
                q.extend_from_slice(&self.qs[base + (k * GROUP + i) * 4..][..4]);
            }
            d.push(self.d[(g * nb + b) * GROUP + i]);
            if !self.m.is_empty() {
                m.push(self.m[(g * nb + b) * GROUP + i]);
            }
        }
        (q, d, m)
    }

    /// Several matrices with the same format and width stacked row-wise (one product instead
    /// of several: Q, K and V; gate and up).
    pub fn stack(parts: &[&QMatrix]) -> Result<Self, String> {
        let first = parts.first().ok_or("nothing to stack")?;
        if parts.iter().any(|p| p.kind != first.kind || p.cols != first.cols) {
            return Err("stacked matrices must share their format and width".into());
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        let (mut rq, mut rd, mut rm) = (Vec::new(), Vec::new(), Vec::new());
        for part in parts {
            for r in 0..part.rows {
                let (q, d, m) = part.row_blocks(r);
                rq.extend(q);
                rd.extend(d);
                rm.extend(m);
            }
        }
        Ok(Self::interleave(first.kind, rows, first.cols, &rq, &rd, &rm))
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
        let (nb, p) = (self.cols / BLOCK, self.kind.packed());
        let (g, i) = (r / GROUP, r % GROUP);
        for b in 0..nb {
            let d = self.d[(g * nb + b) * GROUP + i];
            let base = (g * nb + b) * GROUP * p;
            let byte = |j: usize| self.qs[base + (j / 4 * GROUP + i) * 4 + j % 4];
            let o = &mut out[b * BLOCK..(b + 1) * BLOCK];
            match self.kind {
                QKind::Q8_0 => {
                    for (j, v) in o.iter_mut().enumerate() {
                        *v = (byte(j) as i32 - 128) as f32 * d;
                    }
                }
                QKind::Q4_0 => {
                    for j in 0..16 {
                        let x = byte(j);
                        o[j] = ((x & 0x0f) as i32 - 8) as f32 * d;
                        o[j + 16] = ((x >> 4) as i32 - 8) as f32 * d;
                    }
                }
                QKind::Q4_1 => {
                    let m = self.m[(g * nb + b) * GROUP + i];
                    for j in 0..16 {
                        let x = byte(j);
                        o[j] = (x & 0x0f) as f32 * d + m;
                        o[j + 16] = (x >> 4) as f32 * d + m;
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
    /// Q8_1's `s`: the f32 scale × the block sum, rounded to f16 (for Q4_1's minimums).
    scaled_sums: Vec<f32>,
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
        self.scaled_sums.resize(n * cols / BLOCK, 0.0);
        for (b, block) in x.chunks_exact(BLOCK).enumerate() {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let q = &mut self.qs[b * BLOCK..(b + 1) * BLOCK];
            // Round half to even, as llama.cpp's SIMD quantizer does (and one instruction).
            for (o, v) in q.iter_mut().zip(block) {
                *o = (v * id).round_ties_even() as i8;
            }
            // ggml stores the scale as f16 (the values were rounded with the f32 one).
            self.d[b] = half::f16::from_f32(d).to_f32();
            let sum: i32 = q.iter().map(|&v| v as i32).sum();
            self.sums[b] = sum;
            self.scaled_sums[b] = half::f16::from_f32(d * sum as f32).to_f32();
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.n
    }
}

/// Row groups handed to one task.
const GROUPS_PER_TASK: usize = 4;

/// `out[t * w.rows + r] = w[r] · x[t]` for every weight row `r` and activation row `t`, split
/// over the rayon pool by groups of weight rows. Each task runs its groups (a few KiB, kept in
/// L1) against every activation row.
pub fn qgemm(w: &QMatrix, x: &QActs, out: &mut [f32]) {
    assert_eq!(w.cols, x.cols, "qgemm: weight columns vs activation columns");
    assert_eq!(out.len(), x.n * w.rows, "qgemm: output size");
    let n = x.n;
    if n == 1 && w.rows.is_multiple_of(GROUP) {
        out.par_chunks_mut(GROUP * GROUPS_PER_TASK).enumerate().for_each(|(c, o)| {
            for (i, og) in o.chunks_exact_mut(GROUP).enumerate() {
                og.copy_from_slice(&dot_group(w, c * GROUPS_PER_TASK + i, x, 0));
            }
        });
        return;
    }
    // `[group][activation row][row in group]`, then scattered into `out`.
    let groups = w.rows.div_ceil(GROUP);
    let mut tmp = vec![0f32; groups * n * GROUP];
    tmp.par_chunks_mut(GROUPS_PER_TASK * n * GROUP).enumerate().for_each(|(c, o)| {
        for (i, og) in o.chunks_exact_mut(n * GROUP).enumerate() {
            for (t, ot) in og.chunks_exact_mut(GROUP).enumerate() {
                ot.copy_from_slice(&dot_group(w, c * GROUPS_PER_TASK + i, x, t));
            }
        }
    });
    for (g, og) in tmp.chunks_exact(n * GROUP).enumerate() {
        for (t, ot) in og.chunks_exact(GROUP).enumerate() {
            for (i, v) in ot.iter().enumerate() {
                let r = g * GROUP + i;
                if r < w.rows {
                    out[t * w.rows + r] = *v;
                }
            }
        }
    }
}

/// The products of group `g`'s eight rows with activation row `t`.
fn dot_group(w: &QMatrix, g: usize, x: &QActs, t: usize) -> [f32; GROUP] {
    let (nb, p) = (w.cols / BLOCK, w.kind.packed());
    let wq = &w.qs[g * nb * GROUP * p..(g + 1) * nb * GROUP * p];
    let wd = &w.d[g * nb * GROUP..(g + 1) * nb * GROUP];
    let xq = &x.qs[t * w.cols..(t + 1) * w.cols];
    let xd = &x.d[t * nb..(t + 1) * nb];
    let xs = &x.sums[t * nb..(t + 1) * nb];
    match w.kind {
        QKind::Q8_0 => group_q8(wq, wd, xq, xd, xs),
        QKind::Q4_0 => group_q4(wq, wd, xq, xd, xs),
        QKind::Q4_1 => {
            let wm = &w.m[g * nb * GROUP..(g + 1) * nb * GROUP];
            group_q4_1(wq, wd, wm, xq, xd, &x.scaled_sums[t * nb..(t + 1) * nb])
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512vnni", target_feature = "avx512vl", target_feature = "fma"))]
fn group_q8(wq: &[u8], wd: &[f32], xq: &[i8], xd: &[f32], xs: &[i32]) -> [f32; GROUP] {
    let nb = xd.len();
    assert!(wq.len() == nb * GROUP * 32 && wd.len() == nb * GROUP && xq.len() == nb * 32 && xs.len() == nb);
    // SAFETY: the target features are enabled at compile time (cfg above). For `b < nb` and
    // `k < 8`, the weight loads read 32 bytes at `b * 256 + k * 32` (inside `wq`), the
    // activation loads 4 bytes at `b * 32 + 4k` (inside `xq`) and the scale load 8 floats at
    // `b * 8` (inside `wd`), as asserted above.
    unsafe {
        use std::arch::x86_64::*;
        // Two float accumulators, so consecutive blocks do not wait on each other's FMA.
        let mut acc = [_mm256_setzero_ps(); 2];
        for b in 0..nb {
            let w = wq.as_ptr().add(b * GROUP * 32);
            let x = xq.as_ptr().add(b * 32);
            // Lane i sums row i's products; two chains halve the dpbusd latency per block.
            let mut s = [_mm256_setzero_si256(); 2];
            for k in 0..8 {
                let xv = _mm256_set1_epi32(x.add(4 * k).cast::<i32>().read_unaligned());
                let wv = _mm256_loadu_si256(w.add(k * 32).cast());
                s[k & 1] = _mm256_dpbusd_epi32(s[k & 1], wv, xv);
            }
            // The weights carry +128: take 128 × the block's activation sum back out, in
            // integers, so the float sum never holds the large offset term.
            let s = _mm256_sub_epi32(_mm256_add_epi32(s[0], s[1]), _mm256_set1_epi32(128 * xs[b]));
            let scale = _mm256_mul_ps(_mm256_loadu_ps(wd.as_ptr().add(b * GROUP)), _mm256_set1_ps(xd[b]));
            acc[b & 1] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s), acc[b & 1]);
        }
        let mut out = [0f32; GROUP];
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(acc[0], acc[1]));
        out
    }
}

/// Lane i: Σ nibble · activation over one block of row i of a 4-bit group (`w`: the block's
/// 128 interleaved bytes, `x`: its 32 activations), nibbles as stored (unsigned).
///
/// # Safety
/// `w` must be valid for 128 bytes and `x` for 32; the target features are enabled at compile
/// time (cfg).
#[cfg(all(target_arch = "x86_64", target_feature = "avx512vnni", target_feature = "avx512vl", target_feature = "fma"))]
#[inline(always)]
unsafe fn nibble_sums(w: *const u8, x: *const i8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: the loads stay inside the 128 and 32 bytes the caller vouches for.
    unsafe {
        let low = _mm256_set1_epi8(0x0f);
        let mut s = [_mm256_setzero_si256(); 2];
        for k in 0..4 {
            // Piece k of each row: values 4k..4k+4 in the low nibbles, 16+4k.. in the high.
            let v = _mm256_loadu_si256(w.add(k * 32).cast());
            let lo = _mm256_and_si256(v, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
            let xlo = _mm256_set1_epi32(x.add(4 * k).cast::<i32>().read_unaligned());
            let xhi = _mm256_set1_epi32(x.add(16 + 4 * k).cast::<i32>().read_unaligned());
            s[0] = _mm256_dpbusd_epi32(s[0], lo, xlo);
            s[1] = _mm256_dpbusd_epi32(s[1], hi, xhi);
        }
        _mm256_add_epi32(s[0], s[1])
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512vnni", target_feature = "avx512vl", target_feature = "fma"))]
fn group_q4(wq: &[u8], wd: &[f32], xq: &[i8], xd: &[f32], xs: &[i32]) -> [f32; GROUP] {
    let nb = xd.len();
    assert!(wq.len() == nb * GROUP * 16 && wd.len() == nb * GROUP && xq.len() == nb * 32 && xs.len() == nb);
    // SAFETY: as in `group_q8`; the weight loads read 32 bytes at `b * 128 + k * 32` for
    // `k < 4`, inside `wq`, and the activation loads 4 bytes at `b * 32 + 4k` and
    // `b * 32 + 16 + 4k`, inside `xq`.
    unsafe {
        use std::arch::x86_64::*;
        let mut acc = [_mm256_setzero_ps(); 2];
        for b in 0..nb {
            let s = nibble_sums(wq.as_ptr().add(b * GROUP * 16), xq.as_ptr().add(b * 32));
            // The nibbles carry +8.
            let s = _mm256_sub_epi32(s, _mm256_set1_epi32(8 * xs[b]));
            let scale = _mm256_mul_ps(_mm256_loadu_ps(wd.as_ptr().add(b * GROUP)), _mm256_set1_ps(xd[b]));
            acc[b & 1] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s), acc[b & 1]);
        }
        let mut out = [0f32; GROUP];
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(acc[0], acc[1]));
        out
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512vnni", target_feature = "avx512vl", target_feature = "fma"))]
fn group_q4_1(wq: &[u8], wd: &[f32], wm: &[f32], xq: &[i8], xd: &[f32], xs: &[f32]) -> [f32; GROUP] {
    let nb = xd.len();
    assert!(
        wq.len() == nb * GROUP * 16
            && wd.len() == nb * GROUP
            && wm.len() == nb * GROUP
            && xq.len() == nb * 32
            && xs.len() == nb
    );
    // SAFETY: as in `group_q4`; the minimums are loaded like the scales, 8 floats at `b * 8`
    // inside `wm` (asserted above).
    unsafe {
        use std::arch::x86_64::*;
        // The scaled products and the minimums' terms, in separate chains.
        let mut acc = [_mm256_setzero_ps(); 2];
        for b in 0..nb {
            // Σ (q·d + m)·x = d·dx·Σ q·xq + m·(dx·Σ xq).
            let s = nibble_sums(wq.as_ptr().add(b * GROUP * 16), xq.as_ptr().add(b * 32));
            let scale = _mm256_mul_ps(_mm256_loadu_ps(wd.as_ptr().add(b * GROUP)), _mm256_set1_ps(xd[b]));
            acc[0] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s), acc[0]);
            acc[1] = _mm256_fmadd_ps(_mm256_loadu_ps(wm.as_ptr().add(b * GROUP)), _mm256_set1_ps(xs[b]), acc[1]);
        }
        let mut out = [0f32; GROUP];
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(acc[0], acc[1]));
        out
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx512vnni",
    target_feature = "avx512vl",
    target_feature = "fma"
)))]
fn group_q8(wq: &[u8], wd: &[f32], xq: &[i8], xd: &[f32], xs: &[i32]) -> [f32; GROUP] {
    portable::group_q8_scalar(wq, wd, xq, xd, xs)
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx512vnni",
    target_feature = "avx512vl",
    target_feature = "fma"
)))]
fn group_q4(wq: &[u8], wd: &[f32], xq: &[i8], xd: &[f32], xs: &[i32]) -> [f32; GROUP] {
    portable::group_q4_scalar(wq, wd, xq, xd, xs)
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx512vnni",
    target_feature = "avx512vl",
    target_feature = "fma"
)))]
fn group_q4_1(wq: &[u8], wd: &[f32], wm: &[f32], xq: &[i8], xd: &[f32], xs: &[f32]) -> [f32; GROUP] {
    portable::group_q4_1_scalar(wq, wd, wm, xq, xd, xs)
}

/// The portable kernels: what machines without AVX-512 VNNI run, and the tests' cross-check.
#[cfg(any(
    test,
    not(all(
        target_arch = "x86_64",
        target_feature = "avx512vnni",
        target_feature = "avx512vl",
        target_feature = "fma"
    ))
))]
mod portable {
    use super::{BLOCK, GROUP};

    /// Packed byte `j` of row `i` in one block of a group.
    #[inline(always)]
    fn interleaved(block: &[u8], i: usize, j: usize) -> u8 {
        block[(j / 4 * GROUP + i) * 4 + j % 4]
    }

    /// Portable Q8_0 · Q8_0 on one group (the kernel of machines without AVX-512 VNNI).
    pub(super) fn group_q8_scalar(wq: &[u8], wd: &[f32], xq: &[i8], xd: &[f32], _xs: &[i32]) -> [f32; GROUP] {
        let mut out = [0f32; GROUP];
        for (b, (block, xb)) in wq.chunks_exact(GROUP * 32).zip(xq.chunks_exact(BLOCK)).enumerate() {
            for (i, o) in out.iter_mut().enumerate() {
                let s: i32 = (0..BLOCK).map(|j| (interleaved(block, i, j) as i32 - 128) * xb[j] as i32).sum();
                *o += wd[b * GROUP + i] * xd[b] * s as f32;
            }
        }
        out
    }

    /// Portable Q4_0 · Q8_0 on one group.
    pub(super) fn group_q4_scalar(wq: &[u8], wd: &[f32], xq: &[i8], xd: &[f32], _xs: &[i32]) -> [f32; GROUP] {
        let mut out = [0f32; GROUP];
        for (b, (block, xb)) in wq.chunks_exact(GROUP * 16).zip(xq.chunks_exact(BLOCK)).enumerate() {
            for (i, o) in out.iter_mut().enumerate() {
                let s: i32 = (0..16)
                    .map(|j| {
                        let byte = interleaved(block, i, j);
                        ((byte & 0x0f) as i32 - 8) * xb[j] as i32 + ((byte >> 4) as i32 - 8) * xb[j + 16] as i32
                    })
                    .sum();
                *o += wd[b * GROUP + i] * xd[b] * s as f32;
            }
        }
        out
    }

    /// Portable Q4_1 · Q8_1 on one group (`xs`: the activations' scaled block sums).
    pub(super) fn group_q4_1_scalar(
        wq: &[u8],
        wd: &[f32],
        wm: &[f32],
        xq: &[i8],
        xd: &[f32],
        xs: &[f32],
    ) -> [f32; GROUP] {
        let mut out = [0f32; GROUP];
        for (b, (block, xb)) in wq.chunks_exact(GROUP * 16).zip(xq.chunks_exact(BLOCK)).enumerate() {
            for (i, o) in out.iter_mut().enumerate() {
                let s: i32 = (0..16)
                    .map(|j| {
                        let byte = interleaved(block, i, j);
                        (byte & 0x0f) as i32 * xb[j] as i32 + (byte >> 4) as i32 * xb[j + 16] as i32
                    })
                    .sum();
                *o += wd[b * GROUP + i] * xd[b] * s as f32 + wm[b * GROUP + i] * xs[b];
            }
        }
        out
    }
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
                QKind::Q4_1 => {
                    let min = block.iter().copied().fold(f32::INFINITY, f32::min);
                    let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let d = (max - min) / 15.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
                    out.extend_from_slice(&half::f16::from_f32(min).to_le_bytes());
                    let q = |v: f32| (((v - min) * id + 0.5) as i32).min(15) as u8;
                    for j in 0..16 {
                        out.push(q(block[j]) | (q(block[j + 16]) << 4));
                    }
                }
            }
        }
        out
    }

    /// The exact integer block products of one row-major row (the reference).
    fn row_dot(kind: QKind, (wq, wd, wm): (&[u8], &[f32], &[f32]), xq: &[i8], xd: &[f32], xs: &[f32]) -> f32 {
        let mut total = 0f32;
        for b in 0..wd.len() {
            let x = &xq[b * BLOCK..(b + 1) * BLOCK];
            let s: i32 = match kind {
                QKind::Q8_0 => (0..32).map(|j| (wq[b * 32 + j] as i32 - 128) * x[j] as i32).sum(),
                QKind::Q4_0 => (0..16)
                    .map(|j| {
                        let byte = wq[b * 16 + j];
                        ((byte & 0x0f) as i32 - 8) * x[j] as i32 + ((byte >> 4) as i32 - 8) * x[j + 16] as i32
                    })
                    .sum(),
                QKind::Q4_1 => (0..16)
                    .map(|j| {
                        let byte = wq[b * 16 + j];
                        (byte & 0x0f) as i32 * x[j] as i32 + (byte >> 4) as i32 * x[j + 16] as i32
                    })
                    .sum(),
            };
            total += wd[b] * xd[b] * s as f32;
            if kind == QKind::Q4_1 {
                total += wm[b] * xs[b];
            }
        }
        total
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
            let (wq, wd, wm) = m.row_blocks(r);
            for t in 0..n {
                // Against the exact integer arithmetic on the row-major row...
                let exact = row_dot(
                    kind,
                    (&wq, &wd, &wm),
                    &acts.qs[t * cols..(t + 1) * cols],
                    &acts.d[t * nb..(t + 1) * nb],
                    &acts.scaled_sums[t * nb..(t + 1) * nb],
                );
                let got = out[t * rows + r];
                assert!((got - exact).abs() <= 1e-4 * exact.abs().max(1.0), "{kind:?} r{r} t{t}: {got} vs {exact}");
                // ...and close to the f32 product of the dequantized row with the real input.
                let f: f32 = row.iter().zip(&x[t * cols..(t + 1) * cols]).map(|(a, b)| a * b).sum();
                assert!((got - f).abs() <= 0.02 * (cols as f32).sqrt(), "{kind:?} r{r} t{t}: {got} vs f32 {f}");
            }
        }
        // The portable group kernels (what machines without AVX-512 VNNI run) agree too.
        for g in 0..rows.div_ceil(GROUP) {
            let p = kind.packed();
            let args = (
                &m.qs[g * nb * GROUP * p..(g + 1) * nb * GROUP * p],
                &m.d[g * nb * GROUP..(g + 1) * nb * GROUP],
                &acts.qs[..cols],
                &acts.d[..nb],
                &acts.sums[..nb],
            );
            let portable = match kind {
                QKind::Q8_0 => portable::group_q8_scalar(args.0, args.1, args.2, args.3, args.4),
                QKind::Q4_0 => portable::group_q4_scalar(args.0, args.1, args.2, args.3, args.4),
                QKind::Q4_1 => portable::group_q4_1_scalar(
                    args.0,
                    args.1,
                    &m.m[g * nb * GROUP..(g + 1) * nb * GROUP],
                    args.2,
                    args.3,
                    &acts.scaled_sums[..nb],
                ),
            };
            for (i, v) in portable.iter().enumerate().filter(|(i, _)| g * GROUP + i < rows) {
                let got = out[g * GROUP + i];
                assert!((got - v).abs() <= 1e-4 * v.abs().max(1.0), "{kind:?} portable g{g} i{i}: {v} vs {got}");
            }
        }
    }

    #[test]
    fn q8_0_products_match_the_reference() {
        check(QKind::Q8_0, 64, 96, 1);
        check(QKind::Q8_0, 70, 96, 1);
        check(QKind::Q8_0, 45, 576, 3);
    }

    #[test]
    fn q4_0_products_match_the_reference() {
        check(QKind::Q4_0, 64, 96, 1);
        check(QKind::Q4_0, 70, 96, 1);
        check(QKind::Q4_0, 45, 576, 3);
    }

    #[test]
    fn q4_1_products_match_the_reference() {
        check(QKind::Q4_1, 64, 96, 1);
        check(QKind::Q4_1, 70, 96, 1);
        check(QKind::Q4_1, 45, 576, 3);
    }

    #[test]
    fn dequantized_rows_and_stacking() {
        // Parts of 3 and 6 rows: the stacked rows straddle the groups of eight.
        let w = values(9 * 64, 3);
        for kind in [QKind::Q8_0, QKind::Q4_0, QKind::Q4_1] {
            let a = QMatrix::from_ggml(kind, 3, 64, &ggml_blocks(kind, &w[..3 * 64])).unwrap();
            let b = QMatrix::from_ggml(kind, 6, 64, &ggml_blocks(kind, &w[3 * 64..])).unwrap();
            let s = QMatrix::stack(&[&a, &b]).unwrap();
            assert_eq!((s.rows(), s.cols()), (9, 64));
            let tol = if kind == QKind::Q8_0 { 0.01 } else { 0.15 };
            let mut row = vec![0f32; 64];
            for r in 0..9 {
                s.dequantize_row(r, &mut row);
                for (got, want) in row.iter().zip(&w[r * 64..(r + 1) * 64]) {
                    assert!((got - want).abs() < tol, "{kind:?} row {r}: {got} vs {want}");
                }
            }
        }
        assert!(QMatrix::from_ggml(QKind::Q8_0, 2, 63, &[]).is_err());
        assert!(QMatrix::from_ggml(QKind::Q4_0, 2, 64, &[0; 10]).is_err());
    }
}
