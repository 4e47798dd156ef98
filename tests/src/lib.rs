//! Helpers for the workspace tests: start small OPEA-style microservices on 127.0.0.1:0 and
//! read streams the way clients do.

use axum::routing::MethodRouter;
use comps_core::sse::event_text;
use comps_core::{MicroService, Server, ServerConfig, ServerHandle, ServiceType};
use futures::StreamExt;

/// Serve `handler` at `path` as microservice `name` on a free loopback port; returns the remote
/// descriptor a megaservice uses to call it, and the handle that stops it.
pub async fn serve(name: &str, path: &str, handler: MethodRouter) -> (MicroService, ServerHandle) {
    let svc = MicroService::new(name).host("127.0.0.1").port(0).endpoint(path).service_type(ServiceType::Undefined);
    let handle = Server::new(svc, ServerConfig::default()).route(path, handler).bind().await.expect("bind").spawn();
    let remote = MicroService::new(name)
        .host("127.0.0.1")
        .port(handle.addr.port())
        .endpoint(path)
        .service_type(ServiceType::Undefined)
        .remote(true);
    (remote, handle)
}

/// A descriptor for a route of a mock-backends server.
pub fn mock_node(name: &str, addr: std::net::SocketAddr, path: &str, ty: ServiceType) -> MicroService {
    MicroService::new(name).host("127.0.0.1").port(addr.port()).endpoint(path).service_type(ty).remote(true)
}

/// Split framed SSE bytes into event payloads (without `[DONE]`), as a client would.
pub fn payloads(body: &str) -> Vec<String> {
    body.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(str::to_string).collect()
}

/// The text of each event of a framed SSE body.
pub fn tokens(body: &str) -> Vec<String> {
    payloads(body).iter().filter_map(|p| event_text(p)).filter(|t| !t.is_empty()).collect()
}

/// Collect a byte stream into a string.
pub async fn collect(mut s: comps_core::sse::ByteStream) -> Result<String, comps_core::ServiceError> {
    let mut out = String::new();
    while let Some(b) = s.next().await {
        out.push_str(&String::from_utf8_lossy(&b?));
    }
    Ok(out)
}

pub mod procs;
