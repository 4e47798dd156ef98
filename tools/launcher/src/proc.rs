//! One comps process: started with `--host H --port P`, its output kept (in memory and, when
//! asked, in a log file), its address read from the line it logs when it listens (text or JSON
//! log format, so port 0 works), its health polled, and stopped with SIGTERM and a grace period
//! before SIGKILL. Dropping a `Proc` kills it. [`Proc::respawn`] starts the same command again
//! on the same address (a supervisor's restart), appending to the same log.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How often a wait looks at the child and its output.
const POLL: Duration = Duration::from_millis(100);

/// The log target of the server's "listening" line.
const LISTENING_TARGET: &str = "comps_core::server";

/// Lines of a log quoted when a process fails.
const TAIL_LINES: usize = 20;

/// Why a process could not be started or kept.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program could not be run at all.
    #[error("{name}: cannot run {program}: {source}")]
    Spawn {
        /// The process's name.
        name: String,
        /// The program.
        program: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// It exited before it was ready.
    #[error("{name} exited ({status}) before it was ready; the end of its log:\n{tail}")]
    Exited {
        /// The process's name.
        name: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its last log lines.
        tail: String,
    },
    /// It did not become ready in time.
    #[error("{name} did not {what} within {waited:?}; the end of its log:\n{tail}")]
    Timeout {
        /// The process's name.
        name: String,
        /// What it did not do ("listen", "answer /v1/health_check").
        what: &'static str,
        /// How long we waited.
        waited: Duration,
        /// Its last log lines.
        tail: String,
    },
    /// Anything else (a taken port, a missing file), said plainly.
    #[error("{0}")]
    Other(String),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ProcSpec {
    /// A short name for messages and the log file.
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Arguments after `--host H --port P`.
    pub args: Vec<String>,
    /// Extra environment (added to this process's own).
    pub env: Vec<(String, String)>,
    /// Interface to bind.
    pub host: String,
    /// Port to bind; 0 lets the OS choose (the address is read from the log).
    pub port: u16,
    /// Working directory (this process's when unset).
    pub cwd: Option<PathBuf>,
    /// Also write every output line here.
    pub log_file: Option<PathBuf>,
}

impl ProcSpec {
    /// `program` as `name`, on 127.0.0.1, any port.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            host: "127.0.0.1".into(),
            port: 0,
            cwd: None,
            log_file: None,
        }
    }

    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Bind this port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Run in this directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Write the output to this file too.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }
}

/// A running process.
#[derive(Debug)]
pub struct Proc {
    /// Its name.
    pub name: String,
    /// How many times it was restarted (see [`Proc::respawn`]).
    pub restarts: u32,
    spec: ProcSpec,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    listening: mpsc::Receiver<SocketAddr>,
    addr: Option<SocketAddr>,
}

impl Proc {
    /// Start `spec`. Returns once the process runs; see [`Proc::wait_listening`].
    pub fn spawn(spec: &ProcSpec) -> Result<Proc, LaunchError> {
        Self::start(spec.clone(), false)
    }

    /// Start the same command again, on the address this one listened on (so whoever was given
    /// that address finds the new process), its output appended to the same log file.
    pub fn respawn(&self) -> Result<Proc, LaunchError> {
        let mut spec = self.spec.clone();
        if let Some(addr) = self.addr {
            spec.port = addr.port();
        }
        let mut p = Self::start(spec, true)?;
        p.restarts = self.restarts + 1;
        Ok(p)
    }

    /// What it was started with.
    pub fn spec(&self) -> &ProcSpec {
        &self.spec
    }

    /// Its command line: the program, `--host H --port P` (the port it listens on, once known),
    /// the arguments.
    pub fn argv(&self) -> Vec<String> {
        let s = &self.spec;
        let port = self.addr.map_or(s.port, |a| a.port());
        let mut argv = vec![s.program.display().to_string(), "--host".into(), s.host.clone(), "--port".into()];
        argv.push(port.to_string());
        argv.extend(s.args.iter().cloned());
        argv
    }

    fn start(spec: ProcSpec, append: bool) -> Result<Proc, LaunchError> {
        let mut cmd = Command::new(&spec.program);
        cmd.args(["--host", &spec.host, "--port", &spec.port.to_string()])
            .args(&spec.args)
            .env_remove("COMPS_PORT")
            // Log files and pipes get plain text.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        // The address is read from the server's "listening" line: keep it whatever level the
        // caller chose for the rest.
        let level = spec.env.iter().rev().find(|(k, _)| k == "RUST_LOG").map(|(_, v)| v.clone());
        if let Some(filter) = level.or_else(|| std::env::var("RUST_LOG").ok()).filter(|f| !f.is_empty()) {
            cmd.env("RUST_LOG", format!("{filter},{LISTENING_TARGET}=info"));
        }
        let file = match &spec.log_file {
            Some(path) => {
                let opened =
                    if append { OpenOptions::new().create(true).append(true).open(path) } else { File::create(path) };
                Some(Arc::new(Mutex::new(opened.map_err(|e| {
                    LaunchError::Other(format!("{}: cannot write its log {}: {e}", spec.name, path.display()))
                })?)))
            }
            None => None,
        };
        let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
            name: spec.name.clone(),
            program: spec.program.display().to_string(),
            source,
        })?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, listening) = mpsc::channel();
        let outputs: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout is piped")),
            Box::new(child.stderr.take().expect("stderr is piped")),
        ];
        for stream in outputs {
            let (log, file, tx) = (log.clone(), file.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(addr) = listening_addr(&line) {
                        let _ = tx.send(addr);
                    }
                    if let Some(f) = &file {
                        let _ = writeln!(f.lock().unwrap_or_else(|e| e.into_inner()), "{line}");
                    }
                    lock(&log).push(line);
                }
            });
        }
        Ok(Proc { name: spec.name.clone(), restarts: 0, spec, child, log, listening, addr: None })
    }

    /// Where it listens, if it has said so by now (does not wait).
    pub fn poll_listening(&mut self) -> Option<SocketAddr> {
        if self.addr.is_none() {
            self.addr = self.listening.try_recv().ok();
        }
        self.addr
    }

    /// Whether `GET /v1/health_check` answers 200 within `timeout` (once, no retry).
    pub async fn is_healthy(&self, timeout: Duration) -> bool {
        let Ok(url) = self.url() else { return false };
        comps_core::http_client()
            .get(format!("{url}/v1/health_check"))
            .timeout(timeout)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Wait until it logs that it listens (a model loads first, so this can take a while).
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<SocketAddr, LaunchError> {
        if let Some(addr) = self.addr {
            return Ok(addr);
        }
        let start = Instant::now();
        loop {
            match self.listening.recv_timeout(POLL) {
                Ok(addr) => {
                    self.addr = Some(addr);
                    return Ok(addr);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Both output readers ended: the process closed them, so it is exiting.
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
            }
            self.check_running()?;
            if start.elapsed() > timeout {
                return Err(self.timeout("listen", timeout));
            }
        }
    }

    /// Wait until `GET /v1/health_check` answers 200.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<(), LaunchError> {
        self.url()?;
        let start = Instant::now();
        loop {
            if self.is_healthy(Duration::from_secs(2)).await {
                return Ok(());
            }
            self.check_running()?;
            if start.elapsed() > timeout {
                return Err(self.timeout("answer /v1/health_check", timeout));
            }
            tokio::time::sleep(POLL * 2).await;
        }
    }

    /// Where it listens (after [`Proc::wait_listening`]).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// `http://<addr>`, once it listens.
    pub fn url(&self) -> Result<String, LaunchError> {
        self.addr
            .map(|a| format!("http://{a}"))
            .ok_or_else(|| LaunchError::Other(format!("{} is not listening yet", self.name)))
    }

    /// Every line it wrote so far.
    pub fn log(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    /// Its last log lines, for an error message.
    pub fn tail(&self) -> String {
        let log = lock(&self.log);
        log[log.len().saturating_sub(TAIL_LINES)..].join("\n")
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ask it to stop (SIGTERM: the services finish what they are answering) and wait up to
    /// `grace`; then kill it.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
            let start = Instant::now();
            while start.elapsed() < grace {
                if self.exited().is_some() {
                    return;
                }
                std::thread::sleep(POLL / 2);
            }
        }
        self.kill();
    }

    /// Kill it (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn check_running(&mut self) -> Result<(), LaunchError> {
        match self.exited() {
            Some(status) => {
                // Let the readers take the last lines it wrote.
                std::thread::sleep(POLL);
                Err(LaunchError::Exited { name: self.name.clone(), status, tail: self.tail() })
            }
            None => Ok(()),
        }
    }

    fn timeout(&mut self, what: &'static str, waited: Duration) -> LaunchError {
        LaunchError::Timeout { name: self.name.clone(), what, waited, tail: self.tail() }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The address in a service's "listening" line: `{"message":"listening",...,"addr":"H:P"}` in
/// JSON format, `... listening service=x addr=H:P` in text format (colour codes skipped).
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v.get("message")?.as_str()? != "listening" {
            return None;
        }
        return v.get("addr")?.as_str()?.parse().ok();
    }
    let plain = strip_ansi(line);
    let (_, rest) = plain.split_once(" listening")?;
    let value = rest.split_whitespace().find_map(|kv| kv.strip_prefix("addr="))?;
    value.parse().ok()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// An executable shell script standing in for a service (it ignores `--host`/`--port`).
#[cfg(test)]
pub(crate) fn script(name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("comps-launcher-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("svc.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_is_read_in_both_formats() {
        let json = r#"{"timestamp":"t","level":"INFO","message":"listening","service":"llm","addr":"127.0.0.1:41234"}"#;
        assert_eq!(listening_addr(json), Some("127.0.0.1:41234".parse().unwrap()));
        let text = "2026-12-07T08:00:00.000Z  INFO comps_core::server: listening service=llm addr=127.0.0.1:9009";
        assert_eq!(listening_addr(text), Some("127.0.0.1:9009".parse().unwrap()));
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mcomps_core::server\u{1b}[0m\u{1b}[2m:\u{1b}[0m listening \u{1b}[3mservice\u{1b}[0m\u{1b}[2m=\u{1b}[0mllm \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m[::1]:80";
        assert_eq!(listening_addr(coloured), Some("[::1]:80".parse().unwrap()));
        for other in [
            r#"{"message":"loaded","addr":"127.0.0.1:1"}"#,
            "INFO model loaded addr=127.0.0.1:1",
            "INFO listening service=x addr=nowhere",
            "",
        ] {
            assert_eq!(listening_addr(other), None, "{other}");
        }
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = Proc::spawn(&ProcSpec::new("ghost", "/nonexistent/comps-ghost")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ghost") && msg.contains("/nonexistent/comps-ghost"), "{msg}");
    }

    #[test]
    fn an_early_exit_is_reported_with_its_output() {
        let mut p = Proc::spawn(&ProcSpec::new("early", script("early", "echo it broke >&2; exit 3"))).unwrap();
        let msg = p.wait_listening(Duration::from_secs(10)).unwrap_err().to_string();
        assert!(msg.contains("early exited") && msg.contains("it broke"), "{msg}");
    }

    #[test]
    fn the_address_comes_from_the_log_and_stop_asks_first() {
        // Listens (says so), and on SIGTERM says goodbye before exiting.
        let body = "trap 'echo bye; exit 0' TERM\necho \"INFO comps_core::server: listening service=s addr=127.0.0.1:4321\"\nwhile :; do sleep 0.05; done";
        let log = std::env::temp_dir().join(format!("comps-launcher-{}-stop.log", std::process::id()));
        let mut p = Proc::spawn(&ProcSpec::new("svc", script("stop", body)).log_file(&log)).unwrap();
        assert_eq!(p.wait_listening(Duration::from_secs(10)).unwrap(), "127.0.0.1:4321".parse().unwrap());
        assert_eq!(p.url().unwrap(), "http://127.0.0.1:4321");
        p.stop(Duration::from_secs(5));
        assert!(p.exited().is_some_and(|s| s.success()), "SIGTERM, not SIGKILL, ended it");
        std::thread::sleep(POLL * 2);
        let written = std::fs::read_to_string(&log).unwrap();
        assert!(written.contains("listening") && written.contains("bye"), "{written}");
        assert!(p.log().iter().any(|l| l == "bye"));
    }

    #[test]
    fn a_silent_process_times_out_naming_what_it_did_not_do() {
        let mut p = Proc::spawn(&ProcSpec::new("mute", script("mute", "echo loading; sleep 30"))).unwrap();
        let msg = p.wait_listening(Duration::from_millis(500)).unwrap_err().to_string();
        assert!(msg.contains("mute did not listen within") && msg.contains("loading"), "{msg}");
    }
}
