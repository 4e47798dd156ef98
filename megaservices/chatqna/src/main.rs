use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = comps_chatqna::Args::parse();
    comps_core::init_logging(args.common.log_format);
    comps_chatqna::run(args).await
}
