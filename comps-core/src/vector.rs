//! Small f32 vector helpers that need no model dependencies (the retriever uses them without
//! the `models` feature).

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
