//! The ChatQnA pipeline on one machine: the five services and the megaservice as processes of
//! one build, wired to each other's addresses, with the documents of `samples/` ingested.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::proc::{Proc, ProcSpec};
use crate::supervise::{Restart, RestartPolicy};

/// The question the README asks (its answer is in `samples/`).
pub const QUESTION: &str = "What colour did Odalys Brenner paint the Zephyrine lighthouse?";

/// How long a stopped process gets to finish what it is answering.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// `comps up`'s settings.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Directory of the service binaries [default: the directory of `comps` itself, so one
    /// build's binaries run together].
    #[arg(long, env = "COMPS_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Where the embedded store keeps its data and the services their logs.
    #[arg(long, env = "CHATQNA_DATA_DIR", default_value = "data/chatqna")]
    pub data_dir: PathBuf,
    /// The embedding model (it also reranks and cuts the chunks).
    #[arg(long, env = "CHATQNA_EMBEDDING_MODEL", default_value = "models/multilingual-e5-small")]
    pub embedding_model: PathBuf,
    /// The chat model.
    #[arg(long, env = "CHATQNA_LLM_MODEL", default_value = "models/Qwen2.5-Coder-0.5B-Instruct")]
    pub llm_model: PathBuf,
    /// The guardrail's prompt-injection encoder.
    #[arg(long, env = "CHATQNA_GUARDRAIL_MODEL", default_value = "models/all-MiniLM-L6-v2")]
    pub guardrail_model: PathBuf,
    /// Reranked chunks that reach the LLM.
    #[arg(long, env = "CHATQNA_TOP_N", default_value_t = 3)]
    pub top_n: u32,
    /// Interface every process binds.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// ChatQnA's port (0: any free port, for every port flag).
    #[arg(long, env = "CHATQNA_PORT", default_value_t = 8888)]
    pub chatqna_port: u16,
    /// The embedding service's port.
    #[arg(long, env = "EMBEDDING_PORT", default_value_t = 6006)]
    pub embedding_port: u16,
    /// The retriever's port.
    #[arg(long, env = "RETRIEVER_PORT", default_value_t = 7000)]
    pub retriever_port: u16,
    /// The rerank service's port.
    #[arg(long, env = "RERANK_PORT", default_value_t = 8808)]
    pub rerank_port: u16,
    /// The LLM service's port.
    #[arg(long, env = "LLM_PORT", default_value_t = 9009)]
    pub llm_port: u16,
    /// The guardrail service's port.
    #[arg(long, env = "GUARDRAIL_PORT", default_value_t = 9090)]
    pub guardrail_port: u16,
    /// Run this LLM binary instead of the build's `comps-llm` (a before/after benchmark).
    #[arg(long)]
    pub llm_bin: Option<PathBuf>,
    /// An extra argument for the LLM service (repeat it: `--llm-arg=--backend --llm-arg=candle`).
    #[arg(long = "llm-arg", allow_hyphen_values = true)]
    pub llm_args: Vec<String>,
    /// Do not start the guardrail service (ChatQnA uses it only with `--with-guardrails` or
    /// `--with-output-guard`).
    #[arg(long)]
    pub no_guardrail: bool,
    /// The documents ingested when the store does not have them yet.
    #[arg(long, default_value = "samples")]
    pub samples: PathBuf,
    /// Ingest nothing.
    #[arg(long)]
    pub no_ingest: bool,
    /// Do not run `scripts/fetch-models.sh` when a model is missing.
    #[arg(long)]
    pub no_fetch: bool,
    /// When everything is up, write `{"chatqna": URL, ...}` here (for scripts and benchmarks).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Ask the README's question once, print the answer and stop.
    #[arg(long)]
    pub smoke: bool,
    /// With `--smoke`: fail unless the answer contains this (case-insensitive).
    #[arg(long, requires = "smoke")]
    pub expect: Option<String>,
    /// How long a service may take to load its model and answer its health check.
    #[arg(long, default_value_t = 600)]
    pub start_timeout_secs: u64,
    /// When a process exits: `no` stops the whole pipeline; `on-failure` starts it again (same
    /// command, same port) when it failed (non-zero exit or a signal).
    #[arg(long, env = "COMPS_RESTART", value_enum, default_value_t = RestartPolicy::No)]
    pub restart: RestartPolicy,
    /// The first wait before a restart; doubled for each failure in a row, at most 60 s.
    #[arg(long, env = "COMPS_RESTART_DELAY_SECS", default_value_t = 1.0)]
    pub restart_delay_secs: f64,
    /// Failures in a row of one process after which the pipeline stops (a process healthy for
    /// 60 s starts afresh).
    #[arg(long, env = "COMPS_MAX_RESTARTS", default_value_t = 5)]
    pub max_restarts: u32,
    /// Flags for the chatqna megaservice (after `--`): `--with-guardrails`, `--without-rerank`...
    #[arg(last = true)]
    pub chatqna_args: Vec<String>,
}

/// The pipeline's processes, in start order (chatqna last).
#[derive(Debug)]
pub struct Pipeline {
    /// The running processes.
    pub procs: Vec<Proc>,
    /// Where their logs are.
    pub logs: PathBuf,
}

impl Pipeline {
    /// `http://host:port` of the process `name`.
    pub fn url(&self, name: &str) -> Option<String> {
        self.procs.iter().find(|p| p.name == name).and_then(|p| p.url().ok())
    }

    /// Stop everything, the megaservice first.
    pub fn stop(&mut self) {
        for p in self.procs.iter_mut().rev() {
            p.stop(STOP_GRACE);
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

impl UpArgs {
    /// The restart settings.
    pub fn restart(&self) -> anyhow::Result<Restart> {
        let delay = Duration::try_from_secs_f64(self.restart_delay_secs)
            .map_err(|_| anyhow::anyhow!("--restart-delay-secs must be a number of seconds >= 0"))?;
        Ok(Restart {
            policy: self.restart,
            delay,
            max_in_a_row: self.max_restarts,
            start_timeout: Duration::from_secs(self.start_timeout_secs.max(1)),
        })
    }

    fn bin(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = match &self.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()?.parent().context("the launcher has no directory")?.to_path_buf(),
        };
        let path = dir.join(name);
        if !path.is_file() {
            bail!("{} is not built (build the workspace's binaries, or pass --bin-dir)", path.display());
        }
        Ok(path)
    }

    fn models(&self) -> Vec<&Path> {
        let mut m = vec![self.embedding_model.as_path(), self.llm_model.as_path()];
        if !self.no_guardrail {
            m.push(&self.guardrail_model);
        }
        m
    }

    /// Fetch the models when one is missing (the repository's `scripts/fetch-models.sh`).
    fn fetch_models(&self) -> anyhow::Result<()> {
        // A model is a directory (or a file, e.g. a GGUF); missing when absent or empty.
        let missing = |m: &&Path| !m.exists() || std::fs::read_dir(m).is_ok_and(|mut d| d.next().is_none());
        if !self.models().iter().any(missing) {
            return Ok(());
        }
        let script = Path::new("scripts/fetch-models.sh");
        if !self.no_fetch && script.is_file() {
            println!("fetching the models (scripts/fetch-models.sh)");
            let status = std::process::Command::new("bash").arg(script).status()?;
            if !status.success() {
                bail!("scripts/fetch-models.sh failed ({status})");
            }
        }
        if let Some(m) = self.models().into_iter().find(|m| missing(m)) {
            bail!("{} holds no model: run scripts/fetch-models.sh, or point the model flag elsewhere", m.display());
        }
        Ok(())
    }

    fn check_ports(&self) -> anyhow::Result<()> {
        let ports = [
            ("CHATQNA_PORT", self.chatqna_port, true),
            ("EMBEDDING_PORT", self.embedding_port, true),
            ("RETRIEVER_PORT", self.retriever_port, true),
            ("RERANK_PORT", self.rerank_port, true),
            ("LLM_PORT", self.llm_port, true),
            ("GUARDRAIL_PORT", self.guardrail_port, !self.no_guardrail),
        ];
        for (var, port, used) in ports {
            if used && port != 0 && TcpListener::bind((self.host.as_str(), port)).is_err() {
                bail!("port {port} is in use; set {var} (or its flag) to another port, 0 for any");
            }
        }
        Ok(())
    }

    fn spec(&self, name: &str, program: PathBuf, port: u16, logs: &Path) -> ProcSpec {
        let mut spec = ProcSpec::new(name, program).port(port).log_file(logs.join(format!("{name}.log")));
        spec.host = self.host.clone();
        spec
    }

    /// Start the pipeline and wait until every process answers its health check.
    pub async fn start(&self) -> anyhow::Result<Pipeline> {
        self.fetch_models()?;
        self.check_ports()?;
        let logs = self.data_dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let timeout = Duration::from_secs(self.start_timeout_secs.max(1));
        let mut pipeline = Pipeline { procs: Vec::new(), logs: logs.clone() };
        let e5_prompts = has_passage_prompt(&self.embedding_model);
        let model = |p: &Path| p.display().to_string();

        // The models load in parallel; the retriever needs the embedder's address first.
        let embedding = self
            .spec("embedding", self.bin("comps-embedding")?, self.embedding_port, &logs)
            .args(["--model".into(), model(&self.embedding_model)]);
        let rerank = self
            .spec("rerank", self.bin("comps-rerank")?, self.rerank_port, &logs)
            .args(["--model".into(), model(&self.embedding_model)]);
        let llm_bin = match &self.llm_bin {
            Some(b) => b.clone(),
            None => self.bin("comps-llm")?,
        };
        let llm = self
            .spec("llm", llm_bin, self.llm_port, &logs)
            .args(["--model".into(), model(&self.llm_model)])
            .args(self.llm_args.iter().cloned());
        let mut first = vec![embedding, rerank, llm];
        if !self.no_guardrail {
            first.push(
                self.spec("guardrail", self.bin("comps-guardrail")?, self.guardrail_port, &logs)
                    .args(["--injection-model".into(), model(&self.guardrail_model)]),
            );
        }
        for spec in &first {
            pipeline.procs.push(Proc::spawn(spec)?);
        }
        let embed_url = format!("http://{}/embed", pipeline.procs[0].wait_listening(timeout)?);
        let mut retriever = self
            .spec("retriever", self.bin("comps-retriever")?, self.retriever_port, &logs)
            .args(["--data-dir".into(), self.data_dir.join("retriever").display().to_string()])
            .args(["--embedding-url".into(), embed_url])
            .args(["--chunk-tokenizer".into(), model(&self.embedding_model)]);
        if e5_prompts {
            retriever = retriever.args(["--passage-prompt-name", "passage", "--query-prompt-name", "query"]);
        }
        pipeline.procs.insert(1, Proc::spawn(&retriever)?);
        let status = Status::spinner();
        for p in &mut pipeline.procs {
            status.set(format!("waiting for {} (loading its model)", p.name));
            p.wait_listening(timeout)?;
            p.wait_healthy(timeout).await?;
            status.line(format!("{} is up on {}", p.name, p.url()?));
        }

        let addr = |name: &str| pipeline.procs.iter().find(|p| p.name == name).and_then(Proc::addr);
        let mut chatqna = self
            .spec("chatqna", self.bin("chatqna")?, self.chatqna_port, &logs)
            .args(self.chatqna_args.iter().cloned())
            .env("CHATQNA_TOP_N", self.top_n.to_string())
            .env("EMBEDDING_QUERY_PROMPT_NAME", if e5_prompts { "query" } else { "" });
        for (name, host_var, port_var) in [
            ("embedding", "EMBEDDING_SERVER_HOST_IP", "EMBEDDING_SERVER_PORT"),
            ("retriever", "RETRIEVER_SERVICE_HOST_IP", "RETRIEVER_SERVICE_PORT"),
            ("rerank", "RERANK_SERVER_HOST_IP", "RERANK_SERVER_PORT"),
            ("llm", "LLM_SERVER_HOST_IP", "LLM_SERVER_PORT"),
            ("guardrail", "GUARDRAIL_SERVICE_HOST_IP", "GUARDRAIL_SERVICE_PORT"),
        ] {
            if let Some(a) = addr(name) {
                chatqna = chatqna.env(host_var, a.ip().to_string()).env(port_var, a.port().to_string());
            }
        }
        let mut mega = Proc::spawn(&chatqna)?;
        status.set("waiting for chatqna".into());
        mega.wait_listening(timeout)?;
        mega.wait_healthy(timeout).await?;
        status.line(format!("chatqna is up on {}", mega.url()?));
        drop(status);
        pipeline.procs.push(mega);
        Ok(pipeline)
    }
}

/// Whether an embedding model names E5's `passage` prompt (then questions get `query`).
fn has_passage_prompt(model: &Path) -> bool {
    std::fs::read_to_string(model.join("config_sentence_transformers.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| v.pointer("/prompts/passage").is_some())
}

/// Upload every file of `dir` the store does not list yet; returns the names uploaded, each
/// with the chunks the retriever stored for it (when it says).
pub async fn ingest_dir(base: &str, dir: &Path) -> anyhow::Result<Vec<(String, Option<u64>)>> {
    let client = comps_core::http_client();
    let have: Value = client.post(format!("{base}/v1/dataprep/get")).send().await?.error_for_status()?.json().await?;
    let stored: Vec<&str> = have
        .as_array()
        .map(|files| files.iter().filter_map(|f| f.get("name").or(Some(f)).and_then(Value::as_str)).collect())
        .unwrap_or_default();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let name_of = |p: &Path| p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    entries.retain(|p| !stored.contains(&name_of(p).as_str()));
    let total: u64 = entries.iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
    let bar = ingest_bar(total);
    let mut uploaded = Vec::new();
    for path in entries {
        let name = name_of(&path);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let len = bytes.len() as u64;
        if let Some(b) = &bar {
            b.set_message(name.clone());
        }
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.clone());
        let form = reqwest::multipart::Form::new().part("files", part);
        let r = client.post(format!("{base}/v1/dataprep/ingest")).multipart(form).send().await?;
        if !r.status().is_success() {
            bail!("ingesting {}: {} {}", path.display(), r.status(), r.text().await.unwrap_or_default());
        }
        let answer: Value = r.json().await.unwrap_or_default();
        uploaded.push((name, answer["chunks"].as_u64()));
        if let Some(b) = &bar {
            b.inc(len);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(uploaded)
}

/// On a terminal, a bar over the bytes to ingest, naming the file being chunked and embedded
/// (it ticks while one large file is in the retriever); elsewhere none, the lines printed after
/// each file say it.
fn ingest_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if total == 0 {
        return None;
    }
    Status::bar(indicatif::ProgressBar::new(total), "ingesting {msg} [{bar:30}] {bytes}/{total_bytes} {elapsed}")
}

/// What the launcher is waiting for: a spinner on a terminal (stderr), nothing elsewhere; its
/// lines go to stdout either way.
struct Status(Option<indicatif::ProgressBar>);

impl Status {
    fn spinner() -> Self {
        Self(Self::bar(indicatif::ProgressBar::new_spinner(), "{spinner} {msg} {elapsed}"))
    }

    /// `bar` styled by `template` and ticking, when stderr is a terminal.
    fn bar(bar: indicatif::ProgressBar, template: &str) -> Option<indicatif::ProgressBar> {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return None;
        }
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    }

    fn set(&self, msg: String) {
        if let Some(b) = &self.0 {
            b.set_message(msg);
        }
    }

    /// A line printed above the spinner (stdout when there is none).
    fn line(&self, msg: String) {
        match &self.0 {
            Some(b) => b.suspend(|| println!("{msg}")),
            None => println!("{msg}"),
        }
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Ask ChatQnA one question, whole answer, greedy; returns its text.
pub async fn ask(base: &str, question: &str, max_tokens: u32) -> anyhow::Result<String> {
    let body = json!({"messages": question, "max_tokens": max_tokens, "stream": false, "temperature": 0});
    let r = comps_core::http_client().post(format!("{base}/v1/chatqna")).json(&body).send().await?;
    let status = r.status();
    let answer: Value = r.json().await?;
    if !status.is_success() {
        bail!("chatqna answered {status}: {answer}");
    }
    answer
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("chatqna's answer has no text: {answer}"))
}

/// `{"chatqna": URL, "embedding": URL, ..., "processes": {"llm": {"url", "pid", "restarts",
/// "argv", "env"}, ...}}`, written whole (a reader never sees half of it); rewritten after each
/// restart, so it always names the live processes.
pub fn write_ready_file(path: &Path, pipeline: &Pipeline) -> anyhow::Result<()> {
    let mut ready: serde_json::Map<String, Value> =
        pipeline.procs.iter().filter_map(|p| Some((p.name.clone(), json!(p.url().ok()?)))).collect();
    let processes: serde_json::Map<String, Value> = pipeline
        .procs
        .iter()
        .map(|p| {
            let env: serde_json::Map<String, Value> = p.spec().env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            let process =
                json!({"url": p.url().ok(), "pid": p.pid(), "restarts": p.restarts, "argv": p.argv(), "env": env});
            (p.name.clone(), process)
        })
        .collect();
    ready.insert("processes".into(), Value::Object(processes));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, Value::Object(ready).to_string())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
