//! The orchestrator against real microservices on loopback: OPEA's tests/cores/mega behaviours,
//! and the failures OPEA gets wrong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use comps_core::orchestrator::{Dag, Extras, GraphError, Hooks, NodeContext, NodePolicy, ServiceOrchestrator};
use comps_core::{
    Json, LLMParams, RetrieverParms, SamplingParams, SearchParams, ServiceError, ServiceResult, ServiceType, TextDoc,
};
use comps_mock_backends::{MockConfig, spawn_mock};
use comps_tests::{collect, mock_node, serve, tokens};
use serde_json::{Value, json};

fn params(stream: bool) -> LLMParams {
    LLMParams { stream, ..LLMParams::default() }
}

async fn add_opea(Json(d): Json<TextDoc>) -> ServiceResult<Json<Value>> {
    Ok(Json(json!({"text": format!("{}opea ", d.text_str())})))
}

async fn add_project(Json(d): Json<TextDoc>) -> ServiceResult<Json<Value>> {
    Ok(Json(json!({"text": format!("{}project!", d.text_str())})))
}

#[tokio::test]
async fn two_chained_services() {
    let (s1, h1) = serve("s1", "/v1/add", post(add_opea)).await;
    let (s2, h2) = serve("s2", "/v1/add", post(add_project)).await;
    let mut mega = ServiceOrchestrator::new();
    mega.add(s1.clone()).unwrap().add(s2.clone()).unwrap();
    mega.flow_to(&s1, &s2).unwrap();
    let r = mega.schedule(json!({"text": "hello, "}), params(false), Extras::new()).await.unwrap();
    assert_eq!(r.results["s2/MicroService"].json().unwrap()["text"], "hello, opea project!");
    assert_eq!(r.leaf_json().unwrap()["text"], "hello, opea project!");
    assert_eq!(mega.metrics().pending.get(), 0);
    assert_eq!(mega.metrics().request.get_sample_count(), 1, "non-streamed latency recorded");
    h1.shutdown().await.unwrap();
    h2.shutdown().await.unwrap();
}

async fn sleep_add(Json(d): Json<TextDoc>) -> ServiceResult<Json<Value>> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Json(json!({"text": format!("{}+", d.text_str())})))
}

#[tokio::test]
async fn independent_nodes_run_concurrently() {
    let (s1, h1) = serve("s1", "/v1/add", post(sleep_add)).await;
    let (s2, h2) = serve("s2", "/v1/add", post(sleep_add)).await;
    let (s3, h3) = serve("s3", "/v1/add", post(sleep_add)).await;
    let mut mega = ServiceOrchestrator::new();
    mega.add(s1.clone()).unwrap().add(s2.clone()).unwrap().add(s3.clone()).unwrap();
    mega.flow_to(&s1, &s2).unwrap().flow_to(&s1, &s3).unwrap();
    let t0 = Instant::now();
    let (a, b) = tokio::join!(
        mega.schedule(json!({"text": "a"}), params(false), Extras::new()),
        mega.schedule(json!({"text": "b"}), params(false), Extras::new()),
    );
    let elapsed = t0.elapsed();
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.results.len(), 3);
    assert_eq!(b.results["s3/MicroService"].json().unwrap()["text"], "b++");
    assert!(elapsed < Duration::from_millis(3000), "two requests took {elapsed:?}; expected ~2 s, not 4+");
    assert!(elapsed >= Duration::from_millis(1900));
    for h in [h1, h2, h3] {
        h.shutdown().await.unwrap();
    }
}

async fn blacklist_by_text(Json(d): Json<TextDoc>) -> ServiceResult<Json<Value>> {
    let text = d.text_str();
    let bl: Vec<&str> = if text.contains("Hi") {
        vec![]
    } else if text.contains("Bye") {
        vec![".*"]
    } else if text.contains("Hola") {
        vec!["s2"]
    } else {
        vec!["s3"]
    };
    Ok(Json(json!({"text": format!("{text}OPEA Project!"), "downstream_black_list": bl})))
}

#[tokio::test]
async fn downstream_black_list_prunes_the_runtime_graph() {
    let (s1, h1) = serve("s1", "/v1/add", post(blacklist_by_text)).await;
    let (s2, h2) = serve("s2", "/v1/add", post(add_opea)).await;
    let (s3, h3) = serve("s3", "/v1/add", post(add_opea)).await;
    let (s4, h4) = serve("s4", "/v1/add", post(add_opea)).await;
    let mut mega = ServiceOrchestrator::new();
    for s in [&s1, &s2, &s3, &s4] {
        mega.add(s.clone()).unwrap();
    }
    mega.flow_to(&s1, &s2).unwrap().flow_to(&s1, &s3).unwrap().flow_to(&s3, &s4).unwrap();
    for (input, results, leaves) in [("Hi!", 4, 2), ("Bye!", 1, 1), ("Hola!", 3, 1), ("Other!", 2, 1)] {
        let r = mega.schedule(json!({"text": input}), params(false), Extras::new()).await.unwrap();
        assert_eq!(r.results.len(), results, "{input}: results {:?}", r.results.keys());
        assert_eq!(r.runtime_graph.all_leaves().len(), leaves, "{input}: leaves {:?}", r.runtime_graph.all_leaves());
    }
    // The cut is for that request only.
    assert_eq!(mega.graph().edges().len(), 3);

    // Everything cut while streaming: the node's text comes back as a one-event stream.
    let mut r = mega.schedule(json!({"text": "Bye!"}), params(true), Extras::new()).await.unwrap();
    let body = collect(r.take_stream().expect("stream")).await.unwrap();
    assert_eq!(tokens(&body), vec!["Bye!OPEA Project!".to_string()]);
    assert!(body.ends_with("data: [DONE]\n\n"));
    assert_eq!(mega.metrics().pending.get(), 0);
    for h in [h1, h2, h3, h4] {
        h.shutdown().await.unwrap();
    }
}

async fn tilde_guard(Json(d): Json<TextDoc>) -> ServiceResult<Json<Value>> {
    Ok(Json(json!({"text": format!("{} ~~~", d.text_str())})))
}

#[tokio::test]
async fn streaming_llm_feeds_an_output_guard_sentence_by_sentence() {
    let (addr, mock) =
        spawn_mock(MockConfig { reply: Some(" OPEA is great. I think  so.".into()), ..MockConfig::default() })
            .await
            .unwrap();
    let s0 = mock_node("s0", addr, "/v1/chat/completions", ServiceType::Llm);
    let (s1, h1) = serve("s1", "/v1/add", post(tilde_guard)).await;
    let mut mega = ServiceOrchestrator::new();
    mega.add(s0.clone()).unwrap().add(s1.clone()).unwrap();
    mega.flow_to(&s0, &s1).unwrap();
    let mut r = mega.schedule(json!({"text": "hello, "}), params(true), Extras::new()).await.unwrap();
    assert!(r.results.contains_key("s1/MicroService"), "{:?}", r.results.keys());
    let body = collect(r.take_stream().unwrap()).await.unwrap();
    let toks: Vec<String> = tokens(&body).iter().map(|t| t.trim().to_string()).collect();
    assert_eq!(toks, ["OPEA", "is", "great.", "~~~", "I", "think", "so.", "~~~"]);
    let m = mega.metrics();
    assert_eq!(m.request.get_sample_count(), 1);
    assert_eq!(m.first_token.get_sample_count(), 1);
    assert_eq!(m.inter_token.get_sample_count(), 7);
    assert_eq!(m.pending.get(), 0);
    assert_eq!(mock.streams_completed.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The metrics parse as Prometheus text with OPEA's names.
    let registry = comps_core::metrics::Metrics::new();
    m.register_into(&registry);
    let text = registry.render();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    for name in [
        "megaservice_first_token_latency_count",
        "megaservice_inter_token_latency_count",
        "megaservice_request_latency_count",
        "megaservice_request_pending",
    ] {
        assert!(scrape.samples.iter().any(|s| s.metric == name), "{name} missing");
    }
    h1.shutdown().await.unwrap();
}

#[tokio::test]
async fn llm_params_and_streams_pass_through_in_order() {
    // Several events per TCP chunk, and events split across chunks: all delivered, in order.
    for cfg in [
        MockConfig { tokens: 32, events_per_chunk: 5, ..MockConfig::default() },
        MockConfig { tokens: 32, events_per_chunk: 3, split_events: true, ..MockConfig::default() },
        MockConfig { tokens: 32, ..MockConfig::default() },
    ] {
        let (addr, _) = spawn_mock(cfg.clone()).await.unwrap();
        let llm = mock_node("llm", addr, "/v1/chat/completions", ServiceType::Llm);
        let mut mega = ServiceOrchestrator::new();
        mega.add(llm).unwrap();
        let mut r = mega.schedule(json!({"messages": "hi"}), params(true), Extras::new()).await.unwrap();
        let body = collect(r.take_stream().unwrap()).await.unwrap();
        let expected: Vec<String> = (0..32).map(|i| format!("tok{i} ")).collect();
        assert_eq!(tokens(&body), expected, "{cfg:?}");
        assert!(body.ends_with("data: [DONE]\n\n"));
        assert_eq!(body.matches("[DONE]").count(), 1);
        assert_eq!(mega.metrics().first_token.get_sample_count(), 1);
        assert_eq!(mega.metrics().inter_token.get_sample_count(), 31);
    }
}

async fn echo_inputs(Json(v): Json<Value>) -> ServiceResult<Json<Value>> {
    Ok(Json(json!({"seen": v})))
}

struct KFromExtras;
impl Hooks for KFromExtras {
    fn align_inputs(&self, mut inputs: Value, ctx: &mut NodeContext<'_>) -> Result<Value, ServiceError> {
        let p = ctx.extras.get::<RetrieverParms>().ok_or_else(|| ServiceError::Internal("no extras".into()))?;
        inputs["k"] = json!(p.search.k);
        inputs["node"] = json!(ctx.node);
        inputs["type"] = json!(ctx.service.service_type.opea_name());
        Ok(inputs)
    }
    fn align_outputs(&self, mut out: Value, inputs: &Value, ctx: &mut NodeContext<'_>) -> Result<Value, ServiceError> {
        out["k_was"] = inputs["k"].clone();
        out["max_tokens"] = json!(ctx.llm_params.map(|p| p.sampling.max_tokens));
        Ok(out)
    }
}

#[tokio::test]
async fn extras_and_llm_params_reach_the_hooks_and_llm_nodes() {
    let (s, h) = serve("retriever", "/v1/retrieval", post(echo_inputs)).await;
    let (llm, hl) = serve("llm", "/v1/chat/completions", post(echo_inputs)).await;
    let llm = llm.service_type(ServiceType::Llm);
    let mut mega = ServiceOrchestrator::new().with_hooks(Arc::new(KFromExtras));
    mega.add(s.clone()).unwrap().add(llm.clone()).unwrap();
    mega.flow_to(&s, &llm).unwrap();
    let mut extras = Extras::new();
    extras.insert(RetrieverParms {
        search: SearchParams { k: 7, ..SearchParams::default() },
        ..RetrieverParms::default()
    });
    let sampling = SamplingParams { max_tokens: 33, top_k: 3, ..SamplingParams::default() };
    let p = LLMParams { sampling, model: Some("my-model".into()), stream: false, ..LLMParams::default() };
    let r = mega.schedule(json!({"text": "q"}), p, extras).await.unwrap();
    let out = r.results["retriever/MicroService"].json().unwrap();
    assert_eq!(out["seen"]["k"], 7);
    assert_eq!(out["seen"]["node"], "retriever/MicroService");
    assert_eq!(out["k_was"], 7);
    assert_eq!(out["max_tokens"], 33);
    // The LLM node got the request's LLM parameters (model, top_k, repetition_penalty included).
    let seen = &r.results["llm/MicroService"].json().unwrap()["seen"];
    assert_eq!(seen["model"], "my-model");
    assert_eq!(seen["top_k"], 3);
    assert_eq!(seen["repetition_penalty"], 1.03);
    assert_eq!(seen["max_tokens"], 33);
    assert!(seen.get("id").is_none() || seen["id"] != json!(null));
    h.shutdown().await.unwrap();
    hl.shutdown().await.unwrap();
}

#[tokio::test]
async fn fan_in_merges_in_add_order() {
    async fn a(Json(_): Json<Value>) -> ServiceResult<Json<Value>> {
        Ok(Json(json!({"text": "from a", "a": 1})))
    }
    async fn b(Json(_): Json<Value>) -> ServiceResult<Json<Value>> {
        Ok(Json(json!({"text": "from b", "b": 2})))
    }
    let (sa, ha) = serve("a", "/v1/x", post(a)).await;
    let (sb, hb) = serve("b", "/v1/x", post(b)).await;
    let (sc, hc) = serve("c", "/v1/x", post(echo_inputs)).await;
    let mut mega = ServiceOrchestrator::new();
    mega.add(sa.clone()).unwrap().add(sb.clone()).unwrap().add(sc.clone()).unwrap();
    mega.flow_to(&sa, &sc).unwrap().flow_to(&sb, &sc).unwrap();
    for _ in 0..5 {
        let r = mega.schedule(json!({}), params(false), Extras::new()).await.unwrap();
        assert_eq!(r.leaf_json().unwrap()["seen"], json!({"text": "from b", "a": 1, "b": 2}));
    }
    for h in [ha, hb, hc] {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn upstream_error_is_a_502_naming_the_node_never_data() {
    let (addr, _) =
        spawn_mock(MockConfig { fail_first: 1000, error_status: 500, ..MockConfig::default() }).await.unwrap();
    let (s1, h1) = serve("s1", "/v1/add", post(add_opea)).await;
    let emb = mock_node("embedding", addr, "/v1/embeddings", ServiceType::Embedding);
    let mut mega = ServiceOrchestrator::new();
    mega.add(s1.clone()).unwrap().add(emb.clone()).unwrap();
    mega.flow_to(&s1, &emb).unwrap();
    let err = mega.schedule(json!({"text": "x"}), params(false), Extras::new()).await.unwrap_err();
    assert_eq!(err.status(), 502);
    let msg = err.to_string();
    assert!(msg.contains("embedding/MicroService") && msg.contains("500") && msg.contains("injected failure"), "{msg}");
    assert_eq!(mega.metrics().pending.get(), 0);
    assert_eq!(mega.metrics().node_errors.with_label_values(&["embedding/MicroService", "502"]).get(), 1);

    // A node that answers non-JSON is an error too.
    async fn html() -> &'static str {
        "<html>oops</html>"
    }
    let (bad, hb) = serve("bad", "/v1/x", post(html)).await;
    let mut mega = ServiceOrchestrator::new();
    mega.add(bad).unwrap();
    let err = mega.schedule(json!({}), params(false), Extras::new()).await.unwrap_err();
    assert_eq!(err.status(), 502);
    assert!(err.to_string().contains("bad/MicroService") && err.to_string().contains("invalid JSON"), "{err}");

    // Nothing listening: a clear 502 after bounded retries.
    let gone = comps_core::MicroService::from_url("gone", "http://127.0.0.1:9/v1/x").unwrap();
    let mut mega = ServiceOrchestrator::new()
        .with_default_policy(NodePolicy { backoff: Duration::from_millis(10), ..NodePolicy::default() });
    mega.add(gone).unwrap();
    let err = mega.schedule(json!({}), params(false), Extras::new()).await.unwrap_err();
    assert_eq!(err.status(), 502);
    assert!(err.to_string().contains("gone/MicroService could not be reached"), "{err}");
    h1.shutdown().await.unwrap();
    hb.shutdown().await.unwrap();
}

#[tokio::test]
async fn hung_upstream_is_a_504_within_the_node_timeout() {
    let (addr, _) = spawn_mock(MockConfig { latency_ms: 10_000, ..MockConfig::default() }).await.unwrap();
    let node = mock_node("retriever", addr, "/v1/retrieval", ServiceType::Retriever);
    let mut mega = ServiceOrchestrator::new();
    mega.add_with_policy(node, NodePolicy { timeout: Duration::from_millis(300), ..NodePolicy::default() }).unwrap();
    let t0 = Instant::now();
    let err = mega.schedule(json!({"text": "q", "embedding": [0.5]}), params(false), Extras::new()).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_millis(1500), "took {:?}", t0.elapsed());
    assert_eq!(err.status(), 504);
    assert!(err.to_string().contains("retriever/MicroService"), "{err}");
    assert_eq!(mega.metrics().pending.get(), 0);
}

#[tokio::test]
async fn transient_failures_are_retried_to_success() {
    let (addr, stats) =
        spawn_mock(MockConfig { fail_first: 2, error_status: 503, ..MockConfig::default() }).await.unwrap();
    let node = mock_node("embedding", addr, "/v1/embeddings", ServiceType::Embedding);
    let mut mega = ServiceOrchestrator::new();
    mega.add_with_policy(node, NodePolicy { retries: 2, backoff: Duration::from_millis(10), ..NodePolicy::default() })
        .unwrap();
    let r = mega.schedule(json!({"text": "hello"}), params(false), Extras::new()).await.unwrap();
    assert_eq!(r.leaf_json().unwrap()["text"], "hello");
    assert_eq!(stats.requests.load(std::sync::atomic::Ordering::SeqCst), 3);

    // A 500 is not transient: no retry.
    let (addr, stats) =
        spawn_mock(MockConfig { fail_first: 1, error_status: 500, ..MockConfig::default() }).await.unwrap();
    let mut mega = ServiceOrchestrator::new();
    mega.add(mock_node("embedding", addr, "/v1/embeddings", ServiceType::Embedding)).unwrap();
    assert!(mega.schedule(json!({"text": "x"}), params(false), Extras::new()).await.is_err());
    assert_eq!(stats.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn failure_cancels_the_rest_of_the_request() {
    // s_fail fails at once while s_slow is still working: the request ends now, and the slow
    // call is abandoned rather than awaited.
    async fn slow(Json(_): Json<Value>) -> ServiceResult<Json<Value>> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(Json(json!({})))
    }
    let (addr, _) = spawn_mock(MockConfig { fail_first: 1000, ..MockConfig::default() }).await.unwrap();
    let (s_slow, hs) = serve("slow", "/v1/x", post(slow)).await;
    let mut mega = ServiceOrchestrator::new();
    mega.add(s_slow).unwrap().add(mock_node("fail", addr, "/v1/embeddings", ServiceType::Embedding)).unwrap();
    let t0 = Instant::now();
    let err = mega.schedule(json!({"text": "x"}), params(false), Extras::new()).await.unwrap_err();
    assert!(err.to_string().contains("fail/MicroService"));
    assert!(t0.elapsed() < Duration::from_secs(2));
    hs.shutdown().await.unwrap();
}

#[tokio::test]
async fn bearer_key_is_sent_only_when_configured() {
    async fn auth_echo(headers: axum::http::HeaderMap) -> axum::Json<Value> {
        let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
        axum::Json(json!({ "auth": auth }))
    }
    let (s, h) = serve("a", "/v1/x", post(auth_echo)).await;
    let mut mega = ServiceOrchestrator::new();
    mega.add(s.clone()).unwrap();
    let r = mega.schedule(json!({}), params(false), Extras::new()).await.unwrap();
    assert_eq!(r.leaf_json().unwrap()["auth"], Value::Null, "no 'Bearer None'");
    let mut mega = ServiceOrchestrator::new();
    mega.add(s.api_key(Some("k1".into()))).unwrap();
    let r = mega.schedule(json!({}), params(false), Extras::new()).await.unwrap();
    assert_eq!(r.leaf_json().unwrap()["auth"], "Bearer k1");
    h.shutdown().await.unwrap();
}

#[test]
fn dag_operations() {
    let mut g = Dag::new();
    for n in ["a", "b", "c", "d"] {
        g.add_node(n).unwrap();
    }
    assert_eq!(g.add_node("a"), Err(GraphError::DuplicateNode("a".into())));
    g.add_edge("a", "b").unwrap();
    g.add_edge("a", "d").unwrap();
    g.add_edge("b", "c").unwrap();
    g.add_edge("c", "d").unwrap();
    assert_eq!(g.topological_sort(), ["a", "b", "c", "d"]);
    assert_eq!(g.ind_nodes(), ["a"]);
    assert_eq!(g.all_leaves(), ["d"]);
    assert_eq!(g.downstream("a"), ["b", "d"]);
    assert_eq!(g.predecessors("d"), ["a", "c"]);
    assert_eq!(g.all_downstreams("b"), ["c", "d"]);
    assert!(matches!(g.add_edge("d", "a"), Err(GraphError::Cycle { .. })));
    assert!(matches!(g.add_edge("c", "b"), Err(GraphError::Cycle { .. })));
    assert_eq!(g.add_edge("a", "a"), Err(GraphError::SelfLoop("a".into())));
    assert_eq!(g.add_edge("a", "x"), Err(GraphError::UnknownNode("x".into())));
    g.delete_edge("c", "d").unwrap();
    assert!(g.delete_edge("c", "d").is_err());
    assert_eq!(g.all_leaves(), ["c", "d"]);
    g.delete_node("b").unwrap();
    assert_eq!(g.size(), 3);
    assert_eq!(g.ind_nodes(), ["a", "c"]);

    let mut mega = ServiceOrchestrator::new();
    let s1 = comps_core::MicroService::new("s1");
    let s2 = comps_core::MicroService::new("s2");
    mega.add(s1.clone()).unwrap();
    assert!(matches!(mega.add(s1.clone()), Err(GraphError::DuplicateNode(n)) if n == "s1/MicroService"));
    assert!(matches!(mega.flow_to(&s1, &s2), Err(GraphError::UnknownNode(_))));
    assert!(matches!(mega.flow_to(&s1, &s1), Err(GraphError::SelfLoop(_))));
    mega.add(s2.clone()).unwrap();
    mega.flow_to(&s1, &s2).unwrap();
    assert!(matches!(mega.flow_to(&s2, &s1), Err(GraphError::Cycle { .. })));
}
