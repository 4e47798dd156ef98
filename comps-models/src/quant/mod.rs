//! Block-quantized matrix products for LLM inference: ggml's Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and
//! the K-quants Q4_K, Q5_K and Q6_K as weights, against activations quantized to Q8_0 blocks of
//! 32 (with their block sums, for the formats whose values carry an offset or a minimum).
//!
//! Weights are repacked once at load ([`ggml`] decodes every format into one canonical form):
//! rows in groups of sixteen, each 32-value block's low four bits interleaved four bytes at a
//! time across the group (Q8_0: the whole byte, offset to unsigned), the fifth and sixth bits
//! as bit planes laid out as AVX-512 byte masks, and the scales (and minimums) as the file
//! stores them: f16, or for the K-quants their byte sub-block scales under the super-block's
//! f16 scales, multiplied in f32 as ggml does, so the weights are exactly ggml's, in about as
//! many bytes as ggml's (K-quants: an eighth of a bit more per weight). Q6_K keeps
//! its two scales per 32 values. One 512-bit AVX-512 VNNI `dpbusd` then multiplies four values
//! of sixteen rows against a broadcast of four activation values, the unpacking of a block is
//! shared by up to eight activation rows ([`ROWS`]), and each task keeps its weight groups in
//! L1 across every activation row.
//!
//! Numerics follow llama.cpp (integer block products, f32 scales) but for the K-quants, whose
//! activations llama.cpp quantizes in blocks of 256 (Q8_K): ours keep blocks of 32, which is
//! at least as accurate. Besides [`super::kernels`], this is the one module that needs
//! `unsafe` (the SIMD intrinsics and the disjoint output writes); every slice is bounds-checked
//! before them.

#![allow(unsafe_code)]

mod ggml;
mod portable;
/// Items for targets with the AVX-512 VNNI kernels (`simd { .. }`) and for the others (`portable { .. }`):
/// the one place that names the CPU features they need.
macro_rules! by_target {
    (simd { $($s:item)* } portable { $($p:item)* }) => {
        $(#[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx512vnni",
            target_feature = "avx512vl",
            target_feature = "avx512bw",
            target_feature = "fma",
            target_feature = "f16c"
        ))] $s)*
        $(#[cfg(not(all(
            target_arch = "x86_64",
            target_feature = "avx512vnni",
            target_feature = "avx512vl",
            target_feature = "avx512bw",
            target_feature = "fma",
            target_feature = "f16c"
        )))] $p)*
    };
}

by_target! {
    simd {
        mod simd;
        /// Whether the AVX-512 VNNI kernels were compiled in (else the portable ones run).
        pub const SIMD: bool = true;
    }
    portable {
        /// Whether the AVX-512 VNNI kernels were compiled in (else the portable ones run).
        pub const SIMD: bool = false;
    }
}

use rayon::prelude::*;

/// Values per block.
pub const BLOCK: usize = 32;

/// Rows interleaved together: one 512-bit vector of 32-bit lanes.
pub const GROUP: usize = 16;

/// Activation rows whose products share one unpacking of each weight block.
pub const ROWS: usize = 8;

/// A weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QKind {
    /// 32 × i8 and an f16 scale (34 bytes in GGUF).
    Q8_0,
    /// 32 × 4-bit (value − 8) and an f16 scale (18 bytes).
    Q4_0,
    /// 32 × 4-bit, an f16 scale and an f16 minimum: value = q · d + m (20 bytes).
    Q4_1,
    /// 32 × 5-bit (value − 16) and an f16 scale (22 bytes).
    Q5_0,
    /// 32 × 5-bit, an f16 scale and an f16 minimum (24 bytes).
    Q5_1,
    /// 256 × 4-bit in eight sub-blocks with 6-bit scales and minimums (144 bytes).
    Q4K,
    /// 256 × 5-bit in eight sub-blocks with 6-bit scales and minimums (176 bytes).
    Q5K,
    /// 256 × 6-bit (value − 32) with an 8-bit scale per 16 values (210 bytes).
    Q6K,
}

impl QKind {
    /// Every format, for tests and loaders.
    pub const ALL: [QKind; 8] =
        [Self::Q8_0, Self::Q4_0, Self::Q4_1, Self::Q5_0, Self::Q5_1, Self::Q4K, Self::Q5K, Self::Q6K];

    /// Values and bytes of one block in a GGUF file.
    pub fn ggml_block(self) -> (usize, usize) {
        match self {
            Self::Q8_0 => (32, 34),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
        }
    }

    /// Bytes of one block in a GGUF file (of [`QKind::ggml_block`]'s values).
    pub fn ggml_block_bytes(self) -> usize {
        self.ggml_block().1
    }

    /// Whether values are whole bytes (Q8_0) rather than nibbles with bit planes.
    fn bytes(self) -> bool {
        self == Self::Q8_0
    }

    /// Bytes of one 32-value block's packed values.
    fn packed(self) -> usize {
        if self.bytes() { 32 } else { 16 }
    }

    /// Bit planes above the low nibble (the fifth bit, then the sixth).
    fn planes(self) -> usize {
        match self {
            Self::Q5_0 | Self::Q5_1 | Self::Q5K => 1,
            Self::Q6K => 2,
            _ => 0,
        }
    }

    /// What the stored unsigned values carry above the signed ones.
    fn offset(self) -> i32 {
        match self {
            Self::Q8_0 => 128,
            Self::Q4_0 => 8,
            Self::Q5_0 => 16,
            Self::Q6K => 32,
            _ => 0,
        }
    }

    /// Scales per 32-value block.
    fn halves(self) -> usize {
        if self == Self::Q6K { 2 } else { 1 }
    }

    /// Whether blocks carry an additive minimum.
    fn has_min(self) -> bool {
        matches!(self, Self::Q4_1 | Self::Q5_1 | Self::Q4K | Self::Q5K)
    }

    /// Bytes per stored scale or minimum: f16, or the K-quants' sub-block byte.
    fn code_bytes(self) -> usize {
        if self.is_k() { 1 } else { 2 }
    }

    /// Whether this is a K-quant (256-value super-blocks of eight 32-value blocks).
    fn is_k(self) -> bool {
        matches!(self, Self::Q4K | Self::Q5K | Self::Q6K)
    }

    /// Whether the minimum multiplies the activations' block sum rounded through f16, as
    /// llama.cpp's Q8_1 stores it (Q4_1 and Q5_1), rather than exactly (the K-quants).
    fn min_uses_f16_sum(self) -> bool {
        matches!(self, Self::Q4_1 | Self::Q5_1)
    }
}

/// A row-major matrix of quantized rows (`cols` a multiple of 32, and of 256 for the
/// K-quants as read from GGUF).
#[derive(Debug, Clone)]
pub struct QMatrix {
    kind: QKind,
    rows: usize,
    cols: usize,
    /// `[group][block][piece][row in group][4 bytes]`: piece `k` holds packed bytes `4k..4k+4`
    /// of the block. Q8_0: value + 128. Otherwise byte `j` = low nibble of value `j` | low
    /// nibble of value `j + 16` << 4. Rows past `rows` are zeros (with zero scales).
    qs: Vec<u8>,
    /// `[group][block][plane][piece][half]`: bit `4i + m` is bit `4 + plane` of value
    /// `16·half + 4·piece + m` of row `i` (a byte mask over one piece's 64 bytes).
    hb: Vec<u64>,
    /// `[group][block][half][row in group]`, each [`QKind::code_bytes`] bytes: f16, or the
    /// K-quants' sub-block scale byte.
    d: Vec<u8>,
    /// The minimums, `[group][block][row in group]` like `d` (empty for formats without).
    m: Vec<u8>,
    /// K-quants: `[group][super-block][scale, minimum scale][row in group]`, f16 bits.
    sup: Vec<u16>,
}

/// One group's packed weights, as the kernels read them.
#[derive(Clone, Copy)]
pub(crate) struct Group<'a> {
    qs: &'a [u8],
    hb: &'a [u64],
    d: &'a [u8],
    m: &'a [u8],
    sup: &'a [u16],
}

/// One activation row, as the kernels read it for one weight format.
#[derive(Clone, Copy)]
pub(crate) struct Act<'a> {
    q: &'a [i8],
    d: &'a [f32],
    /// Per block (per half block for Q6_K): −offset · Σ q, what the stored weights' offset
    /// adds to the integer product (empty for the formats without an offset).
    noff: &'a [i32],
    /// Per block: what the minimum multiplies (d · Σ q, exact or through f16).
    smin: &'a [f32],
}

impl QMatrix {
    /// Read `rows × cols` values stored as ggml blocks.
    pub fn from_ggml(kind: QKind, rows: usize, cols: usize, data: &[u8]) -> Result<Self, String> {
        let (per, bytes) = kind.ggml_block();
        if !cols.is_multiple_of(per) {
            return Err(format!("{cols} columns is not a multiple of {kind:?}'s {per}-value blocks"));
        }
        let want = rows * cols / per * bytes;
        if data.len() != want {
            return Err(format!("{} bytes for a {rows}×{cols} {kind:?} matrix, expected {want}", data.len()));
        }
        Ok(Self::interleave(kind, rows, cols, &ggml::decode(kind, data)))
    }

    /// Lay out canonical rows in groups.
    fn interleave(kind: QKind, rows: usize, cols: usize, c: &ggml::Canon) -> Self {
        let (nb, p, planes, halves, dw) =
            (cols / BLOCK, kind.packed(), kind.planes(), kind.halves(), kind.code_bytes());
        let nsb = if kind.is_k() { nb / ggml::SUPER } else { 0 };
        let groups = rows.div_ceil(GROUP);
        let mut qs = vec![0u8; groups * nb * GROUP * p];
        let mut hb = vec![0u64; groups * nb * planes * 8];
        let mut d = vec![0u8; groups * nb * halves * GROUP * dw];
        let mut m = vec![0u8; if kind.has_min() { groups * nb * GROUP * dw } else { 0 }];
        let mut sup = vec![0u16; groups * nsb * 2 * GROUP];
        let put = |out: &mut [u8], e: usize, code: u16| {
            if dw == 2 {
                out[2 * e..2 * e + 2].copy_from_slice(&code.to_le_bytes());
            } else {
                out[e] = code as u8;
            }
        };
        for r in 0..rows {
            let (g, i) = (r / GROUP, r % GROUP);
            for b in 0..nb {
                let q = &c.q[r * cols + b * BLOCK..][..BLOCK];
                let gb = g * nb + b;
                for k in 0..p / 4 {
                    for j in 0..4 {
                        let v = 4 * k + j;
                        qs[(gb * p / 4 + k) * GROUP * 4 + i * 4 + j] =
                            if kind.bytes() { q[v] } else { (q[v] & 0x0f) | ((q[v + 16] & 0x0f) << 4) };
                    }
                }
                for plane in 0..planes {
                    for k in 0..4 {
                        for half in 0..2 {
                            let mut bits = 0u64;
                            for j in 0..4 {
                                bits |= (((q[16 * half + 4 * k + j] >> (4 + plane)) & 1) as u64) << j;
                            }
                            hb[((gb * planes + plane) * 4 + k) * 2 + half] |= bits << (4 * i);
                        }
                    }
                }
                for h in 0..halves {
                    put(&mut d, (gb * halves + h) * GROUP + i, c.d[(r * nb + b) * halves + h]);
                }
                if kind.has_min() {
                    put(&mut m, gb * GROUP + i, c.m[r * nb + b]);
                }
            }
            for s in 0..nsb {
                let at = (g * nsb + s) * 2 * GROUP + i;
                sup[at] = c.sd[r * nsb + s];
                if kind.has_min() {
                    sup[at + GROUP] = c.sm[r * nsb + s];
                }
            }
        }
        Self { kind, rows, cols, qs, hb, d, m, sup }
    }

    /// Row `r` in canonical form (values, scales, minimums).
    fn canon_row(&self, r: usize) -> ggml::Canon {
        let (nb, halves) = (self.cols / BLOCK, self.kind.halves());
        let (g, i) = (r / GROUP, r % GROUP);
        let w = self.group(g);
        let mut c = ggml::Canon::new(self.kind);
        for b in 0..nb {
            c.q.extend((0..BLOCK).map(|v| w.value(self.kind, b, i, v) as u8));
            for h in 0..halves {
                c.d.push(w.code(self.kind, w.d, (b * halves + h) * GROUP + i));
            }
            if self.kind.has_min() {
                c.m.push(w.code(self.kind, w.m, b * GROUP + i));
            }
            if self.kind.is_k() && b % ggml::SUPER == 0 {
                let (sd, sm) = w.supers(b, i);
                c.sd.push(sd);
                if self.kind.has_min() {
                    c.sm.push(sm);
                }
            }
        }
        c
    }

    /// Several matrices with the same format and width stacked row-wise (one product instead
    /// of several: Q, K and V; gate and up).
    pub fn stack(parts: &[&QMatrix]) -> Result<Self, String> {
        let first = parts.first().ok_or("nothing to stack")?;
        if parts.iter().any(|p| p.kind != first.kind || p.cols != first.cols) {
            return Err("stacked matrices must share their format and width".into());
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut all = ggml::Canon::new(first.kind);
        for part in parts {
            for r in 0..part.rows {
                all.append(part.canon_row(r));
            }
        }
        Ok(Self::interleave(first.kind, rows, first.cols, &all))
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

    /// Bytes held (weights, bit planes, scales).
    pub fn bytes(&self) -> usize {
        self.qs.len() + 8 * self.hb.len() + self.d.len() + self.m.len() + 2 * self.sup.len()
    }

    /// Row `r` as f32 (an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows && out.len() == self.cols, "dequantize_row out of range");
        let c = self.canon_row(r);
        let (off, halves) = (self.kind.offset(), self.kind.halves());
        for (b, o) in out.chunks_exact_mut(BLOCK).enumerate() {
            let min = if self.kind.has_min() { c.min(b) } else { 0.0 };
            for (v, x) in o.iter_mut().enumerate() {
                let d = c.scale(b * halves + v * halves / BLOCK);
                *x = d * (c.q[b * BLOCK + v] as i32 - off) as f32 + min;
            }
        }
    }

    fn group(&self, g: usize) -> Group<'_> {
        let nb = self.cols / BLOCK;
        let (p, planes, halves, dw) =
            (self.kind.packed(), self.kind.planes(), self.kind.halves(), self.kind.code_bytes());
        let nsup = if self.kind.is_k() { nb / ggml::SUPER * 2 * GROUP } else { 0 };
        let dn = nb * halves * GROUP * dw;
        let mn = nb * GROUP * dw;
        Group {
            qs: &self.qs[g * nb * GROUP * p..(g + 1) * nb * GROUP * p],
            hb: &self.hb[g * nb * planes * 8..(g + 1) * nb * planes * 8],
            d: &self.d[g * dn..(g + 1) * dn],
            m: if self.kind.has_min() { &self.m[g * mn..(g + 1) * mn] } else { &[] },
            sup: &self.sup[g * nsup..(g + 1) * nsup],
        }
    }
}

impl Group<'_> {
    /// Value `v` of row `i` in block `b`, as stored (unsigned, offset included).
    #[inline(always)]
    fn value(&self, kind: QKind, b: usize, i: usize, v: usize) -> i32 {
        let p = kind.packed();
        let byte = |j: usize| self.qs[(b * p / 4 + j / 4) * GROUP * 4 + i * 4 + j % 4];
        if kind.bytes() {
            return byte(v) as i32;
        }
        let mut q = if v < 16 { byte(v) & 0x0f } else { byte(v - 16) >> 4 } as i32;
        let planes = kind.planes();
        for plane in 0..planes {
            let mask = self.hb[((b * planes + plane) * 4 + v % 16 / 4) * 2 + v / 16];
            q |= (((mask >> (4 * i + v % 4)) & 1) as i32) << (4 + plane);
        }
        q
    }

    /// Entry `e` of `codes` (this group's scales or minimums).
    #[inline(always)]
    fn code(&self, kind: QKind, codes: &[u8], e: usize) -> u16 {
        if kind.code_bytes() == 2 { u16::from_le_bytes([codes[2 * e], codes[2 * e + 1]]) } else { codes[e] as u16 }
    }

    /// Row `i`'s super-block scale and minimum scale (f16 bits) for block `b` (K-quants).
    #[inline(always)]
    fn supers(&self, b: usize, i: usize) -> (u16, u16) {
        let at = b / ggml::SUPER * 2 * GROUP + i;
        (self.sup[at], self.sup[at + GROUP])
    }

    /// Row `i`'s scale for half `h` of block `b`, as f32.
    #[inline(always)]
    fn scale(&self, kind: QKind, b: usize, h: usize, i: usize) -> f32 {
        let sup = if kind.is_k() { self.supers(b, i).0 } else { 0 };
        ggml::scale(kind, self.code(kind, self.d, (b * kind.halves() + h) * GROUP + i), sup)
    }

    /// Row `i`'s minimum in block `b`, as f32.
    #[inline(always)]
    fn min(&self, kind: QKind, b: usize, i: usize) -> f32 {
        let sup = if kind.is_k() { self.supers(b, i).1 } else { 0 };
        ggml::min(kind, self.code(kind, self.m, b * GROUP + i), sup)
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
    /// Sum of each 16 values (Q6_K's half-block offsets).
    sums16: Vec<i32>,
    /// −8, −16 and −128 × each block's sum, and −32 × each half block's: the offsets of
    /// Q4_0, Q5_0, Q8_0 and Q6_K, ready for the kernels to start their integer sums from.
    neg8: Vec<i32>,
    neg16: Vec<i32>,
    neg128: Vec<i32>,
    neg32h: Vec<i32>,
    /// Q8_1's `s`: the f32 scale × the block sum, rounded to f16 (Q4_1's and Q5_1's minimums).
    scaled_sums: Vec<f32>,
    /// The f32 scale × the block sum (the K-quants' minimums).
    dsums: Vec<f32>,
}

impl QActs {
    /// Empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantize `n` rows of `cols` values (`x.len() == n * cols`, `cols` a multiple of 32),
    /// rows in parallel (a prompt's rows; one decode row runs inline).
    pub fn quantize(&mut self, x: &[f32], n: usize, cols: usize) {
        self.quantize_with(x, n, cols, SIMD);
    }

    /// [`Self::quantize`] with the SIMD block quantizer or the portable one (`simd` is ignored
    /// where it was not compiled in): the tests compare the two.
    pub fn quantize_with(&mut self, x: &[f32], n: usize, cols: usize, simd: bool) {
        assert!(cols.is_multiple_of(BLOCK) && x.len() == n * cols, "quantize: {} values for {n}×{cols}", x.len());
        let nb = n * cols / BLOCK;
        self.n = n;
        self.cols = cols;
        self.qs.resize(n * cols, 0);
        self.d.resize(nb, 0.0);
        self.sums.resize(nb, 0);
        self.sums16.resize(2 * nb, 0);
        self.neg8.resize(nb, 0);
        self.neg16.resize(nb, 0);
        self.neg128.resize(nb, 0);
        self.neg32h.resize(2 * nb, 0);
        self.scaled_sums.resize(nb, 0.0);
        self.dsums.resize(nb, 0.0);
        if n == 0 || cols == 0 {
            return;
        }
        let per_row = cols / BLOCK;
        // Rows per task: about 16k values, so a short prompt is not split into slivers.
        let min_rows = (16_384 / cols).max(1);
        x.par_chunks(cols)
            .zip(self.qs.par_chunks_mut(cols))
            .zip(self.d.par_chunks_mut(per_row))
            .zip(self.sums.par_chunks_mut(per_row))
            .zip(self.sums16.par_chunks_mut(2 * per_row))
            .zip(self.neg8.par_chunks_mut(per_row))
            .zip(self.neg16.par_chunks_mut(per_row))
            .zip(self.neg128.par_chunks_mut(per_row))
            .zip(self.neg32h.par_chunks_mut(2 * per_row))
            .zip(self.scaled_sums.par_chunks_mut(per_row))
            .zip(self.dsums.par_chunks_mut(per_row))
            .with_min_len(min_rows)
            .for_each(|((((((((((x, q), d), sums), sums16), neg8), neg16), neg128), neg32h), scaled), dsums)| {
                for (b, (block, q)) in x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)).enumerate() {
                    let (scale, lo, hi) = quantize_block(block, q, simd);
                    // ggml stores the scale as f16 (the values were rounded with the f32 one).
                    let scale = half::f16::from_f32(scale).to_f32();
                    let sum = lo + hi;
                    d[b] = scale;
                    sums16[2 * b] = lo;
                    sums16[2 * b + 1] = hi;
                    sums[b] = sum;
                    neg8[b] = -8 * sum;
                    neg16[b] = -16 * sum;
                    neg128[b] = -128 * sum;
                    neg32h[2 * b] = -32 * lo;
                    neg32h[2 * b + 1] = -32 * hi;
                    scaled[b] = half::f16::from_f32(scale * sum as f32).to_f32();
                    dsums[b] = scale * sum as f32;
                }
            });
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.n
    }

    fn row(&self, t: usize, kind: QKind) -> Act<'_> {
        let nb = self.cols / BLOCK;
        let b = t * nb..(t + 1) * nb;
        let h = 2 * b.start..2 * b.end;
        Act {
            q: &self.qs[t * self.cols..(t + 1) * self.cols],
            d: &self.d[b.clone()],
            noff: match (kind.offset(), kind.halves()) {
                (0, _) => &[],
                (8, 1) => &self.neg8[b.clone()],
                (16, 1) => &self.neg16[b.clone()],
                (128, 1) => &self.neg128[b.clone()],
                (32, 2) => &self.neg32h[h],
                other => unreachable!("no activation sums for offset and halves {other:?}"),
            },
            smin: if kind.min_uses_f16_sum() { &self.scaled_sums[b] } else { &self.dsums[b] },
        }
    }
}

/// One block of activations to Q8_0 as llama.cpp quantizes it: the f32 scale `amax / 127`,
/// each value × its inverse rounded half to even into `q`, and the sums of the two halves.
fn quantize_block(x: &[f32], q: &mut [i8], simd: bool) -> (f32, i32, i32) {
    by_target! {
        simd {
            fn block(x: &[f32], q: &mut [i8]) -> (f32, i32, i32) {
                simd::quantize_block(x, q)
            }
        }
        portable {
            fn block(x: &[f32], q: &mut [i8]) -> (f32, i32, i32) {
                portable_quantize_block(x, q)
            }
        }
    }
    if simd { block(x, q) } else { portable_quantize_block(x, q) }
}

fn portable_quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (o, v) in q.iter_mut().zip(x) {
        *o = (v * id).round_ties_even() as i8;
    }
    let lo: i32 = q[..BLOCK / 2].iter().map(|&v| v as i32).sum();
    let hi: i32 = q[BLOCK / 2..].iter().map(|&v| v as i32).sum();
    (d, lo, hi)
}

/// Row groups handed to one task.
const GROUPS_PER_TASK: usize = 2;

/// The output, written by tasks at disjoint places.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: `qgemm` hands each task a disjoint set of weight rows, so no two tasks write the same
// element, and the pointer outlives the parallel loop that uses it.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The element at `i` (a method, so that closures capture the whole `Send` wrapper).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// `out[t * w.rows + r] = w[r] · x[t]` for every weight row `r` and activation row `t`, split
/// over the rayon pool by groups of weight rows. Each task runs its groups (a few KiB, kept in
/// L1) against every activation row, [`ROWS`] activation rows per unpacking of a block.
pub fn qgemm(w: &QMatrix, x: &QActs, out: &mut [f32]) {
    qgemm_with(w, x, out, SIMD);
}

/// [`qgemm`] on the SIMD kernels or the portable ones (`simd` is ignored where they were not
/// compiled in): the tests compare the two.
pub fn qgemm_with(w: &QMatrix, x: &QActs, out: &mut [f32], simd: bool) {
    assert_eq!(w.cols, x.cols, "qgemm: weight columns vs activation columns");
    assert_eq!(out.len(), x.n * w.rows, "qgemm: output size");
    let (n, rows) = (x.n, w.rows);
    let groups = rows.div_ceil(GROUP);
    let ptr = Out(out.as_mut_ptr());
    let acts: Vec<Act> = (0..n).map(|t| x.row(t, w.kind)).collect();
    (0..groups.div_ceil(GROUPS_PER_TASK)).into_par_iter().for_each(|task| {
        for g in task * GROUPS_PER_TASK..((task + 1) * GROUPS_PER_TASK).min(groups) {
            let wg = w.group(g);
            let valid = (rows - g * GROUP).min(GROUP);
            let mut t = 0;
            while t < n {
                let take = (n - t).min(ROWS);
                let mut res = [[0f32; GROUP]; ROWS];
                run_group(w.kind, wg, &acts[t..t + take], simd, &mut res);
                for (dt, r) in res.iter().take(take).enumerate() {
                    let at = (t + dt) * rows + g * GROUP;
                    // SAFETY: `at + valid <= n * rows == out.len()` (asserted above), and only
                    // this task writes rows `g * GROUP..g * GROUP + valid` of any output row.
                    unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), ptr.at(at), valid) };
                }
                t += take;
            }
        }
    });
}

/// Group `wg` against `acts` (1 to [`ROWS`] activation rows), into the first rows of `res`.
fn run_group(kind: QKind, wg: Group, acts: &[Act], simd: bool, res: &mut [[f32; GROUP]; ROWS]) {
    by_target! {
        simd {
            fn kernels(kind: QKind, wg: Group, acts: &[Act], res: &mut [[f32; GROUP]; ROWS]) {
                simd::run(kind, wg, acts, res);
            }
        }
        portable {
            fn kernels(kind: QKind, wg: Group, acts: &[Act], res: &mut [[f32; GROUP]; ROWS]) {
                portable_rows(kind, wg, acts, res);
            }
        }
    }
    if simd {
        kernels(kind, wg, acts, res);
    } else {
        portable_rows(kind, wg, acts, res);
    }
}

fn portable_rows(kind: QKind, wg: Group, acts: &[Act], res: &mut [[f32; GROUP]; ROWS]) {
    for (r, a) in res.iter_mut().zip(acts) {
        *r = portable::group(kind, wg, a);
    }
}

#[cfg(test)]
mod tests;
