//! Hub ids: downloaded from a hub (the fake of the Hub's file API in comps-mock-backends,
//! serving the real MiniLM files with ranges and ETags) into the Hugging Face cache layout,
//! resumed after a failure, checked against their SHA-256, sharded checkpoints understood, then
//! read from the cache offline.

use std::path::PathBuf;
use std::time::Duration;

use comps_core::vector::cosine;
use comps_embedding::{EmbedInput, EmbedOptions, Embedder, LocalEmbedder};
use comps_mock_backends::hub::FakeHub;
use comps_models::BatchConfig;
use comps_models::hub::{ENCODER_FILES, HubConfig, SENTENCE_FILES, resolve};

const ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2")
}

fn minilm_files(weights: &[(&'static str, PathBuf)]) -> Vec<(&'static str, PathBuf)> {
    let mut files: Vec<(&str, PathBuf)> = [
        "config.json",
        "tokenizer.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
        "tokenizer_config.json",
        "README.md",
    ]
    .into_iter()
    .map(|f| (f, model_dir().join(f)))
    .collect();
    files.extend(weights.iter().cloned());
    files
}

fn config(endpoint: &str, cache: &std::path::Path, offline: bool) -> HubConfig {
    HubConfig {
        endpoint: endpoint.to_string(),
        cache_dir: cache.to_path_buf(),
        offline,
        token: Some("hf_test".into()),
        timeout: Duration::from_secs(60),
    }
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("comps-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

async fn embed(dir: &std::path::Path, text: &str) -> Vec<f32> {
    let opts = EmbedOptions { normalize: true, truncate: true, field: "input", keep_end: false };
    let m = LocalEmbedder::load(dir, None, BatchConfig::default()).unwrap();
    m.embed(EmbedInput::Texts(vec![text.into()]), opts).await.unwrap().vectors.remove(0)
}

#[tokio::test]
async fn hub_ids_download_resume_and_load_offline() {
    let cache = temp("cache");
    let hub = FakeHub::new(Some("hf_test"));
    hub.add_repo(ID, "c0ffee1234", &minilm_files(&[("model.safetensors", model_dir().join("model.safetensors"))]))
        .unwrap();
    let endpoint = hub.spawn().await.unwrap();

    // The weights' third 10 MB range fails: the download stops with the hub's answer named...
    hub.fail_once_past(ID, "model.safetensors", 20_000_000);
    let err = resolve(ID, ENCODER_FILES, SENTENCE_FILES, &config(&endpoint, &cache, false)).await.unwrap_err();
    assert!(err.to_string().contains("downloading model.safetensors") && err.to_string().contains("500"), "{err}");
    let failed_at = hub.log().ranges.len();

    // ... and the next start resumes there: no byte before 20 MB is asked for again.
    let dir = resolve(ID, ENCODER_FILES, SENTENCE_FILES, &config(&endpoint, &cache, false)).await.unwrap();
    let log = hub.log();
    let again: Vec<_> =
        log.ranges[failed_at..].iter().filter(|(_, f, _, end)| f == "model.safetensors" && *end > 0).collect();
    assert!(!again.is_empty() && again.iter().all(|(_, _, start, _)| *start >= 20_000_000), "{again:?}");
    // (The failed attempt's other ranges may still be in flight and appear here too: hf-hub
    // does not cancel them; they write the same bytes.)
    assert!(again.iter().any(|r| r.2 == 20_000_000), "resumed from the last whole range: {again:?}");

    assert_eq!(dir, cache.join("models--sentence-transformers--all-MiniLM-L6-v2/snapshots/c0ffee1234"));
    for f in ENCODER_FILES.iter().chain(SENTENCE_FILES) {
        assert!(dir.join(f).is_file(), "{f}");
    }
    assert!(!dir.join("README.md").exists(), "only the files the model needs");
    // huggingface_hub's layout: the snapshot links into blobs/, an LFS blob named by its SHA-256.
    let blob = std::fs::canonicalize(dir.join("model.safetensors")).unwrap();
    assert_eq!(blob.parent().unwrap().file_name().unwrap(), "blobs");
    assert_eq!(blob.file_name().unwrap().len(), 64);
    assert_eq!(log.with_token, log.requests.len(), "HF_TOKEN sent as a bearer token on every request");

    // Cached: no more requests, even offline.
    let asked = hub.log().requests.len();
    let again = resolve(ID, ENCODER_FILES, SENTENCE_FILES, &config(&endpoint, &cache, true)).await.unwrap();
    assert_eq!(again, dir);
    assert_eq!(hub.log().requests.len(), asked);

    // The downloaded model embeds exactly like the local directory.
    assert!(cosine(&embed(&dir, "hello hub").await, &embed(&model_dir(), "hello hub").await) > 0.999999);

    // Offline and not cached; unknown repo; not an id.
    let empty = cache.join("empty");
    let err = resolve(ID, ENCODER_FILES, &[], &config(&endpoint, &empty, true)).await.unwrap_err();
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
    let err = resolve("nobody/nothing", ENCODER_FILES, &[], &config(&endpoint, &cache, false)).await.unwrap_err();
    assert!(err.to_string().contains("listing nobody/nothing") && err.to_string().contains("404"), "{err}");
    assert!(!cache.join("models--nobody--nothing/snapshots").exists(), "a failed download leaves no snapshot");
    let asked = hub.log().requests.len();
    let err = resolve("../../etc", ENCODER_FILES, &[], &config(&endpoint, &cache, false)).await.unwrap_err();
    assert!(err.to_string().contains("no such model directory"), "{err}");
    // A mistyped local path is a local error, never a download (tests run in the crate's
    // directory, where `src/` exists; `models/` is this project's model folder).
    for typo in ["models/does-not-exist", "src/no-model", "./x/y", "/nonexistent/model"] {
        let err = resolve(typo, ENCODER_FILES, &[], &config(&endpoint, &cache, false)).await.unwrap_err();
        assert!(err.to_string().contains(&format!("no such model directory: {typo}")), "{err}");
    }
    assert_eq!(hub.log().requests.len(), asked, "the hub was not asked");
    std::fs::remove_dir_all(&cache).unwrap();
}

#[tokio::test]
async fn sharded_checkpoints_load_and_a_bad_checksum_is_refused() {
    let cache = temp("shards-cache");
    let shards = temp("shards");
    std::fs::create_dir_all(&shards).unwrap();
    // Split MiniLM's weights in two, as save_pretrained shards a large model.
    let tensors =
        candle_core::safetensors::load(model_dir().join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let half = names.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let subset: std::collections::HashMap<String, candle_core::Tensor> =
            part.iter().map(|n| ((*n).clone(), tensors[*n].clone())).collect();
        candle_core::safetensors::save(&subset, shards.join(&file)).unwrap();
        for n in part {
            weight_map.insert((*n).clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(shards.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let hub = FakeHub::new(None);
    let sharded = "test/minilm-sharded";
    let files = minilm_files(&[
        ("model.safetensors.index.json", shards.join("model.safetensors.index.json")),
        ("model-00001-of-00002.safetensors", shards.join("model-00001-of-00002.safetensors")),
        ("model-00002-of-00002.safetensors", shards.join("model-00002-of-00002.safetensors")),
    ]);
    hub.add_repo(sharded, "5a4d", &files).unwrap();
    let corrupt = "test/minilm-corrupt";
    hub.add_repo(corrupt, "bad0", &minilm_files(&[("model.safetensors", model_dir().join("model.safetensors"))]))
        .unwrap();
    hub.corrupt(corrupt, "model.safetensors");
    let endpoint = hub.spawn().await.unwrap();
    let cfg = config(&endpoint, &cache, false);

    let dir = resolve(sharded, ENCODER_FILES, SENTENCE_FILES, &cfg).await.unwrap();
    assert!(!dir.join("model.safetensors").exists());
    assert!(dir.join("model-00002-of-00002.safetensors").is_file());
    assert_eq!(embed(&dir, "two shards").await, embed(&model_dir(), "two shards").await, "the same weights");
    // Cached, shards and all: offline works.
    let offline = config(&endpoint, &cache, true);
    assert_eq!(resolve(sharded, ENCODER_FILES, SENTENCE_FILES, &offline).await.unwrap(), dir);

    let err = resolve(corrupt, ENCODER_FILES, SENTENCE_FILES, &cfg).await.unwrap_err();
    assert!(err.to_string().contains("model.safetensors: checksum mismatch"), "{err}");
    let snap = cache.join("models--test--minilm-corrupt/snapshots/bad0");
    assert!(!snap.join("model.safetensors").exists(), "the bad file is not left for the next start");
    let err = resolve(corrupt, ENCODER_FILES, SENTENCE_FILES, &offline).await.unwrap_err();
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");

    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::remove_dir_all(&shards).unwrap();
}
