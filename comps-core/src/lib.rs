//! # comps-core
//!
//! The OPEA GenAIComps service framework in Rust: service descriptors ([`MicroService`],
//! [`ServiceType`], [`ServiceRoleType`]), the HTTP scaffolding every binary shares
//! ([`Server`]: health, statistics, Prometheus metrics, OpenAI error envelopes, limits, auth,
//! graceful shutdown), the wire types of OPEA and OpenAI ([`protocol`]), and utilities.
//!
//! An OPEA-style microservice in a few lines:
//!
//! ```no_run
//! use axum::routing::post;
//! use comps_core::{Json, MicroService, Server, ServerConfig, ServiceResult, ServiceType, TextDoc};
//!
//! async fn handle(Json(doc): Json<TextDoc>) -> ServiceResult<Json<TextDoc>> {
//!     Ok(Json(TextDoc::new(format!("{}opea project!", doc.text_str()))))
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     let svc = MicroService::new("example")
//!         .host("0.0.0.0")
//!         .port(9000)
//!         .endpoint("/v1/example-service")
//!         .service_type(ServiceType::Undefined);
//!     Server::new(svc, ServerConfig::default())
//!         .route("/v1/example-service", post(handle))
//!         .bind()
//!         .await?
//!         .serve()
//!         .await?;
//!     Ok(())
//! }
//! ```

pub mod client;
pub mod error;
pub mod extract;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod orchestrator;
pub mod protocol;
pub mod server;
pub mod service;
pub mod sse;
pub mod stats;
pub mod telemetry;
pub mod utils;
pub mod vector;

pub use error::{ErrorResponse, ServiceError, ServiceResult};
pub use extract::Json;
pub use orchestrator::{Extras, Hooks, NodeOutput, ScheduleResult, ServiceOrchestrator};
pub use protocol::*;
pub use server::{BoundServer, CommonArgs, LogFormat, Server, ServerConfig, ServerHandle, StartupError, init_logging};
pub use service::{MicroService, ServiceRoleType, ServiceType};
pub use stats::{BaseStatistics, StatisticsRegistry};
pub use utils::{Prompt, handle_message, http_client};
