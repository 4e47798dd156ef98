//! Shared test setup: a real comps-embedding with all-MiniLM-L6-v2 on 127.0.0.1:0, temporary
//! data directories, and a retriever server over the embedded store.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use comps_core::{CommonArgs, ServerHandle};
use comps_embedding::LocalEmbedder;
use comps_models::BatchConfig;
use comps_retriever::{AppState, Args, EmbeddedStore};
use serde_json::Value;

pub fn minilm() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2");
    assert!(dir.join("model.safetensors").is_file(), "{} has no model: run scripts/fetch-models.sh", dir.display());
    dir
}

/// The MiniLM embedder, loaded once per test binary.
fn embedder() -> Arc<LocalEmbedder> {
    static E: std::sync::OnceLock<Arc<LocalEmbedder>> = std::sync::OnceLock::new();
    E.get_or_init(|| Arc::new(LocalEmbedder::load(&minilm(), None, BatchConfig::default()).unwrap())).clone()
}

/// An embedding server on this test's runtime (each test gets its own port: the pooled HTTP
/// client's connections belong to the runtime that opened them); returns its `/embed` URL.
pub async fn embedding_url() -> String {
    let state = comps_embedding::AppState { embedder: embedder(), max_client_batch_size: 64, auto_truncate: true };
    let h = comps_embedding::server(state, &CommonArgs::local(), 0).bind().await.unwrap().spawn();
    let url = format!("{}/embed", h.url());
    // Runs until the test's runtime ends.
    std::mem::forget(h);
    url
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("comps-retriever-{tag}-{}", comps_core::protocol::new_id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn args(data: &Path, embedding_url: &str) -> Args {
    use clap::Parser;
    Args::parse_from(["comps-retriever", "--embedding-url", embedding_url, "--data-dir", data.to_str().unwrap()])
}

/// A retriever over the embedded store in `args.data_dir`, or over pgvector when `args.pg_url`.
pub async fn serve_with(args: Args) -> ServerHandle {
    let store: Arc<dyn comps_retriever::VectorStore> = match &args.pg_url {
        Some(url) => Arc::new(comps_retriever::PgStore::connect(url, 384).await.unwrap()),
        None => Arc::new(EmbeddedStore::open(&args.data_dir.join("store")).unwrap()),
    };
    let mut state = AppState::new(&args, store).expect("state");
    // Uploads are read by the retriever binary in a worker process; this process is the test.
    state.extractor.exe = PathBuf::from(env!("CARGO_BIN_EXE_comps-retriever"));
    let common = CommonArgs::local();
    comps_retriever::server(state, &common, 0, true).bind().await.unwrap().spawn()
}

/// A private Postgres + pgvector server (scripts/dev/pgvector-server.sh), stopped on drop.
pub struct PgServer {
    dir: TempDir,
    /// Its connection URL.
    pub url: String,
}

impl PgServer {
    pub fn start() -> Self {
        let dir = TempDir::new("pg");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/dev/pgvector-server.sh");
        let out = std::process::Command::new("bash").arg(&script).arg("start").arg(dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "scripts/dev/pgvector-server.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string();
        assert!(url.starts_with("postgres://"), "no URL from pgvector-server.sh: {url:?}");
        Self { dir, url }
    }

    /// Stop and start it again (same port, same data): its clients' connections end.
    pub fn restart(&self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/dev/pgvector-server.sh");
        let out = std::process::Command::new("bash").arg(&script).arg("restart").arg(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "pgvector-server.sh restart failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/dev/pgvector-server.sh");
        let _ = std::process::Command::new("bash").arg(&script).arg("stop").arg(self.dir.path()).output();
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docs").join(name)).unwrap()
}

pub async fn upload(base: &str, files: &[(&str, Vec<u8>)], extra: &[(&str, &str)]) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new();
    for (name, bytes) in files {
        form = form.part("files", reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.to_string()));
    }
    for (k, v) in extra {
        form = form.text(k.to_string(), v.to_string());
    }
    let r = comps_core::http_client().post(format!("{base}/v1/dataprep/ingest")).multipart(form).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = comps_core::http_client().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub mod scenarios;
