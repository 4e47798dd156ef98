use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = comps_retriever::Args::parse();
    comps_core::init_logging(args.common.log_format);
    comps_retriever::run(args).await
}
