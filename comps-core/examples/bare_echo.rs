//! The echo handler on bare axum, with none of comps-core's scaffolding: the baseline that
//! `scripts/bench/scaffolding.sh` compares the `echo` example against.
//! Run: `cargo run --release -p comps-core --example bare_echo -- 9001`.

use axum::Json;
use axum::routing::post;
use axum::serve::ListenerExt;
use serde_json::{Value, json};

async fn echo(Json(doc): Json<Value>) -> Json<Value> {
    let text = doc.get("text").and_then(Value::as_str).unwrap_or_default();
    Json(
        json!({"id": uuid::Uuid::new_v4().simple().to_string(), "text": format!("{text}opea project!"), "downstream_black_list": []}),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(9001);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?.tap_io(|t| {
        let _ = t.set_nodelay(true);
    });
    axum::serve(listener, axum::Router::new().route("/v1/echo", post(echo))).await
}
