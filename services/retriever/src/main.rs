use clap::Parser;

fn main() -> anyhow::Result<()> {
    // An upload is read by this same binary in a limited child process (see `sandbox`): that
    // branch runs before the async runtime starts any thread.
    comps_retriever::sandbox::run_if_worker();
    let args = comps_retriever::Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    // Inside the runtime: the trace exporter (when configured) sends from it.
    let _entered = runtime.enter();
    args.common.init_logging();
    runtime.block_on(comps_retriever::run(args))
}
