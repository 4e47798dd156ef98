use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

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

fn dtype(kind: QKind) -> GgmlDType {
    match kind {
        QKind::Q8_0 => GgmlDType::Q8_0,
        QKind::Q4_0 => GgmlDType::Q4_0,
        QKind::Q4_1 => GgmlDType::Q4_1,
        QKind::Q5_0 => GgmlDType::Q5_0,
        QKind::Q5_1 => GgmlDType::Q5_1,
        QKind::Q4K => GgmlDType::Q4K,
        QKind::Q5K => GgmlDType::Q5K,
        QKind::Q6K => GgmlDType::Q6K,
    }
}

/// `w` (rows × cols) quantized by candle's port of ggml's quantizers: the GGUF bytes and
/// ggml's own dequantization of them.
fn ggml(kind: QKind, w: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
    let t = Tensor::from_slice(w, (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype(kind)).unwrap();
    let deq = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (q.data().unwrap().to_vec(), deq)
}

/// Weights with a spread of magnitudes per row, as real checkpoints have (so that the
/// K-quants' sub-block scales differ).
fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    values(rows * cols, seed).iter().enumerate().map(|(i, v)| v * (0.2 + ((i / 16) % 7) as f32 * 0.3)).collect()
}

#[test]
fn every_format_decodes_to_ggml_values() {
    for kind in QKind::ALL {
        let (rows, cols) = (11, 512);
        let w = weights(rows, cols, 7);
        let (bytes, want) = ggml(kind, &w, rows, cols);
        let m = QMatrix::from_ggml(kind, rows, cols, &bytes).unwrap();
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            m.dequantize_row(r, &mut row);
            for (c, (got, want)) in row.iter().zip(&want[r * cols..(r + 1) * cols]).enumerate() {
                assert!((got - want).abs() <= 1e-6 * want.abs().max(1e-3), "{kind:?} [{r}][{c}]: {got} vs ggml {want}");
            }
        }
    }
}

/// The exact block arithmetic on canonical rows (f64), and the sum of the magnitudes of its
/// terms (the scale for a rounding tolerance).
fn reference(kind: QKind, m: &QMatrix, r: usize, x: &Act) -> (f64, f64) {
    let c = m.canon_row(r);
    let (off, halves) = (kind.offset(), kind.halves());
    let (mut total, mut mag) = (0f64, 0f64);
    for b in 0..m.cols / BLOCK {
        for h in 0..halves {
            let span = BLOCK / halves;
            let (lo, hi) = (b * BLOCK + h * span, b * BLOCK + (h + 1) * span);
            let s: i64 = (lo..hi).map(|v| (c.q[v] as i64 - off as i64) * x.q[v] as i64).sum();
            let term = c.scale(b * halves + h) as f64 * x.d[b] as f64 * s as f64;
            total += term;
            mag += term.abs();
        }
        if kind.has_min() {
            let term = c.min(b) as f64 * x.smin[b] as f64;
            total += term;
            mag += term.abs();
        }
    }
    (total, mag)
}

fn check(kind: QKind, rows: usize, cols: usize, n: usize) {
    let w = weights(rows, cols, 1);
    // Activations with a bias, as residual streams have: large block sums.
    let x: Vec<f32> = values(n * cols, 2).iter().map(|v| v + 0.8).collect();
    let (bytes, deq) = ggml(kind, &w, rows, cols);
    let m = QMatrix::from_ggml(kind, rows, cols, &bytes).unwrap();
    let mut acts = QActs::new();
    acts.quantize(&x, n, cols);
    let mut out = vec![f32::NAN; n * rows];
    qgemm(&m, &acts, &mut out);
    let mut portable = vec![f32::NAN; n * rows];
    qgemm_with(&m, &acts, &mut portable, false);
    for r in 0..rows {
        let row = &deq[r * cols..(r + 1) * cols];
        for t in 0..n {
            let got = out[t * rows + r];
            // Against the exact integer arithmetic...
            let (exact, mag) = reference(kind, &m, r, &acts.row(t, kind));
            let tol = 1e-5 * mag.max(1.0);
            assert!((got as f64 - exact).abs() <= tol, "{kind:?} {rows}×{cols} n{n} r{r} t{t}: {got} vs exact {exact}");
            // ...the portable kernels (what machines without AVX-512 VNNI run)...
            let p = portable[t * rows + r];
            assert!((p as f64 - exact).abs() <= tol, "{kind:?} portable r{r} t{t}: {p} vs exact {exact}");
            // ...and close to the f32 product of ggml's dequantized row with the real input.
            let f: f32 = row.iter().zip(&x[t * cols..(t + 1) * cols]).map(|(a, b)| a * b).sum();
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!(
                (got - f).abs() <= 0.01 * norm * (cols as f32).sqrt() / 4.0,
                "{kind:?} r{r} t{t}: {got} vs f32 {f}"
            );
        }
    }
}

#[test]
fn products_match_the_reference_in_every_format() {
    for kind in QKind::ALL {
        let per = kind.ggml_block().0;
        // Whole groups, a partial last group, fewer rows than a task; one to eight activation
        // rows (each row count's kernel) and more than eight (the eight-row kernel and a
        // remainder after it).
        for (rows, cols) in [(64, 2 * per.max(64)), (70, per.max(96)), (45, 3 * per.max(192))] {
            for n in [1, 2, 3, 4, 5, 6, 7, 8, 11] {
                check(kind, rows, cols, n);
            }
        }
    }
}

#[test]
fn simd_kernels_are_compiled_where_the_cpu_has_them() {
    // This project builds with target-cpu=native (.cargo/config.toml): on an AVX-512 VNNI
    // machine the fast path must be the one that runs, else the tests and benchmarks would
    // measure only the portable kernels.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
    {
        let simd = std::hint::black_box(SIMD);
        assert!(simd, "the CPU has AVX-512 VNNI but the SIMD kernels were not compiled in");
    }
}

#[test]
fn dequantized_rows_and_stacking() {
    // Parts of 5 and 14 rows: the stacked rows straddle the groups of sixteen.
    for kind in QKind::ALL {
        let cols = 256;
        let w = weights(19, cols, 3);
        let (a, da) = ggml(kind, &w[..5 * cols], 5, cols);
        let (b, db) = ggml(kind, &w[5 * cols..], 14, cols);
        let a = QMatrix::from_ggml(kind, 5, cols, &a).unwrap();
        let b = QMatrix::from_ggml(kind, 14, cols, &b).unwrap();
        let s = QMatrix::stack(&[&a, &b]).unwrap();
        assert_eq!((s.rows(), s.cols(), s.kind()), (19, cols, kind));
        let want: Vec<f32> = da.into_iter().chain(db).collect();
        let mut row = vec![0f32; cols];
        for r in 0..19 {
            s.dequantize_row(r, &mut row);
            assert_eq!(row, want[r * cols..(r + 1) * cols], "{kind:?} row {r}");
        }
    }
    let q8 = QMatrix::from_ggml(QKind::Q8_0, 1, 32, &[0; 34]).unwrap();
    let q4 = QMatrix::from_ggml(QKind::Q4_0, 1, 32, &[0; 18]).unwrap();
    assert!(QMatrix::stack(&[&q8, &q4]).is_err());
    assert!(QMatrix::from_ggml(QKind::Q8_0, 2, 63, &[]).is_err());
    assert!(QMatrix::from_ggml(QKind::Q4_0, 2, 64, &[0; 10]).is_err());
    assert!(QMatrix::from_ggml(QKind::Q4K, 1, 128, &[0; 72]).is_err(), "K-quants need 256-value rows");
}

#[test]
fn the_simd_activation_quantizer_matches_the_portable_one() {
    // Ordinary values, a block of zeros, ties (x.5 after scaling), and odd row counts.
    for (n, cols) in [(1, 32), (3, 96), (7, 576), (33, 64)] {
        let mut x = values(n * cols, (n * cols) as u64);
        x[..BLOCK].iter_mut().for_each(|v| *v = 0.0);
        if x.len() >= 3 * BLOCK {
            // amax 127 makes the scale 1, so these land exactly on halves.
            for (i, v) in x[2 * BLOCK..3 * BLOCK].iter_mut().enumerate() {
                *v = if i == 0 { 127.0 } else { (i as f32 - 16.0) + 0.5 };
            }
        }
        let (mut a, mut b) = (QActs::new(), QActs::new());
        a.quantize_with(&x, n, cols, true);
        b.quantize_with(&x, n, cols, false);
        assert_eq!(a.qs, b.qs, "{n}×{cols}: values");
        assert_eq!((&a.d, &a.sums, &a.sums16), (&b.d, &b.sums, &b.sums16), "{n}×{cols}: scales and sums");
        assert_eq!((&a.scaled_sums, &a.dsums), (&b.scaled_sums, &b.dsums), "{n}×{cols}: scaled sums");
    }
}
