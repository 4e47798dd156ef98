use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = comps_llm::Args::parse();
    args.common.init_logging();
    comps_llm::run(args).await
}
