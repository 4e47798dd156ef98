//! OpenAPI documents generated from the Rust types: each service declares its routes with
//! `#[utoipa::path]` on its handlers and hands the document to [`Server::openapi`]; the server
//! adds its built-in routes, the error envelope as every operation's `default` response, the
//! bearer scheme when a key is required, and serves it all at `GET /v1/openapi.json`, with a
//! self-contained docs page at `GET /docs` (no CDN: it works offline), as OPEA's FastAPI
//! services do.
//!
//! [`Server::openapi`]: crate::Server::openapi

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, PathItem, Ref, RefOr, Response, ResponseBuilder};

use crate::error::{ErrorDetail, ErrorResponse};
use crate::service::MicroService;

/// The path the document is served at.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The path of the docs page.
pub const DOCS_PATH: &str = "/docs";

/// The docs page: renders `/v1/openapi.json` in the browser, with no file from the network.
pub const DOCS_HTML: &str = include_str!("openapi_docs.html");

#[allow(dead_code)]
mod builtin {
    use axum::Json;
    use serde_json::Value;

    use crate::error::ErrorResponse;

    /// Service information, in OPEA's shape; 503 when the service's health probe fails.
    #[utoipa::path(get, path = "/v1/health_check", tag = "health",
        responses((status = 200, description = "Service title, version and description", body = Object),
                  (status = 503, description = "Unhealthy: the reason", body = ErrorResponse)))]
    pub async fn health_check() -> Json<Value> {
        Json(Value::Null)
    }

    /// Liveness and health: 200, or 503 with the reason.
    #[utoipa::path(get, path = "/health", tag = "health",
        responses((status = 200, description = "Healthy"),
                  (status = 503, description = "Unhealthy: the reason", body = ErrorResponse)))]
    pub async fn health() {}

    /// The same as `/health`.
    #[utoipa::path(get, path = "/v1/health", tag = "health",
        responses((status = 200, description = "Healthy"),
                  (status = 503, description = "Unhealthy: the reason", body = ErrorResponse)))]
    pub async fn v1_health() {}

    /// Latency statistics of the service's endpoint, in OPEA's shape.
    #[utoipa::path(get, path = "/v1/statistics", tag = "observability",
        responses((status = 200, description = "p50/p90/p99/average latency and first-token latency per statistic", body = Object)))]
    pub async fn statistics() -> Json<Value> {
        Json(Value::Null)
    }

    /// Prometheus metrics.
    #[utoipa::path(get, path = "/metrics", tag = "observability",
        responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")))]
    pub async fn metrics() {}

    /// This document.
    #[utoipa::path(get, path = "/v1/openapi.json", tag = "docs",
        responses((status = 200, description = "The OpenAPI document of this service", body = Object)))]
    pub async fn openapi() {}

    /// The served models, as OpenAI lists them (on services that serve models).
    #[utoipa::path(get, path = "/v1/models", tag = "models",
        responses((status = 200, description = "The served models", body = crate::protocol::ModelList)))]
    pub async fn models() {}

    /// The served model and the service's limits, as TEI describes them.
    #[utoipa::path(get, path = "/info", tag = "tei",
        responses((status = 200, description = "The model and the limits", body = crate::protocol::TeiInfo)))]
    pub async fn info() {}

    /// A page rendering this document.
    #[utoipa::path(get, path = "/docs", tag = "docs",
        responses((status = 200, description = "HTML", body = String, content_type = "text/html")))]
    pub async fn docs() {}
}

#[derive(OpenApi)]
#[openapi(
    paths(
        builtin::health_check,
        builtin::health,
        builtin::v1_health,
        builtin::statistics,
        builtin::metrics,
        builtin::openapi,
        builtin::docs
    ),
    components(schemas(ErrorResponse, ErrorDetail))
)]
struct Builtin;

/// `GET /v1/models`, added by [`crate::Server::models`].
#[derive(OpenApi)]
#[openapi(paths(builtin::models), components(schemas(crate::protocol::ModelList, crate::protocol::ModelCard)))]
pub(crate) struct Models;

/// The paths every server has, whatever its routes.
pub fn builtin_paths() -> &'static [&'static str] {
    &["/v1/health_check", "/health", "/v1/health", "/v1/statistics", "/metrics", OPENAPI_PATH, DOCS_PATH]
}

/// The complete document of `service`: its own `doc`, the built-in routes, the error
/// envelope on every operation, and the bearer scheme on the guarded ones when `api_key`.
pub fn complete(doc: utoipa::openapi::OpenApi, service: &MicroService, api_key: bool) -> utoipa::openapi::OpenApi {
    let mut doc = doc;
    doc.merge(Builtin::openapi());
    doc.info.title = service.name.clone();
    doc.info.version = service.version.clone();
    doc.info.description = Some(service.description.clone()).filter(|d| !d.is_empty());
    doc.info.license = None;
    doc.info.contact = None;
    let error = error_response();
    let open = crate::server::OPEN_PATHS;
    for (path, item) in doc.paths.paths.iter_mut() {
        let guarded = api_key && !open.contains(&path.as_str()) && !builtin_paths().contains(&path.as_str());
        for op in operations(item) {
            op.responses.responses.entry("default".to_string()).or_insert_with(|| error.clone());
            if guarded {
                op.responses.responses.entry("401".to_string()).or_insert_with(|| {
                    RefOr::T(
                        ResponseBuilder::new()
                            .description("Missing or wrong API key")
                            .content("application/json", envelope_content())
                            .build(),
                    )
                });
                op.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
            }
        }
    }
    if api_key {
        let components = doc.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            "bearer".to_string(),
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
    doc
}

fn envelope_content() -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorResponse"))).build()
}

fn error_response() -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(
                "An error in the OpenAI envelope: 400 malformed, 405 wrong method, 413 too large, \
                 422 a field named in `param`, 424 the model failed on this request, 429 overloaded, \
                 502/504 an upstream node failed or timed out, 503 not ready",
            )
            .content("application/json", envelope_content())
            .build(),
    )
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// `GET /info`, added by [`crate::Server::info`].
#[derive(OpenApi)]
#[openapi(paths(builtin::info), components(schemas(crate::protocol::TeiInfo)))]
pub(crate) struct Info;
