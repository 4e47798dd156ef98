use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = comps_chatqna::Args::parse();
    args.common.init_logging();
    comps_chatqna::run(args).await
}
