//! Real service binaries as child processes: each binds `127.0.0.1:0`, and the address it logs
//! ("listening", JSON log format) tells the test where it is. Every log line is kept, so a test
//! can check what a service logged (the LLM's rendered prompt, say). Children are killed when
//! dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

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

/// A running service.
pub struct Proc {
    /// The binary's name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Start `bin` with `args` (plus `--host 127.0.0.1 --port 0`) in the workspace root and wait
    /// up to `timeout` for it to listen. `RUST_LOG` may be set through `env`.
    pub fn start(bin: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Proc {
        let mut cmd = Command::new(binary(bin));
        cmd.args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .current_dir(workspace_root())
            .env("COMPS_LOG_FORMAT", "json")
            .env_remove("COMPS_PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !env.iter().any(|(k, _)| *k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {bin}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (stream, tx) in [(Box::new(stdout) as Box<dyn std::io::Read + Send>, Some(tx)), (Box::new(stderr), None)] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(tx) = &tx
                        && let Some(addr) = listening_addr(&line)
                    {
                        let _ = tx.send(addr);
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(timeout) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let lines = log.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
                panic!("{bin} did not start listening within {timeout:?}; its output:\n{lines}");
            }
        };
        Proc { name: bin.to_string(), addr, child, log }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every line logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Kill the process (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "listening" {
        return None;
    }
    v.get("addr")?.as_str()?.parse().ok()
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
