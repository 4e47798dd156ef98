//! The rerank service over real HTTP on 127.0.0.1:0: the bi-encoder with the real MiniLM
//! weights, the cross-encoder with the tiny BERT / XLM-R checkpoints whose logits
//! `transformers` computed, the TEI and OPEA shapes, the TEI proxy, and bad input.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use comps_core::{CommonArgs, ErrorResponse, ServerHandle};
use comps_mock_backends::{MockConfig, spawn_mock};
use comps_models::BatchConfig;
use comps_rerank::{AppState, BiEncoder, CrossEncoder, RemoteReranker, Reranker};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn minilm() -> Arc<dyn Reranker> {
    static B: OnceLock<Arc<BiEncoder>> = OnceLock::new();
    B.get_or_init(|| {
        let dir = root().join("models/all-MiniLM-L6-v2");
        assert!(dir.join("model.safetensors").is_file(), "run scripts/fetch-models.sh (scripts/test.sh does)");
        Arc::new(BiEncoder::load(&dir, BatchConfig::default()).unwrap())
    })
    .clone()
}

fn tiny(name: &str) -> (Arc<dyn Reranker>, Value) {
    let dir = root().join("comps-models/tests/fixtures/tiny-encoders").join(name);
    let expected = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    (Arc::new(CrossEncoder::load(&dir, BatchConfig::default()).unwrap()), expected)
}

fn common() -> CommonArgs {
    CommonArgs::local()
}

async fn serve(reranker: Arc<dyn Reranker>) -> ServerHandle {
    comps_rerank::server(AppState { reranker, max_client_batch_size: 16 }, &common(), 0).bind().await.unwrap().spawn()
}

async fn post(h: &ServerHandle, path: &str, body: Value) -> (u16, Value) {
    let r = comps_core::http_client().post(format!("{}{path}", h.url())).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn bi_encoder_ranks_the_relevant_passage_first() {
    let sets: Value = serde_json::from_str(include_str!("fixtures/rerank_sets.json")).unwrap();
    let h = serve(minilm()).await;
    let mut hits = 0;
    let sets = sets["sets"].as_array().unwrap();
    for set in sets {
        let (status, ranked) =
            post(&h, "/rerank", json!({"query": set["query"], "texts": set["passages"], "return_text": true})).await;
        assert_eq!(status, 200, "{ranked}");
        let ranked = ranked.as_array().unwrap();
        assert_eq!(ranked.len(), set["passages"].as_array().unwrap().len());
        let scores: Vec<f64> = ranked.iter().map(|r| r["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted by score: {scores:?}");
        let first = ranked[0]["index"].as_u64().unwrap();
        assert_eq!(ranked[0]["text"], set["passages"][first as usize]);
        if first == set["relevant"].as_u64().unwrap() {
            hits += 1;
        }
    }
    eprintln!("bi-encoder: relevant passage first on {hits} of {} sets", sets.len());
    assert!(hits >= 9, "relevant passage first on {hits} of {} sets", sets.len());
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn cross_encoders_match_transformers_logits_through_the_service() {
    for name in ["bert", "xlm-roberta"] {
        let (reranker, expected) = tiny(name);
        let h = serve(reranker).await;
        for item in expected["items"].as_array().unwrap().iter().filter(|i| i.get("query").is_some()) {
            let want = item["logit"].as_f64().unwrap();
            let body = json!({"query": item["query"], "texts": [item["passage"]], "raw_scores": true});
            let (status, v) = post(&h, "/rerank", body).await;
            assert_eq!(status, 200, "{v}");
            let got = v[0]["score"].as_f64().unwrap();
            assert!((got - want).abs() <= 1e-4, "{name} {}: raw {got} vs {want}", item["id"]);
            let (_, v) = post(&h, "/rerank", json!({"query": item["query"], "texts": [item["passage"]]})).await;
            let prob = v[0]["score"].as_f64().unwrap();
            assert!((prob - 1.0 / (1.0 + (-want).exp())).abs() <= 1e-4, "{name}: sigmoid score");
        }
        // Too long for the 64-position model without truncate; fine with it.
        let long = "the quick brown fox ".repeat(40);
        let (status, v) = post(&h, "/rerank", json!({"query": "fox", "texts": [long.clone()]})).await;
        assert_eq!(status, 422, "{v}");
        assert_eq!(v["error"]["param"], "texts.0");
        let (status, _) = post(&h, "/rerank", json!({"query": "fox", "texts": [long], "truncate": true})).await;
        assert_eq!(status, 200);
        h.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn tei_and_opea_shapes() {
    let h = serve(minilm()).await;
    // TEI refuses an empty `texts` with a 400 (OPEA's route passes an empty retrieval through).
    let (status, v) = post(&h, "/rerank", json!({"query": "q", "texts": []})).await;
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("texts")), "{v}");
    let (_, v) =
        post(&h, "/rerank", json!({"query": "red planet", "texts": ["Mars is red.", "Bread is tasty."]})).await;
    let first = v[0].as_object().unwrap();
    assert_eq!(first.keys().collect::<Vec<_>>(), ["index", "score"], "no text unless return_text");
    assert_eq!(first["index"], 0);

    let docs = json!([
        {"text": "Bread is baked from flour and water."},
        {"text": "Paris is the capital of France."},
        {"text": "France borders Spain and Germany."}
    ]);
    let (status, v) = post(
        &h,
        "/v1/reranking",
        json!({"retrieved_docs": docs, "initial_query": "What is the capital of France?", "top_n": 2}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["query"], "What is the capital of France?");
    assert_eq!(v["documents"].as_array().unwrap().len(), 2);
    assert_eq!(v["documents"][0], "Paris is the capital of France.");
    assert_eq!(v["max_new_tokens"], 1024, "an LLMParamsDoc with OPEA's defaults");
    assert_eq!(v["id"].as_str().unwrap().len(), 32);
    let (_, v) = post(&h, "/v1/reranking", json!({"retrieved_docs": docs, "initial_query": "capital of France"})).await;
    assert_eq!(v["documents"].as_array().unwrap().len(), 1, "top_n defaults to 1");

    let (status, v) = post(
        &h,
        "/v1/reranking",
        json!({"input": "What is the capital of France?", "retrieved_docs": ["Bread is baked.", {"text": "Paris is the capital of France."}], "top_n": 1}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["reranked_docs"].as_array().unwrap().len(), 1);
    assert_eq!(v["reranked_docs"][0]["text"], "Paris is the capital of France.");
    assert!(v["reranked_docs"][0]["score"].as_f64().is_some());

    let (status, v) = post(
        &h,
        "/v1/reranking",
        json!({"messages": "What is the capital of France?", "top_n": 1,
               "retrieved_docs": [{"text": "Bread is baked."}, {"text": "Paris is the capital of France."}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["documents"], json!(["Paris is the capital of France."]));
    assert_eq!(v["reranked_docs"][0]["text"], "Paris is the capital of France.");
    assert_eq!(v["messages"], "What is the capital of France?");

    let info: Value =
        comps_core::http_client().get(format!("{}/info", h.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["model_type"]["reranker"]["kind"], "bi-encoder");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let h = serve(minilm()).await;
    let cases = [
        ("/rerank", json!({"texts": ["a"]}), 422, "query"),
        ("/rerank", json!({"query": "q", "texts": "a"}), 422, "texts"),
        ("/rerank", json!({"query": "q", "texts": [1, 2]}), 422, "texts[0]"),
        ("/rerank", json!({"query": "q", "texts": vec!["a"; 17]}), 422, "texts"),
        ("/v1/reranking", json!({"retrieved_docs": [], "initial_query": "q", "top_n": 0}), 422, "top_n"),
        ("/v1/reranking", json!({"retrieved_docs": [{"text": "a"}]}), 422, "initial_query"),
        ("/v1/reranking", json!({"input": "q"}), 422, "retrieved_docs"),
    ];
    for (path, body, status, field) in cases {
        let (got, v) = post(&h, path, body.clone()).await;
        assert_eq!(got, status, "{path} {body}: {v}");
        let e: ErrorResponse = serde_json::from_value(v).unwrap();
        assert_eq!(e.error.param.as_deref(), Some(field), "{path} {body}: {}", e.error.message);
    }
    let r = comps_core::http_client().post(format!("{}/rerank", h.url())).body("{").send().await.unwrap();
    assert_eq!(r.status(), 400);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn remote_tei_proxy_and_its_failures() {
    let (addr, stats) = spawn_mock(MockConfig::default()).await.unwrap();
    let remote = RemoteReranker::new(&format!("http://{addr}/rerank"), None, Duration::from_secs(5)).unwrap();
    let h = serve(Arc::new(remote)).await;
    let (status, v) =
        post(&h, "/rerank", json!({"query": "red planet mars", "texts": ["bread", "mars is the red planet"]})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v[0]["index"], 1);
    assert_eq!(stats.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    h.shutdown().await.unwrap();

    let (bad, _) =
        spawn_mock(MockConfig { fail_first: 100, error_status: 500, ..MockConfig::default() }).await.unwrap();
    let remote = RemoteReranker::new(&format!("http://{bad}/rerank"), None, Duration::from_secs(5)).unwrap();
    let h = serve(Arc::new(remote)).await;
    let (status, v) = post(&h, "/rerank", json!({"query": "q", "texts": ["a"]})).await;
    assert_eq!(status, 502);
    assert!(v["error"]["message"].as_str().unwrap().contains("remote rerank"), "{v}");
    h.shutdown().await.unwrap();

    // The bi-encoder can take its vectors from an embedding service (here the mock's OpenAI
    // /v1/embeddings).
    let bi = BiEncoder::remote(&format!("http://{addr}/v1/embeddings"), Duration::from_secs(5));
    let h = serve(Arc::new(bi)).await;
    let (status, v) = post(&h, "/rerank", json!({"query": "same text", "texts": ["other", "same text"]})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v[0]["index"], 1, "identical text has cosine 1");
    h.shutdown().await.unwrap();
}

/// An over-long input is named as the request names it: `texts.<i>` with `i` the 0-based index
/// into `texts`, or `query` (they used to be off by one: "texts 1" for the only text, "texts 0"
/// for the query).
async fn over_long_inputs_are_named(reranker: Arc<dyn Reranker>, long: &str, what: &str) {
    let h = serve(reranker).await;
    let huge = "the quick brown fox ".repeat(300_000);
    let cases = [
        (json!({"query": "fox", "texts": [long]}), "texts.0"),
        (json!({"query": "fox", "texts": ["a short text", "another", long]}), "texts.2"),
        (json!({"query": long, "texts": ["a short text", "another"]}), "query"),
        // Refused by size before tokenizing.
        (json!({"query": "fox", "texts": ["a short text", huge]}), "texts.1"),
        (json!({"query": huge, "texts": ["a short text"]}), "query"),
    ];
    for (body, field) in cases {
        let (status, v) = post(&h, "/rerank", body).await;
        assert_eq!(status, 422, "{what} {field}: {v}");
        assert_eq!(v["error"]["param"], field, "{what}: {}", v["error"]["message"]);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(&format!("{field} ")) && msg.contains("truncate"), "{what}: {msg}");
    }
    let (status, v) = post(&h, "/rerank", json!({"query": huge, "texts": ["a", huge], "truncate": true})).await;
    assert_eq!(status, 200, "{what}: {v}");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn over_long_inputs_name_texts_by_index_or_the_query() {
    // MiniLM reads 256 tokens; the tiny cross-encoders 64.
    over_long_inputs_are_named(minilm(), &"the quick brown fox ".repeat(100), "bi-encoder").await;
    for name in ["bert", "xlm-roberta"] {
        over_long_inputs_are_named(tiny(name).0, &"the quick brown fox ".repeat(40), name).await;
    }
}

/// /health asks the reranker's model worker.
#[tokio::test]
async fn health_asks_the_model_worker() {
    let h = serve(minilm()).await;
    assert_eq!(minilm().health().check(), Ok(()));
    let r = comps_core::http_client().get(format!("{}/health", h.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    h.shutdown().await.unwrap();
}

/// The OpenAPI document names every route with its request and answer schemas.
#[tokio::test]
async fn openapi_document_covers_every_route() {
    let (addr, _) = spawn_mock(MockConfig::default()).await.unwrap();
    let remote = RemoteReranker::new(&format!("http://{addr}/rerank"), None, Duration::from_secs(5)).unwrap();
    let h = serve(Arc::new(remote)).await;
    let doc = comps_mock_backends::check_openapi(
        &h.url(),
        &[("post", "/rerank"), ("post", "/v1/reranking"), ("post", "/v1/rerank"), ("get", "/info")],
    )
    .await;
    let schemas = &doc["components"]["schemas"];
    let tei = &schemas["TeiRerankRequest"];
    assert_eq!(tei["required"], json!(["query", "texts"]), "{tei}");
    for field in ["query", "texts", "raw_scores", "return_text", "truncate", "truncation_direction"] {
        assert!(tei["properties"][field]["description"].is_string(), "{field}: {tei}");
    }
    let shapes = schemas["RerankingBody"]["oneOf"].as_array().unwrap();
    assert_eq!(shapes.len(), 3, "SearchedDoc, RerankingRequest, ChatCompletionRequest: {shapes:?}");
    let rank = &schemas["Rank"];
    assert_eq!(rank["required"], json!(["index", "score"]), "{rank}");
    h.shutdown().await.unwrap();
}

/// The Cohere / Jina-style `/v1/rerank`: documents as strings or `{text}`, `top_n`,
/// `return_documents`, the same order and scores as TEI's `/rerank`; bad requests are 400s
/// naming the field, as Cohere's API answers them.
#[tokio::test]
async fn cohere_style_rerank() {
    let h = serve(minilm()).await;
    let docs = ["Bread is baked from flour.", "Mars is the red planet.", "Tea grows on hills."];
    let (_, tei) = post(&h, "/rerank", json!({"query": "red planet", "texts": docs})).await;
    let body = json!({"model": "m", "query": "red planet", "documents": [docs[0], {"text": docs[1]}, docs[2]],
        "top_n": 2, "return_documents": true});
    let (status, v) = post(&h, "/v1/rerank", body).await;
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "top_n");
    for (r, t) in results.iter().zip(tei.as_array().unwrap()) {
        assert_eq!(r["index"], t["index"]);
        assert_eq!(r["relevance_score"], t["score"]);
    }
    assert_eq!(results[0]["index"], 1);
    assert_eq!(results[0]["document"]["text"], docs[1]);
    assert_eq!(v["model"], "m");
    let (_, plain) = post(&h, "/v1/rerank", json!({"query": "red planet", "documents": docs})).await;
    assert_eq!(plain["results"].as_array().unwrap().len(), 3, "all documents without top_n");
    assert!(plain["results"][0].get("document").is_none(), "no documents unless asked");
    for (body, field) in [
        (json!({"query": "q", "documents": []}), "documents"),
        (json!({"query": "q", "documents": ["a"], "top_n": 0}), "top_n"),
        (json!({"query": "q", "documents": vec!["a"; 17]}), "documents"),
        (json!({"documents": ["a"]}), "query"),
    ] {
        let (status, v) = post(&h, "/v1/rerank", body.clone()).await;
        assert_eq!((status, v["error"]["param"].as_str()), (400, Some(field)), "{body}: {v}");
    }
    h.shutdown().await.unwrap();
}
