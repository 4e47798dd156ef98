//! `--model org/name-GGUF[:QUANT]`: a GGUF repository on the hub (the fake of the Hub's file
//! API in comps-mock-backends serving the real SmolLM2 file under two quantization names), one
//! file picked, downloaded into the Hugging Face cache, loaded, and found again offline.

use std::path::PathBuf;
use std::time::Duration;

use comps_llm::{ChatModel, Quantize, resolve_model};
use comps_mock_backends::hub::FakeHub;
use comps_models::hub::HubConfig;

const ID: &str = "test/SmolLM2-135M-Instruct-GGUF";

fn gguf() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[tokio::test]
async fn gguf_repositories_resolve_to_one_file() {
    let cache = std::env::temp_dir().join(format!("comps-hub-gguf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let hub = FakeHub::new(None);
    let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    hub.add_repo(
        ID,
        "9e6f",
        &[
            ("SmolLM2-135M-Instruct-Q4_1.gguf", gguf()),
            ("SmolLM2-135M-Instruct-Q4_K_M.gguf", gguf()),
            ("README.md", readme),
        ],
    )
    .unwrap();
    let endpoint = hub.spawn().await.unwrap();
    let cfg = |offline| HubConfig {
        endpoint: endpoint.clone(),
        cache_dir: cache.clone(),
        offline,
        token: None,
        timeout: Duration::from_secs(60),
    };

    // No quantization named: llama.cpp's default, Q4_K_M.
    let path = resolve_model(ID, &cfg(false)).await.unwrap();
    assert_eq!(
        path,
        cache.join("models--test--SmolLM2-135M-Instruct-GGUF/snapshots/9e6f/SmolLM2-135M-Instruct-Q4_K_M.gguf")
    );
    let fetched: Vec<String> = hub.log().ranges.iter().map(|r| r.1.clone()).collect();
    assert!(fetched.iter().all(|f| f.ends_with("Q4_K_M.gguf")), "only the picked file is downloaded: {fetched:?}");

    // Named, any case; loads and answers.
    let q41 = resolve_model(&format!("{ID}:q4_1"), &cfg(false)).await.unwrap();
    assert!(q41.ends_with("SmolLM2-135M-Instruct-Q4_1.gguf"), "{}", q41.display());
    let model = tokio::task::spawn_blocking(move || ChatModel::load(&q41, Quantize::Q8_0)).await.unwrap().unwrap();
    assert!(model.tokenizer.get_vocab_size(true) > 1000 && model.chat_template.is_some());

    // A quantization the repository lacks: the choices are listed.
    let err = resolve_model(&format!("{ID}:Q8_0"), &cfg(false)).await.unwrap_err().to_string();
    assert!(err.contains("no .gguf file for Q8_0 among SmolLM2-135M-Instruct-Q4_1.gguf"), "{err}");

    // Offline, from the cache, without asking the hub.
    let asked = hub.log().requests.len();
    assert_eq!(resolve_model(ID, &cfg(true)).await.unwrap(), path);
    assert!(resolve_model(&format!("{ID}:Q4_1"), &cfg(true)).await.unwrap().is_file());
    assert_eq!(hub.log().requests.len(), asked);
    let err = resolve_model(&format!("{ID}:Q8_0"), &cfg(true)).await.unwrap_err().to_string();
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    std::fs::remove_dir_all(&cache).unwrap();
}
