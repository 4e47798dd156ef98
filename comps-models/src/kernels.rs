//! CPU kernels for the encoder: a bounds-checked matrix multiply over the `gemm` crate (the
//! one place in the workspace that needs `unsafe`), and fused, auto-vectorizable row
//! operations (bias + GELU, bias + residual + LayerNorm, masked softmax) with fast `exp` and
//! `erf` approximations accurate to ~1e-7.

#![allow(unsafe_code)]

use gemm::Parallelism;

/// A strided view of a row-major-ish matrix inside a slice: element `(r, c)` is at
/// `offset + r * rs + c * cs`.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// First element.
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl View {
    /// A dense row-major `rows × cols` matrix at `offset` with row stride `ld`.
    pub fn rows(offset: usize, rows: usize, cols: usize, ld: usize) -> Self {
        Self { offset, rows, cols, rs: ld, cs: 1 }
    }

    /// The transpose of this view (no data moves).
    pub fn t(self) -> Self {
        Self { offset: self.offset, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn check(&self, len: usize, what: &str) {
        if self.rows == 0 || self.cols == 0 {
            return;
        }
        let last = self.offset + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
        assert!(last < len, "{what} view reaches index {last} of a slice of {len}");
    }
}

/// `c = a · b` (overwriting `c`). Panics if a view leaves its slice or the shapes disagree,
/// so the unsafe call below only ever touches memory inside the three slices.
pub fn matmul(c: &mut [f32], cv: View, a: &[f32], av: View, b: &[f32], bv: View, threads: usize) {
    assert_eq!(av.rows, cv.rows, "matmul: a rows vs c rows");
    assert_eq!(bv.cols, cv.cols, "matmul: b cols vs c cols");
    assert_eq!(av.cols, bv.rows, "matmul: inner dimensions");
    cv.check(c.len(), "c");
    av.check(a.len(), "a");
    bv.check(b.len(), "b");
    if cv.rows == 0 || cv.cols == 0 {
        return;
    }
    if av.cols == 0 {
        for r in 0..cv.rows {
            for col in 0..cv.cols {
                c[cv.offset + r * cv.rs + col * cv.cs] = 0.0;
            }
        }
        return;
    }
    let par = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: the three views were checked above to stay inside their slices (every index
    // `offset + r*rs + c*cs` for r < rows, c < cols is < len), the shapes agree, `c` is borrowed
    // mutably and so does not alias `a` or `b`, and `read_dst = false` means `c` is only written.
    unsafe {
        gemm::gemm(
            cv.rows,
            cv.cols,
            av.cols,
            c.as_mut_ptr().add(cv.offset),
            cv.cs as isize,
            cv.rs as isize,
            false,
            a.as_ptr().add(av.offset),
            av.cs as isize,
            av.rs as isize,
            b.as_ptr().add(bv.offset),
            bv.cs as isize,
            bv.rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `e^x` for f32 to ~1e-7 relative error, branch-free so loops over it vectorize.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // e^x = 2^(x·log2 e) = 2^n · 2^f with f in [-0.5, 0.5].
    let t = x * std::f32::consts::LOG2_E;
    let n = t.round_ties_even();
    let f = t - n;
    // 2^f on [-0.5, 0.5]: degree-6 polynomial (Taylor of e^(f ln2), error < 2e-8).
    let l = std::f32::consts::LN_2;
    let y = f * l;
    let p = 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (1.0 / 720.0))))));
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// `erf(x)` as an odd/even rational function of `x` on [-4, 4] (beyond, erf is ±1 in f32):
/// no `exp`, no branches, so a loop over it vectorizes fully. Max abs error ~2e-7.
#[inline(always)]
pub fn fast_erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    x * p / q
}

/// Exact-form GELU, `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + fast_erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU, tanh form.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    let u = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    // tanh(u) = 1 - 2/(e^{2u}+1)
    let th = 1.0 - 2.0 / (fast_exp(2.0 * u) + 1.0);
    0.5 * x * (1.0 + th)
}

/// Activation after a projection; an enum (not a fn pointer) so each loop inlines and
/// vectorizes its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None.
    Identity,
    /// Exact GELU.
    Gelu,
    /// tanh GELU.
    GeluTanh,
    /// ReLU.
    Relu,
}

/// Add `bias` to each row of `rows` (row length = bias length) and apply `act`.
pub fn bias_act(rows: &mut [f32], bias: &[f32], act: Activation) {
    match act {
        Activation::Identity => bias_map(rows, bias, identity),
        Activation::Gelu => bias_map(rows, bias, gelu),
        Activation::GeluTanh => bias_map(rows, bias, gelu_tanh),
        Activation::Relu => bias_map(rows, bias, relu),
    }
}

#[inline(always)]
fn bias_map<F: Fn(f32) -> f32>(rows: &mut [f32], bias: &[f32], act: F) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x = act(*x + b);
        }
    }
}

/// Identity activation.
#[inline(always)]
pub fn identity(x: f32) -> f32 {
    x
}

/// ReLU.
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    x.max(0.0)
}

/// `out = LayerNorm(x + bias + residual)` row by row, written over `x`.
pub fn bias_residual_norm(x: &mut [f32], bias: &[f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let h = bias.len();
    for (row, res) in x.chunks_exact_mut(h).zip(residual.chunks_exact(h)) {
        for ((v, b), r) in row.iter_mut().zip(bias).zip(res) {
            *v += b + r;
        }
        let total = sum(row);
        norm_row(row, total, gamma, beta, eps);
    }
}

/// LayerNorm of each row in place.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(gamma.len()) {
        let total = sum(row);
        norm_row(row, total, gamma, beta, eps);
    }
}

#[inline(always)]
fn norm_row(row: &mut [f32], total: f32, gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = total / n;
    let mut sq = [0f32; 16];
    let chunks = row.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
    for c in chunks {
        for (a, v) in sq.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    let var = (sq.iter().sum::<f32>() + tail) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

/// Sum with 16 independent accumulators, so the loop vectorizes (a single running sum is a
/// serial dependency the compiler may not reorder).
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

pub use comps_core::vector::dot;

/// Maximum with 16 lanes (see [`sum`]).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.max(*v);
        }
    }
    acc.iter().copied().fold(tail, f32::max)
}

/// Row-wise `softmax(scale · x)` over the first `len` columns of each row (the rest, padding,
/// set to 0).
pub fn softmax_rows(scores: &mut [f32], cols: usize, len: usize, scale: f32) {
    for row in scores.chunks_exact_mut(cols) {
        let (real, pad) = row.split_at_mut(len);
        let m = max(real) * scale;
        for v in real.iter_mut() {
            *v = fast_exp(*v * scale - m);
        }
        let inv = 1.0 / sum(real);
        real.iter_mut().for_each(|v| *v *= inv);
        pad.iter_mut().for_each(|v| *v = 0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approximations_are_accurate() {
        let mut worst_exp = 0.0f32;
        let mut worst_erf = 0.0f32;
        for i in -20000..=20000 {
            let x = i as f32 / 1000.0;
            let e = ((fast_exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs() as f32;
            worst_exp = worst_exp.max(e);
            let approx = fast_erf(x) as f64;
            let exact = libm_erf(x as f64);
            worst_erf = worst_erf.max((approx - exact).abs() as f32);
        }
        assert!(worst_exp < 2e-6, "exp relative error {worst_exp}");
        assert!(worst_erf < 5e-7, "erf abs error {worst_erf}");
    }

    /// erf by its series / continued fraction in f64, as an independent reference.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 3.0 {
            // Maclaurin series.
            let mut sum = 0.0;
            let mut term = x;
            let mut n = 0.0;
            while term.abs() > 1e-17 || n < 5.0 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -x * x / n;
                if n > 200.0 {
                    break;
                }
            }
            2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            // erfc asymptotic continued fraction (Lentz not needed at |x| >= 3).
            let z = x.abs();
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (z + f);
            }
            let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f);
            x.signum() * (1.0 - erfc)
        }
    }

    #[test]
    fn matmul_matches_naive_with_strides() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect(); // (n × k): used transposed
        let mut c = vec![0.0; m * n];
        matmul(&mut c, View::rows(0, m, n, n), &a, View::rows(0, m, k, k), &b, View::rows(0, n, k, k).t(), 1);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum();
                assert!((c[i * n + j] - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    #[should_panic(expected = "view reaches")]
    fn matmul_refuses_out_of_bounds_views() {
        let a = vec![0.0; 4];
        let b = vec![0.0; 4];
        let mut c = vec![0.0; 4];
        matmul(&mut c, View::rows(0, 2, 2, 2), &a, View::rows(0, 2, 3, 3), &b, View::rows(0, 3, 2, 2), 1);
    }
}
