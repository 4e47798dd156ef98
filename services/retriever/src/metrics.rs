//! The retriever's own metrics on `/metrics`: search latency (`retriever_search_duration_seconds`)
//! and what the store holds (`retriever_store_files`, `retriever_store_chunks`), labelled with
//! the store's kind. The store is wrapped: every search is timed, and the size is read again
//! after every change (and once at start), so a scrape never waits on the store.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use comps_core::metrics::Metrics;
use prometheus::{Histogram, HistogramOpts, IntGauge, Opts};

use crate::store::{FileRecord, Hit, NewChunk, StoreError, StoreSize, VectorStore};

/// Search latency, seconds: from an in-memory scan to a remote database under load.
const BUCKETS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A store whose searches are timed and whose size is kept on gauges.
pub struct MeteredStore {
    inner: Arc<dyn VectorStore>,
    search: Histogram,
    files: IntGauge,
    chunks: IntGauge,
}

impl MeteredStore {
    /// Wrap `inner`; its size is read now in the background (when a runtime runs).
    pub fn new(inner: Arc<dyn VectorStore>) -> Arc<Self> {
        let kind = inner.kind();
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help).const_label("store", kind)).expect("fixed options")
        };
        let opts = HistogramOpts::new("retriever_search_duration_seconds", "Time of one vector search in the store")
            .const_label("store", kind)
            .buckets(BUCKETS.to_vec());
        let store = Arc::new(Self {
            inner,
            search: Histogram::with_opts(opts).expect("fixed options"),
            files: gauge("retriever_store_files", "Files (documents and links) in the store, every collection"),
            chunks: gauge("retriever_store_chunks", "Chunks (each with its vector) in the store, every collection"),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let s = store.clone();
            rt.spawn(async move { s.refresh().await });
        }
        store
    }

    /// Put the metrics on a server's `/metrics`.
    pub fn register_into(&self, m: &Metrics) {
        m.register(&self.search);
        m.register(&self.files);
        m.register(&self.chunks);
    }

    /// Read the store's size onto the gauges (kept as they were when it cannot be read).
    async fn refresh(&self) {
        match self.inner.size().await {
            Ok(s) => {
                self.files.set(s.files as i64);
                self.chunks.set(s.chunks as i64);
            }
            Err(e) => tracing::warn!(error = %e, "could not read the store's size for /metrics"),
        }
    }
}

#[async_trait]
impl VectorStore for MeteredStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn add_file(&self, collection: &str, file: FileRecord, chunks: Vec<NewChunk>) -> Result<(), StoreError> {
        let r = self.inner.add_file(collection, file, chunks).await;
        self.refresh().await;
        r
    }

    async fn has_file(&self, collection: &str, name: &str) -> Result<bool, StoreError> {
        self.inner.has_file(collection, name).await
    }

    async fn list_files(&self, collection: &str) -> Result<Vec<FileRecord>, StoreError> {
        self.inner.list_files(collection).await
    }

    async fn delete_file(&self, collection: &str, name: &str) -> Result<bool, StoreError> {
        let r = self.inner.delete_file(collection, name).await;
        self.refresh().await;
        r
    }

    async fn delete_all(&self, collection: &str) -> Result<(), StoreError> {
        let r = self.inner.delete_all(collection).await;
        self.refresh().await;
        r
    }

    async fn nearest(&self, collection: &str, query: &[f32], k: usize) -> Result<Vec<Hit>, StoreError> {
        let _span = comps_core::telemetry::span(|| tracing::info_span!("search", store = self.inner.kind(), k));
        let began = Instant::now();
        let r = self.inner.nearest(collection, query, k).await;
        self.search.observe(began.elapsed().as_secs_f64());
        r
    }

    async fn size(&self) -> Result<StoreSize, StoreError> {
        self.inner.size().await
    }
}
