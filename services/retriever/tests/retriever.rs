//! The retriever over its embedded store (redb on disk, in-memory index), with real
//! all-MiniLM-L6-v2 embeddings from a real comps-embedding server, over HTTP on 127.0.0.1:0.

mod common;

use common::{TempDir, args, embedding_url, scenarios, serve_with};

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
