//! The web UI: one page, its script and its style, compiled into the binary (nothing to lose
//! at run time, nothing fetched from the network), served at `/` on the same origin as
//! `/v1/chat/completions` and `/v1/dataprep/*`. The page and `/v1/ui/config` answer without
//! the API key (the page asks for it); everything they call needs it as usual.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use comps_core::Server;
use serde_json::{Value, json};

const INDEX: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/app.css");

/// Only this origin's files; no inline script or style, so text that slips into the page as
/// markup still cannot run.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// What the page needs to know before its first request: whether to ask for a key, which
/// settings this pipeline has, and their defaults.
pub fn config(requires_key: bool, rerank: bool, top_n: u32) -> Value {
    json!({
        "api_key_required": requires_key,
        "rerank": rerank,
        "defaults": { "k": 4, "top_n": top_n, "temperature": 0.01, "max_tokens": 1024 },
    })
}

/// Add the UI's routes to `server`.
pub fn routes(server: Server, config: Value) -> Server {
    let config = std::sync::Arc::new(config);
    server
        .open_route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .open_route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .open_route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .open_route(
            "/v1/ui/config",
            get(move || {
                let config = config.clone();
                async move { axum::Json((*config).clone()) }
            }),
        )
}
