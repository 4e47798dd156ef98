//! Embeddings through the embedding service: OpenAI `/v1/embeddings` (ours, or any
//! OpenAI-compatible server) or TEI `/embed`, in batches.

use std::time::Duration;

use comps_core::orchestrator::NodePolicy;
use comps_core::orchestrator::remote::{Target, call_json};
use comps_core::{ServiceError, ServiceResult};
use serde_json::{Value, json};

use crate::store::normalize;

/// The node name failures are reported under.
pub const NODE: &str = "embedding";

/// A client of the embedding service.
#[derive(Debug, Clone)]
pub struct EmbeddingClient {
    url: String,
    tei: bool,
    batch: usize,
    policy: NodePolicy,
    /// TEI `prompt_name`s for documents and for questions (E5: `passage`, `query`).
    prompts: Prompts,
}

/// The embedding model's prompts the retriever asks for, by TEI `prompt_name`.
#[derive(Debug, Clone, Default)]
pub struct Prompts {
    /// For chunks being ingested.
    pub passage: Option<String>,
    /// For a query text that comes without its embedding.
    pub query: Option<String>,
}

/// What a text is embedded as.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// A chunk of a document.
    Passage,
    /// A question.
    Query,
}

impl EmbeddingClient {
    /// `url`: `http://host:6006/v1/embeddings` (OpenAI) or `http://host:80/embed` (TEI); a bare
    /// base URL means the OpenAI route.
    pub fn new(url: &str, batch: usize, timeout: Duration) -> Self {
        let trimmed = url.trim_end_matches('/');
        let tei = trimmed.ends_with("/embed");
        let url = if tei || trimmed.ends_with("/embeddings") {
            trimmed.to_string()
        } else {
            format!("{trimmed}/v1/embeddings")
        };
        Self {
            url,
            tei,
            batch: batch.max(1),
            policy: NodePolicy { timeout, ..NodePolicy::default() },
            prompts: Prompts::default(),
        }
    }

    /// Name these prompts in each call (TEI's `prompt_name`; the OpenAI form has none).
    pub fn with_prompts(mut self, prompts: Prompts) -> anyhow::Result<Self> {
        if !self.tei && (prompts.passage.is_some() || prompts.query.is_some()) {
            anyhow::bail!("prompt names need the TEI form of the embedding URL (.../embed), not {}", self.url);
        }
        self.prompts = prompts;
        Ok(self)
    }

    fn parse(&self, v: &Value, n: usize) -> ServiceResult<Vec<Vec<f32>>> {
        let bad = |what: &str| ServiceError::Upstream(format!("node {NODE} at {} answered {what}", self.url));
        let vecs: Vec<Vec<f32>> = if self.tei {
            serde_json::from_value(v.clone()).map_err(|_| bad("something other than [[float]]"))?
        } else {
            let data = v.get("data").and_then(Value::as_array).ok_or_else(|| bad("no data list"))?;
            data.iter()
                .map(|d| serde_json::from_value(d.get("embedding").cloned().unwrap_or(Value::Null)))
                .collect::<Result<_, _>>()
                .map_err(|_| bad("an entry without a float embedding"))?
        };
        if vecs.len() != n {
            return Err(bad(&format!("{} vectors for {n} texts", vecs.len())));
        }
        Ok(vecs)
    }

    /// Unit-length embeddings of `texts`, in order, embedded as `role`.
    pub async fn embed(&self, texts: &[String], role: Role) -> ServiceResult<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        let target = Target { node: NODE, url: &self.url, api_key: None, policy: &self.policy };
        let prompt = match role {
            Role::Passage => self.prompts.passage.as_deref(),
            Role::Query => self.prompts.query.as_deref(),
        };
        for batch in texts.chunks(self.batch) {
            let body = match (self.tei, prompt) {
                (true, Some(p)) => json!({"inputs": batch, "truncate": true, "prompt_name": p}),
                (true, None) => json!({"inputs": batch, "truncate": true}),
                (false, _) => json!({"input": batch}),
            };
            let v = call_json(&target, &body).await?;
            for mut e in self.parse(&v, batch.len())? {
                normalize(&mut e);
                out.push(e);
            }
        }
        Ok(out)
    }
}
