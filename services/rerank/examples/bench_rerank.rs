//! Reranking throughput in pairs/s at 128 tokens, batch 1 and 32: the bi-encoder (MiniLM:
//! query and texts embedded, then cosine) and a BERT-base-sized cross-encoder (12 layers,
//! hidden 768, random weights: throughput does not depend on the values). Prints a table and a
//! `JSON {...}` line.
//!
//! `cargo run --release -p comps-rerank --example bench_rerank -- models/all-MiniLM-L6-v2 3`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use comps_models::encoder::{Encoder, EncoderConfig};
use comps_models::{EmbeddingModel, Pooling};

fn time<F: FnMut() -> anyhow::Result<()>>(seconds: f64, mut f: F) -> anyhow::Result<(usize, f64)> {
    f()?;
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        f()?;
        n += 1;
    }
    Ok((n, start.elapsed().as_secs_f64()))
}

fn bert_base() -> anyhow::Result<Encoder> {
    let cfg: EncoderConfig = serde_json::from_value(serde_json::json!({
        "model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
        "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
        "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12
    }))?;
    let dev = Device::Cpu;
    let (h, i) = (768usize, 3072usize);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut add = |name: String, shape: &[usize]| -> anyhow::Result<()> {
        t.insert(name, (Tensor::randn(0f32, 0.02, shape, &dev)?).to_dtype(DType::F32)?);
        Ok(())
    };
    add("embeddings.word_embeddings.weight".into(), &[30522, h])?;
    add("embeddings.position_embeddings.weight".into(), &[512, h])?;
    add("embeddings.token_type_embeddings.weight".into(), &[2, h])?;
    add("embeddings.LayerNorm.weight".into(), &[h])?;
    add("embeddings.LayerNorm.bias".into(), &[h])?;
    for l in 0..12 {
        let p = format!("encoder.layer.{l}");
        for m in ["query", "key", "value"] {
            add(format!("{p}.attention.self.{m}.weight"), &[h, h])?;
            add(format!("{p}.attention.self.{m}.bias"), &[h])?;
        }
        add(format!("{p}.attention.output.dense.weight"), &[h, h])?;
        add(format!("{p}.attention.output.dense.bias"), &[h])?;
        add(format!("{p}.attention.output.LayerNorm.weight"), &[h])?;
        add(format!("{p}.attention.output.LayerNorm.bias"), &[h])?;
        add(format!("{p}.intermediate.dense.weight"), &[i, h])?;
        add(format!("{p}.intermediate.dense.bias"), &[i])?;
        add(format!("{p}.output.dense.weight"), &[h, i])?;
        add(format!("{p}.output.dense.bias"), &[h])?;
        add(format!("{p}.output.LayerNorm.weight"), &[h])?;
        add(format!("{p}.output.LayerNorm.bias"), &[h])?;
    }
    Ok(Encoder::load(cfg, VarBuilder::from_tensors(t, DType::F32, &dev))?)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "models/all-MiniLM-L6-v2".into());
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let (mini, tok, _) = EmbeddingModel::load(std::path::Path::new(&dir), None)?;
    let text = "The quick brown fox jumps over the lazy dog near the river bank today. ".repeat(20);
    let base = tok.encode(&[text], true)?.map_err(|e| anyhow::anyhow!("{e}"))?.remove(0);
    let mut seq128 = base[..127].to_vec();
    seq128.push(*base.last().expect("non-empty"));
    let query: Vec<u32> = base[..15].iter().copied().chain([*base.last().expect("non-empty")]).collect();
    let base_model = bert_base()?;
    let types = vec![0u32; 128];
    println!("{:<34} {:>6} {:>12}", "reranker (128 tokens per pair)", "batch", "pairs/s");
    let mut json = Vec::new();
    for batch in [1usize, 32] {
        // Bi-encoder: the query once plus each text.
        let mut items: Vec<&[u32]> = vec![query.as_slice()];
        items.extend((0..batch).map(|_| seq128.as_slice()));
        let (n, el) = time(seconds, || {
            mini.embed(&items)?;
            Ok(())
        })?;
        let bi = (n * batch) as f64 / el;
        println!("{:<34} {batch:>6} {bi:>12.1}", "bi-encoder all-MiniLM-L6-v2");
        json.push(format!("\"bi_encoder_b{batch}\": {bi:.2}"));
        let ids: Vec<&[u32]> = (0..batch).map(|_| seq128.as_slice()).collect();
        let tys: Vec<&[u32]> = (0..batch).map(|_| types.as_slice()).collect();
        let (n, el) = time(seconds, || {
            let h = base_model.forward(&ids, Some(&tys))?;
            Pooling::Cls.pool(&h);
            Ok(())
        })?;
        let ce = (n * batch) as f64 / el;
        println!("{:<34} {batch:>6} {ce:>12.1}", "cross-encoder BERT-base (random)");
        json.push(format!("\"cross_encoder_base_b{batch}\": {ce:.2}"));
    }
    println!("JSON {{{}}}", json.join(", "));
    Ok(())
}
