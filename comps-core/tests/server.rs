//! The HTTP scaffolding, against real servers on 127.0.0.1:0.

use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use comps_core::{
    ErrorResponse, Json, MicroService, Server, ServerConfig, ServerHandle, ServiceResult, ServiceType, StartupError,
    TextDoc,
};
use futures::stream;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn echo(Json(doc): Json<TextDoc>) -> ServiceResult<Json<TextDoc>> {
    Ok(Json(TextDoc::new(format!("{}opea project!", doc.text_str()))))
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(600)).await;
    "done"
}

async fn tokens() -> Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let events = ["a", "b", "c"].map(|t| Ok(Event::default().data(t)));
    Sse::new(stream::iter(events))
}

fn service() -> MicroService {
    MicroService::new("echo")
        .host("127.0.0.1")
        .port(0)
        .endpoint("/v1/echo")
        .service_type(ServiceType::Undefined)
        .description("echo for tests")
}

async fn start(config: ServerConfig) -> ServerHandle {
    Server::new(service(), config)
        .route("/v1/echo", post(echo))
        .route("/v1/slow", get(slow))
        .route("/v1/tokens", get(tokens))
        .bind()
        .await
        .expect("binds")
        .spawn()
}

fn client() -> reqwest::Client {
    comps_core::http_client().clone()
}

async fn error_of(resp: reqwest::Response) -> ErrorResponse {
    resp.json::<ErrorResponse>().await.expect("OpenAI error envelope")
}

#[tokio::test]
async fn echo_and_health_are_exact() {
    let h = start(ServerConfig::default()).await;
    let r = client().post(format!("{}/v1/echo", h.url())).json(&json!({"text": "hello, "})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["text"], "hello, opea project!");
    assert_eq!(v["downstream_black_list"], json!([]));

    let v: Value = client().get(format!("{}/v1/health_check", h.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        v,
        json!({"Service Title": "echo", "Version": env!("CARGO_PKG_VERSION"), "Service Description": "echo for tests"})
    );
    for path in ["/v1/health", "/health"] {
        assert_eq!(client().get(format!("{}{path}", h.url())).send().await.unwrap().status(), 200);
    }
    let r = client().get(format!("{}/nope", h.url())).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_of(r).await.error.r#type, "not_found_error");
    let r = client().get(format!("{}/v1/echo", h.url())).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let e = error_of(r).await;
    assert_eq!((e.error.r#type.as_str(), e.error.code.as_deref()), ("invalid_request_error", Some("405")));
    assert!(e.error.message.contains("GET") && e.error.message.contains("/v1/echo"), "{}", e.error.message);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_bodies_get_the_envelope() {
    let h = start(ServerConfig { max_body_bytes: 1024, ..ServerConfig::default() }).await;
    let url = format!("{}/v1/echo", h.url());

    let r = client().post(&url).header("content-type", "application/json").body("{\"text\": ").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e = error_of(r).await;
    assert_eq!(e.error.r#type, "invalid_request_error");
    assert!(e.error.message.contains("malformed JSON"), "{}", e.error.message);

    let r = client().post(&url).json(&json!({"text": "x", "downstream_black_list": 5})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e = error_of(r).await;
    assert_eq!(e.error.param.as_deref(), Some("downstream_black_list"));
    assert!(e.error.message.contains("downstream_black_list"), "{}", e.error.message);
    assert_eq!(e.error.code.as_deref(), Some("422"));

    let big = "x".repeat(4096);
    let r = client().post(&url).json(&json!({ "text": big })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    error_of(r).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrency_limit_answers_429_at_once() {
    let h = start(ServerConfig { max_concurrent_requests: 1, ..ServerConfig::default() }).await;
    let url = format!("{}/v1/slow", h.url());
    let first = tokio::spawn({
        let url = url.clone();
        async move { client().get(url).send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t0 = std::time::Instant::now();
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(t0.elapsed() < Duration::from_millis(300), "429 must not wait for a slot");
    assert_eq!(error_of(r).await.error.r#type, "rate_limit_error");
    // Health stays reachable while the service is full.
    assert_eq!(client().get(format!("{}/v1/health_check", h.url())).send().await.unwrap().status(), 200);
    assert_eq!(first.await.unwrap(), 200);
    // The slot is free again.
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_timeout_is_enveloped() {
    let h = start(ServerConfig { request_timeout: Duration::from_millis(200), ..ServerConfig::default() }).await;
    let r = client().get(format!("{}/v1/slow", h.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(error_of(r).await.error.r#type, "timeout_error");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn api_key_guards_all_but_health_and_metrics() {
    let h = start(ServerConfig { api_key: Some("s3cret".into()), ..ServerConfig::default() }).await;
    let url = format!("{}/v1/echo", h.url());
    let body = json!({"text": "a"});
    let r = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(r).await.error.r#type, "authentication_error");
    let r = client().post(&url).bearer_auth("wrong").json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client().post(&url).bearer_auth("s3cret").json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for path in ["/v1/health_check", "/v1/health", "/health", "/metrics"] {
        assert_eq!(client().get(format!("{}{path}", h.url())).send().await.unwrap().status(), 200, "{path}");
    }
    let r = client().get(format!("{}/v1/statistics", h.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn port_taken_is_a_clear_startup_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let err = Server::new(service().port(port), ServerConfig::default()).bind().await.unwrap_err();
    assert!(matches!(err, StartupError::AddrInUse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("already in use"), "{msg}");
    assert!(!comps_core::utils::is_port_free("127.0.0.1", port));
    drop(holder);
}

#[tokio::test]
async fn statistics_and_metrics_record_requests() {
    let h = start(ServerConfig::default()).await;
    let v: Value = client().get(format!("{}/v1/statistics", h.url())).send().await.unwrap().json().await.unwrap();
    let keys = [
        "p50_latency",
        "p99_latency",
        "average_latency",
        "p50_latency_first_token",
        "p99_latency_first_token",
        "average_latency_first_token",
    ];
    for k in keys {
        assert_eq!(v["echo"][k], Value::Null, "{k} is null before any request");
    }
    assert_eq!(v["echo"]["count"], 0);
    for _ in 0..3 {
        client().post(format!("{}/v1/echo", h.url())).json(&json!({"text": "x"})).send().await.unwrap();
    }
    // A rejected request is not a served one.
    client().post(format!("{}/v1/echo", h.url())).body("{").send().await.unwrap();
    let v: Value = client().get(format!("{}/v1/statistics", h.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["echo"]["count"], 3);
    let p50 = v["echo"]["p50_latency"].as_f64().unwrap();
    let p99 = v["echo"]["p99_latency"].as_f64().unwrap();
    let avg = v["echo"]["average_latency"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99 && avg > 0.0, "{v}");
    assert_eq!(v["echo"]["p50_latency_first_token"], Value::Null, "non-streamed answers have no first token");

    let sse = client().get(format!("{}/v1/tokens", h.url())).send().await.unwrap().text().await.unwrap();
    assert_eq!(sse, "data: a\n\ndata: b\n\ndata: c\n\n");

    let text = client().get(format!("{}/metrics", h.url())).send().await.unwrap().text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let count = |name: &str, route: &str, status: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == name && s.labels.get("route") == Some(route) && s.labels.get("status") == Some(status)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(count("comps_http_requests_total", "/v1/echo", "200"), 3.0);
    assert_eq!(count("comps_http_requests_total", "/v1/echo", "400"), 1.0);
    assert_eq!(count("comps_http_requests_total", "/v1/tokens", "200"), 1.0);
    assert!(scrape.samples.iter().any(|s| s.metric == "comps_http_request_duration_seconds_count"));
    assert!(scrape.samples.iter().any(|s| s.metric == "process_resident_memory_bytes"));
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn streamed_endpoint_records_first_token_latency() {
    let svc = service().endpoint("/v1/tokens");
    let h = Server::new(svc, ServerConfig::default()).route("/v1/tokens", get(tokens)).bind().await.unwrap().spawn();
    client().get(format!("{}/v1/tokens", h.url())).send().await.unwrap().text().await.unwrap();
    let v: Value = client().get(format!("{}/v1/statistics", h.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["echo"]["count"], 1);
    assert!(v["echo"]["p50_latency_first_token"].as_f64().is_some(), "{v}");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_id_is_propagated_or_generated() {
    let h = start(ServerConfig::default()).await;
    let r = client().get(format!("{}/v1/health", h.url())).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = client().get(format!("{}/v1/health", h.url())).send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"].len(), 36, "a UUID is generated");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn cors_is_permissive_by_default_and_configurable() {
    let h = start(ServerConfig::default()).await;
    let r = client()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/echo", h.url()))
        .header("origin", "http://ui.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    h.shutdown().await.unwrap();

    let h =
        start(ServerConfig { cors_allow_origins: vec!["http://ok.example".into()], ..ServerConfig::default() }).await;
    let get = |origin: &'static str| client().get(format!("{}/v1/health", h.url())).header("origin", origin).send();
    let ok = get("http://ok.example").await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], "http://ok.example");
    let other = get("http://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let h = start(ServerConfig::default()).await;
    let url = format!("{}/v1/slow", h.url());
    let inflight = tokio::spawn(async move { client().get(url).send().await.unwrap().text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = h.addr;
    h.shutdown().await.unwrap();
    assert_eq!(inflight.await.unwrap(), "done");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer listening");
}

/// With a drain time, the shutdown signal first turns health 503 ("shutting down") while
/// requests are still served, and a request in flight finishes; then the port closes.
#[tokio::test]
async fn draining_answers_health_503_keeps_serving_then_closes() {
    let config = ServerConfig { shutdown_drain: Duration::from_millis(800), ..ServerConfig::default() };
    let bound = Server::new(service(), config).route("/v1/slow", get(slow)).bind().await.unwrap();
    let url = format!("http://{}", bound.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(bound.serve_until(async move {
        let _ = stopped.await;
    }));
    assert_eq!(client().get(format!("{url}/v1/health")).send().await.unwrap().status(), 200);
    let in_flight = tokio::spawn({
        let url = url.clone();
        async move { client().get(format!("{url}/v1/slow")).send().await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for path in ["/v1/health", "/v1/health_check"] {
        let r = client().get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 503, "{path} while draining");
        assert!(error_of(r).await.error.message.contains("shutting down"));
    }
    // A new request during the drain is still served.
    let r = client().post(format!("{url}/v1/health_check")).send().await.unwrap();
    assert_eq!(r.status(), 405, "routes still answer while draining");
    assert_eq!(in_flight.await.unwrap(), "done", "the request in flight finished");
    served.await.unwrap().unwrap();
    let fresh = reqwest::Client::new();
    assert!(fresh.get(format!("{url}/v1/health")).send().await.is_err(), "the port is closed after the drain");
}

/// Every server says which replica it is on /metrics.
#[tokio::test]
async fn metrics_name_the_replica() {
    let h = start(ServerConfig::default()).await;
    let text = client().get(format!("{}/metrics", h.url())).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("comps_replica_info{")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(r#"service="echo""#) && line.ends_with(" 1"), "{line}");
    assert!(line.contains(&format!(r#"replica="{}""#, comps_core::server::replica_name())), "{line}");
    h.shutdown().await.unwrap();
}
