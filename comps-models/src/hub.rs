//! Model ids from the Hugging Face Hub: `--model org/name` is looked up in the local Hugging Face
//! cache (the layout `huggingface_hub` writes: `models--org--name/refs/main` naming a
//! `snapshots/<rev>/` directory whose files link to `blobs/`) and, unless `HF_HUB_OFFLINE` is
//! set, downloaded into it from `HF_ENDPOINT` (default `https://huggingface.co`) with `HF_TOKEN`
//! when given. A local directory is used as it is.
//!
//! Downloads go through the `hf-hub` crate: files are streamed to disk in 10 MB ranges, an
//! interrupted download resumes from its last whole range on the next start, and a progress bar
//! is drawn on a terminal (log lines elsewhere). A weight file the hub stores in LFS is checked
//! against its SHA-256 (its ETag) before it is used. Sharded safetensors checkpoints
//! (`model.safetensors.index.json` and its shards) and GGUF repositories
//! (`org/name-GGUF[:QUANT]`) are understood.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hf_hub::api::tokio::{Api, ApiBuilder, ApiError, ApiRepo, Progress};

use super::ModelError;
use crate::encoder::{SHARD_INDEX, safetensors_files, shard_names};

/// Where the hub and its cache are.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Base URL of the hub.
    pub endpoint: String,
    /// The cache root (`.../huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Never download.
    pub offline: bool,
    /// Bearer token for gated models.
    pub token: Option<String>,
    /// Per-file download timeout.
    pub timeout: Duration,
}

impl HubConfig {
    /// From the environment, as `huggingface_hub` reads it: `HF_ENDPOINT`, `HF_HUB_CACHE` /
    /// `HF_HOME`, `HF_HUB_OFFLINE`, `HF_TOKEN`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cache_dir = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            var("HF_HOME").map(|h| PathBuf::from(h).join("hub")).unwrap_or_else(|| {
                PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache/huggingface/hub")
            })
        });
        Self {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            cache_dir,
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
            token: var("HF_TOKEN"),
            timeout: Duration::from_secs(600),
        }
    }

    fn repo_dir(&self, id: &str) -> PathBuf {
        self.cache_dir.join(format!("models--{}", id.replace('/', "--")))
    }

    /// The snapshot `refs/main` names, if the cache has one.
    fn snapshot(&self, id: &str) -> Option<PathBuf> {
        let repo = self.repo_dir(id);
        let rev = std::fs::read_to_string(repo.join("refs").join("main")).ok()?;
        let snap = repo.join("snapshots").join(rev.trim());
        snap.is_dir().then_some(snap)
    }

    fn api(&self) -> Result<Api, ModelError> {
        let mut b = ApiBuilder::new()
            .with_endpoint(self.endpoint.trim_end_matches('/').to_string())
            .with_cache_dir(self.cache_dir.clone())
            .with_progress(false);
        if let Some(t) = &self.token {
            b = b.with_token(Some(t.clone()));
        }
        b.build().map_err(|e| ModelError::Load(format!("the hub client: {e}")))
    }
}

/// In a file list: the model's weights, `model.safetensors` or a sharded checkpoint's index and
/// shards.
pub const WEIGHTS: &str = "model.safetensors";
/// Files an encoder directory needs, and files read when present.
pub const ENCODER_FILES: &[&str] = &["config.json", WEIGHTS, "tokenizer.json"];
/// Optional files of a sentence-transformers directory.
pub const SENTENCE_FILES: &[&str] = &["1_Pooling/config.json", "sentence_bert_config.json", "tokenizer_config.json"];

/// The quantization picked from a GGUF repository when none is named (llama.cpp's default).
pub const DEFAULT_QUANT: &str = "Q4_K_M";

/// A directory holding `model`: the path itself when it is a directory, else the hub id's
/// cached snapshot, downloading what is missing unless offline.
pub async fn resolve(
    model: &str,
    required: &[&str],
    optional: &[&str],
    hub: &HubConfig,
) -> Result<PathBuf, ModelError> {
    let p = Path::new(model);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let id = hub_id(model)?;
    if let Some(snap) = hub.snapshot(id).filter(|s| complete(s, required)) {
        return Ok(snap);
    }
    offline_error(id, hub)?;
    let repo = HubRepo::open(id, hub).await?;
    repo.fetch_files(required, optional).await
}

/// A chat model: a local `.gguf` file or directory as it is, else a hub repository holding
/// either a safetensors model (`required`/`optional` as in [`resolve`]) or `.gguf` files, of
/// which `org/name:QUANT` picks one (default [`DEFAULT_QUANT`], or the only one). Returns the
/// snapshot directory or the `.gguf` file.
pub async fn resolve_chat(
    model: &str,
    required: &[&str],
    optional: &[&str],
    hub: &HubConfig,
) -> Result<PathBuf, ModelError> {
    let p = Path::new(model);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    let (name, quant) = match model.rsplit_once(':') {
        Some((n, q)) if !q.contains('/') && n.contains('/') => (n, Some(q)),
        _ => (model, None),
    };
    let id = hub_id(name)?;
    if let Some(snap) = hub.snapshot(id) {
        if quant.is_none() && complete(&snap, required) {
            return Ok(snap);
        }
        let ggufs: Vec<String> = std::fs::read_dir(&snap)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.ends_with(".gguf")).collect()
            })
            .unwrap_or_default();
        if let Ok(file) = pick_gguf(&ggufs, quant) {
            return Ok(snap.join(file));
        }
    }
    offline_error(id, hub)?;
    let repo = HubRepo::open(id, hub).await?;
    let has_weights = repo.files.iter().any(|f| f == WEIGHTS || f == SHARD_INDEX);
    if quant.is_none() && has_weights && repo.files.iter().any(|f| f == "config.json") {
        return repo.fetch_files(required, optional).await;
    }
    let ggufs: Vec<String> = repo.files.iter().filter(|f| f.ends_with(".gguf")).cloned().collect();
    if ggufs.is_empty() {
        return Err(ModelError::Load(format!(
            "{id} on the hub holds neither a .gguf file nor config.json + model.safetensors"
        )));
    }
    let file = pick_gguf(&ggufs, quant).map_err(|e| ModelError::Load(format!("{id}: {e}")))?;
    repo.fetch(&file).await
}

/// The GGUF file of `files` that `quant` names (`Q4_K_M` matches `model.Q4_K_M.gguf` and
/// `model-q4_k_m.gguf`, not `model-Q4_K_M_L.gguf`); without one, the only file or the
/// [`DEFAULT_QUANT`] one.
pub fn pick_gguf(files: &[String], quant: Option<&str>) -> Result<String, String> {
    let named = |q: &str| -> Vec<&String> { files.iter().filter(|f| names_quant(f, q)).collect() };
    let list = || files.join(", ");
    let chosen = match quant {
        Some(q) => match named(q).as_slice() {
            [one] => (*one).clone(),
            [] => return Err(format!("no .gguf file for {q} among {}", list())),
            many => {
                return Err(format!(
                    "{} .gguf files match {q}: {}",
                    many.len(),
                    many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        },
        None => match (files, named(DEFAULT_QUANT).as_slice()) {
            ([one], _) => one.clone(),
            (_, [one]) => (*one).clone(),
            _ => return Err(format!("{} .gguf files ({}); name one as org/name:QUANT", files.len(), list())),
        },
    };
    if is_split_gguf(&chosen) {
        return Err(format!("{chosen} is one part of a split GGUF; merge the parts with llama-gguf-split --merge"));
    }
    Ok(chosen)
}

fn names_quant(file: &str, quant: &str) -> bool {
    let (f, q) = (file.to_ascii_uppercase(), quant.to_ascii_uppercase());
    let stem = f.strip_suffix(".GGUF").unwrap_or(&f);
    stem.match_indices(&q).any(|(at, m)| {
        let before = stem[..at].chars().next_back();
        let after = stem[at + m.len()..].chars().next();
        before.is_none_or(|c| !c.is_ascii_alphanumeric())
            && after.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_')
    })
}

fn is_split_gguf(file: &str) -> bool {
    let stem = file.strip_suffix(".gguf").unwrap_or(file);
    let mut parts = stem.rsplit('-');
    let (total, of, part) = (parts.next(), parts.next(), parts.next());
    of == Some("of")
        && [total, part].iter().all(|p| p.is_some_and(|p| p.len() == 5 && p.bytes().all(|b| b.is_ascii_digit())))
}

/// `model` as a hub id, or the reason it is not one.
fn hub_id(model: &str) -> Result<&str, ModelError> {
    let p = Path::new(model);
    if let Some(why) = meant_local(p) {
        let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
        return Err(ModelError::Load(format!(
            "no such model directory: {model} ({why}; relative paths are read from {cwd}); the Hub was not asked"
        )));
    }
    let valid_id = model.split('/').count() == 2
        && model.split('/').all(|s| !s.is_empty() && s != ".." && s != ".")
        && model.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !valid_id {
        return Err(ModelError::Load(format!("'{model}' is neither a directory nor a hub id like 'org/name'")));
    }
    Ok(model)
}

fn offline_error(id: &str, hub: &HubConfig) -> Result<(), ModelError> {
    if hub.offline {
        return Err(ModelError::Load(format!(
            "'{id}' is not a directory and not in the Hugging Face cache at {}, and HF_HUB_OFFLINE is set",
            hub.cache_dir.display()
        )));
    }
    Ok(())
}

/// Whether `dir` holds every file of `required` ([`WEIGHTS`] as one file or a complete set of
/// shards).
fn complete(dir: &Path, required: &[&str]) -> bool {
    required.iter().all(|f| match *f {
        WEIGHTS => safetensors_files(dir).is_ok_and(|fs| fs.iter().all(|f| f.is_file())),
        f => dir.join(f).is_file(),
    })
}

/// Why `model` is a local path and not a Hub id, if it is one: written as a path (`/`, `./`,
/// `../`, `~`), a file that exists, or `org/name` whose `org` is a directory here (a mistyped
/// `models/...`), or this project's `models/` folder when run from elsewhere.
fn meant_local(p: &Path) -> Option<String> {
    let text = p.to_string_lossy();
    if text.starts_with('/') || text.starts_with("./") || text.starts_with("../") || text.starts_with('~') {
        return Some("written as a path".into());
    }
    if p.exists() {
        return Some("it is a file, and a model here is a directory".into());
    }
    let first = p.components().next()?.as_os_str().to_string_lossy().to_string();
    if p.components().count() < 2 {
        return None;
    }
    if Path::new(&first).is_dir() {
        return Some(format!("{first}/ is a directory here"));
    }
    (first == "models").then(|| "models/ is where scripts/fetch-models.sh puts models, and it is not here".into())
}

/// One repository on the hub: its file list and revision, read once.
struct HubRepo<'a> {
    id: &'a str,
    hub: &'a HubConfig,
    api: ApiRepo,
    files: Vec<String>,
    /// Where this revision's files land: `snapshots/<sha>`.
    snapshot: PathBuf,
}

impl<'a> HubRepo<'a> {
    async fn open(id: &'a str, hub: &'a HubConfig) -> Result<Self, ModelError> {
        let api = hub.api()?.model(id.to_string());
        let what = format!("listing {id} on {}", hub.endpoint);
        let info = tokio::time::timeout(hub.timeout, api.info())
            .await
            .map_err(|_| ModelError::Load(format!("{what}: no answer in {} s", hub.timeout.as_secs())))?
            .map_err(|e| hub_error(&what, e))?;
        if info.sha.is_empty() || !info.sha.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ModelError::Load(format!("{what}: the hub gave revision '{}'", info.sha)));
        }
        let snapshot = hub.repo_dir(id).join("snapshots").join(&info.sha);
        Ok(Self { id, hub, api, files: info.siblings.into_iter().map(|s| s.rfilename).collect(), snapshot })
    }

    /// Every file of `required` and those of `optional` the repository has, into one snapshot.
    async fn fetch_files(&self, required: &[&str], optional: &[&str]) -> Result<PathBuf, ModelError> {
        let has = |f: &str| self.files.iter().any(|x| x == f);
        for f in required {
            let present = if *f == WEIGHTS { has(WEIGHTS) || has(SHARD_INDEX) } else { has(f) };
            if !present {
                return Err(ModelError::Load(format!("{} on the hub has no {f}", self.id)));
            }
        }
        for f in required.iter().chain(optional.iter().filter(|f| has(f))) {
            if *f == WEIGHTS && !has(WEIGHTS) {
                let index = self.fetch(SHARD_INDEX).await?;
                let text = tokio::fs::read_to_string(&index)
                    .await
                    .map_err(|e| ModelError::Load(format!("{}: {e}", index.display())))?;
                let shards = shard_names(&text).map_err(|e| ModelError::Load(format!("{}: {e}", index.display())))?;
                for shard in shards {
                    self.fetch(&shard).await?;
                }
            } else {
                self.fetch(f).await?;
            }
        }
        Ok(self.snapshot.clone())
    }

    /// One file of this revision: from the cache when there, else downloaded and checked.
    async fn fetch(&self, file: &str) -> Result<PathBuf, ModelError> {
        let want = self.snapshot.join(file);
        if want.is_file() {
            return Ok(want);
        }
        let what = format!("downloading {file} of {}", self.id);
        let report = Report::new(self.id, file);
        let got = tokio::time::timeout(self.hub.timeout, self.api.download_with_progress(file, report))
            .await
            .map_err(|_| {
                ModelError::Load(format!("{what}: not done in {} s; run again to resume", self.hub.timeout.as_secs()))
            })?
            .map_err(|e| hub_error(&what, e))?;
        if got != want {
            return Err(ModelError::Load(format!(
                "{what}: the repository changed while downloading ({} is not under {}); run again",
                got.display(),
                self.snapshot.display()
            )));
        }
        verify(&got, file).await?;
        Ok(got)
    }
}

/// A hub error in words: the status the hub answered, or what went wrong on the way.
fn hub_error(what: &str, e: ApiError) -> ModelError {
    let status = match &e {
        ApiError::RequestError(r) => r.status(),
        _ => None,
    };
    ModelError::Load(match status {
        Some(s) if s.as_u16() == 401 || s.as_u16() == 403 => {
            format!("{what}: the hub answered {s} (a gated or private model needs HF_TOKEN)")
        }
        Some(s) => format!("{what}: the hub answered {s}"),
        None => format!("{what}: {e}"),
    })
}

/// A downloaded file checked against its SHA-256 when the hub gave one: an LFS file's blob is
/// named by its ETag, the hash of its content. A file that does not match is removed.
async fn verify(pointer: &Path, file: &str) -> Result<(), ModelError> {
    let blob =
        tokio::fs::canonicalize(pointer).await.map_err(|e| ModelError::Load(format!("{}: {e}", pointer.display())))?;
    let expected = blob.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(()); // a git-stored (small) file: its ETag is not a SHA-256
    }
    let path = blob.clone();
    let actual = tokio::task::spawn_blocking(move || comps_core::utils::sha256_file(&path))
        .await
        .map_err(|e| ModelError::Load(e.to_string()))?
        .map_err(|e| ModelError::Load(format!("{}: {e}", blob.display())))?;
    if actual != expected {
        let _ = tokio::fs::remove_file(pointer).await;
        let _ = tokio::fs::remove_file(&blob).await;
        return Err(ModelError::Load(format!(
            "{file}: checksum mismatch (SHA-256 {actual}, the hub's ETag says {expected}); the file was removed, run again"
        )));
    }
    tracing::info!(file, sha256 = %actual, "checked");
    Ok(())
}

/// Download progress: a bar on a terminal, else a log line every few seconds.
#[derive(Clone)]
struct Report(Arc<Mutex<ReportState>>);

struct ReportState {
    model: String,
    file: String,
    total: usize,
    done: usize,
    logged: Instant,
    bar: Option<indicatif::ProgressBar>,
}

/// How often a download logs its progress when no terminal shows a bar.
const REPORT_EVERY: Duration = Duration::from_secs(3);

impl Report {
    fn new(model: &str, file: &str) -> Self {
        Self(Arc::new(Mutex::new(ReportState {
            model: model.to_string(),
            file: file.to_string(),
            total: 0,
            done: 0,
            logged: Instant::now(),
            bar: None,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut ReportState) -> R) -> R {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }
}

impl Progress for Report {
    async fn init(&mut self, size: usize, _filename: &str) {
        self.with(|s| {
            s.total = size;
            tracing::info!(model = %s.model, file = %s.file, bytes = size, "downloading");
            if std::io::stderr().is_terminal() {
                let bar = indicatif::ProgressBar::new(size as u64);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(s.file.clone());
                s.bar = Some(bar);
            }
        });
    }

    async fn update(&mut self, size: usize) {
        self.with(|s| {
            s.done += size;
            if let Some(bar) = &s.bar {
                bar.inc(size as u64);
            } else if s.logged.elapsed() >= REPORT_EVERY {
                s.logged = Instant::now();
                tracing::info!(model = %s.model, file = %s.file, downloaded = s.done, of = s.total, "downloading");
            }
        });
    }

    async fn finish(&mut self) {
        self.with(|s| {
            if let Some(bar) = s.bar.take() {
                bar.finish_and_clear();
            }
            tracing::info!(model = %s.model, file = %s.file, bytes = s.total, "downloaded");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn gguf_files_are_picked_by_quant() {
        let files = names(&["m.Q4_K_M.gguf", "m-q8_0.gguf", "m-Q4_K_M_L.gguf", "m-Q4_K.gguf"]);
        assert_eq!(pick_gguf(&files, None).unwrap(), "m.Q4_K_M.gguf");
        assert_eq!(pick_gguf(&files, Some("Q8_0")).unwrap(), "m-q8_0.gguf");
        assert_eq!(pick_gguf(&files, Some("q4_k")).unwrap(), "m-Q4_K.gguf");
        assert!(pick_gguf(&files, Some("Q5_K_M")).unwrap_err().contains("no .gguf file for Q5_K_M"));
        assert_eq!(pick_gguf(&names(&["only-Q8_0.gguf"]), None).unwrap(), "only-Q8_0.gguf");
        let no_default = names(&["a-Q8_0.gguf", "a-Q4_0.gguf"]);
        assert!(pick_gguf(&no_default, None).unwrap_err().contains("name one as org/name:QUANT"));
        let split = names(&["big-Q4_K_M-00001-of-00002.gguf", "big-Q4_K_M-00002-of-00002.gguf"]);
        assert!(pick_gguf(&split[..1], None).unwrap_err().contains("split GGUF"));
    }
}
