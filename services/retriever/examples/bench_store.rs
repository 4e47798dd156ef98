//! Vector store benchmark: 100k x 384 clustered unit vectors (shaped like sentence embeddings
//! of many topics, not uniform noise) stored in the embedded store, then 1,000 queries:
//! p50 / p99 latency of a top-10 search and recall@10 against exact search, plus the rate at
//! which chunks are stored (embedding excluded). Run through `scripts/bench-retriever.sh`.

use std::time::Instant;

use comps_retriever::store::normalize;
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
        "{label:<9} ingest  {N} chunks of {DIM} dims in {ingest_s:.1} s: {:.0} chunks/s (one transaction per {PER_FILE}-chunk file, index maintained)",
        N as f64 / ingest_s
    );
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
        "{label:<9} search  top-{K} of {N}: p50 {:.3} ms  p99 {:.3} ms  recall@{K} {:.3}  ({QUERIES} queries)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        hits as f64 / (QUERIES * K) as f64
    );
    Ok(())
}

/// Usage: bench_store [POSTGRES_URL] — with a URL, pgvector is measured in the same run.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pg_url = std::env::args().nth(1);
    let dir = std::env::temp_dir().join(format!("comps-retriever-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut g = Gen::new(7);
    let all: Vec<Vec<f32>> = (0..N).map(|_| g.point()).collect();
    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| g.point()).collect();
    let exact: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| {
            let mut s: Vec<(usize, f32)> =
                all.iter().enumerate().map(|(i, v)| (i, v.iter().zip(q).map(|(a, b)| a * b).sum())).collect();
            s.select_nth_unstable_by(K - 1, |a, b| b.1.total_cmp(&a.1));
            s.truncate(K);
            s.into_iter().map(|(i, _)| i).collect()
        })
        .collect();

    let store = EmbeddedStore::open(&dir)?;
    run("embedded", &store, &all, &queries, &exact).await?;
    drop(store);
    let t = Instant::now();
    let reopened = EmbeddedStore::open(&dir)?;
    println!("embedded  reopen  {N} vectors, index rebuilt in {:.1} s", t.elapsed().as_secs_f64());
    drop(reopened);
    let _ = std::fs::remove_dir_all(&dir);

    if let Some(url) = pg_url {
        let pg = PgStore::connect(&url, DIM).await?;
        pg.delete_all("bench").await?;
        run("pgvector", &pg, &all, &queries, &exact).await?;
        pg.delete_all("bench").await?;
    }
    Ok(())
}
