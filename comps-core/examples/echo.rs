//! An echo microservice: `POST /v1/echo` answers a `TextDoc` with its text plus "opea project!".
//! Run: `cargo run -p comps-core --example echo -- --port 9000`.

use axum::routing::post;
use clap::Parser;
use comps_core::{CommonArgs, Json, MicroService, Server, ServiceResult, ServiceType, TextDoc, init_logging};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

async fn echo(Json(doc): Json<TextDoc>) -> ServiceResult<Json<TextDoc>> {
    Ok(Json(TextDoc::new(format!("{}opea project!", doc.text_str()))))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.common.log_format);
    let svc =
        args.common.apply(MicroService::new("echo"), 9000).endpoint("/v1/echo").service_type(ServiceType::Undefined);
    Server::new(svc, args.common.server_config()).route("/v1/echo", post(echo)).bind().await?.serve().await?;
    Ok(())
}
