use clap::Parser;

fn main() -> anyhow::Result<()> {
    // An upload is read by this same binary in a limited child process (see `sandbox`): that
    // branch runs before the async runtime starts any thread.
    comps_retriever::sandbox::run_if_worker();
    let args = comps_retriever::Args::parse();
    comps_core::init_logging(args.common.log_format);
    tokio::runtime::Runtime::new()?.block_on(comps_retriever::run(args))
}
