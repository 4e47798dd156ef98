//! `comps`: the launcher.

use clap::{Parser, Subcommand};
use comps_launcher::chatqna::{self, UpArgs};
use comps_launcher::supervise::{Event, Supervisor};

#[derive(Debug, Parser)]
#[command(version, about = "Run the comps-rs ChatQnA pipeline on this machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch the models if absent, start the five services and the megaservice, wait until they
    /// are healthy, ingest samples/, print the ready line; Ctrl-C stops everything.
    Up(Box<UpArgs>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("comps: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up(*args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("comps: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<std::process::ExitCode> {
    let restart = args.restart()?;
    let mut pipeline = args.start().await?;
    let base = pipeline.url("chatqna").unwrap_or_default();
    if !args.no_ingest {
        for (name, chunks) in chatqna::ingest_dir(&base, &args.samples).await? {
            let chunks = chunks.map(|n| format!(" ({n} chunk{})", if n == 1 { "" } else { "s" })).unwrap_or_default();
            println!("ingested {}{chunks}", args.samples.join(name).display());
        }
    }
    if let Some(path) = &args.ready_file {
        chatqna::write_ready_file(path, &pipeline)?;
    }
    if args.smoke {
        let answer = chatqna::ask(&base, chatqna::QUESTION, 64).await?;
        println!("{answer}");
        if let Some(want) = &args.expect
            && !answer.to_lowercase().contains(&want.to_lowercase())
        {
            anyhow::bail!("smoke run: the answer does not say {want}");
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    println!();
    println!("ChatQnA is ready (logs in {}; Ctrl-C stops everything). Try:", pipeline.logs.display());
    let question = format!(r#"{{"messages": "{}", "max_tokens": 64}}"#, chatqna::QUESTION);
    println!("  curl -N {base}/v1/chatqna -H 'content-type: application/json' -d '{question}'");
    println!("or open {base}/ in a browser (chat and documents).");
    println!();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    let mut supervisor = Supervisor::new(restart, pipeline.procs.len());
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                for event in supervisor.tick(&mut pipeline.procs).await {
                    match event {
                        Event::Failed { name, why, delay, attempt } => {
                            let log = pipeline.logs.join(format!("{name}.log"));
                            eprintln!(
                                "{name} {why} (see {}); restarting it in {delay:?} (failure {attempt} in a row)",
                                log.display()
                            );
                        }
                        Event::Back { name, url, pid } => {
                            println!("{name} is up again on {url} (pid {pid})");
                            if let Some(path) = &args.ready_file {
                                chatqna::write_ready_file(path, &pipeline)?;
                            }
                        }
                        Event::Fatal { name, why } => {
                            let log = pipeline.logs.join(format!("{name}.log"));
                            eprintln!("{name} {why}; see {}", log.display());
                            println!("stopping ChatQnA");
                            pipeline.stop();
                            return Ok(std::process::ExitCode::FAILURE);
                        }
                    }
                }
            }
        }
    }
    println!("stopping ChatQnA");
    pipeline.stop();
    Ok(std::process::ExitCode::SUCCESS)
}
