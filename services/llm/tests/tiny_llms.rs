//! Safetensors chat models against `transformers`: tiny randomly initialised Llama and Qwen2
//! checkpoints (written by `scripts/fixtures/gen-tiny-llms.py`) with their chat template, tokenizer,
//! last-position logits and 16 greedy tokens as computed by PyTorch.

use std::path::PathBuf;

use comps_core::protocol::ChatCompletionRequest;
use comps_llm::{ChatModel, EngineConfig, LocalGenerator, Quantize};
use comps_models::llm::sampling::argmax;
use serde_json::{Value, json};

fn check(name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llms").join(name);
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let model = ChatModel::load(&dir, Quantize::None).unwrap();
    assert!(model.stop_ids.contains(&2), "{name}: <|im_end|> ends a turn");
    let generator = LocalGenerator::new(model.clone(), None, EngineConfig::default()).unwrap();
    for item in reference["items"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        // The template renders the same prompt and the tokenizer gives the same ids.
        let req: ChatCompletionRequest = serde_json::from_value(json!({"messages": item["messages"]})).unwrap();
        let prompt = generator.render_prompt(&req).unwrap();
        assert_eq!(prompt, item["prompt"].as_str().unwrap(), "{name}/{id}: prompt");
        let ids = generator.tokenize(&prompt).unwrap();
        let want_ids: Vec<u32> = serde_json::from_value(item["prompt_ids"].clone()).unwrap();
        assert_eq!(ids, want_ids, "{name}/{id}: prompt ids");

        // Last-position logits within 1e-4 of PyTorch's.
        let mut seq = model.sequence().unwrap();
        let logits = seq.forward(&ids, 0).unwrap();
        let want: Vec<f32> = serde_json::from_value(item["last_logits"].clone()).unwrap();
        assert_eq!(logits.len(), want.len(), "{name}/{id}: vocabulary");
        let diff = logits.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        println!("{name}/{id}: max |logit - transformers| = {diff:.2e}");
        assert!(diff <= 1e-4, "{name}/{id}: logits differ by {diff}");

        // Greedy continuation through the KV cache equals PyTorch's full recomputation.
        let want_greedy: Vec<u32> = serde_json::from_value(item["greedy_ids"].clone()).unwrap();
        let mut got = vec![argmax(&logits)];
        while got.len() < want_greedy.len() {
            let l = seq.forward(&[*got.last().unwrap()], ids.len() + got.len() - 1).unwrap();
            got.push(argmax(&l));
        }
        assert_eq!(got, want_greedy, "{name}/{id}: greedy tokens");
    }
}

#[test]
fn tiny_llama_matches_transformers() {
    check("llama");
}

#[test]
fn tiny_qwen2_matches_transformers() {
    check("qwen2");
}
