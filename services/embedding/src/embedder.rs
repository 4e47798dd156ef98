//! The `Embedder` trait and its two implementations: a local candle model behind the batcher,
//! and a proxy to a remote TEI or OpenAI-compatible server.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use comps_core::client::{EmbedInputs, EmbedRequest, EmbeddingsClient, EmbeddingsWire, Upstream};
use comps_core::health::HealthCheck;
use comps_core::vector::normalize;
use comps_core::{ServiceError, ServiceResult};
use comps_models::embed::{EmbeddingInfo, Prompts};
use comps_models::{BatchConfig, Batcher, EmbedJob, EmbedJobs, EmbeddingModel, Pooling, TextTokenizer};

/// What to embed.
#[derive(Debug, Clone)]
pub enum EmbedInput {
    /// Texts.
    Texts(Vec<String>),
    /// Pre-tokenized inputs (OpenAI token-id input).
    Tokens(Vec<Vec<u32>>),
}

impl EmbedInput {
    /// The inputs as the upstream client takes them.
    pub fn as_inputs(&self) -> EmbedInputs<'_> {
        match self {
            Self::Texts(t) => EmbedInputs::Texts(t),
            Self::Tokens(t) => EmbedInputs::Tokens(t),
        }
    }

    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.as_inputs().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How to embed.
#[derive(Debug, Clone, Copy)]
pub struct EmbedOptions {
    /// L2-normalise the vectors.
    pub normalize: bool,
    /// Cut over-long inputs instead of refusing them.
    pub truncate: bool,
    /// The request field holding the inputs (for error messages).
    pub field: &'static str,
    /// When cutting, keep the end of an input rather than its start (TEI's
    /// `truncation_direction: "left"`).
    pub keep_end: bool,
}

/// Vectors and the tokens they cost.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens used (0 when a remote does not say).
    pub prompt_tokens: usize,
}

/// What an embedder is, for `/info` and health.
#[derive(Debug, Clone)]
pub struct EmbedderInfo {
    /// Model name.
    pub model_id: String,
    /// Vector size, when known.
    pub dim: Option<usize>,
    /// Longest input, when known.
    pub max_input_tokens: Option<usize>,
    /// Pooling, when known.
    pub pooling: Option<String>,
    /// Largest vocabulary id + 1, when known (to check token-id inputs).
    pub vocab_size: Option<usize>,
    /// `local` or `remote`.
    pub backend: &'static str,
    /// Named prompts put before inputs (TEI's `prompt_name`; none for a remote).
    pub prompts: Prompts,
    /// The batcher's limits (padded tokens, inputs per forward pass), for a local model.
    pub batch: Option<(usize, usize)>,
}

/// Turns inputs into vectors.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Description.
    fn info(&self) -> &EmbedderInfo;
    /// Embed `input`.
    async fn embed(&self, input: EmbedInput, opts: EmbedOptions) -> ServiceResult<Embedded>;
    /// Whether the compute can answer, for `/health` (a local model's batcher worker; a
    /// remote backend's health is its own).
    fn health(&self) -> HealthCheck {
        HealthCheck::always_healthy()
    }
    /// The batchers its model runs behind, for `/metrics` (none for a remote backend).
    fn batchers(&self) -> Vec<comps_models::batcher::BatchMetrics> {
        Vec::new()
    }
    /// The model's tokenizer, for TEI's `/tokenize` and `/decode` (a remote embedder's is the
    /// remote's).
    fn tokenizer(&self) -> Option<&Arc<TextTokenizer>> {
        None
    }
    /// Every token's vector of each input, not pooled nor normalized (TEI's `/embed_all`). A
    /// remote embedder answers 404: its wire carries pooled vectors only.
    async fn embed_tokens(&self, _input: EmbedInput, _opts: EmbedOptions) -> ServiceResult<Vec<Vec<Vec<f32>>>> {
        Err(ServiceError::NotFound(
            "this service proxies a remote embedder, whose API answers pooled vectors only: ask it for token vectors"
                .into(),
        ))
    }
}

/// A candle model in this process.
pub struct LocalEmbedder {
    tokenizer: Arc<TextTokenizer>,
    batcher: Batcher<EmbedJob, Vec<f32>>,
    info: EmbedderInfo,
}

impl LocalEmbedder {
    /// Load `dir` and start its batcher thread.
    pub fn load(dir: &Path, pooling: Option<Pooling>, batch: BatchConfig) -> anyhow::Result<Self> {
        let (model, tokenizer, info): (EmbeddingModel, TextTokenizer, EmbeddingInfo) =
            EmbeddingModel::load(dir, pooling)?;
        let vocab = comps_models::ModelDir::open(dir)?.encoder_config()?.vocab_size;
        let limits = (batch.max_batch_tokens, batch.max_batch_requests);
        let batcher = Batcher::start("embedding", EmbedJobs(model), batch);
        Ok(Self {
            tokenizer: Arc::new(tokenizer),
            batcher,
            info: EmbedderInfo {
                model_id: info.model_id,
                dim: Some(info.dim),
                max_input_tokens: Some(info.max_input_tokens),
                pooling: Some(info.pooling.name().to_string()),
                vocab_size: Some(vocab),
                backend: "local",
                prompts: info.prompts,
                batch: Some(limits),
            },
        })
    }

    /// Use prompt `name` when a request names none (TEI's `--default-prompt-name`).
    pub fn with_default_prompt(mut self, name: Option<String>) -> anyhow::Result<Self> {
        if let Some(n) = name {
            if self.info.prompts.get(&n).is_none() {
                anyhow::bail!("--default-prompt-name {n:?}: {}", self.info.prompts.resolve(Some(&n)).unwrap_err());
            }
            self.info.prompts.default_name = Some(n);
        }
        Ok(self)
    }

    /// The batcher's counters.
    pub fn batch_stats(&self) -> &comps_models::batcher::BatchStats {
        self.batcher.stats()
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    fn tokenizer(&self) -> Option<&Arc<TextTokenizer>> {
        Some(&self.tokenizer)
    }

    fn health(&self) -> HealthCheck {
        self.batcher.health()
    }

    fn batchers(&self) -> Vec<comps_models::batcher::BatchMetrics> {
        vec![self.batcher.metrics().clone()]
    }

    async fn embed(&self, input: EmbedInput, opts: EmbedOptions) -> ServiceResult<Embedded> {
        // OpenTelemetry's GenAI span for an embeddings call, when traces are exported.
        let span = comps_core::telemetry::span(|| {
            tracing::info_span!(
                "embed",
                otel.name = %format!("embeddings {}", self.info.model_id),
                gen_ai.operation.name = "embeddings",
                gen_ai.request.model = %self.info.model_id,
                gen_ai.usage.input_tokens = tracing::field::Empty,
            )
        });
        let work = async {
            let ids = self.token_ids(input, opts).await?;
            let prompt_tokens: usize = ids.iter().map(Vec::len).sum();
            tracing::Span::current().record("gen_ai.usage.input_tokens", prompt_tokens);
            let jobs = ids.into_iter().map(|ids| EmbedJob { ids, all_tokens: false }).collect();
            let mut vectors = self.batcher.submit(jobs).await?;
            if opts.normalize {
                vectors.iter_mut().for_each(|v| normalize(v));
            }
            Ok(Embedded { vectors, prompt_tokens })
        };
        tracing::Instrument::instrument(work, span).await
    }

    async fn embed_tokens(&self, input: EmbedInput, opts: EmbedOptions) -> ServiceResult<Vec<Vec<Vec<f32>>>> {
        let dim = self.info.dim.unwrap_or(1).max(1);
        let jobs =
            self.token_ids(input, opts).await?.into_iter().map(|ids| EmbedJob { ids, all_tokens: true }).collect();
        let rows = self.batcher.submit(jobs).await?;
        Ok(rows.into_iter().map(|r| r.chunks_exact(dim).map(<[f32]>::to_vec).collect()).collect())
    }
}

impl LocalEmbedder {
    /// The inputs as token ids the model takes: texts tokenized, id lists checked against the
    /// vocabulary; over-long ones cut (`opts.truncate`, from the end kept by `keep_end`) or
    /// refused naming `opts.field`.
    async fn token_ids(&self, input: EmbedInput, opts: EmbedOptions) -> ServiceResult<Vec<Vec<u32>>> {
        let max = self.tokenizer.max_tokens();
        Ok(match input {
            EmbedInput::Texts(texts) if opts.truncate && opts.keep_end => {
                self.tokenizer.encode_keep_end_off_runtime(texts).await?
            }
            EmbedInput::Texts(texts) => self.tokenizer.encode_off_runtime(texts, opts.truncate, opts.field).await?,
            EmbedInput::Tokens(mut seqs) => {
                let vocab = self.info.vocab_size.unwrap_or(usize::MAX);
                for (i, s) in seqs.iter_mut().enumerate() {
                    if s.is_empty() {
                        return Err(ServiceError::invalid(opts.field, format!("{} {i} has no tokens", opts.field)));
                    }
                    if let Some(bad) = s.iter().find(|&&t| t as usize >= vocab) {
                        return Err(ServiceError::invalid(
                            opts.field,
                            format!("{} {i} has token id {bad}, outside the vocabulary of {vocab}", opts.field),
                        ));
                    }
                    if s.len() > max {
                        if !opts.truncate {
                            return Err(ServiceError::invalid(
                                opts.field,
                                format!(
                                    "{} {i} has {} tokens, more than the model maximum of {max}",
                                    opts.field,
                                    s.len()
                                ),
                            ));
                        }
                        if opts.keep_end {
                            s.drain(..s.len() - max);
                        } else {
                            s.truncate(max);
                        }
                    }
                }
                seqs
            }
        })
    }
}

/// A remote TEI `/embed` or OpenAI-compatible `/v1/embeddings`.
pub struct RemoteEmbedder {
    client: EmbeddingsClient,
    info: EmbedderInfo,
}

impl RemoteEmbedder {
    /// A proxy to `url`: TEI when the path ends in `/embed`, else OpenAI.
    pub fn new(url: &str, api_key: Option<String>, model: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("--remote-url '{url}': {e}"))?;
        let wire = if parsed.path().trim_end_matches('/').ends_with("/embed") {
            EmbeddingsWire::Tei
        } else {
            EmbeddingsWire::OpenAi
        };
        let upstream = Upstream::new("remote embedding", url, timeout).with_api_key(api_key);
        // A TEI takes at most its --max-client-batch-size inputs per request (32 unless
        // configured): an OpenAI request of up to 2,048 goes in slices of that size.
        let batch = match wire {
            EmbeddingsWire::Tei => comps_core::limits::REMOTE_TEI_BATCH,
            EmbeddingsWire::OpenAi => usize::MAX,
        };
        Ok(Self {
            info: EmbedderInfo {
                model_id: model.clone().unwrap_or_else(|| url.to_string()),
                dim: None,
                max_input_tokens: None,
                pooling: None,
                vocab_size: None,
                backend: "remote",
                prompts: Prompts::default(),
                batch: None,
            },
            client: EmbeddingsClient::new(upstream, wire, batch).with_model(model),
        })
    }
}

#[async_trait]
impl Embedder for RemoteEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    async fn embed(&self, input: EmbedInput, opts: EmbedOptions) -> ServiceResult<Embedded> {
        if opts.truncate && opts.keep_end {
            return Err(ServiceError::invalid(
                "truncation_direction",
                "left truncation is done where the model runs: this service proxies a remote embedder",
            ));
        }
        let req = EmbedRequest {
            normalize: opts.normalize,
            truncate: Some(opts.truncate),
            prompt_name: None,
            field: Some(opts.field),
        };
        let out = self.client.embed(input.as_inputs(), &req).await?;
        Ok(Embedded { vectors: out.vectors, prompt_tokens: out.prompt_tokens })
    }
}
