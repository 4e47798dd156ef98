//! The vector store interface and the search types OPEA inherits from LangChain, implemented
//! once on top of a store's nearest-neighbour search.

use async_trait::async_trait;
use comps_core::protocol::SearchParams;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use comps_core::vector::dot;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is already stored (OPEA refuses re-uploads).
    #[error("Uploaded file {0} already exists. Please change file name.")]
    Exists(String),
    /// The vector has the wrong size for this collection.
    #[error("the query vector has {got} dimensions, the collection holds {want}-dimensional vectors")]
    Dimension {
        /// Stored size.
        want: usize,
        /// Given size.
        got: usize,
    },
    /// The database failed.
    #[error("vector store failure: {0}")]
    Backend(String),
}

/// A stored file (or link).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Its name: the uploaded file name, or the link.
    pub name: String,
    /// Chunks stored for it.
    pub chunks: usize,
    /// Bytes of extracted text.
    pub text_bytes: usize,
    /// Unix seconds.
    pub created: u64,
}

/// A chunk to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChunk {
    /// The text.
    pub text: String,
    /// Its embedding (unit length).
    pub vector: Vec<f32>,
    /// Source and position.
    pub metadata: Map<String, Value>,
}

/// A search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The chunk text.
    pub text: String,
    /// Source and position.
    pub metadata: Map<String, Value>,
    /// Cosine similarity to the query.
    pub similarity: f32,
    /// The chunk's vector (for MMR).
    pub vector: Vec<f32>,
}

/// A vector store with collections.
#[async_trait]
pub trait VectorStore: Send + Sync {
    /// `embedded` or `pgvector`.
    fn kind(&self) -> &'static str;
    /// Store a file and its chunks atomically and durably; refuses a name already stored.
    async fn add_file(&self, collection: &str, file: FileRecord, chunks: Vec<NewChunk>) -> Result<(), StoreError>;
    /// Whether a file of that name is stored.
    async fn has_file(&self, collection: &str, name: &str) -> Result<bool, StoreError>;
    /// The stored files, by name.
    async fn list_files(&self, collection: &str) -> Result<Vec<FileRecord>, StoreError>;
    /// Delete one file and its chunks; false when there was none.
    async fn delete_file(&self, collection: &str, name: &str) -> Result<bool, StoreError>;
    /// Delete every file of the collection.
    async fn delete_all(&self, collection: &str) -> Result<(), StoreError>;
    /// The `k` chunks most similar to `query` (unit length), best first.
    async fn nearest(&self, collection: &str, query: &[f32], k: usize) -> Result<Vec<Hit>, StoreError>;
    /// Files and chunks stored, over every collection.
    async fn size(&self) -> Result<StoreSize, StoreError>;
}

/// How much a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSize {
    /// Files (documents and links).
    pub files: u64,
    /// Chunks, each with its vector.
    pub chunks: u64,
}

/// A search as OPEA's retriever parameters describe it.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchType {
    /// The `k` most similar.
    Similarity,
    /// The `k` most similar whose cosine distance is at most the threshold.
    DistanceThreshold(f32),
    /// The `k` most similar whose relevance (`1 - cosine distance`, clamped to [0, 1]) is at
    /// least the threshold.
    ScoreThreshold(f32),
    /// Maximal marginal relevance over `fetch_k` candidates.
    Mmr {
        /// Candidates.
        fetch_k: usize,
        /// 1 = relevance only, 0 = diversity only.
        lambda: f32,
    },
}

impl SearchType {
    /// From OPEA's fields (already validated).
    pub fn from_params(p: &SearchParams) -> Self {
        match p.search_type.as_str() {
            "similarity_distance_threshold" => Self::DistanceThreshold(p.distance_threshold.unwrap_or(f64::MAX) as f32),
            "similarity_score_threshold" => Self::ScoreThreshold(p.score_threshold as f32),
            "mmr" => Self::Mmr { fetch_k: p.fetch_k as usize, lambda: p.lambda_mult as f32 },
            _ => Self::Similarity,
        }
    }
}

/// Relevance in [0, 1] from cosine similarity (LangChain's `1 - distance`).
pub fn relevance(similarity: f32) -> f32 {
    similarity.clamp(0.0, 1.0)
}

/// Run a search: an empty collection gives an empty list.
pub async fn search(
    store: &dyn VectorStore,
    collection: &str,
    query: &[f32],
    k: usize,
    how: &SearchType,
) -> Result<Vec<Hit>, StoreError> {
    let k = k.max(1);
    Ok(match how {
        SearchType::Similarity => store.nearest(collection, query, k).await?,
        SearchType::DistanceThreshold(max) => {
            store.nearest(collection, query, k).await?.into_iter().filter(|h| 1.0 - h.similarity <= *max).collect()
        }
        SearchType::ScoreThreshold(min) => {
            store.nearest(collection, query, k).await?.into_iter().filter(|h| relevance(h.similarity) >= *min).collect()
        }
        SearchType::Mmr { fetch_k, lambda } => {
            let candidates = store.nearest(collection, query, (*fetch_k).max(k)).await?;
            mmr(candidates, k, *lambda)
        }
    })
}

/// Greedy maximal marginal relevance: repeatedly take the candidate maximising
/// `lambda * sim(query, c) - (1 - lambda) * max sim(c, taken)`.
pub fn mmr(mut candidates: Vec<Hit>, k: usize, lambda: f32) -> Vec<Hit> {
    let mut taken: Vec<Hit> = Vec::with_capacity(k);
    while taken.len() < k && !candidates.is_empty() {
        let mut best = 0;
        let mut best_score = f32::NEG_INFINITY;
        for (i, c) in candidates.iter().enumerate() {
            let redundancy = taken.iter().map(|t| dot(&c.vector, &t.vector)).fold(f32::NEG_INFINITY, f32::max);
            let redundancy = if taken.is_empty() { 0.0 } else { redundancy };
            let score = lambda * c.similarity - (1.0 - lambda) * redundancy;
            if score > best_score {
                best_score = score;
                best = i;
            }
        }
        taken.push(candidates.swap_remove(best));
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(text: &str, similarity: f32, vector: Vec<f32>) -> Hit {
        Hit { text: text.into(), metadata: Map::new(), similarity, vector }
    }

    #[test]
    fn mmr_prefers_a_diverse_second_pick() {
        let a = hit("a", 0.9, vec![1.0, 0.0]);
        let a2 = hit("a-again", 0.89, vec![1.0, 0.0]);
        let b = hit("b", 0.7, vec![0.0, 1.0]);
        let picked: Vec<String> =
            mmr(vec![a.clone(), a2.clone(), b.clone()], 2, 0.5).into_iter().map(|h| h.text).collect();
        assert_eq!(picked, ["a", "b"]);
        // lambda 1 is plain relevance.
        let picked: Vec<String> = mmr(vec![a, a2, b], 2, 1.0).into_iter().map(|h| h.text).collect();
        assert_eq!(picked, ["a", "a-again"]);
    }
}
