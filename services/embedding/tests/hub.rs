//! Hub ids: downloaded from a hub (a local mock of its `/resolve/main/` file API serving the
//! real MiniLM files) into the Hugging Face cache layout, then read from the cache offline.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use comps_core::vector::cosine;
use comps_embedding::{EmbedInput, EmbedOptions, Embedder, LocalEmbedder};
use comps_models::BatchConfig;
use comps_models::hub::{ENCODER_FILES, HubConfig, SENTENCE_FILES, resolve};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2")
}

#[derive(Clone)]
struct Hub {
    requests: Arc<AtomicUsize>,
    saw_token: Arc<AtomicUsize>,
}

async fn file(
    State(h): State<Hub>,
    headers: HeaderMap,
    Path((org, name, rest)): Path<(String, String, String)>,
) -> Response {
    h.requests.fetch_add(1, Ordering::SeqCst);
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some("Bearer hf_test") {
        h.saw_token.fetch_add(1, Ordering::SeqCst);
    }
    let Some(file) = rest.strip_prefix("resolve/main/") else { return StatusCode::NOT_FOUND.into_response() };
    if (org.as_str(), name.as_str()) != ("sentence-transformers", "all-MiniLM-L6-v2") || file.contains("..") {
        return StatusCode::NOT_FOUND.into_response();
    }
    match std::fs::read(model_dir().join(file)) {
        Ok(bytes) => ([("x-repo-commit", "c0ffee1234")], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn spawn_hub() -> (String, Hub) {
    let hub = Hub { requests: Arc::default(), saw_token: Arc::default() };
    let app = axum::Router::new().route("/{org}/{name}/{*rest}", axum::routing::get(file)).with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hub)
}

fn config(endpoint: &str, cache: &std::path::Path, offline: bool) -> HubConfig {
    HubConfig {
        endpoint: endpoint.to_string(),
        cache_dir: cache.to_path_buf(),
        offline,
        token: Some("hf_test".into()),
        timeout: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn hub_ids_download_into_the_cache_then_load_offline() {
    let cache = std::env::temp_dir().join(format!("comps-hub-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let (endpoint, hub) = spawn_hub().await;
    let id = "sentence-transformers/all-MiniLM-L6-v2";

    let dir = resolve(id, ENCODER_FILES, SENTENCE_FILES, &config(&endpoint, &cache, false)).await.unwrap();
    assert_eq!(dir, cache.join("models--sentence-transformers--all-MiniLM-L6-v2/snapshots/c0ffee1234"));
    assert!(dir.join("model.safetensors").is_file() && dir.join("1_Pooling/config.json").is_file());
    let fetched = hub.requests.load(Ordering::SeqCst);
    assert_eq!(fetched, ENCODER_FILES.len() + SENTENCE_FILES.len());
    assert_eq!(hub.saw_token.load(Ordering::SeqCst), fetched, "HF_TOKEN sent as a bearer token");

    // Cached: no more requests, even offline.
    let again = resolve(id, ENCODER_FILES, SENTENCE_FILES, &config(&endpoint, &cache, true)).await.unwrap();
    assert_eq!(again, dir);
    assert_eq!(hub.requests.load(Ordering::SeqCst), fetched);

    // The downloaded model embeds exactly like the local directory.
    let opts = EmbedOptions { normalize: true, truncate: true, field: "input", keep_end: false };
    let a = LocalEmbedder::load(&dir, None, BatchConfig::default()).unwrap();
    let b = LocalEmbedder::load(&model_dir(), None, BatchConfig::default()).unwrap();
    let va = a.embed(EmbedInput::Texts(vec!["hello hub".into()]), opts).await.unwrap().vectors.remove(0);
    let vb = b.embed(EmbedInput::Texts(vec!["hello hub".into()]), opts).await.unwrap().vectors.remove(0);
    assert!(cosine(&va, &vb) > 0.999999);

    // Offline and not cached; unknown repo; not an id.
    let empty = cache.join("empty");
    let err = resolve(id, ENCODER_FILES, &[], &config(&endpoint, &empty, true)).await.unwrap_err();
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
    let err = resolve("nobody/nothing", ENCODER_FILES, &[], &config(&endpoint, &cache, false)).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert!(!cache.join("models--nobody--nothing/snapshots").exists(), "a failed download leaves no snapshot");
    let asked = hub.requests.load(Ordering::SeqCst);
    let err = resolve("../../etc", ENCODER_FILES, &[], &config(&endpoint, &cache, false)).await.unwrap_err();
    assert!(err.to_string().contains("no such model directory"), "{err}");
    // A mistyped local path is a local error, never a download (tests run in the crate's
    // directory, where `src/` exists; `models/` is this project's model folder).
    for typo in ["models/does-not-exist", "src/no-model", "./x/y", "/nonexistent/model"] {
        let err = resolve(typo, ENCODER_FILES, &[], &config(&endpoint, &cache, false)).await.unwrap_err();
        assert!(err.to_string().contains(&format!("no such model directory: {typo}")), "{err}");
    }
    assert_eq!(hub.requests.load(Ordering::SeqCst), asked, "the hub was not asked");
    std::fs::remove_dir_all(&cache).unwrap();
}
