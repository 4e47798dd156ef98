//! A long file's ingest says how far it got: the real embedding and retriever binaries
//! (MiniLM), a file cut into more chunks than one progress step, the retriever's JSON log read
//! for its `embedding` lines, and the answer's chunk counts.

use std::time::Duration;

use comps_tests::procs::{Proc, workspace_root};
use serde_json::Value;

#[tokio::test]
async fn a_long_ingest_reports_its_progress_and_its_chunks() {
    let up = Duration::from_secs(180);
    let data = std::env::temp_dir().join(format!("ingest-progress-{}", std::process::id()));
    let minilm = workspace_root().join("models/all-MiniLM-L6-v2").to_string_lossy().into_owned();
    let embedding = Proc::start("comps-embedding", &["--model", &minilm], &[], up);
    let embed_url = format!("{}/embed", embedding.url());
    let retriever = Proc::start(
        "comps-retriever",
        &["--embedding-url", &embed_url, "--data-dir", &data.to_string_lossy(), "--chunk-tokenizer", &minilm],
        &[],
        up,
    );
    // ~150 chunks of at most 60 characters.
    let text: String = (0..150).map(|i| format!("Ledger line {i} records {} barrels of brine.\n\n", i * 7)).collect();
    let form = reqwest::multipart::Form::new()
        .part("files", reqwest::multipart::Part::bytes(text.into_bytes()).file_name("ledger.txt"))
        .text("chunk_size", "60")
        .text("chunk_overlap", "0");
    let r = comps_core::http_client()
        .post(format!("{}/v1/dataprep/ingest", retriever.url()))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let chunks = answer["chunks"].as_u64().unwrap();
    assert!(chunks > 64, "more chunks than one progress step: {answer}");
    assert_eq!(answer["files"][0]["name"], "ledger.txt");
    assert_eq!(answer["files"][0]["chunks"].as_u64(), Some(chunks));

    // The progress lines: counts that grow to the whole file.
    let progress: Vec<(u64, u64)> = retriever
        .log()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "embedding" && v["embedded"].is_u64())
        .map(|v| (v["embedded"].as_u64().unwrap(), v["of"].as_u64().unwrap()))
        .collect();
    assert!(progress.len() >= 2, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0), "{progress:?}");
    assert_eq!(progress.last(), Some(&(chunks, chunks)), "{progress:?}");
    let _ = std::fs::remove_dir_all(&data);
}
