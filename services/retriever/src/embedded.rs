//! The embedded store: files, chunks and vectors in redb (an ACID key-value store on disk; a
//! write is acknowledged only after its transaction committed durably), and an in-memory
//! index loaded from it at start: an exact scan for small collections, an HNSW graph
//! (hnsw_rs) from [`HNSW_THRESHOLD`] vectors on.
//!
//! Graphs are built, extended and rebuilt on a background thread, never while a request or
//! the start-up waits: vectors not (yet) in a collection's graph are scanned exactly next to
//! it, so every stored vector is found from the moment its write is acknowledged, and a
//! restart serves (exact) searches as soon as the vectors are loaded. Each vector is held once
//! in memory: in the exact part, or inside the graph once it is there.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};

use async_trait::async_trait;
use hnsw_rs::prelude::{Distance, Hnsw, Point};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::{FileRecord, Hit, NewChunk, StoreError, StoreSize, VectorStore};

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
/// redb's page cache. Its default (1 GiB) kept a second copy of every vector read at start-up
/// resident; the vectors live in the index, and the operating system caches the file.
const REDB_CACHE_BYTES: usize = 64 * 1024 * 1024;

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

/// Vectors searched by an exact scan.
struct Flat {
    dim: usize,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    position: HashMap<u64, usize>,
}

impl Flat {
    fn new(dim: usize) -> Self {
        Self { dim, ids: Vec::new(), vectors: Vec::new(), position: HashMap::new() }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn at(&self, pos: usize) -> &[f32] {
        &self.vectors[pos * self.dim..(pos + 1) * self.dim]
    }

    fn get(&self, id: u64) -> Option<&[f32]> {
        self.position.get(&id).map(|&p| self.at(p))
    }

    fn contains(&self, id: u64) -> bool {
        self.position.contains_key(&id)
    }

    fn push(&mut self, id: u64, v: &[f32]) {
        self.position.insert(id, self.ids.len());
        self.ids.push(id);
        self.vectors.extend_from_slice(v);
    }

    /// Remove `id`; false when it is not here.
    fn remove(&mut self, id: u64) -> bool {
        let Some(pos) = self.position.remove(&id) else { return false };
        let last = self.ids.len() - 1;
        if pos != last {
            let moved = self.ids[last];
            self.ids.swap(pos, last);
            let (a, b) = (pos * self.dim, last * self.dim);
            let (head, tail) = self.vectors.split_at_mut(b);
            head[a..a + self.dim].copy_from_slice(&tail[..self.dim]);
            self.position.insert(moved, pos);
        }
        self.ids.pop();
        self.vectors.truncate(self.ids.len() * self.dim);
        true
    }

    /// Give memory back once most of it is unused (vectors move into the graph step by step).
    fn shrink_if_sparse(&mut self) {
        if self.vectors.capacity() > 2 * self.vectors.len() + 1024 * self.dim {
            self.vectors.shrink_to_fit();
            self.ids.shrink_to_fit();
            self.position.shrink_to_fit();
        }
    }

    /// The `k` best (id, similarity), best first.
    fn nearest(&self, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        let mut scored: Vec<(u64, f32)> = (0..self.len()).map(|p| (self.ids[p], dot(self.at(p), q))).collect();
        let k = k.min(scored.len());
        if k == 0 {
            return Vec::new();
        }
        scored.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored
    }
}

type Graph = Hnsw<'static, f32, UnitDot>;

/// An HNSW graph and which of its nodes are live vectors. The graph keeps its own copy of each
/// vector, which is the only copy in memory once the vector is in the graph.
struct GraphIndex {
    hnsw: Arc<Graph>,
    /// Live vectors in the graph.
    members: HashSet<u64>,
    /// Nodes of deleted vectors (the graph cannot remove nodes).
    dead: usize,
}

fn new_graph(n: usize) -> Graph {
    let layers = 16.min((n.max(2) as f32).ln().ceil() as usize).max(1);
    Hnsw::<f32, UnitDot>::new(HNSW_M, n.max(1) * 2, layers, HNSW_EF_CONSTRUCTION, UnitDot)
}

/// The live vectors of a graph, with their ids.
fn graph_vectors(g: &GraphIndex) -> Vec<(u64, Arc<Point<'static, f32>>)> {
    g.hnsw
        .get_point_indexation()
        .into_iter()
        .map(|p| (p.get_origin_id() as u64, p))
        .filter(|(id, _)| g.members.contains(id))
        .collect()
}

/// Background work on a collection's graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    /// Move the vectors of the exact part into the graph, step by step (the graph of a
    /// collection that just reached the threshold, or that was just opened, starts empty).
    Absorb,
    /// A new graph of the live vectors, swapped in when done, once many nodes are dead.
    Rebuild,
}

#[derive(Debug, Clone, Copy)]
struct Job {
    number: u64,
    kind: JobKind,
}

/// One collection's search index: vectors not (yet) in the graph are scanned exactly, the rest
/// are found through the graph. A background job moves vectors from the exact part into the
/// graph (or rebuilds the graph) while searches go on.
struct Index {
    dim: usize,
    /// Vectors from which the graph is used.
    threshold: usize,
    /// Every vector without a graph, else those not yet moved into it.
    flat: Flat,
    graph: Option<GraphIndex>,
    /// The job working on this collection's graph.
    job: Option<u64>,
}

impl Index {
    fn new(dim: usize, threshold: usize) -> Self {
        Self { dim, threshold, flat: Flat::new(dim), graph: None, job: None }
    }

    fn len(&self) -> usize {
        self.flat.len() + self.graph.as_ref().map_or(0, |g| g.members.len())
    }

    fn contains(&self, id: u64) -> bool {
        self.flat.contains(id) || self.graph.as_ref().is_some_and(|g| g.members.contains(&id))
    }

    fn add_batch(&mut self, first_id: u64, vs: &[Vec<f32>]) {
        for (i, v) in vs.iter().enumerate() {
            self.flat.push(first_id + i as u64, v);
        }
    }

    fn remove(&mut self, id: u64) {
        if !self.flat.remove(id)
            && let Some(g) = self.graph.as_mut()
            && g.members.remove(&id)
        {
            g.dead += 1;
        }
        self.flat.shrink_if_sparse();
    }

    /// What the graph needs next, as a job to run (now owned by this index), if anything. A
    /// collection that became small loses its graph here, at once.
    fn plan(&mut self, jobs: &AtomicU64) -> Option<Job> {
        if self.job.is_some() {
            return None;
        }
        let live = self.len();
        let kind = match &self.graph {
            None if live >= self.threshold => {
                self.graph = Some(GraphIndex { hnsw: Arc::new(new_graph(live)), members: HashSet::new(), dead: 0 });
                JobKind::Absorb
            }
            None => return None,
            Some(g) if live < self.threshold / 2 => {
                for (id, p) in graph_vectors(g) {
                    self.flat.push(id, p.get_v());
                }
                self.graph = None;
                return None;
            }
            Some(g) if g.dead * 4 > live => JobKind::Rebuild,
            Some(_) if self.flat.len() > 0 => JobKind::Absorb,
            Some(_) => return None,
        };
        let number = jobs.fetch_add(1, Ordering::Relaxed);
        self.job = Some(number);
        Some(Job { number, kind })
    }

    /// The `k` best (id, similarity, vector), best first.
    fn nearest(&self, q: &[f32], k: usize) -> Vec<(u64, f32, Vec<f32>)> {
        let mut out: Vec<(u64, f32, Vec<f32>)> = Vec::new();
        if let Some(g) = self.graph.as_ref().filter(|g| !g.members.is_empty()) {
            // Ask the graph for more candidates than needed and rescore them exactly: the
            // graph's own top-k is approximate, its wider candidate list holds the true top-k.
            let want = (4 * k).max(HNSW_CANDIDATES) + g.dead.min(4 * k);
            let ef = HNSW_EF_SEARCH.max(want);
            let points = g.hnsw.get_point_indexation();
            for n in g.hnsw.search(q, want, ef) {
                let id = n.d_id as u64;
                // Dead nodes, and nodes a job has inserted but not handed over yet (they are
                // still in the exact part).
                if !g.members.contains(&id) {
                    continue;
                }
                if let Some(v) = points.get_point_data(&n.p_id) {
                    out.push((id, dot(&v, q), v));
                }
            }
        }
        for (id, s) in self.flat.nearest(q, k) {
            if let Some(v) = self.flat.get(id) {
                out.push((id, s, v.to_vec()));
            }
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out.truncate(k);
        out
    }
}

/// How a collection is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStatus {
    /// Vectors stored.
    pub vectors: usize,
    /// Of them, found through the HNSW graph; the others are scanned exactly.
    pub in_graph: usize,
    /// A graph is being built, extended or rebuilt in the background.
    pub building: bool,
}

/// The indexes, shared with the background jobs.
struct Shared {
    collections: RwLock<HashMap<String, Index>>,
    /// Numbers jobs.
    jobs: AtomicU64,
    /// Tests hold jobs back before their work takes effect, to act while a job is running.
    hold: Mutex<bool>,
    released: Condvar,
}

/// Vectors a job inserts into a graph per step (the graph takes each step in parallel); each
/// step is then handed over from the exact part to the graph.
const JOB_STEP: usize = 4_096;

/// Run `job` on `collection`'s graph, then whatever it needs next. Stops when the store is
/// dropped or the collection's index is replaced (deleted) meanwhile.
fn run_jobs(shared: Weak<Shared>, collection: String, mut job: Job) {
    /// Should a job panic, its collection is freed for the next one (it stays searchable
    /// meanwhile: what the job had not handed over is still in the exact part).
    struct Release<'a>(&'a Weak<Shared>, &'a str, u64);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            if std::thread::panicking()
                && let Some(s) = self.0.upgrade()
                && let Ok(mut map) = s.collections.write()
                && let Some(ix) = map.get_mut(self.1)
                && ix.job == Some(self.2)
            {
                ix.job = None;
            }
        }
    }
    loop {
        let _release = Release(&shared, &collection, job.number);
        let started = std::time::Instant::now();
        let next = match job.kind {
            JobKind::Absorb => absorb(&shared, &collection, job.number),
            JobKind::Rebuild => rebuild(&shared, &collection, job.number),
        };
        let Some((moved, next)) = next else { return };
        tracing::info!(
            collection,
            job = ?job.kind,
            vectors = moved,
            ms = started.elapsed().as_millis() as u64,
            "HNSW graph updated"
        );
        match next {
            Some(next) => job = next,
            None => return,
        }
    }
}

/// Wait while tests hold jobs back; None when the store is gone.
fn wait_released(shared: &Weak<Shared>) -> Option<()> {
    loop {
        let s = shared.upgrade()?;
        let held = s.hold.lock().ok()?;
        if !*held {
            return Some(());
        }
        drop(s.released.wait_timeout(held, std::time::Duration::from_millis(50)).ok()?);
    }
}

/// Move the exact part (as it was when the job started) into the graph, a step at a time:
/// insert a step's vectors into the graph, then hand them over (searches find them through
/// the graph, and the exact part frees them). Returns the vectors moved and the next job.
fn absorb(shared: &Weak<Shared>, collection: &str, number: u64) -> Option<(usize, Option<Job>)> {
    let owns = |ix: &&mut Index| ix.job == Some(number);
    let (graph, sources) = {
        let s = shared.upgrade()?;
        let map = s.collections.read().ok()?;
        let ix = map.get(collection).filter(|ix| ix.job == Some(number))?;
        (ix.graph.as_ref()?.hnsw.clone(), ix.flat.ids.clone())
    };
    let mut moved = 0;
    for step in sources.chunks(JOB_STEP) {
        let rows: Vec<(u64, Vec<f32>)> = {
            let s = shared.upgrade()?;
            let map = s.collections.read().ok()?;
            let ix = map.get(collection).filter(|ix| ix.job == Some(number))?;
            step.iter().filter_map(|&id| ix.flat.get(id).map(|v| (id, v.to_vec()))).collect()
        };
        let slices: Vec<(&[f32], usize)> = rows.iter().map(|(id, v)| (v.as_slice(), *id as usize)).collect();
        graph.parallel_insert_slice(&slices);
        drop(slices);
        wait_released(shared)?;
        let s = shared.upgrade()?;
        let mut map = s.collections.write().ok()?;
        let ix = map.get_mut(collection).filter(owns)?;
        let g = ix.graph.as_mut().filter(|g| Arc::ptr_eq(&g.hnsw, &graph))?;
        for (id, _) in &rows {
            // Deleted meanwhile: a dead node from the start.
            if ix.flat.remove(*id) {
                g.members.insert(*id);
                moved += 1;
            } else {
                g.dead += 1;
            }
        }
        ix.flat.shrink_if_sparse();
    }
    let s = shared.upgrade()?;
    let mut map = s.collections.write().ok()?;
    let ix = map.get_mut(collection).filter(owns)?;
    ix.job = None;
    Some((moved, ix.plan(&s.jobs)))
}

/// Build a new graph of the graph's live vectors and swap it in; the old one serves searches
/// until then. Returns the vectors moved and the next job.
fn rebuild(shared: &Weak<Shared>, collection: &str, number: u64) -> Option<(usize, Option<Job>)> {
    let owns = |ix: &&mut Index| ix.job == Some(number);
    let (old, sources, graph) = {
        let s = shared.upgrade()?;
        let map = s.collections.read().ok()?;
        let ix = map.get(collection).filter(|ix| ix.job == Some(number))?;
        let g = ix.graph.as_ref()?;
        (g.hnsw.clone(), graph_vectors(g), Arc::new(new_graph(g.members.len())))
    };
    let mut inserted: Vec<u64> = Vec::with_capacity(sources.len());
    for step in sources.chunks(JOB_STEP) {
        let live: Vec<bool> = {
            let s = shared.upgrade()?;
            let map = s.collections.read().ok()?;
            let ix = map.get(collection).filter(|ix| ix.job == Some(number))?;
            step.iter().map(|(id, _)| ix.contains(*id)).collect()
        };
        let slices: Vec<(&[f32], usize)> =
            step.iter().zip(&live).filter(|(_, l)| **l).map(|((id, p), _)| (p.get_v(), *id as usize)).collect();
        graph.parallel_insert_slice(&slices);
        inserted.extend(slices.iter().map(|(_, id)| *id as u64));
    }
    drop(sources);
    wait_released(shared)?;
    let s = shared.upgrade()?;
    let mut map = s.collections.write().ok()?;
    let ix = map.get_mut(collection).filter(owns)?;
    if !ix.graph.as_ref().is_some_and(|g| Arc::ptr_eq(&g.hnsw, &old)) {
        return None;
    }
    drop(old);
    let (mut members, mut dead) = (HashSet::with_capacity(inserted.len()), 0);
    for id in inserted {
        // Deleted meanwhile: a dead node from the start.
        if ix.contains(id) {
            members.insert(id);
        } else {
            dead += 1;
        }
    }
    let moved = members.len();
    let replaced = ix.graph.replace(GraphIndex { hnsw: graph, members, dead });
    ix.job = None;
    let next = ix.plan(&s.jobs);
    drop(map);
    // Freeing a large graph takes a while: not under the lock.
    drop(replaced);
    Some((moved, next))
}

/// The embedded vector store.
pub struct EmbeddedStore {
    db: Arc<Database>,
    shared: Arc<Shared>,
    threshold: usize,
}

impl EmbeddedStore {
    /// Open (or create) the store in `dir` and load its vectors, which are searched at once;
    /// the HNSW graphs of large collections are built in the background.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Self::open_with_threshold(dir, HNSW_THRESHOLD)
    }

    /// [`open`](Self::open) with collections of `threshold` vectors and more searched through
    /// an HNSW graph.
    pub fn open_with_threshold(dir: &Path, threshold: usize) -> anyhow::Result<Self> {
        Self::open_held(dir, threshold, false)
    }

    /// With `hold`, background jobs wait before they take effect until `hold_jobs(false)`
    /// (tests).
    fn open_held(dir: &Path, threshold: usize, hold: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("store.redb");
        let db = redb::Builder::new()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
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
        let (mut n, mut skipped) = (0usize, 0usize);
        let mut v: Vec<f32> = Vec::new();
        for row in vectors.iter()? {
            let (k, bytes) = row?;
            let (collection, id) = k.value();
            v.clear();
            v.extend(bytes.value().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
            let ix = match index.get_mut(collection) {
                Some(ix) => ix,
                None => index.entry(collection.to_string()).or_insert_with(|| Index::new(v.len(), threshold)),
            };
            if v.len() != ix.dim {
                skipped += 1;
                continue;
            }
            ix.flat.push(id, &v);
            n += 1;
        }
        drop(vectors);
        drop(r);
        if skipped > 0 {
            tracing::warn!(skipped, "vectors of another size than their collection's were not loaded");
        }
        for ix in index.values_mut() {
            ix.flat.vectors.shrink_to_fit();
        }
        tracing::info!(
            path = %path.display(),
            vectors = n,
            collections = index.len(),
            ms = started.elapsed().as_millis() as u64,
            "embedded store opened (large collections are searched exactly until their graph is built)"
        );
        let store = Self {
            db: Arc::new(db),
            shared: Arc::new(Shared {
                collections: RwLock::new(index),
                jobs: AtomicU64::new(0),
                hold: Mutex::new(hold),
                released: Condvar::new(),
            }),
            threshold,
        };
        let names: Vec<String> = store.shared.collections.read().map_err(backend)?.keys().cloned().collect();
        for c in names {
            store.plan(&c)?;
        }
        Ok(store)
    }

    /// How `collection` is searched (None: it holds no vectors).
    pub fn index_status(&self, collection: &str) -> Option<IndexStatus> {
        let map = self.shared.collections.read().ok()?;
        map.get(collection).map(|ix| IndexStatus {
            vectors: ix.len(),
            in_graph: ix.graph.as_ref().map_or(0, |g| g.members.len()),
            building: ix.job.is_some(),
        })
    }

    /// Hold finished background jobs back before they take effect, or let them go on.
    #[cfg(test)]
    fn hold_jobs(&self, hold: bool) {
        *self.shared.hold.lock().unwrap() = hold;
        self.shared.released.notify_all();
    }

    /// Start what `collection`'s graph needs next, if anything, on a background thread.
    fn plan(&self, collection: &str) -> Result<(), StoreError> {
        let job = {
            let mut map = self.shared.collections.write().map_err(backend)?;
            match map.get_mut(collection) {
                Some(ix) => ix.plan(&self.shared.jobs),
                None => None,
            }
        };
        if let Some(job) = job {
            let (shared, c) = (Arc::downgrade(&self.shared), collection.to_string());
            if let Err(e) =
                std::thread::Builder::new().name("hnsw-build".into()).spawn(move || run_jobs(shared, c, job))
            {
                // Searches stay exact; the next write tries again.
                tracing::warn!(collection, error = %e, "cannot start the HNSW graph job");
                if let Some(ix) = self.shared.collections.write().map_err(backend)?.get_mut(collection) {
                    ix.job = None;
                }
            }
        }
        Ok(())
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
        {
            let mut index = self.shared.collections.write().map_err(backend)?;
            let Some(ix) = index.get_mut(collection) else { return Ok(()) };
            for id in ids {
                ix.remove(*id);
            }
            if ix.len() == 0 {
                // A job still running on it finds it gone and stops.
                index.remove(collection);
                return Ok(());
            }
        }
        self.plan(collection)
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

    async fn size(&self) -> Result<StoreSize, StoreError> {
        let chunks = self.shared.collections.read().map_err(backend)?.values().map(|ix| ix.len() as u64).sum();
        let db = self.db.clone();
        let files = blocking(move || {
            use redb::ReadableTableMetadata;
            let r = db.begin_read().map_err(backend)?;
            r.open_table(FILES).map_err(backend)?.len().map_err(backend)
        })
        .await?;
        Ok(StoreSize { files, chunks })
    }

    async fn add_file(&self, collection: &str, file: FileRecord, chunks: Vec<NewChunk>) -> Result<(), StoreError> {
        if let Some(dim) = chunks.first().map(|c| c.vector.len()) {
            let index = self.shared.collections.read().map_err(backend)?;
            if let Some(ix) = index.get(collection)
                && ix.dim != dim
            {
                return Err(StoreError::Dimension { want: ix.dim, got: dim });
            }
        }
        let (db, c) = (self.db.clone(), collection.to_string());
        let name = file.name.clone();
        let (first_id, vectors) = blocking(move || {
            let w = db.begin_write().map_err(backend)?;
            let first_id;
            let mut vectors: Vec<Vec<f32>> = Vec::new();
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
                vectors.reserve(chunks.len());
                for (i, ch) in chunks.into_iter().enumerate() {
                    let id = first_id + i as u64;
                    let stored = StoredChunk { file: name.clone(), text: ch.text, metadata: ch.metadata };
                    ct.insert((c.as_str(), id), serde_json::to_vec(&stored).map_err(backend)?.as_slice())
                        .map_err(backend)?;
                    vt.insert((c.as_str(), id), to_bytes(&ch.vector).as_slice()).map_err(backend)?;
                    vectors.push(ch.vector);
                }
                let rec = StoredFile { record: file, first_id };
                ft.insert((c.as_str(), name.as_str()), serde_json::to_vec(&rec).map_err(backend)?.as_slice())
                    .map_err(backend)?;
            }
            // Durable on return (redb's default durability is an fsync'd commit).
            w.commit().map_err(backend)?;
            Ok((first_id, vectors))
        })
        .await?;
        // Searched exactly at once; a background job takes them into the graph.
        if let Some(dim) = vectors.first().map(Vec::len) {
            let mut index = self.shared.collections.write().map_err(backend)?;
            let ix = index.entry(collection.to_string()).or_insert_with(|| Index::new(dim, self.threshold));
            if ix.dim != dim {
                return Err(StoreError::Dimension { want: ix.dim, got: dim });
            }
            ix.add_batch(first_id, &vectors);
        }
        self.plan(collection)
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
        let (shared, db, c, query) = (self.shared.clone(), self.db.clone(), collection.to_string(), query.to_vec());
        // On the blocking pool: while a graph builds, the exact part may be the whole
        // collection (100k x 384: ~10 ms of CPU), which must not hold an async worker.
        blocking(move || {
            let found: Vec<(u64, f32, Vec<f32>)> = {
                let index = shared.collections.read().map_err(backend)?;
                let Some(ix) = index.get(&c) else { return Ok(Vec::new()) };
                if ix.dim != query.len() {
                    return Err(StoreError::Dimension { want: ix.dim, got: query.len() });
                }
                ix.nearest(&query, k)
            };
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use comps_core::vector::normalize;

    const DIM: usize = 16;
    const THRESHOLD: usize = 1_000;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!("comps-embedded-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            Self(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Clustered unit vectors (20 centres).
    fn vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = StdRng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..20).map(|_| (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect()).collect();
        (0..n)
            .map(|_| {
                let c = &centres[rng.random_range(0..centres.len())];
                let mut v: Vec<f32> = c.iter().map(|x| x + 0.8 * (rng.random::<f32>() - 0.5)).collect();
                normalize(&mut v);
                v
            })
            .collect()
    }

    /// Store `vs` as file `name`, chunk texts numbered from `first`.
    async fn add(store: &EmbeddedStore, name: &str, first: usize, vs: &[Vec<f32>]) {
        let chunks = vs
            .iter()
            .enumerate()
            .map(|(i, v)| NewChunk { text: (first + i).to_string(), vector: v.clone(), metadata: Default::default() })
            .collect();
        let rec = FileRecord { name: name.into(), chunks: vs.len(), text_bytes: 0, created: 0 };
        store.add_file("c", rec, chunks).await.unwrap();
    }

    async fn top(store: &EmbeddedStore, q: &[f32], k: usize) -> Vec<usize> {
        store.nearest("c", q, k).await.unwrap().iter().map(|h| h.text.parse().unwrap()).collect()
    }

    fn exact(live: &[(usize, &Vec<f32>)], q: &[f32], k: usize) -> Vec<usize> {
        let mut s: Vec<(usize, f32)> = live.iter().map(|(i, v)| (*i, dot(v, q))).collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1));
        s.into_iter().take(k).map(|(i, _)| i).collect()
    }

    async fn wait_for(store: &EmbeddedStore, want: IndexStatus) {
        let t = Instant::now();
        loop {
            let s = store.index_status("c").unwrap();
            if s == want {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "{s:?} is not {want:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for_graph(store: &EmbeddedStore, vectors: usize) {
        wait_for(store, IndexStatus { vectors, in_graph: vectors, building: false }).await;
    }

    #[tokio::test]
    async fn reopening_searches_at_once_and_builds_the_graph_in_the_background() {
        let dir = TempDir::new("background");
        let all = vectors(3_200, 1);
        // Files: "small" (ids 0..100), "big1" (100..1550), "big2" (1550..3000); "late" (3000..3200)
        // comes while the graph is being built.
        {
            let store = EmbeddedStore::open_with_threshold(&dir.0, THRESHOLD).unwrap();
            add(&store, "small", 0, &all[..100]).await;
            add(&store, "big1", 100, &all[100..1_550]).await;
            add(&store, "big2", 1_550, &all[1_550..3_000]).await;
        }
        // Reopen with the graph job held back before it takes effect: open did not wait for a
        // graph, and searches are exact meanwhile.
        let started = Instant::now();
        let store = EmbeddedStore::open_held(&dir.0, THRESHOLD, true).unwrap();
        println!("opened 3000 vectors in {:?}", started.elapsed());
        assert_eq!(store.index_status("c"), Some(IndexStatus { vectors: 3_000, in_graph: 0, building: true }));
        let queries = vectors(50, 2);
        let live: Vec<(usize, &Vec<f32>)> = all[..3_000].iter().enumerate().collect();
        for q in &queries {
            assert_eq!(top(&store, q, 10).await, exact(&live, q, 10));
        }
        // Writes during the build: found at once, and not lost when the graph is swapped in.
        add(&store, "late", 3_000, &all[3_000..]).await;
        assert!(store.delete_file("c", "small").await.unwrap());
        assert_eq!(store.index_status("c"), Some(IndexStatus { vectors: 3_100, in_graph: 0, building: true }));
        let live: Vec<(usize, &Vec<f32>)> = all.iter().enumerate().skip(100).collect();
        for q in &queries {
            assert_eq!(top(&store, q, 10).await, exact(&live, q, 10));
        }
        for i in (3_000..3_200).step_by(20) {
            assert_eq!(top(&store, &all[i], 1).await, [i]);
        }
        store.hold_jobs(false);
        wait_for_graph(&store, 3_100).await;
        // Through the graph now: the late vectors are there, the deleted ones are not.
        let mut hits = 0;
        for q in &queries {
            let got = top(&store, q, 10).await;
            assert!(got.iter().all(|&i| i >= 100), "{got:?}");
            let want = exact(&live, q, 10);
            hits += got.iter().filter(|i| want.contains(i)).count();
        }
        let recall = hits as f64 / (queries.len() * 10) as f64;
        assert!(recall >= 0.95, "recall@10 {recall}");
        for i in (3_000..3_200).step_by(20).chain((100..3_000).step_by(97)) {
            assert_eq!(top(&store, &all[i], 1).await, [i]);
        }
        for i in (0..100).step_by(9) {
            assert_ne!(top(&store, &all[i], 1).await, [i]);
        }
        // Shrunk below half the threshold: back to an exact scan, nothing lost.
        assert!(store.delete_file("c", "big1").await.unwrap());
        assert!(store.delete_file("c", "big2").await.unwrap());
        wait_for(&store, IndexStatus { vectors: 200, in_graph: 0, building: false }).await;
        for (i, v) in all.iter().enumerate().skip(3_000) {
            assert_eq!(top(&store, v, 1).await, [i]);
        }
    }

    #[tokio::test]
    async fn writes_while_a_graph_exists_are_absorbed_and_deletes_trigger_a_rebuild() {
        let dir = TempDir::new("absorb");
        let all = vectors(2_400, 3);
        let store = EmbeddedStore::open_with_threshold(&dir.0, THRESHOLD).unwrap();
        for f in 0..6 {
            add(&store, &format!("f{f}"), f * 200, &all[f * 200..(f + 1) * 200]).await;
        }
        wait_for_graph(&store, 1_200).await;
        for f in 6..12 {
            add(&store, &format!("f{f}"), f * 200, &all[f * 200..(f + 1) * 200]).await;
        }
        wait_for_graph(&store, 2_400).await;
        // A third dead: the graph is rebuilt without (most of) them.
        for f in 0..4 {
            assert!(store.delete_file("c", &format!("f{f}")).await.unwrap());
        }
        wait_for_graph(&store, 1_600).await;
        {
            let map = store.shared.collections.read().unwrap();
            let g = map["c"].graph.as_ref().unwrap();
            assert!(g.dead * 4 <= 1_600 && g.hnsw.get_nb_point() == 1_600 + g.dead, "{} dead", g.dead);
        }
        for i in (800..2_400).step_by(37) {
            assert_eq!(top(&store, &all[i], 1).await, [i]);
        }
    }
}
