//! Mock backends on one port: TEI `/embed` and `/rerank`, OPEA `/v1/embeddings`,
//! `/v1/retrieval`, `/v1/reranking`, OpenAI `/v1/embeddings` and `/v1/chat/completions`, and
//! `GET /mock/stats`. See `comps_mock_backends::MockConfig` for the knobs.

use axum::serve::ListenerExt;
use clap::Parser;
use comps_mock_backends::{MockConfig, mock_router};

#[derive(Parser)]
#[command(about = "Mock TEI / OPEA / OpenAI backends")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MOCK_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(long, env = "MOCK_PORT", default_value_t = 9999)]
    port: u16,
    #[command(flatten)]
    mock: MockConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    comps_core::init_logging(comps_core::LogFormat::Text);
    let (router, _) = mock_router(args.mock);
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    tracing::info!(addr = %listener.local_addr()?, "mock backends listening");
    let listener = listener.tap_io(|t| {
        let _ = t.set_nodelay(true);
    });
    axum::serve(listener, router).with_graceful_shutdown(comps_core::server::shutdown_signal()).await?;
    Ok(())
}
