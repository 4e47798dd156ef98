//! The quantized matrix-vector kernels alone, per weight format: weights per second with one
//! matrix that stays in cache ("hot") and with ~400 MB of matrices cycled, as a decode step
//! reads a model ("stream"), and the bytes per weight each format holds.
//!
//! `RAYON_NUM_THREADS=1 qgemm_bench [ROWS_OF_ACTIVATIONS]` (default 1, a decode step). Shapes
//! are Qwen2.5-0.5B's: 896 × 4864 (`ffn_down`'s orientation) for every format, and 4864 × 896
//! (`ffn_gate`/`ffn_up`) for the 32-value formats. The weights are random bytes with a fixed
//! scale: speed does not depend on the values.

use std::time::Instant;

use comps_models::quant::{QActs, QKind, QMatrix, qgemm};

/// Bytes of a model's worth of matrices, cycled for the streaming figure.
const STREAM_BYTES: usize = 400_000_000;

/// `rows × cols` weights in `kind`'s GGUF blocks: pseudo-random bytes, every f16 scale 0.01.
fn ggml_bytes(kind: QKind, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let (per, size) = kind.ggml_block();
    let mut s = seed;
    let mut v: Vec<u8> = (0..rows * cols / per * size)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect();
    // Where each block keeps its f16 scales (and minimums).
    let scales: &[usize] = match kind {
        QKind::Q6K => &[208],
        QKind::Q4_1 | QKind::Q5_1 | QKind::Q4K | QKind::Q5K => &[0, 2],
        _ => &[0],
    };
    let d = [0x1f, 0x21]; // 0.01 as f16
    for block in v.chunks_exact_mut(size) {
        for &at in scales {
            block[at..at + 2].copy_from_slice(&d);
        }
    }
    v
}

/// The best of `trials` timings of `f`, in seconds.
fn best(trials: usize, mut f: impl FnMut()) -> f64 {
    (0..trials)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() -> anyhow::Result<()> {
    // On the compute threads, as the services run their forward passes.
    comps_models::compute_pool("qgemm")?.install(bench)
}

fn bench() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1);
    println!("{n} activation row(s), {} thread(s)", rayon::current_num_threads());
    for kind in [QKind::Q8_0, QKind::Q4_0, QKind::Q5_0, QKind::Q4K, QKind::Q6K] {
        let shapes: &[(usize, usize)] =
            if matches!(kind, QKind::Q4K | QKind::Q6K) { &[(896, 4864)] } else { &[(896, 4864), (4864, 896)] };
        for &(rows, cols) in shapes {
            let (per, size) = kind.ggml_block();
            let count = (STREAM_BYTES / (rows * cols / per * size)).max(1);
            let mats = (0..count)
                .map(|i| QMatrix::from_ggml(kind, rows, cols, &ggml_bytes(kind, rows, cols, i as u64)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let x: Vec<f32> = (0..n * cols).map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0).collect();
            let mut acts = QActs::new();
            acts.quantize(&x, n, cols);
            let mut out = vec![0f32; n * rows];
            let reps = 50;
            let hot = best(7, || (0..reps).for_each(|_| qgemm(&mats[0], &acts, &mut out))) / reps as f64;
            let stream = best(4, || mats.iter().for_each(|m| qgemm(m, &acts, &mut out))) / count as f64;
            let weights = (rows * cols) as f64;
            let bytes = mats[0].bytes() as f64;
            println!(
                "{:<5} {rows:>4}×{cols:<4} {:.3} bits/weight  hot {:6.1} Gweights/s  stream {:6.1} Gweights/s ({:5.1} GB/s)",
                format!("{kind:?}"),
                bytes * 8.0 / weights,
                weights / hot / 1e9,
                weights / stream / 1e9,
                bytes / stream / 1e9
            );
        }
    }
    Ok(())
}
