//! The ChatQnA default LLM, Qwen2.5-Coder-0.5B-Instruct (a Q4_K_M GGUF fetched by
//! `scripts/fetch-models.sh` from six PyPI wheels), loaded the way `comps-llm --model DIR`
//! loads it and asked a question from a retrieved passage, over HTTP on 127.0.0.1:0.

use std::path::PathBuf;
use std::sync::Arc;

use comps_core::CommonArgs;
use comps_llm::{AppState, ChatModel, EngineConfig, Llm, LocalGenerator, Quantize};
use serde_json::{Value, json};

fn qwen() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/Qwen2.5-Coder-0.5B-Instruct");
    assert!(dir.is_dir(), "{} is missing: run scripts/fetch-models.sh (scripts/test.sh does)", dir.display());
    dir
}

#[tokio::test]
async fn qwen_loads_from_its_directory_and_answers_from_the_context() {
    let dir = qwen();
    let model = tokio::task::spawn_blocking(move || ChatModel::load(&dir, Quantize::Auto))
        .await
        .unwrap()
        .expect("Qwen2.5-Coder-0.5B-Instruct loads");
    assert!(model.description.starts_with("qwen2"), "{}", model.description);
    assert!(model.context_len >= 4096, "context {}", model.context_len);
    let g = LocalGenerator::new(model, None, EngineConfig::default()).expect("generator starts");
    let h = comps_llm::server(AppState { llm: Llm::Local(Arc::new(g)) }, &CommonArgs::local(), 0)
        .bind()
        .await
        .unwrap()
        .spawn();
    let prompt = "Use the search results to answer.\n### Search results: The harbour of Vellmar was dredged in \
                  1874 by the engineer Corwin Ashby, who painted its lighthouse teal.\n### Question: What colour \
                  is the Vellmar lighthouse?\n### Answer:\n";
    let body = json!({"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 24});
    let r =
        comps_core::http_client().post(format!("{}/v1/chat/completions", h.url())).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.to_lowercase().contains("teal"), "{text}");
    // The chat template is the GGUF's ChatML: the prompt counts the system turn Qwen adds.
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 60, "{v}");
    h.shutdown().await.unwrap();
}
