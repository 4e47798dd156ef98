//! The embedding service with the real all-MiniLM-L6-v2 weights (fetched by
//! `scripts/fetch-models.sh`, which the test command runs), against a committed
//! sentence-transformers reference, over real HTTP on 127.0.0.1:0.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use comps_core::vector::cosine;
use comps_core::{CommonArgs, ErrorResponse, ServerHandle};
use comps_embedding::{AppState, EmbedInput, EmbedOptions, Embedder, LocalEmbedder, RemoteEmbedder};
use comps_mock_backends::{MockConfig, spawn_mock};
use comps_models::BatchConfig;
use serde_json::{Value, json};

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("EMBEDDING_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no model: run scripts/fetch-models.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

fn embedder() -> Arc<LocalEmbedder> {
    static E: OnceLock<Arc<LocalEmbedder>> = OnceLock::new();
    E.get_or_init(|| Arc::new(LocalEmbedder::load(&model_dir(), None, BatchConfig::default()).expect("model loads")))
        .clone()
}

fn opts(truncate: bool) -> EmbedOptions {
    EmbedOptions { normalize: true, truncate, field: "input", keep_end: false }
}

fn common(max_concurrent: usize) -> CommonArgs {
    CommonArgs { max_concurrent_requests: max_concurrent, ..CommonArgs::local() }
}

async fn serve(embedder: Arc<dyn Embedder>, max_concurrent: usize) -> ServerHandle {
    let state = AppState { embedder, max_client_batch_size: 32, auto_truncate: false };
    comps_embedding::server(state, &common(max_concurrent), 0).bind().await.unwrap().spawn()
}

fn client() -> reqwest::Client {
    comps_core::http_client().clone()
}

async fn post(h: &ServerHandle, path: &str, body: Value) -> (u16, Value) {
    let r = client().post(format!("{}{path}", h.url())).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn matches_sentence_transformers_reference() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/minilm_reference.json")).expect("fixture is JSON");
    let items = fixture["items"].as_array().unwrap();
    assert!(items.len() >= 20, "fixture has {} items", items.len());
    let texts: Vec<String> = items.iter().map(|i| i["text"].as_str().unwrap().to_string()).collect();
    let e = embedder();
    let out = e.embed(EmbedInput::Texts(texts.clone()), opts(true)).await.unwrap();
    let mut worst = 1.0f32;
    for (i, item) in items.iter().enumerate() {
        let reference: Vec<f32> =
            item["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let c = cosine(&out.vectors[i], &reference);
        worst = worst.min(c);
        assert!(c >= 0.9999, "item {i} ({:?}): cosine {c}", texts[i]);
        // Token counts agree with the reference tokenizer, truncation included.
        let one = e.embed(EmbedInput::Texts(vec![texts[i].clone()]), opts(true)).await.unwrap();
        assert_eq!(one.prompt_tokens as u64, item["tokens"].as_u64().unwrap(), "item {i} tokens");
    }
    eprintln!("worst cosine against sentence-transformers: {worst}");
}

#[tokio::test]
async fn same_vector_alone_and_in_a_padded_batch() {
    let e = embedder();
    let text = "The quick brown fox jumps over the lazy dog.".to_string();
    let alone = e.embed(EmbedInput::Texts(vec![text.clone()]), opts(true)).await.unwrap().vectors.remove(0);
    let long = "A much longer passage that forces padding of the short one. ".repeat(12);
    let batch =
        e.embed(EmbedInput::Texts(vec![long, text, "medium length text here".into()]), opts(true)).await.unwrap();
    let in_batch = &batch.vectors[1];
    let max_diff = alone.iter().zip(in_batch).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff < 1e-5, "max abs difference {max_diff}");
    assert!(cosine(&alone, in_batch) > 0.99999);
}

#[tokio::test]
async fn openai_tei_and_opea_shapes() {
    let h = serve(embedder(), 64).await;
    let (status, v) = post(&h, "/v1/embeddings", json!({"input": ["hello world", "good morning"], "model": "m"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "m");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    for (i, d) in v["data"].as_array().unwrap().iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        let emb = d["embedding"].as_array().unwrap();
        assert_eq!(emb.len(), 384);
        let norm: f64 = emb.iter().map(|x| x.as_f64().unwrap().powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    // [CLS] hello world [SEP] + [CLS] good morning [SEP]
    assert_eq!(v["usage"]["prompt_tokens"], 8, "{}", v["usage"]);
    assert_eq!(v["usage"]["total_tokens"], 8);
    let float0: Vec<f32> =
        v["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();

    let (_, b) = post(&h, "/v1/embeddings", json!({"input": "hello world", "encoding_format": "base64"})).await;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let decoded: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(decoded, float0);

    let (_, d) = post(&h, "/v1/embeddings", json!({"input": "hello world", "dimensions": 128})).await;
    let emb = d["data"][0]["embedding"].as_array().unwrap();
    assert_eq!(emb.len(), 128);
    let norm: f64 = emb.iter().map(|x| x.as_f64().unwrap().powi(2)).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);

    let (status, t) = post(&h, "/v1/embeddings", json!({"input": [[101, 7592, 2088, 102]]})).await;
    assert_eq!(status, 200, "{t}");
    let from_ids: Vec<f32> =
        t["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert!(cosine(&from_ids, &float0) > 0.99999, "token ids of 'hello world' embed the same");

    let (status, tei) = post(&h, "/embed", json!({"inputs": "hello world"})).await;
    assert_eq!(status, 200);
    let tei0: Vec<f32> = tei[0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert!(cosine(&tei0, &float0) > 0.99999);
    let (_, raw) = post(&h, "/embed", json!({"inputs": ["hello world"], "normalize": false})).await;
    let norm: f64 = raw[0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap().powi(2)).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "normalize=false leaves the pooled norm ({norm})");

    let (status, doc) =
        post(&h, "/v1/embeddings", json!({"text": "hello world", "id": "0123456789abcdef0123456789abcdef"})).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["id"], "0123456789abcdef0123456789abcdef");
    assert_eq!(doc["text"], "hello world");
    assert_eq!(doc["embedding"].as_array().unwrap().len(), 384);
    assert_eq!(
        (doc["search_type"].as_str(), doc["k"].as_u64(), doc["fetch_k"].as_u64()),
        (Some("similarity"), Some(4), Some(20))
    );
    let (_, docs) = post(&h, "/v1/embeddings", json!({"text": ["a", "b"]})).await;
    assert_eq!(docs["embedding"].as_array().unwrap().len(), 2);

    let info: Value = client().get(format!("{}/info", h.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["model_id"], "all-MiniLM-L6-v2");
    assert_eq!(info["max_input_length"], 256);
    assert_eq!(info["embedding_dimension"], 384);
    assert_eq!(info["model_type"]["embedding"]["pooling"], "mean");
    // Every field of TEI's `Info` (its published OpenAPI schema), but three: `tokenization_workers`
    // (tokenizing runs per request on the blocking pool, no fixed count exists), `sha` and
    // `docker_label` (TEI's build metadata).
    for field in [
        "model_id",
        "model_sha",
        "model_dtype",
        "model_type",
        "max_concurrent_requests",
        "max_input_length",
        "max_batch_tokens",
        "max_batch_requests",
        "max_client_batch_size",
        "auto_truncate",
        "version",
    ] {
        assert!(info.get(field).is_some(), "TEI's /info has {field}: {info}");
    }
    // TEI's router limits: the server's concurrency, the batcher's tokens and inputs per pass.
    assert_eq!(info["max_concurrent_requests"], 64, "the server's --max-concurrent-requests");
    let batch = comps_models::BatchConfig::default();
    assert_eq!(
        (info["max_batch_tokens"].as_u64(), info["max_batch_requests"].as_u64()),
        (Some(batch.max_batch_tokens as u64), Some(batch.max_batch_requests as u64))
    );
    let health: Value =
        client().get(format!("{}/v1/health_check", h.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["Service Title"], "embedding");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_names_the_problem() {
    let h = serve(embedder(), 64).await;
    let long = "word ".repeat(400);
    let cases = [
        ("/v1/embeddings", json!({"input": []}), 400, "input"),
        ("/v1/embeddings", json!({"input": 5}), 400, "input"),
        ("/v1/embeddings", json!({"input": vec!["x"; 2049]}), 400, "input"),
        ("/embed", json!({"inputs": vec!["x"; 33]}), 422, "inputs"),
        ("/v1/embeddings", json!({"input": "x", "encoding_format": "hex"}), 400, "encoding_format"),
        ("/v1/embeddings", json!({"input": "x", "dimensions": 1000}), 400, "dimensions"),
        ("/v1/embeddings", json!({"input": [[1, 99999]]}), 400, "input"),
        ("/v1/embeddings", json!({"input": long.clone()}), 400, "input"),
        ("/embed", json!({"inputs": long.clone(), "truncate": false}), 422, "inputs"),
        ("/embed", json!({"inputs": []}), 422, "inputs"),
        ("/embed", json!({"inputs": {"a": 1}}), 422, "inputs"),
        ("/embed", json!({"text": "x"}), 422, "inputs"),
        ("/v1/embeddings", json!({"text": null}), 422, "text"),
    ];
    for (path, body, status, field) in cases {
        let (got, v) = post(&h, path, body.clone()).await;
        assert_eq!(got, status, "{path} {body}: {v}");
        let e: ErrorResponse = serde_json::from_value(v).unwrap();
        assert_eq!(e.error.param.as_deref(), Some(field), "{path} {body}: {}", e.error.message);
    }
    let (_, v) = post(&h, "/embed", json!({"inputs": long.clone()})).await;
    let msg = v["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("256") && msg.contains("truncate"), "{msg}");
    // Too long, but allowed to truncate.
    let (status, _) = post(&h, "/embed", json!({"inputs": long, "truncate": true})).await;
    assert_eq!(status, 200);
    let r = client().post(format!("{}/v1/embeddings", h.url())).body("{\"input\": ").send().await.unwrap();
    assert_eq!(r.status(), 400);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn overload_is_refused_with_429() {
    let h = serve(embedder(), 1).await;
    let long: Vec<String> = (0..32).map(|i| format!("{i} {}", "long text for a slow batch ".repeat(30))).collect();
    let url = format!("{}/v1/embeddings", h.url());
    let slow = tokio::spawn({
        let url = url.clone();
        let body = json!({"input": long});
        async move { client().post(url).json(&body).send().await.unwrap().status().as_u16() }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let r = client().post(&url).json(&json!({"input": "quick"})).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(slow.await.unwrap(), 200);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn remote_mode_proxies_tei_and_openai_and_maps_failures() {
    let (addr, stats) = spawn_mock(MockConfig { embed_dim: 8, ..MockConfig::default() }).await.unwrap();
    let tei = RemoteEmbedder::new(&format!("http://{addr}/embed"), None, None, Duration::from_secs(5)).unwrap();
    let h = serve(Arc::new(tei), 64).await;
    let (status, v) = post(&h, "/v1/embeddings", json!({"input": ["a", "b"]})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 8);
    let (status, v) = post(&h, "/embed", json!({"inputs": "a"})).await;
    assert_eq!(status, 200);
    assert_eq!(v[0].as_array().unwrap().len(), 8);
    assert_eq!(stats.requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    h.shutdown().await.unwrap();

    let oai = RemoteEmbedder::new(
        &format!("http://{addr}/v1/embeddings"),
        Some("k".into()),
        Some("remote-m".into()),
        Duration::from_secs(5),
    )
    .unwrap();
    let h = serve(Arc::new(oai), 64).await;
    let (status, v) = post(&h, "/v1/embeddings", json!({"input": "hello there"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"]["prompt_tokens"], 2, "usage passed through from the remote");
    h.shutdown().await.unwrap();

    let (bad, _) =
        spawn_mock(MockConfig { fail_first: 100, error_status: 500, ..MockConfig::default() }).await.unwrap();
    let failing = RemoteEmbedder::new(&format!("http://{bad}/embed"), None, None, Duration::from_secs(5)).unwrap();
    let h = serve(Arc::new(failing), 64).await;
    let (status, v) = post(&h, "/v1/embeddings", json!({"input": "a"})).await;
    assert_eq!(status, 502);
    assert!(v["error"]["message"].as_str().unwrap().contains("remote embedding"), "{v}");
    h.shutdown().await.unwrap();

    let (slow, _) = spawn_mock(MockConfig { latency_ms: 5_000, ..MockConfig::default() }).await.unwrap();
    let hung = RemoteEmbedder::new(&format!("http://{slow}/embed"), None, None, Duration::from_millis(300)).unwrap();
    let h = serve(Arc::new(hung), 64).await;
    let (status, _) = post(&h, "/embed", json!({"inputs": "a"})).await;
    assert_eq!(status, 504);
    h.shutdown().await.unwrap();
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// A ~10 MB input is refused by its size before the tokenizer sees it (it used to be tokenized
/// whole: seconds and a gigabyte before the 422), and with truncate it is cut to a prefix whose
/// first 256 tokens are those of the whole text.
#[tokio::test]
async fn a_huge_input_is_refused_or_cut_before_tokenizing() {
    let h = serve(embedder(), 64).await;
    let sentence = "The quick brown fox jumps over the lazy dog near the riverbank. ";
    let huge = sentence.repeat(10 * 1024 * 1024 / sentence.len());
    assert!(huge.len() > 10_000_000);

    // OpenAI's route answers a bad field 400, as OpenAI does; TEI's answers 422, as TEI does.
    for (path, body, field, want) in [
        ("/v1/embeddings", json!({"input": huge}), "input", 400),
        ("/embed", json!({"inputs": huge, "truncate": false}), "inputs", 422),
    ] {
        let started = Instant::now();
        let (status, v) = post(&h, path, body).await;
        let took = started.elapsed();
        assert_eq!(status, want, "{path}: {}", v["error"]);
        assert_eq!(v["error"]["param"], field, "{path}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("{} bytes", huge.len())) && msg.contains("truncate"), "{msg}");
        assert!(took < Duration::from_secs(2), "{path}: the refusal took {took:?}");
    }

    // Truncating: the same vector as a prefix that is already longer than the window.
    let head: String = huge.chars().take(2_000).collect();
    let started = Instant::now();
    let (status, cut) = post(&h, "/embed", json!({"inputs": huge, "truncate": true})).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{cut}");
    assert!(took < Duration::from_secs(2), "truncating took {took:?}");
    let (status, want) = post(&h, "/embed", json!({"inputs": head, "truncate": true})).await;
    assert_eq!(status, 200, "{want}");
    let (cut, want) = (floats(&cut[0]), floats(&want[0]));
    let max_diff = cut.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff < 1e-5, "max abs difference {max_diff}");
    h.shutdown().await.unwrap();
}

/// The OpenAI SDK sends up to 2048 inputs in one call; TEI's /embed keeps its client batch
/// size.
#[tokio::test]
async fn openai_requests_take_up_to_2048_inputs_in_order() {
    let h = serve(embedder(), 64).await;
    let texts: Vec<String> = (0..1000).map(|i| format!("sentence number {i} about topic {}", i % 7)).collect();
    let (status, v) = post(&h, "/v1/embeddings", json!({"input": &texts[..33]})).await;
    assert_eq!(status, 200, "33 inputs: {}", v["error"]);
    assert_eq!(v["data"].as_array().unwrap().len(), 33);

    let (status, v) = post(&h, "/v1/embeddings", json!({"input": texts})).await;
    assert_eq!(status, 200, "1000 inputs: {}", v["error"]);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1000);
    assert!(data.iter().enumerate().all(|(i, d)| d["index"] == i), "data in index order");
    // In input order: spot-check a few against the same text alone.
    for i in [0usize, 1, 517, 999] {
        let (_, one) = post(&h, "/v1/embeddings", json!({"input": texts[i]})).await;
        let c = cosine(&floats(&data[i]["embedding"]), &floats(&one["data"][0]["embedding"]));
        assert!(c > 0.99999, "item {i}: cosine {c}");
    }

    let (status, v) = post(&h, "/v1/embeddings", json!({"input": vec!["x"; 2049]})).await;
    assert_eq!(status, 400, "OpenAI's status for a bad field");
    assert_eq!(v["error"]["param"], "input");
    assert!(v["error"]["message"].as_str().unwrap().contains("2048"), "{}", v["error"]);
    let (status, v) = post(&h, "/embed", json!({"inputs": &texts[..33]})).await;
    assert_eq!(status, 422, "/embed keeps --max-client-batch-size");
    assert_eq!(v["error"]["param"], "inputs");
    h.shutdown().await.unwrap();
}

/// An embedder whose model worker has died.
struct DeadWorker(comps_embedding::EmbedderInfo);

#[async_trait::async_trait]
impl Embedder for DeadWorker {
    fn info(&self) -> &comps_embedding::EmbedderInfo {
        &self.0
    }
    async fn embed(&self, _: EmbedInput, _: EmbedOptions) -> comps_core::ServiceResult<comps_embedding::Embedded> {
        Err(comps_core::ServiceError::NotReady("embedding worker has stopped".into()))
    }
    fn health(&self) -> comps_core::health::HealthCheck {
        comps_core::health::HealthCheck::new(|| Err("the embedding batcher's worker thread has stopped".into()))
    }
}

/// /health asks the embedder: 200 while the model worker runs, 503 with the reason when not.
#[tokio::test]
async fn health_asks_the_model_worker() {
    let h = serve(embedder(), 64).await;
    assert_eq!(embedder().health().check(), Ok(()));
    for path in ["/health", "/v1/health"] {
        let r = client().get(format!("{}{path}", h.url())).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    h.shutdown().await.unwrap();

    let info = comps_embedding::EmbedderInfo {
        model_id: "dead".into(),
        dim: None,
        max_input_tokens: None,
        pooling: None,
        vocab_size: None,
        backend: "local",
        prompts: Default::default(),
        batch: None,
    };
    let h = serve(Arc::new(DeadWorker(info)), 64).await;
    let r = client().get(format!("{}/health", h.url())).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("worker thread has stopped"), "{v}");
    h.shutdown().await.unwrap();
}

/// The OpenAPI document names every route with its request and answer schemas.
#[tokio::test]
async fn openapi_document_covers_every_route() {
    let (addr, _) = spawn_mock(MockConfig { embed_dim: 8, ..MockConfig::default() }).await.unwrap();
    let tei = RemoteEmbedder::new(&format!("http://{addr}/embed"), None, None, Duration::from_secs(5)).unwrap();
    let h = serve(Arc::new(tei), 64).await;
    let doc = comps_mock_backends::check_openapi(
        &h.url(),
        &[("post", "/v1/embeddings"), ("post", "/embed"), ("get", "/info"), ("get", "/v1/models")],
    )
    .await;
    let schemas = &doc["components"]["schemas"];
    let tei = &schemas["TeiEmbedRequest"];
    assert_eq!(tei["required"], json!(["inputs"]), "{tei}");
    for field in ["inputs", "normalize", "truncate", "truncation_direction", "dimensions"] {
        assert!(tei["properties"][field]["description"].is_string(), "{field}: {tei}");
    }
    let embeddings = &doc["paths"]["/v1/embeddings"]["post"];
    assert!(embeddings["summary"].is_string(), "{embeddings}");
    assert!(embeddings["description"].as_str().is_some_and(|d| d.contains("TextDoc")), "{embeddings}");
    let info = &schemas["TeiInfo"]["properties"];
    for field in [
        "model_id",
        "max_client_batch_size",
        "max_concurrent_requests",
        "max_batch_tokens",
        "max_batch_requests",
        "auto_truncate",
        "embedding_dimension",
        "backend",
    ] {
        assert!(info.get(field).is_some(), "{field}: {info}");
    }
    h.shutdown().await.unwrap();
}

/// TEI's `prompt_name`: a prompt of the model's `config_sentence_transformers.json` put before
/// each input, the service's `--default-prompt-name` when a request names none, and a 422
/// naming `prompt_name` for a prompt the model does not have.
#[tokio::test]
async fn prompt_names_put_the_models_prompts_before_the_inputs() {
    let dir = std::env::temp_dir().join(format!("comps-embedding-prompts-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for f in
        ["config.json", "model.safetensors", "tokenizer.json", "sentence_bert_config.json", "1_Pooling/config.json"]
    {
        let _ = std::fs::remove_file(dir.join(f));
        std::os::unix::fs::symlink(model_dir().join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("config_sentence_transformers.json"),
        r#"{"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": null}"#,
    )
    .unwrap();
    let with_prompts = Arc::new(LocalEmbedder::load(&dir, None, BatchConfig::default()).unwrap());
    let h = serve(with_prompts, 64).await;
    let (s1, named) = post(&h, "/embed", json!({"inputs": "the harbour", "prompt_name": "query"})).await;
    let (s2, spelled) = post(&h, "/embed", json!({"inputs": "query: the harbour"})).await;
    let (s3, bare) = post(&h, "/embed", json!({"inputs": "the harbour"})).await;
    assert_eq!((s1, s2, s3), (200, 200, 200));
    assert_eq!(named, spelled, "prompt_name puts the prompt before the text");
    assert_ne!(named, bare);
    let (status, err) = post(&h, "/embed", json!({"inputs": "the harbour", "prompt_name": "document"})).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["param"], "prompt_name", "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("passage, query"), "{err}");
    h.shutdown().await.unwrap();

    // --default-prompt-name applies to every route when a request names none.
    let defaulted = LocalEmbedder::load(&dir, None, BatchConfig::default())
        .unwrap()
        .with_default_prompt(Some("passage".into()))
        .unwrap();
    let h = serve(Arc::new(defaulted), 64).await;
    let (_, tei) = post(&h, "/embed", json!({"inputs": "the harbour"})).await;
    let (_, openai) = post(&h, "/v1/embeddings", json!({"input": "the harbour"})).await;
    let (_, spelled) = post(&h, "/embed", json!({"inputs": "passage: the harbour", "prompt_name": "query"})).await;
    let (_, passage) = post(&h, "/embed", json!({"inputs": "the harbour", "prompt_name": "passage"})).await;
    assert_eq!(tei, passage);
    let v: Vec<f32> = serde_json::from_value(openai["data"][0]["embedding"].clone()).unwrap();
    let t: Vec<f32> = serde_json::from_value(tei[0].clone()).unwrap();
    assert!(cosine(&v, &t) > 0.9999, "the OpenAI route gets the default prompt too");
    assert_ne!(spelled, passage, "a request's prompt_name wins over the default");
    h.shutdown().await.unwrap();
    assert!(
        LocalEmbedder::load(&dir, None, BatchConfig::default())
            .unwrap()
            .with_default_prompt(Some("nope".into()))
            .is_err()
    );

    // A model without prompts refuses a prompt_name.
    let h = serve(embedder(), 64).await;
    let (status, err) = post(&h, "/embed", json!({"inputs": "the harbour", "prompt_name": "query"})).await;
    assert_eq!(status, 422, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("no prompts"), "{err}");
    h.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// TEI's `/tokenize` and `/decode` with the model's own tokenizer: tokens with their byte spans
/// in the input (special tokens without), and ids back to text.
#[tokio::test]
async fn tei_tokenize_and_decode() {
    let h = serve(embedder(), 64).await;
    let text = "Hello, wörld";
    let (status, v) = post(&h, "/tokenize", json!({"inputs": text})).await;
    assert_eq!(status, 200, "{v}");
    let tokens = v[0].as_array().unwrap();
    assert_eq!(tokens.first().unwrap()["text"], "[CLS]");
    assert_eq!(tokens.first().unwrap()["special"], true);
    assert!(tokens.first().unwrap()["start"].is_null());
    assert_eq!(tokens.last().unwrap()["text"], "[SEP]");
    for t in &tokens[1..tokens.len() - 1] {
        let (start, stop) = (t["start"].as_u64().unwrap() as usize, t["stop"].as_u64().unwrap() as usize);
        assert_eq!(t["text"].as_str().unwrap(), &text[start..stop], "{t}");
        assert_eq!(t["special"], false);
    }
    let ids: Vec<u64> = tokens.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    // The same ids the embedder tokenizes with.
    let (_, plain) = post(&h, "/tokenize", json!({"inputs": [text, "x"], "add_special_tokens": false})).await;
    assert_eq!(plain.as_array().unwrap().len(), 2);
    assert_eq!(plain[0].as_array().unwrap().len(), ids.len() - 2);

    let (status, back) = post(&h, "/decode", json!({"ids": ids})).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back, json!(["hello, world"]), "MiniLM lowercases and strips accents");
    let (_, kept) = post(&h, "/decode", json!({"ids": [ids.clone()], "skip_special_tokens": false})).await;
    assert!(kept[0].as_str().unwrap().starts_with("[CLS]"), "{kept}");

    for (path, body, field) in [
        ("/decode", json!({"ids": [1, 2, 99999999]}), "ids"),
        ("/decode", json!({"ids": "x"}), "ids"),
        ("/tokenize", json!({"inputs": "x".repeat(1 << 20)}), "inputs"),
        ("/tokenize", json!({"inputs": vec!["x"; 33]}), "inputs"),
        ("/tokenize", json!({"inputs": "x", "prompt_name": "nope"}), "prompt_name"),
    ] {
        let (status, v) = post(&h, path, body).await;
        assert_eq!(status, 422, "{path}: {v}");
        assert_eq!(v["error"]["param"], field, "{path}: {v}");
    }
    h.shutdown().await.unwrap();
}

/// TEI's `truncation_direction: "Left"` keeps the end of an over-long input: the vector is the
/// one of its last tokens with the special tokens put back, exactly; `Right` keeps the start.
#[tokio::test]
async fn left_truncation_keeps_the_end() {
    let h = serve(embedder(), 64).await;
    let text =
        format!("{} The harbour master keeps the tide tables in a green tin.", "Filler words here. ".repeat(300));
    let (status, toks) = post(&h, "/tokenize", json!({"inputs": text.clone(), "add_special_tokens": false})).await;
    assert_eq!(status, 200, "{toks}");
    let ids: Vec<u64> = toks[0].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert!(ids.len() > 254, "the text must be longer than the window");
    let (_, cls_sep) = post(&h, "/tokenize", json!({"inputs": ""})).await;
    let specials: Vec<u64> = cls_sep[0].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(specials.len(), 2, "[CLS] [SEP]: {cls_sep}");
    let mut tail = vec![specials[0]];
    tail.extend(&ids[ids.len() - 254..]);
    tail.push(specials[1]);

    let embed = |direction: &'static str| {
        let h = &h;
        let text = text.clone();
        async move {
            let (status, v) =
                post(h, "/embed", json!({"inputs": text, "truncate": true, "truncation_direction": direction})).await;
            assert_eq!(status, 200, "{direction}: {v}");
            floats(&v[0])
        }
    };
    let left = embed("Left").await;
    let right = embed("right").await;
    let (_, exact) = post(&h, "/v1/embeddings", json!({"input": [tail]})).await;
    let exact = floats(&exact["data"][0]["embedding"]);
    assert!(cosine(&left, &exact) > 0.99999, "left truncation is the last 254 tokens");
    assert!(cosine(&left, &right) < 0.99, "left and right keep different parts");
    let (status, v) = post(&h, "/embed", json!({"inputs": "x", "truncation_direction": "middle"})).await;
    assert_eq!((status, v["error"]["param"].as_str()), (422, Some("truncation_direction")));
    h.shutdown().await.unwrap();
}

/// TEI's `/embed_all` (every token's vector: mean-pooled they are `/embed`'s unnormalized
/// vector, one row per token `/tokenize` lists) and `/similarity` (the cosine of `/embed`'s
/// vectors, in order); a remote embedder answers `/embed_all` with 404 and `/similarity`
/// through the remote.
#[tokio::test]
async fn tei_embed_all_and_similarity() {
    let h = serve(embedder(), 64).await;
    let texts = ["The lighthouse is painted teal.", "Tide tables"];
    let (status, all) = post(&h, "/embed_all", json!({"inputs": texts})).await;
    assert_eq!(status, 200, "{all}");
    let (_, pooled) = post(&h, "/embed", json!({"inputs": texts, "normalize": false})).await;
    let (_, toks) = post(&h, "/tokenize", json!({"inputs": texts})).await;
    for i in 0..texts.len() {
        let rows: Vec<Vec<f32>> = all[i].as_array().unwrap().iter().map(floats).collect();
        assert_eq!(rows.len(), toks[i].as_array().unwrap().len(), "one row per token");
        assert!(rows.iter().all(|r| r.len() == 384));
        let mut mean = vec![0f32; 384];
        for r in &rows {
            mean.iter_mut().zip(r).for_each(|(m, x)| *m += x / rows.len() as f32);
        }
        let want = floats(&pooled[i]);
        let err = mean.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-4, "input {i}: mean of the token rows differs from /embed by {err}");
    }

    let sentences = ["What colour is the lighthouse?", "The lighthouse is teal.", "Bread needs yeast."];
    let (status, sims) = post(
        &h,
        "/similarity",
        json!({"inputs": {"source_sentence": "The lighthouse is painted teal.", "sentences": sentences}}),
    )
    .await;
    assert_eq!(status, 200, "{sims}");
    let sims = floats(&sims);
    let (_, src) = post(&h, "/embed", json!({"inputs": "The lighthouse is painted teal."})).await;
    let (_, each) = post(&h, "/embed", json!({"inputs": sentences})).await;
    for (i, s) in sims.iter().enumerate() {
        let want = cosine(&floats(&src[0]), &floats(&each[i]));
        assert!((s - want).abs() < 1e-5, "sentence {i}: {s} vs {want}");
    }
    assert!(sims[1] > sims[0] && sims[0] > sims[2], "{sims:?}");

    for (path, body, field) in [
        ("/similarity", json!({"inputs": {"source_sentence": "x", "sentences": []}}), "inputs.sentences"),
        ("/similarity", json!({"inputs": {"source_sentence": "x", "sentences": vec!["y"; 32]}}), "inputs.sentences"),
        ("/similarity", json!({"inputs": {"sentences": ["y"]}}), "inputs.source_sentence"),
        (
            "/similarity",
            json!({"inputs": {"source_sentence": "x", "sentences": ["y"]}, "parameters": {"truncation_direction": "up"}}),
            "parameters.truncation_direction",
        ),
        ("/embed_all", json!({"inputs": vec!["x"; 33]}), "inputs"),
        ("/embed_all", json!({"inputs": "x".repeat(1 << 20)}), "inputs"),
        ("/embed_all", json!({"inputs": "x", "prompt_name": "nope"}), "prompt_name"),
    ] {
        let (status, v) = post(&h, path, body.clone()).await;
        assert_eq!(status, 422, "{path} {body}: {v}");
        assert_eq!(v["error"]["param"], field, "{path} {body}: {v}");
    }
    h.shutdown().await.unwrap();

    let (addr, _) = spawn_mock(MockConfig { embed_dim: 8, ..MockConfig::default() }).await.unwrap();
    let tei = RemoteEmbedder::new(&format!("http://{addr}/embed"), None, None, Duration::from_secs(5)).unwrap();
    let h = serve(Arc::new(tei), 64).await;
    let (status, v) = post(&h, "/embed_all", json!({"inputs": "x"})).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) =
        post(&h, "/similarity", json!({"inputs": {"source_sentence": "x", "sentences": ["x", "y"]}})).await;
    assert_eq!(status, 200, "{v}");
    assert!((floats(&v)[0] - 1.0).abs() < 1e-5, "a text is its own nearest: {v}");
    h.shutdown().await.unwrap();
}

/// The batcher's metrics are on `/metrics`: a queue wait per request, every input in a pass,
/// and nothing left queued afterwards.
#[tokio::test]
async fn batcher_metrics_count_the_requests() {
    // Its own model, so other tests' requests do not count here.
    let own = Arc::new(LocalEmbedder::load(&model_dir(), None, BatchConfig::default()).expect("model loads"));
    let h = serve(own, 8).await;
    for n in 1..=3 {
        let input: Vec<String> = (0..n).map(|i| format!("sentence {i}")).collect();
        let (status, v) = post(&h, "/v1/embeddings", json!({"input": input})).await;
        assert_eq!(status, 200, "{v}");
    }
    let text = client().get(format!("{}/metrics", h.url())).send().await.unwrap().text().await.unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {series}:\n{text}"))
    };
    assert_eq!(value(r#"comps_batch_queue_wait_seconds_count{batcher="embedding"}"#), 3.0);
    assert_eq!(value(r#"comps_batch_size_sum{batcher="embedding"}"#), 6.0, "1 + 2 + 3 inputs");
    let passes = value(r#"comps_batch_size_count{batcher="embedding"}"#);
    assert_eq!(value(r#"comps_batch_forward_seconds_count{batcher="embedding"}"#), passes);
    assert_eq!(value(r#"comps_batch_queue_depth{batcher="embedding"}"#), 0.0);
    h.shutdown().await.unwrap();
}
