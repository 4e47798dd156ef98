//! One ChatQnA request is one trace: the real `chatqna`, `comps-embedding`, `comps-retriever`,
//! `comps-rerank` and `comps-llm` binaries (MiniLM, SmolLM2), each exporting its spans over OTLP
//! (HTTP, protobuf) to a receiver in this test that decodes them with the official
//! `opentelemetry-proto` definitions. The spans of all five services share one trace id and
//! chain: chatqna's request span → its node span (attempts, status, bytes) → the call's client
//! span → the service's request span. A caller's own `traceparent` makes the request part of the caller's trace.
//! Inside the services: the embedder's and rerank's `tokenize`, `queue wait` and `forward`
//! spans, the retriever's `search`, and the LLM's GenAI span (`chat <model>` with
//! `gen_ai.*` attributes) over the engine's `queue wait`, `prefill` and `decode`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use comps_tests::procs::{Proc, workspace_root};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

#[derive(Debug, Clone)]
struct SpanRow {
    service: String,
    name: String,
    trace: String,
    span: String,
    parent: String,
    attrs: BTreeMap<String, String>,
}

fn value(v: &AnyValue) -> String {
    match v {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<SpanRow>>>);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn export(State(r): State<Received>, body: Bytes) -> impl axum::response::IntoResponse {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut rows = r.0.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|res| res.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for sp in ss.spans {
                rows.push(SpanRow {
                    service: service.clone(),
                    name: sp.name,
                    trace: hex(&sp.trace_id),
                    span: hex(&sp.span_id),
                    parent: hex(&sp.parent_span_id),
                    attrs: sp
                        .attributes
                        .iter()
                        .filter_map(|kv| Some((kv.key.clone(), value(kv.value.as_ref()?.value.as_ref()?))))
                        .collect(),
                });
            }
        }
    }
    (axum::http::StatusCode::OK, ExportTraceServiceResponse::default().encode_to_vec())
}

async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(export)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

fn model(name: &str) -> String {
    workspace_root().join("models").join(name).to_string_lossy().into_owned()
}

/// The spans of `trace`, once every service of `want` has sent its request span (a span ends,
/// and is exported, after its children, so theirs have come too).
async fn trace_of(received: &Received, trace: &str, want: &[&str]) -> Vec<SpanRow> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<SpanRow> = received.0.lock().unwrap().iter().filter(|s| s.trace == trace).cloned().collect();
        let services: BTreeSet<&str> =
            spans.iter().filter(|s| s.name.starts_with("POST ")).map(|s| s.service.as_str()).collect();
        if want.iter().all(|w| services.contains(w)) {
            return spans;
        }
        assert!(Instant::now() < deadline, "trace {trace}: spans only from {services:?}: {spans:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_chatqna_request_is_one_trace_across_every_service() {
    let (otlp, received) = receiver().await;
    let data = std::env::temp_dir().join(format!("comps-trace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let up = Duration::from_secs(180);
    // Export quickly; RUST_LOG=warn hides the log, not the traces.
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("RUST_LOG", "warn,comps_core::server=info"),
    ];
    let minilm = model("all-MiniLM-L6-v2");
    let embedding = Proc::start("comps-embedding", &["--model", &minilm], &otel, up);
    let embed_url = format!("{}/embed", embedding.url());
    let retriever = Proc::start(
        "comps-retriever",
        &["--embedding-url", &embed_url, "--data-dir", &data.to_string_lossy(), "--chunk-tokenizer", &minilm],
        &otel,
        up,
    );
    let rerank = Proc::start("comps-rerank", &["--model", &minilm], &otel, up);
    // The flag instead of the environment.
    let llm = Proc::start(
        "comps-llm",
        &["--model", &model("SmolLM2-135M-Instruct"), "--otlp-endpoint", &otlp],
        &otel[1..],
        up,
    );
    let ports = [
        ("EMBEDDING_SERVER_PORT", embedding.addr.port().to_string()),
        ("RETRIEVER_SERVICE_PORT", retriever.addr.port().to_string()),
        ("RERANK_SERVER_PORT", rerank.addr.port().to_string()),
        ("LLM_SERVER_PORT", llm.addr.port().to_string()),
    ];
    let mut env: Vec<(&str, &str)> = ports.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend(otel);
    let chatqna = Proc::start("chatqna", &[], &env, up);
    let client = comps_core::http_client();

    // A document, so that the retriever finds something and rerank is called.
    let part = reqwest::multipart::Part::bytes(b"The Quillon observatory dome is painted saffron.".to_vec())
        .file_name("quillon.txt");
    let r = client
        .post(format!("{}/v1/dataprep/ingest", chatqna.url()))
        .multipart(reqwest::multipart::Form::new().part("files", part))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    // The caller's trace: ours.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let r = client
        .post(format!("{}/v1/chatqna", chatqna.url()))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&json!({"messages": "What colour is the Quillon observatory dome?", "stream": false, "max_tokens": 8}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let all = ["chatqna", "comps-embedding", "comps-retriever", "comps-rerank", "comps-llm"];
    let spans = trace_of(&received, trace, &all).await;
    let by_id = |id: &str| spans.iter().find(|s| s.span == id);
    let root = spans
        .iter()
        .find(|s| s.service == "chatqna" && s.name == "POST /v1/chatqna")
        .unwrap_or_else(|| panic!("chatqna's request span: {spans:#?}"));
    assert_eq!(root.parent, caller, "the caller's span is the parent of chatqna's");
    for service in &all[1..] {
        let server = spans
            .iter()
            .find(|s| s.service == *service && s.name.starts_with("POST "))
            .unwrap_or_else(|| panic!("{service}'s request span: {spans:#?}"));
        // service request ← chatqna's client call ← chatqna's node span ← chatqna's request.
        let call = by_id(&server.parent).unwrap_or_else(|| panic!("{service}'s parent: {spans:#?}"));
        assert_eq!((call.service.as_str(), call.name.starts_with("POST ")), ("chatqna", true), "{call:?}");
        let node = by_id(&call.parent).unwrap_or_else(|| panic!("{call:?}'s parent: {spans:#?}"));
        assert!(node.service == "chatqna" && node.name.starts_with("node "), "{node:?}");
        assert_eq!(node.parent, root.span, "{node:?} hangs under chatqna's request span");
    }
    let nodes: BTreeSet<&str> = spans.iter().filter(|s| s.name.starts_with("node ")).map(|s| s.name.as_str()).collect();
    assert_eq!(nodes.len(), 4, "one span per node: {nodes:?}");
    for node in spans.iter().filter(|s| s.name.starts_with("node ")) {
        let attr = |k: &str| node.attrs.get(k).map(String::as_str);
        assert_eq!((attr("node.attempts"), attr("node.status")), (Some("1"), Some("200")), "{node:?}");
        for bytes in ["node.request_bytes", "node.response_bytes"] {
            assert!(attr(bytes).and_then(|b| b.parse::<u64>().ok()).is_some_and(|b| b > 0), "{bytes} of {node:?}");
        }
    }

    // Inside the services.
    let find = |service: &str, name: &str| -> &SpanRow {
        spans
            .iter()
            .find(|s| s.service == service && s.name == name)
            .unwrap_or_else(|| panic!("no {name:?} span from {service}: {spans:#?}"))
    };
    // Whether `span` hangs (at any depth) under `ancestor`.
    let under = |span: &SpanRow, ancestor: &SpanRow| {
        let mut at = span.parent.clone();
        while let Some(p) = by_id(&at) {
            if p.span == ancestor.span {
                return true;
            }
            at = p.parent.clone();
        }
        false
    };
    let number = |s: &SpanRow, key: &str| -> f64 {
        s.attrs.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{key} of {s:?}"))
    };
    let embed_request = find("comps-embedding", "POST /embed");
    let named = |service: &str, prefix: &str| -> &SpanRow {
        spans
            .iter()
            .find(|s| s.service == service && s.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?}... span from {service}: {spans:#?}"))
    };
    let embed = named("comps-embedding", "embeddings ");
    assert_eq!(embed.name, format!("embeddings {}", embed.attrs["gen_ai.request.model"]));
    assert!(under(embed, embed_request), "{embed:?}");
    assert_eq!(embed.attrs["gen_ai.operation.name"], "embeddings");
    assert!(number(embed, "gen_ai.usage.input_tokens") > 0.0, "{embed:?}");
    for name in ["tokenize", "queue wait", "forward"] {
        let s = find("comps-embedding", name);
        assert!(under(s, embed), "{s:?} under {embed:?}");
    }
    assert!(number(find("comps-embedding", "forward"), "batch_size") >= 1.0);
    let rerank_request = find("comps-rerank", "POST /rerank");
    for name in ["queue wait", "forward"] {
        let s = find("comps-rerank", name);
        assert!(under(s, rerank_request), "{s:?} under {rerank_request:?}");
    }
    let search = find("comps-retriever", "search");
    assert!(under(search, find("comps-retriever", "POST /v1/retrieval")), "{search:?}");
    let chat = named("comps-llm", "chat ");
    assert_eq!(chat.name, format!("chat {}", chat.attrs["gen_ai.request.model"]));
    assert!(under(chat, find("comps-llm", "POST /v1/chat/completions")), "{chat:?}");
    assert_eq!(chat.attrs["gen_ai.operation.name"], "chat");
    assert!(number(chat, "gen_ai.usage.input_tokens") > 0.0, "{chat:?}");
    assert!((1.0..=8.0).contains(&number(chat, "gen_ai.usage.output_tokens")), "{chat:?}");
    let finish = &chat.attrs["gen_ai.response.finish_reasons"];
    assert!(finish == r#"["length"]"# || finish == r#"["stop"]"#, "{chat:?}");
    assert!(number(chat, "time_to_first_token_ms") > 0.0, "{chat:?}");
    for name in ["queue wait", "prefill", "decode"] {
        let s = find("comps-llm", name);
        assert_eq!(s.parent, chat.span, "{s:?} is a child of {chat:?}");
    }
    assert_eq!(number(find("comps-llm", "decode"), "generated_tokens"), number(chat, "gen_ai.usage.output_tokens"));
    drop((chatqna, llm, rerank, retriever, embedding));
    let _ = std::fs::remove_dir_all(&data);
}
