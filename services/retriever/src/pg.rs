//! The pgvector store: Postgres with the `vector` extension. The schema is created on start;
//! chunks carry a `vector(dim)` column with an HNSW index over cosine distance, and a file is
//! stored in one transaction (acknowledged after Postgres committed it). A connection that
//! ended (Postgres restarted, a network cut) is opened again by the next request.

use async_trait::async_trait;
use pgvector::Vector;
use serde_json::{Map, Value};
use tokio_postgres::{Client, NoTls};

use crate::store::{FileRecord, Hit, NewChunk, StoreError, StoreSize, VectorStore};

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// HNSW candidates per search (pgvector's `hnsw.ef_search`).
const EF_SEARCH: usize = 100;

/// A pgvector-backed store.
pub struct PgStore {
    client: tokio::sync::Mutex<Client>,
    url: String,
    dim: usize,
}

/// A new connection to `url`, its driver task spawned.
async fn open(url: &str) -> Result<Client, String> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("cannot connect to Postgres at {}: {e}", redact(url)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::error!(error = %e, "Postgres connection ended");
        }
    });
    Ok(client)
}

impl PgStore {
    /// Connect, create the extension, tables and index when missing.
    pub async fn connect(url: &str, dim: usize) -> anyhow::Result<Self> {
        let client = open(url).await.map_err(anyhow::Error::msg)?;
        let schema = format!(
            "CREATE EXTENSION IF NOT EXISTS vector;
             CREATE TABLE IF NOT EXISTS comps_files (
                 collection text NOT NULL, name text NOT NULL, record jsonb NOT NULL,
                 PRIMARY KEY (collection, name));
             CREATE TABLE IF NOT EXISTS comps_chunks (
                 id bigserial PRIMARY KEY, collection text NOT NULL, file text NOT NULL,
                 text text NOT NULL, metadata jsonb NOT NULL, embedding vector({dim}) NOT NULL,
                 FOREIGN KEY (collection, file) REFERENCES comps_files (collection, name) ON DELETE CASCADE);
             CREATE INDEX IF NOT EXISTS comps_chunks_file ON comps_chunks (collection, file);
             CREATE INDEX IF NOT EXISTS comps_chunks_embedding ON comps_chunks USING hnsw (embedding vector_cosine_ops);"
        );
        client.batch_execute(&schema).await.map_err(|e| anyhow::anyhow!("creating the pgvector schema: {e}"))?;
        // A table made earlier with another size cannot hold these vectors.
        let row = client
            .query_one(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'comps_chunks'::regclass AND attname = 'embedding'",
                &[],
            )
            .await?;
        let existing: i32 = row.get(0);
        if existing > 0 && existing as usize != dim {
            anyhow::bail!("comps_chunks holds {existing}-dimensional vectors, and --pg-dim is {dim}");
        }
        Ok(Self { client: tokio::sync::Mutex::new(client), url: url.to_string(), dim })
    }

    /// The connection, opened again first when it has ended.
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Client>, StoreError> {
        let mut client = self.client.lock().await;
        if client.is_closed() {
            tracing::warn!(url = %redact(&self.url), "the Postgres connection had ended; connecting again");
            *client = open(&self.url).await.map_err(StoreError::Backend)?;
        }
        Ok(client)
    }

    fn check_dim(&self, got: usize) -> Result<(), StoreError> {
        if got != self.dim {
            return Err(StoreError::Dimension { want: self.dim, got });
        }
        Ok(())
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[async_trait]
impl VectorStore for PgStore {
    fn kind(&self) -> &'static str {
        "pgvector"
    }

    async fn size(&self) -> Result<StoreSize, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT (SELECT count(*) FROM comps_files), (SELECT count(*) FROM comps_chunks)", &[])
            .await
            .map_err(backend)?;
        let count = |i: usize| row.get::<_, i64>(i).max(0) as u64;
        Ok(StoreSize { files: count(0), chunks: count(1) })
    }

    async fn add_file(&self, collection: &str, file: FileRecord, chunks: Vec<NewChunk>) -> Result<(), StoreError> {
        for c in &chunks {
            self.check_dim(c.vector.len())?;
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let record = serde_json::to_value(&file).map_err(backend)?;
        let name: &str = &file.name;
        let inserted = tx
            .execute(
                "INSERT INTO comps_files (collection, name, record) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&collection, &name, &record],
            )
            .await
            .map_err(backend)?;
        if inserted == 0 {
            return Err(StoreError::Exists(name.to_string()));
        }
        let stmt = tx
            .prepare(
                "INSERT INTO comps_chunks (collection, file, text, metadata, embedding) VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(backend)?;
        for c in chunks {
            let meta = Value::Object(c.metadata);
            tx.execute(&stmt, &[&collection, &name, &c.text, &meta, &Vector::from(c.vector)]).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn has_file(&self, collection: &str, name: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT 1 FROM comps_files WHERE collection = $1 AND name = $2", &[&collection, &name])
            .await
            .map_err(backend)?;
        Ok(row.is_some())
    }

    async fn list_files(&self, collection: &str) -> Result<Vec<FileRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT record FROM comps_files WHERE collection = $1 ORDER BY name", &[&collection])
            .await
            .map_err(backend)?;
        rows.iter().map(|r| serde_json::from_value(r.get::<_, Value>(0)).map_err(backend)).collect()
    }

    async fn delete_file(&self, collection: &str, name: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM comps_files WHERE collection = $1 AND name = $2", &[&collection, &name])
            .await
            .map_err(backend)?;
        Ok(n > 0)
    }

    async fn delete_all(&self, collection: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.execute("DELETE FROM comps_files WHERE collection = $1", &[&collection]).await.map_err(backend)?;
        Ok(())
    }

    async fn nearest(&self, collection: &str, query: &[f32], k: usize) -> Result<Vec<Hit>, StoreError> {
        self.check_dim(query.len())?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        // Candidates for the graph, and keep scanning when the collection filter drops some.
        tx.batch_execute(&format!(
            "SET LOCAL hnsw.ef_search = {}; SET LOCAL hnsw.iterative_scan = relaxed_order;",
            EF_SEARCH.max(k)
        ))
        .await
        .map_err(backend)?;
        let q = Vector::from(query.to_vec());
        let rows = tx
            .query(
                "SELECT text, metadata, file, embedding, 1 - (embedding <=> $2) AS similarity FROM comps_chunks
                 WHERE collection = $1 ORDER BY embedding <=> $2 LIMIT $3",
                &[&collection, &q, &(k as i64)],
            )
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        let mut hits: Vec<Hit> = rows
            .iter()
            .map(|r| {
                let mut metadata: Map<String, Value> = match r.get::<_, Value>(1) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                metadata.insert("source".into(), Value::String(r.get(2)));
                let v: Vector = r.get(3);
                Hit { text: r.get(0), metadata, similarity: r.get::<_, f64>(4) as f32, vector: v.to_vec() }
            })
            .collect();
        // `relaxed_order` may return neighbours slightly out of order.
        hits.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        Ok(hits)
    }
}
