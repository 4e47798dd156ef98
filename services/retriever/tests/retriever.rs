//! The retriever over its embedded store (redb on disk, in-memory index), with real
//! all-MiniLM-L6-v2 embeddings from a real comps-embedding server, over HTTP on 127.0.0.1:0.

mod common;

use common::{TempDir, args, embedding_url, scenarios, serve_with};
use serde_json::Value;

#[tokio::test]
async fn every_file_type_is_ingested_and_the_right_chunk_comes_first() {
    let dir = TempDir::new("types");
    let h = serve_with(args(dir.path(), &embedding_url().await)).await;
    scenarios::every_file_type_is_ingested_and_the_right_chunk_comes_first(&h.url()).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn mmr_diversifies_and_both_thresholds_filter() {
    let dir = TempDir::new("mmr");
    let h = serve_with(args(dir.path(), &embedding_url().await)).await;
    scenarios::mmr_diversifies_and_both_thresholds_filter(&h.url()).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_written() {
    let dir = TempDir::new("bad");
    let mut a = args(dir.path(), &embedding_url().await);
    a.max_upload_bytes = 4096;
    let h = serve_with(a).await;
    scenarios::bad_input_is_refused_and_nothing_is_written(&h.url(), dir.path()).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn links_are_fetched_and_chunked_when_private_addresses_are_allowed() {
    let dir = TempDir::new("links");
    let mut a = args(dir.path(), &embedding_url().await);
    a.allow_private_links = true;
    let h = serve_with(a).await;
    scenarios::links_are_fetched_and_chunked_when_private_addresses_are_allowed(&h.url()).await;
    h.shutdown().await.unwrap();
}

/// With the embedder's tokenizer, a request without `chunk_size` gets chunks that fit
/// MiniLM's 256-token window (special tokens included), for English and for Chinese, where
/// 1,500 characters are ~330 and ~1,500 tokens; a request with `chunk_size` is cut by
/// characters as OPEA cuts it.
#[tokio::test]
async fn default_chunks_fit_the_embedders_window_in_tokens() {
    use common::{minilm, post, upload};
    let dir = TempDir::new("tokchunks");
    let mut a = args(dir.path(), &embedding_url().await);
    a.chunk_tokenizer = Some(minilm());
    let h = serve_with(a).await;
    let base = h.url();
    let english: String = (0..120)
        .map(|i| format!("Sentence {i} says that the lighthouse keeper logged weather number {} today. ", i * 7))
        .collect();
    let chinese: String = (0..80).map(|i| format!("第{i}段记录了茶园在清晨采摘的第{}批嫩芽。", i * 3)).collect();
    let (status, v) =
        upload(&base, &[("en.txt", english.clone().into_bytes()), ("zh.txt", chinese.clone().into_bytes())], &[]).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) =
        upload(&base, &[("chars.txt", english.clone().into_bytes())], &[("chunk_size", "1500"), ("index_name", "c")])
            .await;
    assert_eq!(status, 200, "{v}");

    let tok = tokenizers::Tokenizer::from_file(minilm().join("tokenizer.json")).unwrap();
    let tokens = |t: &str| {
        let mut tk = tok.clone();
        tk.with_padding(None);
        tk.with_truncation(None).unwrap();
        tk.encode(t, true).unwrap().len()
    };
    let texts = |v: &Value| -> Vec<String> {
        v["retrieved_docs"].as_array().unwrap().iter().map(|d| d["text"].as_str().unwrap().to_string()).collect()
    };
    for (query, whole) in [("lighthouse keeper weather", &english), ("茶园清晨采摘嫩芽", &chinese)] {
        let (status, v) = post(&base, "/v1/retrieval", serde_json::json!({"text": query, "k": 200})).await;
        assert_eq!(status, 200, "{v}");
        let chunks: Vec<String> = texts(&v).into_iter().filter(|t| whole.contains(t.as_str())).collect();
        assert!(chunks.len() >= 3, "{query}: {} chunks", chunks.len());
        for c in &chunks {
            let n = tokens(c);
            assert!(n <= 256, "{query}: a chunk of {n} tokens: {c}");
        }
        // Chunks are filled, not cut at every sentence.
        let longest = chunks.iter().map(|c| tokens(c)).max().unwrap();
        assert!(longest > 200, "{query}: longest chunk {longest} tokens");
    }
    let (status, v) =
        post(&base, "/v1/retrieval", serde_json::json!({"text": "lighthouse", "k": 50, "index_name": "c"})).await;
    assert_eq!(status, 200, "{v}");
    let chunks = texts(&v);
    assert!(chunks.iter().any(|c| c.chars().count() > 1200), "character chunks keep OPEA's size");
    assert!(chunks.iter().all(|c| c.chars().count() <= 1500));
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn store_size_and_search_latency_are_on_metrics() {
    let dir = TempDir::new("metrics");
    let h = serve_with(args(dir.path(), &embedding_url().await)).await;
    scenarios::store_size_and_search_latency_are_on_metrics(&h.url(), "embedded").await;
    h.shutdown().await.unwrap();
}
