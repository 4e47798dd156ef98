//! Retriever scenarios over HTTP with real all-MiniLM-L6-v2 embeddings, run against the
//! embedded store (`tests/retriever.rs`) and Postgres + pgvector (`tests/pgvector.rs`) alike.
//! Each takes the base URL of a retriever already started with the right options.

use serde_json::{Value, json};

use super::{fixture, post, upload};

const DOCS: [&str; 7] =
    ["lighthouse.txt", "orchard.md", "volcano.html", "glacier.pdf", "bakery.json", "trains.jsonl", "birds.csv"];

async fn top_text(h: &str, query: &str) -> String {
    let (status, v) = post(h, "/v1/retrieval", json!({"text": query, "k": 3})).await;
    assert_eq!(status, 200, "{v}");
    v["retrieved_docs"][0]["text"].as_str().unwrap_or_default().to_string()
}

pub async fn every_file_type_is_ingested_and_the_right_chunk_comes_first(h: &str) {
    let files: Vec<(&str, Vec<u8>)> = DOCS.iter().map(|n| (*n, fixture(n))).collect();
    let (status, v) = upload(h, &files, &[("chunk_size", "200"), ("chunk_overlap", "20")]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((&v["status"], &v["message"]), (&json!(200), &json!("Data preparation succeeded")), "{v}");
    // What was stored: every file with its chunk count, and the total.
    let stored = v["files"].as_array().unwrap();
    assert_eq!(stored.iter().map(|f| f["name"].as_str().unwrap()).collect::<Vec<_>>(), DOCS);
    assert!(stored.iter().all(|f| f["chunks"].as_u64().unwrap() >= 1), "{v}");
    assert_eq!(v["chunks"].as_u64(), Some(stored.iter().map(|f| f["chunks"].as_u64().unwrap()).sum()));

    let cases = [
        ("When was the Varnholm lighthouse built?", "1887"),
        ("How many quince trees grow in the orchard?", "412"),
        ("When did Mount Orsk last erupt?", "1653"),
        ("How far did the Helmar glacier retreat?", "840"),
        ("What is the specialty of the Crumb and Co bakery?", "cardamom"),
        ("How long does the Blue Meridian train take from Aldra to Kessen?", "95 minutes"),
        ("What is the wingspan of the grey heron?", "185"),
    ];
    for (q, fact) in cases {
        let top = top_text(h, q).await;
        assert!(top.contains(fact), "{q:?}: top chunk {top:?} lacks {fact:?}");
    }

    // get lists the files as OPEA does.
    let (_, list) = post(h, "/v1/dataprep/get", json!({})).await;
    let mut names: Vec<&str> = list.as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    names.sort();
    let mut want = DOCS.to_vec();
    want.sort();
    assert_eq!(names, want);
    assert_eq!(list[0]["type"], "File");
    assert_eq!(list[0]["parent"], "");
    assert_eq!(list[0]["id"], list[0]["name"]);

    // A second upload of the same name is refused with OPEA's message.
    let (status, v) = upload(h, &[("orchard.md", fixture("orchard.md"))], &[]).await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("Uploaded file orchard.md already exists"), "{v}");

    // Delete one file, then everything.
    let (status, v) = post(h, "/v1/dataprep/delete", json!({"file_path": "volcano.html"})).await;
    assert_eq!((status, v), (200, json!({"status": true})));
    assert!(!top_text(h, "When did Mount Orsk last erupt?").await.contains("1653"));
    let (status, v) = post(h, "/v1/dataprep/delete", json!({"file_path": "volcano.html"})).await;
    assert_eq!(status, 404);
    assert!(v["error"]["message"].as_str().unwrap().contains("File volcano.html not found"), "{v}");
    let (_, list) = post(h, "/v1/dataprep/get", json!({})).await;
    assert_eq!(list.as_array().unwrap().len(), 6);
    let (status, _) = post(h, "/v1/dataprep/delete", json!({"file_path": "all"})).await;
    assert_eq!(status, 200);
    let (_, list) = post(h, "/v1/dataprep/get", json!({})).await;
    assert_eq!(list, json!([]));
    // An empty store answers an empty list.
    let (status, v) = post(h, "/v1/retrieval", json!({"text": "lighthouse"})).await;
    assert_eq!(status, 200);
    assert_eq!(v["retrieved_docs"], json!([]));
}

pub async fn mmr_diversifies_and_both_thresholds_filter(h: &str) {
    // Three near-identical paragraphs about tide pools and one different paragraph on the same topic.
    let text = "Tide pools on the Korrin coast shelter green sea anemones and small crabs.\n\n\
                Tide pools on the Korrin coast shelter green sea anemones and tiny crabs.\n\n\
                The tide pools of the Korrin coast shelter green anemones and small crabs.\n\n\
                Visitors to the Korrin coast must keep off the rocks at high tide because the waves are dangerous.";
    let (status, v) =
        upload(h, &[("tides.txt", text.as_bytes().to_vec())], &[("chunk_size", "100"), ("chunk_overlap", "0")]).await;
    assert_eq!(status, 200, "{v}");
    let q = "What lives in the Korrin coast tide pools?";
    let (_, sim) = post(h, "/v1/retrieval", json!({"input": q, "k": 2})).await;
    let texts = |v: &Value| -> Vec<String> {
        v["retrieved_docs"].as_array().unwrap().iter().map(|d| d["text"].as_str().unwrap().to_string()).collect()
    };
    let sim_texts = texts(&sim);
    assert_eq!(sim_texts.len(), 2);
    assert!(sim_texts.iter().all(|t| t.contains("anemones")), "similarity returns the near-duplicates: {sim_texts:?}");
    let (_, mmr) =
        post(h, "/v1/retrieval", json!({"input": q, "k": 2, "search_type": "mmr", "fetch_k": 10, "lambda_mult": 0.2}))
            .await;
    let mmr_texts = texts(&mmr);
    assert_eq!(mmr_texts.len(), 2);
    assert!(mmr_texts[0].contains("anemones"), "{mmr_texts:?}");
    assert!(mmr_texts[1].contains("high tide"), "mmr brings the different chunk second: {mmr_texts:?}");

    // Score threshold: relevance in [0, 1]; every returned chunk meets it.
    let (_, all) = post(
        h,
        "/v1/retrieval",
        json!({"input": q, "k": 4, "search_type": "similarity_score_threshold", "score_threshold": 0.0}),
    )
    .await;
    assert_eq!(all["retrieved_docs"].as_array().unwrap().len(), 4);
    let sims: Vec<f64> = all["retrieved_docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["metadata"]["similarity"].as_f64().unwrap())
        .collect();
    let cut = (sims[1] + sims[2]) / 2.0;
    let (_, some) = post(
        h,
        "/v1/retrieval",
        json!({"input": q, "k": 4, "search_type": "similarity_score_threshold", "score_threshold": cut}),
    )
    .await;
    assert_eq!(some["retrieved_docs"].as_array().unwrap().len(), 2, "threshold {cut} between {sims:?}");
    // Distance threshold: cosine distance at most the threshold.
    let max_distance = 1.0 - cut;
    let (_, near) = post(
        h,
        "/v1/retrieval",
        json!({"input": q, "k": 4, "search_type": "similarity_distance_threshold", "distance_threshold": max_distance}),
    )
    .await;
    assert_eq!(near["retrieved_docs"].as_array().unwrap().len(), 2);
    let (_, none) = post(
        h,
        "/v1/retrieval",
        json!({"input": q, "k": 4, "search_type": "similarity_distance_threshold", "distance_threshold": 0.0001}),
    )
    .await;
    assert_eq!(none["retrieved_docs"], json!([]));

    // The ChatCompletionRequest shape comes back with its documents filled.
    let (status, chat) = post(h, "/v1/retrieval", json!({"messages": q, "k": 1})).await;
    assert_eq!(status, 200, "{chat}");
    assert_eq!(chat["retrieved_docs"].as_array().unwrap().len(), 1);
    assert!(chat["documents"][0].as_str().unwrap().contains("anemones"));
    assert_eq!(chat["messages"], q);
}

/// The server must have been started with `max_upload_bytes = 4096`; `data_dir` is its data
/// directory.
pub async fn bad_input_is_refused_and_nothing_is_written(h: &str, data_dir: &std::path::Path) {
    type Case<'a> = (Vec<(&'a str, Vec<u8>)>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("../../evil.txt", b"x".to_vec())], vec![], 400, "invalid file name"),
        (vec![("..\\evil.txt", b"x".to_vec())], vec![], 400, "invalid file name"),
        (vec![("tool.exe", b"MZ".to_vec())], vec![], 400, "unsupported file type"),
        (vec![], vec![("link_list", "[\"http://127.0.0.1:9/secret\"]")], 400, "non-public address"),
        (vec![], vec![("link_list", "[\"http://169.254.169.254/latest/meta-data\"]")], 400, "non-public address"),
        (vec![], vec![("link_list", "[\"file:///etc/passwd\"]")], 400, "only http and https"),
        (vec![("big.txt", vec![b'a'; 10_000])], vec![], 413, "larger than"),
        (vec![], vec![("link_list", "not json")], 400, "link_list must be a JSON list"),
        (vec![], vec![], 400, "Must provide either a file or a string list."),
        (vec![("ok.txt", b"fine".to_vec())], vec![("chunk_size", "ten")], 422, "chunk_size"),
        (
            vec![("ok.txt", b"fine".to_vec())],
            vec![("chunk_size", "100"), ("chunk_overlap", "100")],
            422,
            "chunk_overlap",
        ),
        (vec![("broken.json", b"{nope".to_vec())], vec![], 400, "not valid JSON"),
    ];
    for (files, extra, status, message) in cases {
        let (s, v) = upload(h, &files, &extra).await;
        assert_eq!(s, status, "{extra:?} -> {v}");
        assert!(v["error"]["message"].as_str().unwrap_or_default().contains(message), "{extra:?} -> {v}");
    }
    let (_, list) = post(h, "/v1/dataprep/get", json!({})).await;
    assert_eq!(list, json!([]), "nothing was stored");
    // Nothing written outside the data directory, and no upload kept inside it.
    assert!(!data_dir.join("evil.txt").exists() && !data_dir.parent().unwrap().join("evil.txt").exists());
    let kept: Vec<_> = walk(&data_dir.join("uploads"));
    assert!(kept.is_empty(), "no upload kept: {kept:?}");
    // Retrieval with a malformed body names the field.
    let (s, v) = post(h, "/v1/retrieval", json!({"text": "x", "embedding": [0.1, 0.2], "search_type": "fuzzy"})).await;
    assert_eq!(s, 422);
    assert_eq!(v["error"]["param"], "search_type");
    let (s, v) = post(h, "/v1/dataprep/delete", json!({})).await;
    assert_eq!(s, 422);
    assert_eq!(v["error"]["param"], "file_path");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `start` starts a retriever with private links allowed and returns its base URL.
pub async fn links_are_fetched_and_chunked_when_private_addresses_are_allowed(h: &str) {
    use axum::routing::get;
    let page =
        "<html><body><h1>Quarry notes</h1><p>The Feldspar quarry closed in 1974 after the flood.</p></body></html>";
    let app = axum::Router::new()
        .route("/page", get(move || async move { ([("content-type", "text/html")], page) }))
        .route("/moved", get(|| async { axum::response::Redirect::temporary("/page") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let link = format!("http://{addr}/moved");
    let (status, v) = upload(h, &[], &[("link_list", &json!([link]).to_string())]).await;
    assert_eq!(status, 200, "{v}");
    assert!(top_text(h, "When did the Feldspar quarry close?").await.contains("1974"));
    let (_, list) = post(h, "/v1/dataprep/get", json!({})).await;
    assert_eq!(list[0]["name"], link.as_str());
}

/// The value of the metric line starting with `series` on the retriever's `/metrics`.
async fn metric(h: &str, series: &str) -> f64 {
    let text = comps_core::http_client().get(format!("{h}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} on /metrics:\n{text}"))
}

/// `/metrics` has the store's size (files and chunks, over every collection, kept after each
/// change) and the searches' latency, labelled with the store's kind.
pub async fn store_size_and_search_latency_are_on_metrics(h: &str, store: &str) {
    let files = format!("retriever_store_files{{store=\"{store}\"}}");
    let chunks = format!("retriever_store_chunks{{store=\"{store}\"}}");
    let searches = format!("retriever_search_duration_seconds_count{{store=\"{store}\"}}");
    assert_eq!(metric(h, &files).await, 0.0);
    assert_eq!(metric(h, &chunks).await, 0.0);
    let (status, v) = upload(h, &[("lighthouse.txt", fixture("lighthouse.txt"))], &[]).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = upload(h, &[("orchard.md", fixture("orchard.md"))], &[("index_name", "other")]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(metric(h, &files).await, 2.0, "files of both collections");
    let stored = metric(h, &chunks).await;
    assert!(stored >= 2.0, "{stored} chunks");
    let before = metric(h, &searches).await;
    for _ in 0..3 {
        assert!(!top_text(h, "Who keeps the lighthouse?").await.is_empty());
    }
    assert_eq!(metric(h, &searches).await, before + 3.0, "each search timed once");
    let (status, v) = post(h, "/v1/dataprep/delete", json!({"file_path": "lighthouse.txt"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(metric(h, &files).await, 1.0);
    assert!(metric(h, &chunks).await < stored);
}
