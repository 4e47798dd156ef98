//! Model ids from the Hugging Face Hub: `--model org/name` is looked up in the local Hugging Face
//! cache (the layout `huggingface_hub` writes: `models--org--name/refs/main` naming a
//! `snapshots/<rev>/` directory) and, unless `HF_HUB_OFFLINE` is set, downloaded into it from
//! `HF_ENDPOINT` (default `https://huggingface.co`) with `HF_TOKEN` when given. A local directory
//! is used as it is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ModelError;

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

    fn cached_snapshot(&self, id: &str, required: &[&str]) -> Option<PathBuf> {
        let repo = self.repo_dir(id);
        let rev = std::fs::read_to_string(repo.join("refs").join("main")).ok()?;
        let snap = repo.join("snapshots").join(rev.trim());
        required.iter().all(|f| snap.join(f).is_file()).then_some(snap)
    }
}

/// Files an encoder directory needs, and files read when present.
pub const ENCODER_FILES: &[&str] = &["config.json", "model.safetensors", "tokenizer.json"];
/// Optional files of a sentence-transformers directory.
pub const SENTENCE_FILES: &[&str] = &["1_Pooling/config.json", "sentence_bert_config.json", "tokenizer_config.json"];

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
    if let Some(snap) = hub.cached_snapshot(model, required) {
        return Ok(snap);
    }
    if hub.offline {
        return Err(ModelError::Load(format!(
            "'{model}' is not a directory and not in the Hugging Face cache at {}, and HF_HUB_OFFLINE is set",
            hub.cache_dir.display()
        )));
    }
    download(model, required, optional, hub).await
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

async fn download(id: &str, required: &[&str], optional: &[&str], hub: &HubConfig) -> Result<PathBuf, ModelError> {
    let client = comps_core::utils::http_client();
    let repo = hub.repo_dir(id);
    let staging = repo.join(format!("tmp-{}", std::process::id()));
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let mut revision: Option<String> = None;
    for (file, needed) in required.iter().map(|f| (f, true)).chain(optional.iter().map(|f| (f, false))) {
        let url = format!("{}/{id}/resolve/main/{file}", hub.endpoint.trim_end_matches('/'));
        let mut req = client.get(&url).timeout(hub.timeout);
        if let Some(t) = &hub.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| ModelError::Load(format!("downloading {url}: {e}")))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND && !needed {
            continue;
        }
        if !resp.status().is_success() {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(ModelError::Load(format!("downloading {url}: the hub answered {}", resp.status())));
        }
        if revision.is_none() {
            revision = resp
                .headers()
                .get("x-repo-commit")
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.chars().all(|c| c.is_ascii_alphanumeric()))
                .map(str::to_string);
        }
        let bytes = resp.bytes().await.map_err(|e| ModelError::Load(format!("downloading {url}: {e}")))?;
        let dest = staging.join(file);
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| ModelError::Load(format!("{}: {e}", parent.display())))?;
        }
        tokio::fs::write(&dest, &bytes).await.map_err(|e| ModelError::Load(format!("{}: {e}", dest.display())))?;
        tracing::info!(model = id, file, bytes = bytes.len(), "downloaded");
    }
    let rev = revision.unwrap_or_else(|| "main".into());
    let snap = repo.join("snapshots").join(&rev);
    let _ = tokio::fs::remove_dir_all(&snap).await;
    tokio::fs::create_dir_all(repo.join("snapshots")).await.map_err(|e| ModelError::Load(e.to_string()))?;
    // The snapshot appears whole or not at all.
    tokio::fs::rename(&staging, &snap).await.map_err(|e| ModelError::Load(format!("{}: {e}", snap.display())))?;
    tokio::fs::create_dir_all(repo.join("refs")).await.map_err(|e| ModelError::Load(e.to_string()))?;
    tokio::fs::write(repo.join("refs").join("main"), &rev).await.map_err(|e| ModelError::Load(e.to_string()))?;
    Ok(snap)
}
