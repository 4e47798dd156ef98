//! The `Reranker` trait and its implementations: a cross-encoder (BERT / XLM-RoBERTa sequence
//! classification) and a bi-encoder (cosine of sentence embeddings, in-process or from an
//! embedding service) run locally, and a proxy to a remote TEI `/rerank`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use comps_core::client::{EmbedInputs, EmbedRequest, EmbeddingsClient, EmbeddingsWire, RerankClient, Upstream};
use comps_core::health::HealthCheck;
use comps_core::vector::{cosine, normalize};
use comps_core::{ServiceError, ServiceResult};
use comps_models::tokenize::{Culprit, TooLong};
use comps_models::{BatchConfig, Batcher, EmbeddingModel, SequenceClassifier, TextTokenizer};

/// How to score.
#[derive(Debug, Clone, Copy)]
pub struct ScoreOptions {
    /// Logits (cross-encoder) instead of probabilities.
    pub raw_scores: bool,
    /// Cut over-long pairs instead of refusing them.
    pub truncate: bool,
}

/// What a reranker is.
#[derive(Debug, Clone)]
pub struct RerankerInfo {
    /// Model name.
    pub model_id: String,
    /// `cross-encoder`, `bi-encoder` or `remote`.
    pub kind: &'static str,
    /// Longest input in tokens, when known.
    pub max_input_tokens: Option<usize>,
}

/// Scores texts against a query.
#[async_trait]
pub trait Reranker: Send + Sync {
    /// Description.
    fn info(&self) -> &RerankerInfo;
    /// One score per text, in input order (higher is more relevant).
    async fn score(&self, query: &str, texts: &[String], opts: ScoreOptions) -> ServiceResult<Vec<f32>>;
    /// Whether the compute can answer, for `/health` (a local model's batcher worker; a
    /// remote backend's health is its own).
    fn health(&self) -> HealthCheck {
        HealthCheck::always_healthy()
    }
    /// The batchers its model runs behind, for `/metrics` (none for a remote backend).
    fn batchers(&self) -> Vec<comps_models::batcher::BatchMetrics> {
        Vec::new()
    }
}

/// The 422 for an over-long (query, text) pair of a cross-encoder: it names `query` when the
/// query alone is too long, else `texts.<i>` with `i` the text's index in the request.
fn pair_too_long(e: TooLong) -> ServiceError {
    match e.culprit {
        Culprit::Query => ServiceError::invalid("query", e.describe("query")),
        Culprit::Text(i) => {
            let field = format!("texts.{i}");
            let message = e.describe(&format!("{field} with the query"));
            ServiceError::invalid(field, message)
        }
    }
}

/// The 422 for an over-long input of a bi-encoder, which embeds `[query, texts...]` as one
/// list: input 0 is the query and input `i + 1` is `texts.<i>`.
fn embedded_too_long(e: TooLong) -> ServiceError {
    match e.culprit {
        Culprit::Text(0) | Culprit::Query => ServiceError::invalid("query", e.describe("query")),
        Culprit::Text(i) => {
            let field = format!("texts.{}", i - 1);
            let message = e.describe(&field);
            ServiceError::invalid(field, message)
        }
    }
}

/// A sequence-classification cross-encoder behind the batcher.
pub struct CrossEncoder {
    tokenizer: Arc<TextTokenizer>,
    batcher: Batcher<(Vec<u32>, Vec<u32>), Vec<f32>>,
    info: RerankerInfo,
}

impl CrossEncoder {
    /// Load a `*ForSequenceClassification` directory.
    pub fn load(dir: &Path, batch: BatchConfig) -> anyhow::Result<Self> {
        let (model, tokenizer) = SequenceClassifier::load(dir)?;
        let info = RerankerInfo {
            model_id: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            kind: "cross-encoder",
            max_input_tokens: Some(tokenizer.max_tokens()),
        };
        Ok(Self { tokenizer: Arc::new(tokenizer), batcher: Batcher::start("rerank", model, batch), info })
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[async_trait]
impl Reranker for CrossEncoder {
    fn info(&self) -> &RerankerInfo {
        &self.info
    }

    fn health(&self) -> HealthCheck {
        self.batcher.health()
    }

    fn batchers(&self) -> Vec<comps_models::batcher::BatchMetrics> {
        vec![self.batcher.metrics().clone()]
    }

    async fn score(&self, query: &str, texts: &[String], opts: ScoreOptions) -> ServiceResult<Vec<f32>> {
        let tok = self.tokenizer.clone();
        let (q, t) = (query.to_string(), texts.to_vec());
        let pairs =
            comps_core::telemetry::tokenize_off_runtime(t.len(), move || tok.encode_pairs(&q, &t, opts.truncate))
                .await
                .map_err(|e| ServiceError::Internal(format!("tokenizer task failed: {e}")))?
                .map_err(|e| ServiceError::Internal(e.to_string()))?
                .map_err(pair_too_long)?;
        let logits = self.batcher.submit(pairs).await?;
        Ok(logits
            .into_iter()
            .map(|l| match l.as_slice() {
                [one] if opts.raw_scores => *one,
                [one] => sigmoid(*one),
                // Several labels: the last is "relevant"; its softmax probability (or logit).
                many => {
                    let last = many[many.len() - 1];
                    if opts.raw_scores {
                        last
                    } else {
                        let m = many.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let z: f32 = many.iter().map(|v| (v - m).exp()).sum();
                        (last - m).exp() / z
                    }
                }
            })
            .collect())
    }
}

/// Where a bi-encoder gets its vectors.
enum Vectors {
    Local { tokenizer: Arc<TextTokenizer>, batcher: Batcher<Vec<u32>, Vec<f32>> },
    Service(EmbeddingsClient),
}

/// Cosine similarity of query and text embeddings.
pub struct BiEncoder {
    vectors: Vectors,
    info: RerankerInfo,
    /// Put before the query and before each text: the model's `query` and `passage` prompts,
    /// for an asymmetric model such as E5 (which compares `query: q` with `passage: t`).
    prefixes: (String, String),
}

impl BiEncoder {
    /// A sentence-embedding model in this process.
    pub fn load(dir: &Path, batch: BatchConfig) -> anyhow::Result<Self> {
        let (model, tokenizer, info) = EmbeddingModel::load(dir, None)?;
        let prefixes = match (info.prompts.get("query"), info.prompts.get("passage")) {
            (Some(q), Some(p)) => (q.to_string(), p.to_string()),
            _ => Default::default(),
        };
        Ok(Self {
            prefixes,
            info: RerankerInfo {
                model_id: info.model_id,
                kind: "bi-encoder",
                max_input_tokens: Some(info.max_input_tokens),
            },
            vectors: Vectors::Local {
                tokenizer: Arc::new(tokenizer),
                batcher: Batcher::start("rerank-embedding", model, batch),
            },
        })
    }

    /// An embedding service's OpenAI `/v1/embeddings` URL.
    pub fn remote(url: &str, timeout: Duration) -> Self {
        Self {
            info: RerankerInfo { model_id: url.to_string(), kind: "bi-encoder", max_input_tokens: None },
            prefixes: Default::default(),
            vectors: Vectors::Service(EmbeddingsClient::new(
                Upstream::new("embedding service", url, timeout),
                EmbeddingsWire::OpenAi,
                usize::MAX,
            )),
        }
    }

    /// Vectors of `[query, texts...]` (over-long inputs named as the request names them).
    async fn embed(&self, texts: Vec<String>, truncate: bool) -> ServiceResult<Vec<Vec<f32>>> {
        match &self.vectors {
            Vectors::Local { tokenizer, batcher } => {
                let ids = tokenizer.try_encode_off_runtime(texts, truncate).await?.map_err(embedded_too_long)?;
                Ok(batcher.submit(ids).await?)
            }
            Vectors::Service(client) => {
                Ok(client.embed(EmbedInputs::Texts(&texts), &EmbedRequest::default()).await?.vectors)
            }
        }
    }
}

#[async_trait]
impl Reranker for BiEncoder {
    fn info(&self) -> &RerankerInfo {
        &self.info
    }

    fn health(&self) -> HealthCheck {
        match &self.vectors {
            Vectors::Local { batcher, .. } => batcher.health(),
            Vectors::Service(_) => HealthCheck::always_healthy(),
        }
    }

    fn batchers(&self) -> Vec<comps_models::batcher::BatchMetrics> {
        match &self.vectors {
            Vectors::Local { batcher, .. } => vec![batcher.metrics().clone()],
            Vectors::Service(_) => Vec::new(),
        }
    }

    async fn score(&self, query: &str, texts: &[String], opts: ScoreOptions) -> ServiceResult<Vec<f32>> {
        let (qp, pp) = &self.prefixes;
        let mut all = Vec::with_capacity(texts.len() + 1);
        all.push(format!("{qp}{query}"));
        all.extend(texts.iter().map(|t| format!("{pp}{t}")));
        let mut vecs = self.embed(all, opts.truncate).await?;
        if vecs.len() != texts.len() + 1 {
            return Err(ServiceError::Upstream(format!(
                "embedding answered {} vectors for {} inputs",
                vecs.len(),
                texts.len() + 1
            )));
        }
        vecs.iter_mut().for_each(|v| normalize(v));
        let q = vecs.remove(0);
        Ok(vecs.iter().map(|v| cosine(&q, v)).collect())
    }
}

/// A remote TEI `/rerank`.
pub struct RemoteReranker {
    client: RerankClient,
    info: RerankerInfo,
}

impl RemoteReranker {
    /// A proxy to a TEI `/rerank` URL.
    pub fn new(url: &str, api_key: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("--remote-url '{url}': {e}"))?;
        Ok(Self {
            client: RerankClient::new(Upstream::new("remote rerank", url, timeout).with_api_key(api_key)),
            info: RerankerInfo { model_id: url.to_string(), kind: "remote", max_input_tokens: None },
        })
    }
}

#[async_trait]
impl Reranker for RemoteReranker {
    fn info(&self) -> &RerankerInfo {
        &self.info
    }

    async fn score(&self, query: &str, texts: &[String], opts: ScoreOptions) -> ServiceResult<Vec<f32>> {
        self.client.scores(query, texts, opts.raw_scores, opts.truncate).await
    }
}
