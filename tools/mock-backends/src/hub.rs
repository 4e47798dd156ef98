//! A fake Hugging Face Hub for tests: the other side of the model download wire. It answers
//! what the Hub's file API answers to a `huggingface_hub` or `hf-hub` client: the repository
//! listing at `/api/models/{org}/{name}/revision/main` (`sha`, `siblings`), and files at
//! `/{org}/{name}/resolve/main/{file}` with `Range` requests (206, `Content-Range`),
//! `X-Repo-Commit`, and an `ETag` that is the SHA-256 of an LFS file (large) or a git-style
//! id (small), as the Hub gives. Faults: a file served with other bytes than its ETag says,
//! and a file whose first range past an offset fails once.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// Files at least this large are "LFS" files: their ETag is their SHA-256.
const LFS_FROM: u64 = 1 << 20;

/// One file of a fake repository.
#[derive(Debug, Clone)]
struct HubFile {
    path: PathBuf,
    len: u64,
    etag: String,
}

#[derive(Debug, Default)]
struct Repo {
    sha: String,
    files: Vec<(String, HubFile)>,
}

/// What the fake hub saw.
#[derive(Debug, Default, Clone)]
pub struct HubLog {
    /// Every request's path.
    pub requests: Vec<String>,
    /// Requests that carried `Authorization: Bearer <token>` with the expected token.
    pub with_token: usize,
    /// File requests as (repo id, file, first byte, last byte asked).
    pub ranges: Vec<(String, String, u64, u64)>,
}

#[derive(Default)]
struct Inner {
    repos: HashMap<String, Repo>,
    log: HubLog,
    token: Option<String>,
    /// (repo, file) served with one byte flipped.
    corrupt: Vec<(String, String)>,
    /// (repo, file, offset): the first ranged request starting at or past `offset` fails.
    fail_once: Vec<(String, String, u64)>,
}

/// A fake hub; clone it to keep a handle while it serves.
#[derive(Clone, Default)]
pub struct FakeHub(Arc<Mutex<Inner>>);

impl std::fmt::Debug for FakeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeHub")
    }
}

impl FakeHub {
    /// A hub that counts requests carrying `token`.
    pub fn new(token: Option<&str>) -> Self {
        let hub = Self::default();
        hub.lock().token = token.map(str::to_string);
        hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publish `files` (name in the repo → file on disk) as repository `id` at revision `sha`.
    pub fn add_repo(&self, id: &str, sha: &str, files: &[(&str, PathBuf)]) -> std::io::Result<()> {
        let mut repo = Repo { sha: sha.to_string(), files: Vec::new() };
        for (name, path) in files {
            let len = std::fs::metadata(path)?.len();
            let digest = comps_core::utils::sha256_file(path)?;
            let etag = if len >= LFS_FROM { digest } else { digest[..40].to_string() };
            repo.files.push((name.to_string(), HubFile { path: path.clone(), len, etag }));
        }
        self.lock().repos.insert(id.to_string(), repo);
        Ok(())
    }

    /// Serve `file` of `id` with one byte changed (its ETag still names the true content).
    pub fn corrupt(&self, id: &str, file: &str) {
        self.lock().corrupt.push((id.to_string(), file.to_string()));
    }

    /// Fail (500) the first request for `file` of `id` whose range starts at or past `offset`.
    pub fn fail_once_past(&self, id: &str, file: &str, offset: u64) {
        self.lock().fail_once.push((id.to_string(), file.to_string(), offset));
    }

    /// What it saw so far.
    pub fn log(&self) -> HubLog {
        self.lock().log.clone()
    }

    /// The router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/models/{org}/{name}/revision/{rev}", get(listing))
            .route("/{org}/{name}/resolve/{rev}/{*file}", get(file))
            .with_state(self.clone())
    }

    /// Serve on a loopback port; returns its base URL.
    pub async fn spawn(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(format!("http://{addr}"))
    }

    fn note(&self, path: String, headers: &HeaderMap) {
        let mut s = self.lock();
        let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        if s.token.as_ref().is_some_and(|t| bearer.as_deref() == Some(&format!("Bearer {t}"))) {
            s.log.with_token += 1;
        }
        s.log.requests.push(path);
    }
}

async fn listing(
    State(hub): State<FakeHub>,
    headers: HeaderMap,
    Path((org, name, rev)): Path<(String, String, String)>,
) -> Response {
    hub.note(format!("/api/models/{org}/{name}/revision/{rev}"), &headers);
    let s = hub.lock();
    match s.repos.get(&format!("{org}/{name}")) {
        Some(repo) if rev == "main" => {
            let siblings: Vec<_> = repo.files.iter().map(|(n, _)| json!({"rfilename": n})).collect();
            axum::Json(json!({"id": format!("{org}/{name}"), "sha": repo.sha, "siblings": siblings})).into_response()
        }
        _ => (StatusCode::NOT_FOUND, axum::Json(json!({"error": "Repository not found"}))).into_response(),
    }
}

async fn file(
    State(hub): State<FakeHub>,
    headers: HeaderMap,
    Path((org, name, rev, file)): Path<(String, String, String, String)>,
) -> Response {
    hub.note(format!("/{org}/{name}/resolve/{rev}/{file}"), &headers);
    let id = format!("{org}/{name}");
    let (f, sha, corrupt) = {
        let s = hub.lock();
        let Some(repo) = s.repos.get(&id).filter(|_| rev == "main") else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let Some((_, f)) = repo.files.iter().find(|(n, _)| *n == file) else {
            return (StatusCode::NOT_FOUND, [("x-error-code", "EntryNotFound")]).into_response();
        };
        let corrupt = s.corrupt.iter().any(|(r, n)| *r == id && *n == file);
        (f.clone(), repo.sha.clone(), corrupt)
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(parse_range);
    let (start, end) = match range {
        Some((a, b)) if a < f.len => (a, b.min(f.len - 1)),
        Some(_) => {
            return (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{}", f.len))])
                .into_response();
        }
        None => (0, f.len.saturating_sub(1)),
    };
    {
        let mut s = hub.lock();
        s.log.ranges.push((id.clone(), file.clone(), start, end));
        if let Some(i) = s.fail_once.iter().position(|(r, n, off)| *r == id && *n == file && start >= *off && start > 0)
        {
            s.fail_once.remove(i);
            return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
        }
    }
    let mut bytes = match read_range(&f.path, start, end) {
        Ok(b) => b,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    if corrupt && let Some(b) = bytes.first_mut() {
        *b ^= 0xff;
    }
    let quoted = format!("\"{}\"", f.etag);
    let mut h = HeaderMap::new();
    h.insert("x-repo-commit", sha.parse().unwrap_or(header::HeaderValue::from_static("0")));
    if let Ok(v) = quoted.parse() {
        h.insert(header::ETAG, v);
    }
    if f.len >= LFS_FROM
        && let Ok(v) = quoted.parse()
    {
        h.insert("x-linked-etag", v);
    }
    let status = if range.is_some() {
        if let Ok(v) = format!("bytes {start}-{end}/{}", f.len).parse() {
            h.insert(header::CONTENT_RANGE, v);
        }
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    (status, h, bytes).into_response()
}

/// `bytes=a-b` or `bytes=a-`.
fn parse_range(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let a = a.trim().parse().ok()?;
    let b = if b.trim().is_empty() { u64::MAX } else { b.trim().parse().ok()? };
    (a <= b).then_some((a, b))
}

fn read_range(path: &std::path::Path, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = vec![0u8; (end + 1 - start) as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}
