//! The embedded store: files, chunks and vectors in redb (an ACID key-value store on disk; a
//! write is acknowledged only after its transaction committed durably), and an in-memory
//! index rebuilt from it at start: an exact scan for small collections, an HNSW graph
//! (hnsw_rs) from [`HNSW_THRESHOLD`] vectors on.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use hnsw_rs::prelude::{Distance, Hnsw};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::{FileRecord, Hit, NewChunk, StoreError, VectorStore};

/// `(collection, file name)` → file record.
const FILES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("files");
/// `(collection, chunk id)` → chunk (text, metadata, file).
const CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("chunks");
/// `(collection, chunk id)` → vector, little-endian f32.
const VECTORS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("vectors");
/// Counters (`next_chunk_id`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Collections from this many vectors on are searched through HNSW.
pub const HNSW_THRESHOLD: usize = 20_000;
/// HNSW parameters: links per node, candidates while building, candidates while searching.
const HNSW_M: usize = 16;
const HNSW_EF_CONSTRUCTION: usize = 100;
const HNSW_EF_SEARCH: usize = 96;
/// Candidates taken from the graph before exact rescoring.
const HNSW_CANDIDATES: usize = 40;

/// Dot product of two unit vectors with independent partial sums (hnsw_rs' own `DistDot` adds
/// strictly in order, one lane at a time).
pub use comps_core::vector::dot;

/// Cosine distance of unit vectors, `1 - a·b`, for the graph.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredFile {
    record: FileRecord,
    /// Its chunks have ids `first_id..first_id + record.chunks`.
    first_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredChunk {
    file: String,
    text: String,
    metadata: Map<String, Value>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// One collection's search index.
struct Index {
    dim: usize,
    /// Vectors from which the graph is used.
    threshold: usize,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    position: HashMap<u64, usize>,
    hnsw: Option<Hnsw<'static, f32, UnitDot>>,
    /// Ids deleted since the graph was built (the graph cannot remove nodes).
    tombstones: HashSet<u64>,
}

impl Index {
    fn new(dim: usize, threshold: usize) -> Self {
        Self {
            dim,
            threshold,
            ids: Vec::new(),
            vectors: Vec::new(),
            position: HashMap::new(),
            hnsw: None,
            tombstones: HashSet::new(),
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn vector(&self, pos: usize) -> &[f32] {
        &self.vectors[pos * self.dim..(pos + 1) * self.dim]
    }

    /// Add a batch of vectors (a file's chunks); the graph takes them in parallel.
    fn add_batch(&mut self, first_id: u64, vs: &[Vec<f32>]) {
        let start = self.len();
        for (i, v) in vs.iter().enumerate() {
            let id = first_id + i as u64;
            self.position.insert(id, self.ids.len());
            self.ids.push(id);
            self.vectors.extend_from_slice(v);
        }
        if let Some(h) = &self.hnsw {
            let rows: Vec<(&[f32], usize)> =
                (start..self.len()).map(|p| (self.vector(p), self.ids[p] as usize)).collect();
            h.parallel_insert_slice(&rows);
        } else if self.len() >= self.threshold {
            self.build_graph();
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(pos) = self.position.remove(&id) else { return };
        let last = self.ids.len() - 1;
        if pos != last {
            let moved = self.ids[last];
            self.ids.swap(pos, last);
            let (a, b) = (pos * self.dim, last * self.dim);
            for i in 0..self.dim {
                self.vectors.swap(a + i, b + i);
            }
            self.position.insert(moved, pos);
        }
        self.ids.pop();
        self.vectors.truncate(self.ids.len() * self.dim);
        if self.hnsw.is_some() {
            self.tombstones.insert(id);
        }
    }

    /// After removals: rebuild the graph once a quarter of it is dead, or drop it when the
    /// collection became small.
    fn maintain(&mut self) {
        if self.hnsw.is_none() {
            return;
        }
        if self.len() < self.threshold / 2 {
            self.hnsw = None;
            self.tombstones.clear();
        } else if self.tombstones.len() * 4 > self.len() {
            self.build_graph();
        }
    }

    fn build_graph(&mut self) {
        let started = std::time::Instant::now();
        let n = self.len();
        let layers = 16.min((n.max(2) as f32).ln().ceil() as usize).max(1);
        let h = Hnsw::<f32, UnitDot>::new(HNSW_M, n.max(1) * 2, layers, HNSW_EF_CONSTRUCTION, UnitDot);
        let rows: Vec<(&[f32], usize)> = (0..n).map(|p| (self.vector(p), self.ids[p] as usize)).collect();
        h.parallel_insert_slice(&rows);
        tracing::info!(vectors = n, ms = started.elapsed().as_millis() as u64, "built the HNSW graph");
        self.hnsw = Some(h);
        self.tombstones.clear();
    }

    /// The `k` best (id, similarity), best first.
    fn nearest(&self, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        if let Some(h) = &self.hnsw {
            // Ask the graph for more candidates than needed and rescore them exactly: the
            // graph's own top-k is approximate, its wider candidate list holds the true top-k.
            let want = (4 * k).max(HNSW_CANDIDATES) + self.tombstones.len().min(4 * k);
            let ef = HNSW_EF_SEARCH.max(want);
            let mut out: Vec<(u64, f32)> = h
                .search(q, want, ef)
                .into_iter()
                .map(|n| n.d_id as u64)
                .filter(|id| !self.tombstones.contains(id))
                .filter_map(|id| self.position.get(&id).map(|&p| (id, dot(self.vector(p), q))))
                .collect();
            out.sort_by(|a, b| b.1.total_cmp(&a.1));
            out.truncate(k);
            return out;
        }
        let mut scored: Vec<(u64, f32)> = (0..self.len()).map(|p| (self.ids[p], dot(self.vector(p), q))).collect();
        let k = k.min(scored.len());
        if k == 0 {
            return Vec::new();
        }
        scored.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored
    }
}

/// The embedded vector store.
pub struct EmbeddedStore {
    db: Arc<Database>,
    index: Arc<RwLock<HashMap<String, Index>>>,
    threshold: usize,
}

impl EmbeddedStore {
    /// Open (or create) the store in `dir` and rebuild the in-memory index.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Self::open_with_threshold(dir, HNSW_THRESHOLD)
    }

    /// [`open`](Self::open) with collections of `threshold` vectors and more searched through
    /// the HNSW graph.
    pub fn open_with_threshold(dir: &Path, threshold: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("store.redb");
        let db = Database::create(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // Make sure the tables exist.
        let w = db.begin_write()?;
        {
            w.open_table(FILES)?;
            w.open_table(CHUNKS)?;
            w.open_table(VECTORS)?;
            w.open_table(META)?;
        }
        w.commit()?;
        let started = std::time::Instant::now();
        let mut index: HashMap<String, Index> = HashMap::new();
        let r = db.begin_read()?;
        let vectors = r.open_table(VECTORS)?;
        let mut n = 0usize;
        // Runs of consecutive ids (a file's chunks) go in as one batch.
        let mut run: Option<(String, u64, Vec<Vec<f32>>)> = None;
        let flush = |run: &mut Option<(String, u64, Vec<Vec<f32>>)>, index: &mut HashMap<String, Index>| {
            if let Some((c, first, vs)) = run.take()
                && let Some(dim) = vs.first().map(Vec::len)
            {
                index.entry(c).or_insert_with(|| Index::new(dim, threshold)).add_batch(first, &vs);
            }
        };
        for row in vectors.iter()? {
            let (k, v) = row?;
            let (collection, id) = k.value();
            let v = from_bytes(v.value());
            let continues = matches!(&run, Some((c, first, vs)) if c == collection && *first + vs.len() as u64 == id && vs.len() < 4096);
            if !continues {
                flush(&mut run, &mut index);
                run = Some((collection.to_string(), id, Vec::new()));
            }
            if let Some((_, _, vs)) = run.as_mut() {
                vs.push(v);
            }
            n += 1;
        }
        flush(&mut run, &mut index);
        tracing::info!(
            path = %path.display(),
            vectors = n,
            collections = index.len(),
            ms = started.elapsed().as_millis() as u64,
            "embedded store opened"
        );
        Ok(Self { db: Arc::new(db), index: Arc::new(RwLock::new(index)), threshold })
    }

    fn read_files(db: &Database, collection: &str) -> Result<Vec<StoredFile>, StoreError> {
        let r = db.begin_read().map_err(backend)?;
        let t = r.open_table(FILES).map_err(backend)?;
        let mut out = Vec::new();
        for row in t.range((collection, "")..).map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            if k.value().0 != collection {
                break;
            }
            out.push(serde_json::from_slice::<StoredFile>(v.value()).map_err(backend)?);
        }
        Ok(out)
    }

    fn remove_files(db: &Database, collection: &str, files: &[StoredFile]) -> Result<Vec<u64>, StoreError> {
        let w = db.begin_write().map_err(backend)?;
        let mut removed = Vec::new();
        {
            let mut ft = w.open_table(FILES).map_err(backend)?;
            let mut ct = w.open_table(CHUNKS).map_err(backend)?;
            let mut vt = w.open_table(VECTORS).map_err(backend)?;
            for f in files {
                ft.remove((collection, f.record.name.as_str())).map_err(backend)?;
                for id in f.first_id..f.first_id + f.record.chunks as u64 {
                    ct.remove((collection, id)).map_err(backend)?;
                    vt.remove((collection, id)).map_err(backend)?;
                    removed.push(id);
                }
            }
        }
        w.commit().map_err(backend)?;
        Ok(removed)
    }

    fn unindex(&self, collection: &str, ids: &[u64]) -> Result<(), StoreError> {
        let mut index = self.index.write().map_err(backend)?;
        if let Some(ix) = index.get_mut(collection) {
            for id in ids {
                ix.remove(*id);
            }
            ix.maintain();
            if ix.len() == 0 {
                index.remove(collection);
            }
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(backend)?
}

#[async_trait]
impl VectorStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn add_file(&self, collection: &str, file: FileRecord, chunks: Vec<NewChunk>) -> Result<(), StoreError> {
        if let Some(dim) = chunks.first().map(|c| c.vector.len()) {
            let index = self.index.read().map_err(backend)?;
            if let Some(ix) = index.get(collection)
                && ix.dim != dim
            {
                return Err(StoreError::Dimension { want: ix.dim, got: dim });
            }
        }
        let (db, c) = (self.db.clone(), collection.to_string());
        let vectors: Vec<Vec<f32>> = chunks.iter().map(|c| c.vector.clone()).collect();
        let name = file.name.clone();
        let first_id = blocking(move || {
            let w = db.begin_write().map_err(backend)?;
            let first_id;
            {
                let mut ft = w.open_table(FILES).map_err(backend)?;
                if ft.get((c.as_str(), name.as_str())).map_err(backend)?.is_some() {
                    return Err(StoreError::Exists(name));
                }
                let mut mt = w.open_table(META).map_err(backend)?;
                first_id = mt.get("next_chunk_id").map_err(backend)?.map(|v| v.value()).unwrap_or(0);
                mt.insert("next_chunk_id", first_id + chunks.len() as u64).map_err(backend)?;
                let mut ct = w.open_table(CHUNKS).map_err(backend)?;
                let mut vt = w.open_table(VECTORS).map_err(backend)?;
                for (i, ch) in chunks.into_iter().enumerate() {
                    let id = first_id + i as u64;
                    let stored = StoredChunk { file: name.clone(), text: ch.text, metadata: ch.metadata };
                    ct.insert((c.as_str(), id), serde_json::to_vec(&stored).map_err(backend)?.as_slice())
                        .map_err(backend)?;
                    vt.insert((c.as_str(), id), to_bytes(&ch.vector).as_slice()).map_err(backend)?;
                }
                let rec = StoredFile { record: file, first_id };
                ft.insert((c.as_str(), name.as_str()), serde_json::to_vec(&rec).map_err(backend)?.as_slice())
                    .map_err(backend)?;
            }
            // Durable on return (redb's default durability is an fsync'd commit).
            w.commit().map_err(backend)?;
            Ok(first_id)
        })
        .await?;
        // Graph insertions can take a while: off the async runtime.
        let (index, c, threshold) = (self.index.clone(), collection.to_string(), self.threshold);
        blocking(move || {
            let mut index = index.write().map_err(backend)?;
            if let Some(dim) = vectors.first().map(Vec::len) {
                index.entry(c).or_insert_with(|| Index::new(dim, threshold)).add_batch(first_id, &vectors);
            }
            Ok(())
        })
        .await
    }

    async fn has_file(&self, collection: &str, name: &str) -> Result<bool, StoreError> {
        let (db, c, n) = (self.db.clone(), collection.to_string(), name.to_string());
        blocking(move || {
            let r = db.begin_read().map_err(backend)?;
            let t = r.open_table(FILES).map_err(backend)?;
            Ok(t.get((c.as_str(), n.as_str())).map_err(backend)?.is_some())
        })
        .await
    }

    async fn list_files(&self, collection: &str) -> Result<Vec<FileRecord>, StoreError> {
        let (db, c) = (self.db.clone(), collection.to_string());
        Ok(blocking(move || Self::read_files(&db, &c)).await?.into_iter().map(|f| f.record).collect())
    }

    async fn delete_file(&self, collection: &str, name: &str) -> Result<bool, StoreError> {
        let (db, c, n) = (self.db.clone(), collection.to_string(), name.to_string());
        let removed = blocking(move || {
            let files: Vec<StoredFile> =
                Self::read_files(&db, &c)?.into_iter().filter(|f| f.record.name == n).collect();
            if files.is_empty() {
                return Ok(None);
            }
            Self::remove_files(&db, &c, &files).map(Some)
        })
        .await?;
        match removed {
            None => Ok(false),
            Some(ids) => {
                self.unindex(collection, &ids)?;
                Ok(true)
            }
        }
    }

    async fn delete_all(&self, collection: &str) -> Result<(), StoreError> {
        let (db, c) = (self.db.clone(), collection.to_string());
        let ids = blocking(move || {
            let files = Self::read_files(&db, &c)?;
            Self::remove_files(&db, &c, &files)
        })
        .await?;
        self.unindex(collection, &ids)
    }

    async fn nearest(&self, collection: &str, query: &[f32], k: usize) -> Result<Vec<Hit>, StoreError> {
        let found: Vec<(u64, f32, Vec<f32>)> = {
            let index = self.index.read().map_err(backend)?;
            let Some(ix) = index.get(collection) else { return Ok(Vec::new()) };
            if ix.dim != query.len() {
                return Err(StoreError::Dimension { want: ix.dim, got: query.len() });
            }
            ix.nearest(query, k)
                .into_iter()
                .filter_map(|(id, s)| ix.position.get(&id).map(|&p| (id, s, ix.vector(p).to_vec())))
                .collect()
        };
        let (db, c) = (self.db.clone(), collection.to_string());
        blocking(move || {
            let r = db.begin_read().map_err(backend)?;
            let t = r.open_table(CHUNKS).map_err(backend)?;
            let mut hits = Vec::with_capacity(found.len());
            for (id, similarity, vector) in found {
                let Some(v) = t.get((c.as_str(), id)).map_err(backend)? else { continue };
                let chunk: StoredChunk = serde_json::from_slice(v.value()).map_err(backend)?;
                let mut metadata = chunk.metadata;
                metadata.insert("source".into(), Value::String(chunk.file));
                hits.push(Hit { text: chunk.text, metadata, similarity, vector });
            }
            Ok(hits)
        })
        .await
    }
}
