use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = comps_embedding::Args::parse();
    args.common.init_logging();
    comps_embedding::run(args).await
}
