//! # comps-flow
//!
//! Serves any OPEA YAML flow as a megaservice, so services can be composed without writing
//! Rust:
//!
//! ```text
//! comps-flow --config flow.yaml --endpoint /v1/flow --port 8888
//! curl -d '{"text": "hello, "}' localhost:8888/v1/flow
//! ```
//!
//! The request body (a JSON object) is the entry nodes' input; its LLM fields (`max_tokens`,
//! `temperature`, `stream`, ...) become the request's `LLMParams` (`stream` defaults to false).
//! A streamed answer passes through as SSE; otherwise the answer is the single leaf's JSON, or
//! `{node id: answer}` when the flow ends in several leaves.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use comps_core::orchestrator::Extras;
use comps_core::sse::sse_response;
use comps_core::{
    CommonArgs, Json, LLMParams, MicroService, Server, ServiceOrchestrator, ServiceResult, ServiceRoleType,
    ServiceType, Validate,
};
use serde_json::{Map, Value};

/// Command-line flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about = "Serve an OPEA YAML flow as a megaservice")]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The YAML flow (`opea_micro_services` + `opea_mega_service.mega_flow`).
    #[arg(long, env = "FLOW_CONFIG")]
    pub config: PathBuf,
    /// Route the flow is served on.
    #[arg(long, env = "FLOW_ENDPOINT", default_value = "/v1/flow")]
    pub endpoint: String,
    /// Service name shown by the health check.
    #[arg(long, env = "FLOW_NAME", default_value = "flow")]
    pub name: String,
}

/// Build the server for an orchestrator (tests use this with port 0), with the OpenAPI
/// document of its endpoint.
pub fn server(orch: ServiceOrchestrator, service: MicroService, args: &CommonArgs) -> Server {
    let endpoint = service.endpoint.clone();
    let doc = openapi(&endpoint);
    let server = Server::new(service, args.server_config());
    orch.metrics().register_into(&server.metrics());
    let orch = Arc::new(orch);
    server.route(&endpoint, post(handle).with_state(orch)).openapi(doc)
}

/// The OpenAPI document of the flow's route. The path is only known at run time, so the
/// document is built with utoipa's builders instead of `#[utoipa::path]`: `POST endpoint` with
/// any JSON object, answered with JSON or, when the flow streams, server-sent events.
pub fn openapi(endpoint: &str) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
    use utoipa::openapi::tag::TagBuilder;
    use utoipa::openapi::{ContentBuilder, OpenApiBuilder, PathItem, PathsBuilder, Required, ResponseBuilder};

    let input = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .description(Some(
            "The entry nodes' input. Its LLM fields (`max_tokens`, `temperature`, `stream`, ...) become the \
             request's `LLMParams`; `stream` defaults to false.",
        ));
    let body = RequestBodyBuilder::new()
        .description(Some("Any JSON object: the flow's input"))
        .required(Some(Required::True))
        .content("application/json", ContentBuilder::new().schema(Some(input)).build())
        .build();
    let answer = ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some("The single leaf's answer, or `{node id: answer}` when the flow ends in several leaves"));
    let events = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("The streaming node's server-sent events, passed through"));
    let ok = ResponseBuilder::new()
        .description("The flow's answer, whole or streamed")
        .content("application/json", ContentBuilder::new().schema(Some(answer)).build())
        .content("text/event-stream", ContentBuilder::new().schema(Some(events)).build());
    let op = OperationBuilder::new()
        .tag("flow")
        .operation_id(Some("flow"))
        .summary(Some("Run the flow"))
        .description(Some(
            "Schedules the flow with the body as the entry nodes' input. A streamed answer passes \
             through as SSE; otherwise the answer is the single leaf's JSON, or `{node id: answer}` \
             when the flow ends in several leaves.",
        ))
        .request_body(Some(body))
        .response("200", ok);
    OpenApiBuilder::new()
        .paths(PathsBuilder::new().path(endpoint, PathItem::new(HttpMethod::Post, op)))
        .tags(Some([TagBuilder::new().name("flow").description(Some("An OPEA YAML flow")).build()]))
        .build()
}

/// Load the flow and serve it until SIGTERM / ctrl-c.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let orch = ServiceOrchestrator::from_yaml_file(&args.config.to_string_lossy())?;
    tracing::info!(nodes = ?orch.graph().nodes(), edges = ?orch.graph().edges(), "flow loaded");
    let service = args
        .common
        .apply(MicroService::new(&args.name), 8888)
        .endpoint(&args.endpoint)
        .service_type(ServiceType::Gateway)
        .service_role(ServiceRoleType::MegaService)
        .description(format!("OPEA flow {}", args.config.display()));
    server(orch, service, &args.common).bind().await?.serve().await?;
    Ok(())
}

async fn handle(
    State(orch): State<Arc<ServiceOrchestrator>>,
    Json(body): Json<Map<String, Value>>,
) -> ServiceResult<Response> {
    let mut params_src = body.clone();
    params_src.retain(|k, _| k != "id");
    if !params_src.contains_key("stream") {
        params_src.insert("stream".into(), Value::Bool(false));
    }
    let params: LLMParams = comps_core::extract::from_value(&Value::Object(params_src))?;
    params.validate()?;
    let mut result = orch.schedule(Value::Object(body), params, Extras::new()).await?;
    if let Some(stream) = result.take_stream() {
        return Ok(sse_response(stream));
    }
    let leaves = result.leaves();
    if let [only] = leaves.as_slice() {
        let v = result.results.get(only).and_then(|o| o.json()).cloned().unwrap_or(Value::Null);
        return Ok(axum::Json(v).into_response());
    }
    let map: Map<String, Value> = leaves
        .iter()
        .filter_map(|l| result.results.get(l).and_then(|o| o.json()).map(|v| (l.clone(), v.clone())))
        .collect();
    Ok(axum::Json(Value::Object(map)).into_response())
}
