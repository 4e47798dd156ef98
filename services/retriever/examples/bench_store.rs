//! Vector store benchmark: 100k x 384 clustered unit vectors (shaped like sentence embeddings
//! of many topics, not uniform noise) stored in the embedded store, then 1,000 queries:
//! p50 / p99 latency of a top-10 search and recall@10 against exact search, plus the rate at
//! which chunks are stored (embedding excluded). Run through `scripts/bench/retriever.sh`.

use std::time::Instant;

use comps_core::vector::normalize;
use comps_retriever::{EmbeddedStore, FileRecord, NewChunk, PgStore, VectorStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const N: usize = 100_000;
const DIM: usize = 384;
const TOPICS: usize = 1_000;
const QUERIES: usize = 1_000;
const K: usize = 10;
const PER_FILE: usize = 1_000;

struct Gen {
    rng: StdRng,
    centres: Vec<Vec<f32>>,
}

impl Gen {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let centres = (0..TOPICS).map(|_| (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect()).collect();
        Self { rng, centres }
    }

    /// A point of a random topic: its centre plus noise of comparable size (cosine to the
    /// centre ~0.7, between two points of one topic ~0.5).
    fn point(&mut self) -> Vec<f32> {
        let c = self.rng.random_range(0..TOPICS);
        let mut v: Vec<f32> = (0..DIM).map(|i| self.centres[c][i] + 0.9 * (self.rng.random::<f32>() - 0.5)).collect();
        normalize(&mut v);
        v
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(
    label: &str,
    store: &dyn VectorStore,
    embedded: Option<&EmbeddedStore>,
    all: &[Vec<f32>],
    queries: &[Vec<f32>],
    exact: &[Vec<usize>],
) -> anyhow::Result<()> {
    let started = Instant::now();
    for (f, part) in all.chunks(PER_FILE).enumerate() {
        let chunks: Vec<NewChunk> = part
            .iter()
            .enumerate()
            .map(|(i, v)| NewChunk {
                text: format!("{}", f * PER_FILE + i),
                vector: v.clone(),
                metadata: Default::default(),
            })
            .collect();
        let rec = FileRecord { name: format!("file-{f}"), chunks: part.len(), text_bytes: 0, created: 0 };
        store.add_file("bench", rec, chunks).await?;
    }
    let ingest_s = started.elapsed().as_secs_f64();
    println!(
        "{label:<9} ingest  {} chunks of {DIM} dims in {ingest_s:.1} s: {:.0} chunks/s (one transaction per {PER_FILE}-chunk file, searchable on return)",
        all.len(),
        all.len() as f64 / ingest_s
    );
    // The embedded store adds to its graph in the background: measure the search once the
    // graph holds everything.
    if let Some(e) = embedded {
        while e.index_status("bench").is_some_and(|s| s.building || s.in_graph < s.vectors) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        println!(
            "{label:<9} graph   holds every vector {:.1} s after the ingest began",
            started.elapsed().as_secs_f64()
        );
    }
    // Warm-up, then the measured queries.
    for q in queries.iter().take(50) {
        store.nearest("bench", q, K).await?;
    }
    let mut lat = Vec::with_capacity(QUERIES);
    let mut hits = 0;
    for (q, want) in queries.iter().zip(exact) {
        let t = Instant::now();
        let got = store.nearest("bench", q, K).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        hits += got.iter().filter(|h| h.text.parse::<usize>().is_ok_and(|i| want.contains(&i))).count();
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "{label:<9} search  top-{K} of {}: p50 {:.3} ms  p99 {:.3} ms  recall@{K} {:.3}  ({QUERIES} queries)",
        all.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        hits as f64 / (QUERIES * K) as f64
    );
    Ok(())
}

/// Resident and peak resident memory of this process, in MB (Linux).
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Reopen the store in `dir` (written by an earlier run with `--keep DIR`): time from open to
/// the first answer, latency while the graph is being built (exact search) and after, the
/// time until the graph is ready, recall@10 of the graph against the exact answers, and the
/// memory of this process (which has done nothing else).
async fn reopen(dir: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let mut g = Gen::new(7);
    for _ in 0..n {
        g.point();
    }
    let queries: Vec<Vec<f32>> = (0..200).map(|_| g.point()).collect();
    let (rss0, _) = memory_mb();
    let t = Instant::now();
    let store = EmbeddedStore::open(dir)?;
    let opened = t.elapsed().as_secs_f64();
    let first = store.nearest("bench", &queries[0], K).await?;
    let answered = t.elapsed().as_secs_f64();
    let (rss_open, _) = memory_mb();
    println!(
        "embedded  reopen  {n} vectors: open {:.2} s, first answer ({} hits) {:.2} s after open began; RSS {rss0:.0} MB before, {rss_open:.0} MB after",
        opened,
        first.len(),
        answered
    );
    // While the graph is being built: exact answers (kept as the truth for recall).
    let mut exact = Vec::new();
    let mut lat = Vec::new();
    for q in &queries {
        if store.index_status("bench").is_some_and(|s| s.in_graph > 0) {
            break;
        }
        let t = Instant::now();
        let hits = store.nearest("bench", q, K).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        exact.push(hits.into_iter().map(|h| h.text).collect::<Vec<_>>());
    }
    lat.sort_by(f64::total_cmp);
    if !lat.is_empty() {
        println!(
            "embedded  during the build: exact search p50 {:.1} ms p99 {:.1} ms ({} queries)",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.len()
        );
    }
    let mut peak_rss: f64 = 0.0;
    while store.index_status("bench").is_some_and(|s| s.building || s.in_graph < s.vectors) {
        peak_rss = peak_rss.max(memory_mb().0);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let ready = t.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    let mut hits = 0;
    for (q, want) in queries.iter().zip(&exact) {
        let t = Instant::now();
        let got = store.nearest("bench", q, K).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        hits += got.iter().filter(|h| want.contains(&h.text)).count();
    }
    lat.sort_by(f64::total_cmp);
    let (rss, hwm) = memory_mb();
    println!(
        "embedded  graph ready {ready:.1} s after open began; graph search p50 {:.3} ms p99 {:.3} ms recall@{K} {:.3} ({} queries)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        hits as f64 / (exact.len() * K).max(1) as f64,
        exact.len()
    );
    println!(
        "embedded  memory: RSS {rss:.0} MB with the graph, {peak_rss:.0} MB highest sampled during the build, peak (VmHWM) {hwm:.0} MB"
    );
    Ok(())
}

const USAGE: &str = "Usage: bench_store [--n N] [--keep DIR] [POSTGRES_URL]
       bench_store --reopen DIR [--n N]

Stores N (default 100000) clustered 384-dimensional vectors in the embedded store, measures
ingest, search latency and recall@10, then reopens the store. With a POSTGRES_URL, pgvector is
measured in the same run. --keep DIR keeps the store in DIR; --reopen DIR then measures, in a
fresh process, the time from open to the first answer, the background graph build and memory.";

/// See [`USAGE`].
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut n, mut keep, mut reopen_dir, mut pg_url) = (N, None, None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--n" => n = args.next().and_then(|v| v.parse().ok()).ok_or_else(|| anyhow::anyhow!("--n N\n{USAGE}"))?,
            "--keep" => keep = Some(std::path::PathBuf::from(args.next().unwrap_or_default())),
            "--reopen" => reopen_dir = Some(std::path::PathBuf::from(args.next().unwrap_or_default())),
            _ if a.starts_with('-') => anyhow::bail!("unknown option {a}\n{USAGE}"),
            _ => pg_url = Some(a),
        }
    }
    if let Some(dir) = reopen_dir {
        return reopen(&dir, n).await;
    }
    let dir = keep
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("comps-retriever-bench-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir);
    let mut g = Gen::new(7);
    let all: Vec<Vec<f32>> = (0..n).map(|_| g.point()).collect();
    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| g.point()).collect();
    let exact: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| {
            let mut s: Vec<(usize, f32)> =
                all.iter().enumerate().map(|(i, v)| (i, v.iter().zip(q).map(|(a, b)| a * b).sum())).collect();
            s.select_nth_unstable_by(K - 1, |a, b| b.1.total_cmp(&a.1));
            // A new vector: collecting `s.into_iter()` would reuse (and keep) its 1.6 MB buffer,
            // 1.6 GB over the 1,000 queries, which was most of this benchmark's peak memory.
            s[..K].iter().map(|(i, _)| *i).collect()
        })
        .collect();

    let store = EmbeddedStore::open(&dir)?;
    run("embedded", &store, Some(&store), &all, &queries, &exact).await?;
    drop(store);
    let t = Instant::now();
    let reopened = EmbeddedStore::open(&dir)?;
    let opened = t.elapsed().as_secs_f64();
    reopened.nearest("bench", &queries[0], K).await?;
    let answered = t.elapsed().as_secs_f64();
    while reopened.index_status("bench").is_some_and(|s| s.building) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "embedded  reopen  {n} vectors: open {opened:.2} s, first answer {answered:.2} s, graph ready {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop(reopened);
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }

    if let Some(url) = pg_url {
        let pg = PgStore::connect(&url, DIM).await?;
        pg.delete_all("bench").await?;
        run("pgvector", &pg, None, &all, &queries, &exact).await?;
        pg.delete_all("bench").await?;
    }
    Ok(())
}
