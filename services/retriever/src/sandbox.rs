//! Uploaded documents are read in a child process with hard limits, so that no file can take
//! the retriever down with it: a PDF whose objects nest thousands deep (the parser recurses
//! and overflows its stack), a decompression bomb (1 MB of PDF inflating to gigabytes) or a
//! parser stuck on a crafted input. The child is the retriever's own binary run as
//! `comps-retriever extract-worker NAME`: it caps its own address space and CPU time before it
//! reads anything, reads the file on stdin and writes the text on stdout behind a header line.
//! The parent bounds the text it accepts and the wall time, and kills the child past either.
//! A crash, a failed allocation or a kill becomes a clear 4xx naming the file; the service
//! and its store never see it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::ingest::{IngestError, extract_text};

/// The first argument that makes the binary a worker.
pub const WORKER_ARG: &str = "extract-worker";

/// The line the worker writes before the text: the parent checks it, so a wrong executable
/// (say, a test harness) is an error and not silently ingested output.
const HEADER: &[u8] = b"comps-retriever-extract 1\n";

/// Exit code of a worker that refused the document (its reason on stderr).
const EXIT_REFUSED: i32 = 3;

/// Environment variables carrying the limits to the worker.
const ENV_MEMORY: &str = "COMPS_EXTRACT_MEMORY_BYTES";
const ENV_CPU: &str = "COMPS_EXTRACT_CPU_SECS";

/// Limits of reading one document.
#[derive(Debug, Clone)]
pub struct ExtractLimits {
    /// Address space of the worker, in bytes.
    pub memory_bytes: u64,
    /// Wall time of one document.
    pub timeout: Duration,
    /// Largest text one document may expand to.
    pub max_text_bytes: usize,
}

/// Runs document extraction in worker processes.
#[derive(Debug, Clone)]
pub struct Extractor {
    /// The executable run as the worker (the retriever binary).
    pub exe: PathBuf,
    /// Its limits.
    pub limits: ExtractLimits,
}

impl Extractor {
    /// Workers run from this process's own executable.
    pub fn current(limits: ExtractLimits) -> Self {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("comps-retriever"));
        Self { exe, limits }
    }

    /// The text of the document `name` stored at `path`.
    pub async fn extract(&self, name: &str, path: &Path) -> Result<String, IngestError> {
        let input =
            std::fs::File::open(path).map_err(|e| IngestError::Internal(format!("opening the upload {name}: {e}")))?;
        let mut child = tokio::process::Command::new(&self.exe)
            .arg(WORKER_ARG)
            .arg(name)
            .env(ENV_MEMORY, self.limits.memory_bytes.to_string())
            .env(ENV_CPU, self.limits.timeout.as_secs().saturating_add(1).to_string())
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::from(input))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                IngestError::Internal(format!("starting the extraction worker {}: {e}", self.exe.display()))
            })?;
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let cap = self.limits.max_text_bytes + HEADER.len();
        let work = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let read_out = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = stdout.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<bool, std::io::Error>(true);
                    }
                    if out.len() + n > cap {
                        return Ok(false);
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            };
            // stderr is only a reason: its first 4 KB are enough.
            let mut limited_err = (&mut stderr).take(4096);
            let read_err = limited_err.read_to_end(&mut err);
            let (fits, _) = tokio::join!(read_out, read_err);
            (fits, out, err)
        };
        let (fits, out, err) = match tokio::time::timeout(self.limits.timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                let _ = child.kill().await;
                return Err(IngestError::TooCostly(format!(
                    "{name} could not be read within {} s; it is refused",
                    self.limits.timeout.as_secs()
                )));
            }
        };
        let fits = fits.map_err(|e| IngestError::Internal(format!("reading the extraction worker: {e}")))?;
        if !fits {
            let _ = child.kill().await;
            return Err(IngestError::TooLarge(format!(
                "{name} expands to more than {} bytes of text (--max-extracted-bytes); it is refused",
                self.limits.max_text_bytes
            )));
        }
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .map_err(|_| IngestError::Internal("the extraction worker did not exit".into()))?
            .map_err(|e| IngestError::Internal(format!("waiting for the extraction worker: {e}")))?;
        let reason = String::from_utf8_lossy(&err).trim().to_string();
        if status.success() {
            let mut text = out;
            if !text.starts_with(HEADER) {
                return Err(IngestError::Internal(format!(
                    "{} is not a comps-retriever extraction worker (no header on its output)",
                    self.exe.display()
                )));
            }
            text.drain(..HEADER.len());
            return String::from_utf8(text)
                .map_err(|e| IngestError::Internal(format!("the extraction worker wrote non-UTF-8 text: {e}")));
        }
        if status.code() == Some(EXIT_REFUSED) {
            return Err(IngestError::BadInput(reason));
        }
        Err(crash_reason(name, &reason, &self.limits))
    }
}

/// What a worker that died without refusing says to the client.
fn crash_reason(name: &str, stderr: &str, limits: &ExtractLimits) -> IngestError {
    tracing::warn!(file = name, worker = stderr, "document extraction worker died");
    if stderr.contains("overflowed its stack") {
        IngestError::BadInput(format!("{name} nests its structures too deeply to be read; it is refused"))
    } else if stderr.contains("memory allocation") || stderr.contains("capacity overflow") {
        IngestError::TooLarge(format!(
            "{name} needs more than {} MB of memory to read (a compressed stream that expands too far?); it is refused",
            limits.memory_bytes / (1024 * 1024)
        ))
    } else {
        IngestError::BadInput(format!("{name} could not be read: the document parser failed on it"))
    }
}

/// If this process was started as a worker, do the work and exit; otherwise return.
/// Call it first thing in `main`, before any thread or runtime starts.
pub fn run_if_worker() {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_none_or(|a| a != WORKER_ARG) {
        return;
    }
    let name = args.next().and_then(|n| n.into_string().ok()).unwrap_or_default();
    std::process::exit(worker(&name));
}

fn worker(name: &str) -> i32 {
    use nix::sys::resource::{Resource, setrlimit};
    let limit = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(bytes) = limit(ENV_MEMORY) {
        let _ = setrlimit(Resource::RLIMIT_AS, bytes, bytes);
    }
    if let Some(secs) = limit(ENV_CPU) {
        let _ = setrlimit(Resource::RLIMIT_CPU, secs, secs);
    }
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut bytes) {
        eprintln!("reading {name}: {e}");
        return EXIT_REFUSED;
    }
    match extract_text(name, &bytes) {
        Ok(text) => {
            drop(bytes);
            let mut out = std::io::stdout().lock();
            // The parent may stop reading (too much text): a broken pipe is its call, not ours.
            let _ = out.write_all(HEADER).and_then(|()| out.write_all(text.as_bytes())).and_then(|()| out.flush());
            0
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_REFUSED
        }
    }
}
