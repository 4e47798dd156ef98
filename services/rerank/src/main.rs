use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = comps_rerank::Args::parse();
    args.common.init_logging();
    comps_rerank::run(args).await
}
