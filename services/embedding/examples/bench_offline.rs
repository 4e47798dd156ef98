//! Offline encoder throughput: sequences/s for inputs of exactly 16 and 128 tokens at batch
//! 1, 8 and 32, straight through the model (no HTTP, no batcher), as
//! `scripts/bench/embedding.sh` reports it. Prints a table and a `JSON {...}` line.
//!
//! `cargo run --release -p comps-embedding --example bench_offline -- models/all-MiniLM-L6-v2 3`

use std::time::{Duration, Instant};

use comps_models::EmbeddingModel;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "models/all-MiniLM-L6-v2".into());
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let (model, tokenizer, info) = EmbeddingModel::load(std::path::Path::new(&dir), None)?;
    // Real token ids: a sentence repeated, cut to the length, with [CLS] ... [SEP].
    let text = "The quick brown fox jumps over the lazy dog near the river bank today. ".repeat(20);
    let base = tokenizer.encode(&[text], true)?.map_err(|e| anyhow::anyhow!("{e}"))?.remove(0);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into());
    println!("model {} dim {} threads {threads}", info.model_id, info.dim);
    println!("{:>8} {:>6} {:>12} {:>12}", "tokens", "batch", "seq/s", "ms/batch");
    let mut json = Vec::new();
    for len in [16usize, 128] {
        let mut seq = base[..len - 1].to_vec();
        seq.push(*base.last().expect("non-empty"));
        for batch in [1usize, 8, 32] {
            let items: Vec<&[u32]> = (0..batch).map(|_| seq.as_slice()).collect();
            model.embed(&items)?; // warm-up
            let start = Instant::now();
            let mut n = 0usize;
            while start.elapsed() < Duration::from_secs_f64(seconds) {
                model.embed(&items)?;
                n += 1;
            }
            let el = start.elapsed().as_secs_f64();
            let sps = (n * batch) as f64 / el;
            println!("{len:>8} {batch:>6} {sps:>12.1} {:>12.2}", el * 1000.0 / n as f64);
            json.push(format!("\"{len}x{batch}\": {sps:.2}"));
        }
    }
    println!("JSON {{{}}}", json.join(", "));
    Ok(())
}
