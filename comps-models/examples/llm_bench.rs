//! Prefill and decode speed of the model at each quantization, with our own llama forward pass
//! (`native`, where it applies) and candle-transformers' (`candle`), printed in the same format
//! as `scripts/bench/llamacpp_bench.py` (run both through `scripts/bench/llm.sh`).
//!
//! ```text
//! cargo run --release -p comps-models --example llm_bench -- models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
//! ```

use std::path::PathBuf;
use std::time::Instant;

use comps_models::llm::sampling::argmax;
use comps_models::llm::{Backend, BatchInput, ChatModel, Quantize};

const RUNS: usize = 3;
const PROMPT_TOKENS: usize = 128;
const DECODE_TOKENS: usize = 128;
/// Sequences decoding together in the batched figure.
const BATCH: usize = 4;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // On the compute threads, as the service's engine runs its forward passes.
    comps_models::compute_pool("llm")?.install(bench)
}

fn bench() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("usage: llm_bench MODEL.gguf [QUANT...]"))?);
    let mut quants: Vec<String> = args.collect();
    if quants.is_empty() {
        quants = vec!["none".into(), "q4_0".into(), "q8_0".into()];
    }
    // For profiling: LLM_BENCH_NATIVE_ONLY=1 skips candle, LLM_BENCH_DECODE_TOKENS=0 prefills only,
    // LLM_BENCH_PROMPT_TOKENS=N decodes after a longer prompt (a RAG prompt's context).
    let prompt_tokens: usize =
        std::env::var("LLM_BENCH_PROMPT_TOKENS").ok().and_then(|v| v.parse().ok()).unwrap_or(PROMPT_TOKENS);
    // A natural-language prompt of exactly `prompt_tokens` tokens.
    let sentence = "The history of the city begins with a small settlement on the river, where traders met to exchange grain, salt and cloth. ";
    let text = sentence.repeat(prompt_tokens.div_ceil(16));
    let mut auto_ran_candle = false;
    let native_only = std::env::var("LLM_BENCH_NATIVE_ONLY").is_ok_and(|v| v == "1");
    let decode_tokens: usize =
        std::env::var("LLM_BENCH_DECODE_TOKENS").ok().and_then(|v| v.parse().ok()).unwrap_or(DECODE_TOKENS);
    for (q, backend) in quants.iter().flat_map(|q| [(q, Backend::Auto), (q, Backend::Candle)]) {
        if backend == Backend::Candle && (auto_ran_candle || native_only) {
            // Auto already ran candle for this quantization.
            continue;
        }
        let quantize = Quantize::parse(q).ok_or_else(|| anyhow::anyhow!("unknown quantization {q}"))?;
        let model = ChatModel::load_with(&path, quantize, backend)?;
        auto_ran_candle = backend == Backend::Auto && model.backend() == "candle";
        let ids = model.tokenizer.encode(text.as_str(), false).map_err(anyhow::Error::msg)?.get_ids()[..prompt_tokens]
            .to_vec();
        let label = match quantize {
            Quantize::None | Quantize::Auto => {
                path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.rsplit('.').next()).unwrap_or("?").to_string()
            }
            Quantize::Q8_0 => "Q8_0".into(),
            Quantize::Q4_0 => "Q4_0".into(),
        };
        let mut prefill = Vec::new();
        let mut decode = Vec::new();
        // One warm-up run, then RUNS measured ones.
        for run in 0..=RUNS {
            let mut seq = model.sequence()?;
            let t = Instant::now();
            let logits = seq.forward(&ids, 0)?;
            let p = t.elapsed().as_secs_f64();
            let mut next = argmax(&logits);
            let t = Instant::now();
            for i in 0..decode_tokens {
                let logits = seq.forward(&[next], prompt_tokens + i)?;
                next = argmax(&logits);
            }
            let d = t.elapsed().as_secs_f64();
            if run > 0 {
                prefill.push(prompt_tokens as f64 / p);
                decode.push(decode_tokens as f64 / d);
            }
        }
        // Continuous batching at the model: BATCH sequences after the same prompt, each step one
        // token of every one of them in one forward pass (native only: candle steps one by one).
        let batched = if model.batched() && decode_tokens > 0 {
            let mut rates = Vec::new();
            for _ in 0..RUNS {
                let mut seqs = (0..BATCH).map(|_| model.sequence()).collect::<anyhow::Result<Vec<_>>>()?;
                let mut next = Vec::new();
                for s in &mut seqs {
                    next.push(argmax(&s.forward(&ids, 0)?));
                }
                let t = Instant::now();
                for _ in 0..decode_tokens {
                    let steps: Vec<[u32; 1]> = next.iter().map(|&n| [n]).collect();
                    let mut inputs: Vec<BatchInput> =
                        seqs.iter_mut().zip(&steps).map(|(seq, ids)| BatchInput { seq, ids, logits: true }).collect();
                    let out = model.forward_batch(&mut inputs)?;
                    next = out.iter().map(|l| l.as_deref().map_or(0, argmax)).collect();
                }
                rates.push((BATCH * decode_tokens) as f64 / t.elapsed().as_secs_f64());
            }
            let total = median(rates);
            format!("  decode x{BATCH} {total:>7.1} tok/s ({:.2}x one)", total / median(decode.clone()))
        } else {
            String::new()
        };
        println!(
            "{:<10} {label:<5} prefill {:>8.1} tok/s  decode {:>7.1} tok/s{batched}",
            model.backend(),
            median(prefill),
            median(decode)
        );
    }
    Ok(())
}
