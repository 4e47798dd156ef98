//! Greedy tokens of our candle engine against llama.cpp on the same GGUF file. The fixtures
//! were written by `scripts/fixtures/llama-cpp-reference.py` (llama-cpp-python built from PyPI, KV cache
//! in f32 as ours) for five fixed ChatML prompts, 48 new tokens each, on the packaged Q4_1 file
//! and on its Q8_0 requantization, with llama.cpp's gap between its best and second-best logit
//! at every step.
//!
//! Two measures: teacher-forced (at every step of llama.cpp's answer, is our next token the
//! same?) and free-running (how long do the two greedy answers stay identical?). Two correct
//! implementations differ only where llama.cpp itself hesitates: a near-tie that rounding order
//! can flip, after which free-running answers go separate ways.

use std::path::PathBuf;

use comps_llm::{ChatModel, Quantize};
use comps_models::llm::sampling::argmax;
use serde_json::Value;

/// A disagreement is tolerated only where llama.cpp's own top-2 gap is below this. For scale:
/// these logits are ~25-30, and llama.cpp's own f16 KV cache (its default) moves them by up to
/// 0.4 against its f32 cache; ours differ from its f32 run by up to ~0.6.
const NEAR_TIE: f64 = 1.0;

fn gguf() -> PathBuf {
    model("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn model(file: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models").join(file);
    assert!(path.is_file(), "{} is missing: run scripts/fetch-models.sh (scripts/test.sh does)", path.display());
    path
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Teacher-forced agreement must reach `min_percent`.
fn compare(model: &ChatModel, fixture: &Value, label: &str, min_percent: usize) {
    let (mut agree, mut total, mut identical) = (0, 0, 0);
    let im_end = fixture["im_end"].as_u64().unwrap_or(2) as u32;
    let cases = fixture["cases"].as_array().unwrap().len();
    for case in fixture["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["generated_ids"]);
        let margins: Vec<f64> = serde_json::from_value(case["margins"].clone()).unwrap();

        // Teacher-forced: our choice at each step of llama.cpp's answer.
        let mut seq = model.sequence().unwrap();
        let mut logits = seq.forward(&prompt, 0).unwrap();
        for (i, &tok) in want.iter().enumerate() {
            let ours = argmax(&logits);
            total += 1;
            if ours == tok {
                agree += 1;
            } else {
                println!(
                    "{label}: step {i} of {:?}: ours {ours}, llama.cpp {tok} (its margin {})",
                    case["generated_text"], margins[i]
                );
                assert!(
                    margins[i] < NEAR_TIE,
                    "{label}: step {i} differs although llama.cpp's margin is {} (>= {NEAR_TIE})",
                    margins[i]
                );
            }
            if i + 1 < want.len() {
                logits = seq.forward(&[tok], prompt.len() + i).unwrap();
            }
        }

        // Free-running: our own greedy answer.
        let mut seq = model.sequence().unwrap();
        let mut logits = seq.forward(&prompt, 0).unwrap();
        let mut got = Vec::new();
        while got.len() < want.len() {
            let next = argmax(&logits);
            got.push(next);
            if next == im_end {
                break;
            }
            logits = seq.forward(&[next], prompt.len() + got.len() - 1).unwrap();
        }
        let prefix = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        identical += usize::from(got == want);
        println!("{label}: free-running {prefix}/{} identical tokens: {:?}", want.len(), case["generated_text"]);
    }
    println!("{label}: teacher-forced {agree}/{total} tokens agree; {identical}/{cases} answers identical");
    assert!(agree * 100 >= total * min_percent, "{label}: only {agree}/{total} tokens agree");
}

#[test]
fn greedy_tokens_match_llama_cpp_on_the_packaged_q4_1() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/llamacpp-greedy.json")).unwrap();
    compare(&ChatModel::load(&gguf(), Quantize::None).unwrap(), &fixture, "Q4_1", 95);
}

#[test]
fn greedy_tokens_match_llama_cpp_on_q8_0() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/llamacpp-greedy-q8_0.json")).unwrap();
    compare(&ChatModel::load(&gguf(), Quantize::Q8_0).unwrap(), &fixture, "Q8_0", 95);
}

/// The default model's Q4_K_M file (Q5_0, Q8_0, Q4_K and Q6_K matrices) on the native backend:
/// eight ChatML prompts, one of them a retrieval-style passage of 223 tokens.
#[test]
fn greedy_tokens_match_llama_cpp_on_qwen_q4_k_m() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/llamacpp-greedy-qwen.json")).unwrap();
    let path = model("Qwen2.5-Coder-0.5B-Instruct/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf");
    let m = ChatModel::load(&path, Quantize::Auto).unwrap();
    assert_eq!(m.backend(), "native", "{}", m.description);
    compare(&m, &fixture, "Qwen Q4_K_M", 97);
}
