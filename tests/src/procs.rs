//! Real service binaries as child processes, started through the launcher's library
//! (`comps_launcher::Proc`, what `comps up` runs): each binds `127.0.0.1:0`, and the address it
//! logs when it listens tells the test where it is. Every log line is kept (JSON format here),
//! so a test can check what a service logged (the LLM's rendered prompt, say). Children are
//! killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use comps_launcher::ProcSpec;

/// The workspace root (models are under `models/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A workspace binary built beside this test (`cargo build --workspace --bins`, which
/// `scripts/test.sh` runs first).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A running service binary.
pub struct Proc {
    /// The binary's name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    inner: comps_launcher::Proc,
}

impl Proc {
    /// Start `bin` with `args` (plus `--host 127.0.0.1 --port 0`) in the workspace root, JSON
    /// logs at `info` unless `env` sets `RUST_LOG`, and wait up to `timeout` for it to listen.
    pub fn start(bin: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Proc {
        let mut spec = ProcSpec::new(bin, binary(bin)).args(args.iter().copied()).cwd(workspace_root());
        spec = spec.env("COMPS_LOG_FORMAT", "json");
        if !env.iter().any(|(k, _)| *k == "RUST_LOG") {
            spec = spec.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            spec = spec.env(*k, *v);
        }
        let mut inner = comps_launcher::Proc::spawn(&spec).unwrap_or_else(|e| panic!("{e}"));
        let addr = inner.wait_listening(timeout).unwrap_or_else(|e| panic!("{e}"));
        Proc { name: bin.to_string(), addr, inner }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every line logged so far.
    pub fn log(&self) -> Vec<String> {
        self.inner.log()
    }

    /// Kill the process (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        self.inner.kill();
    }
}

/// The sum of a Prometheus counter's samples whose labels contain every `label="value"` pair
/// given, from a `/metrics` text.
pub fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Requests a service has answered on `route` (its `comps_http_requests_total`).
pub async fn requests_on(base: &str, route: &str) -> f64 {
    let text = comps_core::http_client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    counter(&text, "comps_http_requests_total", &[("route", route)])
}
