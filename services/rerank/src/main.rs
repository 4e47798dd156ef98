use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = comps_rerank::Args::parse();
    comps_core::init_logging(args.common.log_format);
    comps_rerank::run(args).await
}
