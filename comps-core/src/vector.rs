//! Small f32 vector helpers: the only vector math of the workspace (comps-models' kernels, the
//! retriever's store and the services all use these).

/// Dot product with 16 independent partial sums, so the compiler can use wide SIMD (a plain
/// iterator sum adds strictly in order, one lane at a time).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Scale `v` to unit L2 norm (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Cosine similarity (0 when either vector is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (na, nb) = (dot(a, a).sqrt(), dot(b, b).sqrt());
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot(a, b) / (na * nb) }
}

/// `e^x` for `x <= 0` (softmax terms after the maximum is taken out), to within a few ulp,
/// written so that loops over it vectorise (`f32::exp` is a library call per value). Below
/// −87 (and for NaN) it is e^−87, a normal f32 that adds nothing next to the maximum's 1.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n · LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.max(-87.0);
    let n = (x * LOG2E).round_ties_even();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // e^r on [−ln2/2, ln2/2]: Taylor terms to r^7 (error below 2e-9 there).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The logistic function `1 / (1 + e^−x)` through [`exp_nonpositive`] of `−|x|`, so that it
/// never overflows and loops over it vectorise (the LLM's SiLU gates). Below e^−87 it stays at
/// e^−87, so it does not order inputs under −87 (rerank keeps `f32::exp` for its scores).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 { r } else { e * r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_and_cosine() {
        let mut v = vec![3.0f32; 37];
        v[36] = 4.0;
        normalize(&mut v);
        assert!((dot(&v, &v) - 1.0).abs() < 1e-6);
        let mut zero = vec![0f32; 5];
        normalize(&mut zero);
        assert_eq!(zero, vec![0f32; 5], "a zero vector stays zero");
        let (a, b) = ([1.0f32, 0.0, 0.0], [2.0f32, 2.0, 0.0]);
        assert!((cosine(&a, &b) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((cosine(&b, &b) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&a, &[0.0; 3]), 0.0);
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp_nonpositive(x), (x as f64).exp() as f32);
            worst = worst.max((got - want).abs() / want);
            x += 0.001;
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-1000.0), (-87.0f64).exp() as f32);
        assert!(exp_nonpositive(f32::NEG_INFINITY) >= 0.0);
    }

    #[test]
    fn sigmoid_matches_the_formula_on_both_sides() {
        let mut x = -100.0f32;
        while x <= 100.0 {
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            let got = sigmoid(x) as f64;
            assert!((got - want).abs() <= 1e-6 * want.max(1e-30) + 1e-37, "sigmoid({x}) = {got}, not {want}");
            x += 0.01;
        }
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
        assert!(sigmoid(f32::NEG_INFINITY) >= 0.0 && sigmoid(f32::NEG_INFINITY) < 1e-37);
    }
}
