//! YAML flows, and the `comps-flow` megaservice serving them over HTTP: results, errors as the
//! client sees them, streaming, and a client that leaves mid-stream.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::routing::post;
use comps_core::orchestrator::yaml::{FlowError, parse_flow};
use comps_core::orchestrator::{Extras, ServiceOrchestrator};
use comps_core::{CommonArgs, ErrorResponse, Json, LLMParams, MicroService, ServerHandle, ServiceResult, TextDoc};
use comps_mock_backends::{MockConfig, spawn_mock};
use comps_tests::{payloads, serve, tokens};
use futures::StreamExt;
use serde_json::{Value, json};

async fn add_opea(Json(d): Json<TextDoc>) -> ServiceResult<Json<Value>> {
    Ok(Json(json!({"text": format!("{}opea ", d.text_str())})))
}

async fn add_project(Json(d): Json<TextDoc>) -> ServiceResult<Json<Value>> {
    Ok(Json(json!({"text": format!("{}project!", d.text_str())})))
}

fn common() -> CommonArgs {
    CommonArgs::local()
}

async fn serve_flow(yaml: &str) -> ServerHandle {
    let orch = ServiceOrchestrator::from_yaml_str(yaml).expect("valid flow");
    let svc = MicroService::new("flow").host("127.0.0.1").port(0).endpoint("/v1/flow");
    comps_flow::server(orch, svc, &common()).bind().await.unwrap().spawn()
}

fn client() -> reqwest::Client {
    comps_core::http_client().clone()
}

#[tokio::test]
async fn yaml_flow_gives_opea_result() {
    let (s1, h1) = serve("s1", "/v1/add", post(add_opea)).await;
    let (s2, h2) = serve("s2", "/v1/add", post(add_project)).await;
    let yaml = format!(
        "opea_micro_services:\n  s1:\n    endpoint: {}\n  s2:\n    endpoint: {}\nopea_mega_service:\n  mega_flow:\n    - s1 >> s2\n",
        s1.endpoint_path(),
        s2.endpoint_path()
    );
    let orch = ServiceOrchestrator::from_yaml_str(&yaml).unwrap();
    let r = orch.schedule(json!({"text": "Hello, "}), LLMParams::default(), Extras::new()).await.unwrap();
    assert_eq!(r.results["s2/MicroService"].json().unwrap()["text"], "Hello, opea project!");

    // The same flow served by comps-flow.
    let flow = serve_flow(&yaml).await;
    let v: Value = client()
        .post(format!("{}/v1/flow", flow.url()))
        .json(&json!({"text": "Hello, "}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["text"], "Hello, opea project!");
    let health: Value =
        client().get(format!("{}/v1/health_check", flow.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["Service Title"], "flow");
    for h in [h1, h2, flow] {
        h.shutdown().await.unwrap();
    }
}

#[test]
fn yaml_groups_build_the_same_graph() {
    let yaml = r#"
opea_micro_services:
  s1: {endpoint: "http://127.0.0.1:1/a"}
  s2: {endpoint: "http://127.0.0.1:1/b", service_type: LLM, timeout_secs: 5, retries: 0}
  s3: {endpoint: "http://127.0.0.1:1/c"}
  s4: {endpoint: "http://127.0.0.1:1/d"}
  s5: {endpoint: "http://127.0.0.1:1/e"}
opea_mega_service:
  mega_flow:
    - (s1, s5) >> s2
    - s2 >> (s3, s4)
"#;
    let orch = ServiceOrchestrator::from_yaml_str(yaml).unwrap();
    let id = |s: &str| format!("{s}/MicroService");
    let edges = orch.graph().edges();
    for (a, b) in [("s1", "s2"), ("s5", "s2"), ("s2", "s3"), ("s2", "s4")] {
        assert!(edges.contains(&(id(a), id(b))), "{edges:?}");
    }
    assert_eq!(edges.len(), 4);
    assert_eq!(orch.graph().ind_nodes(), [id("s1"), id("s5")]);
    assert_eq!(orch.service(&id("s2")).unwrap().service_type, comps_core::ServiceType::Llm);
    let chain = parse_flow(
        "opea_micro_services:\n  a: {endpoint: 'http://h:1/x'}\n  b: {endpoint: 'http://h:1/x'}\n  c: {endpoint: 'http://h:1/x'}\n  d: {endpoint: 'http://h:1/x'}\nopea_mega_service:\n  mega_flow: ['(a, b) >> c >> d']\n",
    )
    .unwrap();
    assert_eq!(chain.edges.len(), 3);
}

#[test]
fn malformed_flows_name_the_problem() {
    let svc = "opea_micro_services:\n  s1: {endpoint: 'http://h:1/a'}\n  s2: {endpoint: 'http://h:1/b'}\n";
    let cases = [
        (format!("{svc}opea_mega_service:\n  mega_flow: ['s1 >> s9']\n"), "unknown node 's9'"),
        (format!("{svc}opea_mega_service:\n  mega_flow: ['(s1, s2 >> s1']\n"), "missing ')'"),
        (format!("{svc}opea_mega_service:\n  mega_flow: ['s1 >> s2', 's2 >> s1']\n"), "cycle"),
        (format!("{svc}opea_mega_service:\n  mega_flow: ['s1 >> s1']\n"), "itself"),
        (format!("{svc}opea_mega_service:\n  mega_flow: ['s1 >> ']\n"), "empty node name"),
        ("opea_micro_services:\n  s1: {endpoint: 'not a url'}\n".to_string(), "service 's1'"),
        ("opea_micro_services:\n  s1: {endpoint: 'http://h:1/a', service_type: ROBOT}\n".to_string(), "ROBOT"),
        ("opea_micro_services:\n  s1: {url: 'http://h:1/a'}\n".to_string(), "endpoint"),
        ("opea_micro_services: {}\n".to_string(), "no service"),
        ("just: [unclosed\n".to_string(), "not valid"),
    ];
    for (yaml, needle) in cases {
        let err = ServiceOrchestrator::from_yaml_str(&yaml).unwrap_err();
        assert!(err.to_string().contains(needle), "{yaml:?}: {err}");
    }
    assert!(matches!(ServiceOrchestrator::from_yaml_file("/nonexistent/flow.yaml"), Err(FlowError::Io { .. })));
}

fn llm_flow(addr: std::net::SocketAddr) -> String {
    format!(
        "opea_micro_services:\n  llm:\n    endpoint: http://{addr}/v1/chat/completions\n    service_type: LLM\n    timeout_secs: 5\n"
    )
}

#[tokio::test]
async fn flow_errors_reach_the_client_as_envelopes() {
    let (addr, _) =
        spawn_mock(MockConfig { fail_first: 1000, error_status: 500, ..MockConfig::default() }).await.unwrap();
    let flow = serve_flow(&llm_flow(addr)).await;
    let url = format!("{}/v1/flow", flow.url());
    let r = client().post(&url).json(&json!({"messages": "hi"})).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let e: ErrorResponse = r.json().await.unwrap();
    assert!(e.error.message.contains("llm/MicroService") && e.error.message.contains("500"), "{}", e.error.message);
    assert_eq!(e.error.r#type, "upstream_error");

    let r = client().post(&url).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = client().post(&url).json(&json!({"messages": "hi", "temperature": 9})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let e: ErrorResponse = r.json().await.unwrap();
    assert_eq!(e.error.param.as_deref(), Some("temperature"));

    let m = client().get(format!("{}/metrics", flow.url())).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("megaservice_request_pending 0"), "{m}");
    flow.shutdown().await.unwrap();
}

#[tokio::test]
async fn flow_streams_standard_chunks() {
    let (addr, _) = spawn_mock(MockConfig { tokens: 8, events_per_chunk: 4, ..MockConfig::default() }).await.unwrap();
    let flow = serve_flow(&llm_flow(addr)).await;
    let r = client()
        .post(format!("{}/v1/flow", flow.url()))
        .json(&json!({"messages": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let body = r.text().await.unwrap();
    assert_eq!(tokens(&body), (0..8).map(|i| format!("tok{i} ")).collect::<Vec<_>>());
    for p in payloads(&body) {
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
    }
    assert!(body.ends_with("data: [DONE]\n\n"));
    // The megaservice's statistics hold the request with its first-token latency.
    let stats: Value =
        client().get(format!("{}/v1/statistics", flow.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["flow"]["count"], 1);
    assert!(stats["flow"]["p50_latency_first_token"].as_f64().is_some(), "{stats}");
    assert!(stats["flow"]["p50_latency"].as_f64().is_some(), "{stats}");
    flow.shutdown().await.unwrap();
}

#[tokio::test]
async fn client_leaving_mid_stream_cancels_upstream_and_pending_returns_to_zero() {
    let (addr, mock) =
        spawn_mock(MockConfig { tokens: 200, token_delay_ms: 20, ..MockConfig::default() }).await.unwrap();
    let flow = serve_flow(&llm_flow(addr)).await;
    let r = client()
        .post(format!("{}/v1/flow", flow.url()))
        .json(&json!({"messages": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let pending = |text: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix("megaservice_request_pending "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(-1.0)
    };
    let m = client().get(format!("{}/metrics", flow.url())).send().await.unwrap().text().await.unwrap();
    assert_eq!(pending(&m), 1.0);
    drop(body);

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = client().get(format!("{}/metrics", flow.url())).send().await.unwrap().text().await.unwrap();
        let dropped = mock.streams_dropped.load(Ordering::SeqCst);
        if dropped == 1 && pending(&m) == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "upstream dropped {dropped}, pending {}", pending(&m));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mock.streams_completed.load(Ordering::SeqCst), 0);
    flow.shutdown().await.unwrap();
}

/// The flow's OpenAPI document names the endpoint it was configured with: POST, any JSON
/// object, answered with JSON or server-sent events.
#[tokio::test]
async fn openapi_document_names_the_configured_endpoint() {
    let yaml = "opea_micro_services:\n  s1:\n    endpoint: http://127.0.0.1:1/v1/add\nopea_mega_service:\n  mega_flow:\n    - s1\n";
    let orch = ServiceOrchestrator::from_yaml_str(yaml).expect("valid flow");
    let svc = MicroService::new("flow").host("127.0.0.1").port(0).endpoint("/v1/my/pipeline");
    let flow = comps_flow::server(orch, svc, &common()).bind().await.unwrap().spawn();
    let doc = comps_mock_backends::check_openapi(&flow.url(), &[("post", "/v1/my/pipeline")]).await;
    assert!(doc["paths"].get("/v1/flow").is_none(), "only the configured endpoint");
    let op = &doc["paths"]["/v1/my/pipeline"]["post"];
    assert_eq!(op["requestBody"]["required"], true, "{op}");
    assert_eq!(op["requestBody"]["content"]["application/json"]["schema"]["type"], "object", "{op}");
    let ok = op["responses"]["200"]["content"].as_object().unwrap();
    assert!(ok.contains_key("application/json") && ok.contains_key("text/event-stream"), "{op}");
    assert!(op["responses"]["default"].is_object(), "the error envelope: {op}");
    flow.shutdown().await.unwrap();
}
