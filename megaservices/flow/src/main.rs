use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = comps_flow::Args::parse();
    args.common.init_logging();
    comps_flow::run(args).await
}
