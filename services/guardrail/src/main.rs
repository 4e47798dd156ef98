use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = comps_guardrail::Args::parse();
    args.common.init_logging();
    comps_guardrail::run(args).await
}
