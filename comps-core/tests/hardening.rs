//! Hardening of the scaffolding every service shares, against real servers on 127.0.0.1:0:
//! requests in flight are counted from arrival, a client's oversized value is never echoed
//! whole, an extractor's plain-text rejection gets the envelope, and health asks the
//! service's probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::Query;
use axum::routing::{get, post};
use comps_core::health::HealthCheck;
use comps_core::{Json, MicroService, Server, ServerConfig, ServiceResult};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Colour {
    Red,
    Teal,
}

#[derive(Deserialize)]
struct Paint {
    colour: Colour,
}

impl comps_core::protocol::Validate for Paint {}

async fn paint(Json(p): Json<Paint>) -> ServiceResult<Json<Value>> {
    Ok(Json(json!({"ok": matches!(p.colour, Colour::Red | Colour::Teal)})))
}

#[derive(Deserialize)]
struct Page {
    n: u32,
}

async fn page(Query(p): Query<Page>) -> String {
    p.n.to_string()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    "done"
}

fn server(config: ServerConfig) -> Server {
    let svc = MicroService::new("hardened").host("127.0.0.1").port(0).endpoint("/v1/paint");
    Server::new(svc, config).route("/v1/paint", post(paint)).route("/v1/page", get(page)).route("/v1/slow", get(slow))
}

fn in_flight(metrics: &str, route: &str) -> f64 {
    let needle = format!("comps_http_requests_in_flight{{route=\"{route}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&needle)).map(|v| v.trim().parse().unwrap()).unwrap_or(0.0)
}

#[tokio::test]
async fn requests_waiting_for_their_response_count_as_in_flight() {
    let h = server(ServerConfig::default()).bind().await.unwrap().spawn();
    let url = h.url();
    let client = comps_core::http_client().clone();
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let (c, u) = (client.clone(), url.clone());
            tokio::spawn(async move { c.get(format!("{u}/v1/slow")).send().await.unwrap().text().await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = client.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    // Before the fix this read 0: the gauge moved only once a response had started.
    assert_eq!(in_flight(&m, "/v1/slow"), 3.0, "{m}");
    for w in waiting {
        assert_eq!(w.await.unwrap(), "done");
    }
    let m = client.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(in_flight(&m, "/v1/slow"), 0.0, "{m}");

    // A client that leaves before the answer is not counted forever.
    let gone = client.get(format!("{url}/v1/slow")).timeout(Duration::from_millis(200)).send().await;
    assert!(gone.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = client.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(in_flight(&m, "/v1/slow"), 0.0, "{m}");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_ten_megabyte_bad_value_gets_a_small_error() {
    let h = server(ServerConfig::default()).bind().await.unwrap().spawn();
    let huge = "y".repeat(10 * 1024 * 1024);
    let r = comps_core::http_client()
        .post(format!("{}/v1/paint", h.url()))
        .json(&json!({"colour": huge}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body = r.bytes().await.unwrap();
    assert!(body.len() < 1024, "a {} byte error body", body.len());
    let v: Value = serde_json::from_slice(&body).unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("yyyy") && msg.contains("10485760 bytes in all"), "{msg}");
    assert!(msg.contains("red") && msg.contains("teal"), "the expected values are still said: {msg}");
    assert_eq!(v["error"]["param"], "colour");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn plain_text_rejections_get_the_envelope() {
    let h = server(ServerConfig::default()).bind().await.unwrap().spawn();
    let r = comps_core::http_client().get(format!("{}/v1/page?n=minus-one", h.url())).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("JSON envelope");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(v["error"]["code"], "400", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("n"), "{v}");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_tells_the_truth_about_the_probe() {
    let alive = Arc::new(AtomicBool::new(true));
    let probe = {
        let alive = alive.clone();
        HealthCheck::new(move || if alive.load(Ordering::Relaxed) { Ok(()) } else { Err("model worker died".into()) })
    };
    let h = server(ServerConfig::default()).health_check_with(probe).bind().await.unwrap().spawn();
    let get = |path: &'static str| {
        let url = format!("{}{path}", h.url());
        async move { comps_core::http_client().get(url).send().await.unwrap() }
    };
    for path in ["/health", "/v1/health", "/v1/health_check"] {
        assert_eq!(get(path).await.status(), 200, "{path}");
    }
    alive.store(false, Ordering::Relaxed);
    for path in ["/health", "/v1/health", "/v1/health_check"] {
        let r = get(path).await;
        assert_eq!(r.status(), 503, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("model worker died"), "{v}");
    }
    h.shutdown().await.unwrap();
}
