//! The embedded store without HTTP: the HNSW index past the threshold against exact search,
//! deletion, and reopening from disk.

mod common;

use common::TempDir;
use comps_core::vector::normalize;
use comps_retriever::embedded::IndexStatus;
use comps_retriever::{EmbeddedStore, FileRecord, NewChunk, VectorStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 32;
/// The graph takes over from this many vectors (the service's default is larger).
const THRESHOLD: usize = 3_000;

/// Clustered unit vectors (not uniform noise): 50 centres, points scattered around them about
/// as widely as sentence embeddings of one topic are (cosine to their centre ~0.7-0.8).
fn vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..50).map(|_| (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect()).collect();
    (0..n)
        .map(|_| {
            let c = &centres[rng.random_range(0..centres.len())];
            let mut v: Vec<f32> = c.iter().map(|x| x + 0.8 * (rng.random::<f32>() - 0.5)).collect();
            normalize(&mut v);
            v
        })
        .collect()
}

fn exact(all: &[Vec<f32>], q: &[f32], k: usize) -> Vec<usize> {
    let mut s: Vec<(usize, f32)> =
        all.iter().enumerate().map(|(i, v)| (i, v.iter().zip(q).map(|(a, b)| a * b).sum())).collect();
    s.sort_by(|a, b| b.1.total_cmp(&a.1));
    s.into_iter().take(k).map(|(i, _)| i).collect()
}

#[tokio::test]
async fn hnsw_past_the_threshold_keeps_recall_and_survives_reopening() {
    let dir = TempDir::new("store");
    let n = THRESHOLD + 5_000;
    let all = vectors(n, 1);
    {
        let store = EmbeddedStore::open_with_threshold(dir.path(), THRESHOLD).unwrap();
        let chunks: Vec<NewChunk> = all
            .iter()
            .enumerate()
            .map(|(i, v)| NewChunk { text: format!("chunk {i}"), vector: v.clone(), metadata: Default::default() })
            .collect();
        let rec = FileRecord { name: "big.txt".into(), chunks: n, text_bytes: 0, created: 0 };
        store.add_file("c", rec, chunks).await.unwrap();
    }
    // Reopen: the vectors are loaded from disk and searched exactly at once; the HNSW graph is
    // built in the background.
    let store = EmbeddedStore::open_with_threshold(dir.path(), THRESHOLD).unwrap();
    let queries = vectors(100, 2);
    let first: Vec<usize> = store
        .nearest("c", &queries[0], 10)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.text.trim_start_matches("chunk ").parse().unwrap())
        .collect();
    assert_eq!(first, exact(&all, &queries[0], 10));
    let t = std::time::Instant::now();
    while store.index_status("c") != Some(IndexStatus { vectors: n, in_graph: n, building: false }) {
        assert!(t.elapsed().as_secs() < 120, "no graph: {:?}", store.index_status("c"));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut hits = 0;
    for q in &queries {
        let want = exact(&all, q, 10);
        let got: Vec<usize> = store
            .nearest("c", q, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.text.trim_start_matches("chunk ").parse().unwrap())
            .collect();
        hits += got.iter().filter(|i| want.contains(i)).count();
    }
    let recall = hits as f64 / (queries.len() * 10) as f64;

    println!("recall@10 over {n} vectors: {recall:.3}");
    assert!(recall >= 0.95, "recall@10 {recall}");
    // Other collections are separate; deleting the file empties this one.
    assert!(store.nearest("other", &queries[0], 5).await.unwrap().is_empty());
    assert!(store.delete_file("c", "big.txt").await.unwrap());
    assert!(store.nearest("c", &queries[0], 5).await.unwrap().is_empty());
    assert!(!store.delete_file("c", "big.txt").await.unwrap());
}
