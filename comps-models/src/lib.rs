//! The models comps services run in-process, and everything that drives them: BERT-family
//! encoders and pooling ([`encoder`], [`embed`]), sequence classifiers ([`classifier`],
//! [`deberta`]), tokenizers ([`tokenize`]), model ids from the Hugging Face Hub ([`hub`]), the
//! dynamic batcher ([`batcher`]), the quantized kernels ([`quant`], [`kernels`]) and the LLM
//! engine with its native forward pass ([`llm`]). Megaservices never compile this.
//!
//! Failures are [`ModelError`]s; the one mapping to an HTTP answer is its
//! `From<ModelError> for ServiceError`.

pub mod batcher;
pub mod classifier;
pub mod deberta;
pub mod embed;
pub mod encoder;
pub mod hub;
pub mod kernels;
pub mod llm;
pub mod quant;
pub mod tokenize;
pub mod worker;

pub use batcher::{BatchArgs, BatchConfig, BatchItem, BatchModel, Batcher};
pub use classifier::SequenceClassifier;
pub use embed::{EmbedJob, EmbedJobs, EmbeddingModel};
pub use encoder::{Encoder, EncoderConfig, ModelDir, Pooling};
pub use tokenize::TextTokenizer;

use comps_core::ServiceError;

/// Why a model could not be loaded, could not take a request, or failed on one.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Files missing or malformed.
    #[error("cannot load model: {0}")]
    Load(String),
    /// An architecture or option we do not implement.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A tensor operation failed.
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    /// The tokenizer failed on the input.
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
    /// The input cannot be run as given: `field` names the request field it came from.
    #[error("{message}")]
    InvalidInput {
        /// The request field at fault.
        field: String,
        /// Why, naming the field.
        message: String,
    },
    /// The model's queue is full; the caller should retry later.
    #[error("{0}")]
    Busy(String),
    /// The model's worker has stopped (or is stopping): nothing more will run.
    #[error("{0}")]
    Stopped(String),
    /// The model failed on this request: its step panicked or returned an error, or its
    /// worker dropped the request.
    #[error("{0}")]
    Failed(String),
}

/// The one place a model failure becomes an HTTP answer: a model that failed on a request
/// answers 424 Failed Dependency (TEI's status), a bad input 422 naming its field, a full queue
/// 429, a stopped worker 503.
impl From<ModelError> for ServiceError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::InvalidInput { field, message } => ServiceError::invalid(field, message),
            ModelError::Tokenizer(m) => {
                ServiceError::InvalidField { field: None, message: format!("tokenizer failed: {m}") }
            }
            ModelError::Busy(m) => ServiceError::Overloaded(m),
            ModelError::Stopped(m) => ServiceError::NotReady(m),
            e @ (ModelError::Load(_) | ModelError::Unsupported(_) | ModelError::Compute(_)) => {
                ServiceError::ModelFailed(e.to_string())
            }
            ModelError::Failed(m) => ServiceError::ModelFailed(m),
        }
    }
}

/// The threads a model computes on: `RAYON_NUM_THREADS`, else one per core. Whatever drives
/// a model's forward passes (a batcher's worker, the LLM's scheduler loop, a benchmark) runs on
/// one of them through [`rayon::ThreadPool::install`], so every parallel loop of a forward pass
/// (dozens per layer: products, norms, attention) starts on a thread that is already awake.
/// Called from a thread outside the pool, each loop queued its work and slept until a pool
/// thread had done it, two thread switches per loop, which cost SmolLM2 most of its 1-thread
/// decode speed and a short query a few hundred microseconds per encoder layer.
pub fn compute_pool(name: &str) -> std::io::Result<rayon::ThreadPool> {
    let name = name.to_string();
    rayon::ThreadPoolBuilder::new()
        .thread_name(move |i| format!("{name}-compute-{i}"))
        .build()
        .map_err(std::io::Error::other)
}

/// The CPU device (the only one these machines have).
pub fn cpu() -> candle_core::Device {
    candle_core::Device::Cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_model_error_answers_its_status_and_keeps_its_message() {
        let cases: Vec<(ModelError, u16)> = vec![
            (ModelError::Failed("the llm model panicked".into()), 424),
            (ModelError::Load("model.safetensors: truncated".into()), 424),
            (ModelError::Unsupported("architecture mamba".into()), 424),
            (ModelError::Compute(candle_core::Error::Msg("shape mismatch".into())), 424),
            (ModelError::Busy("embedding queue is full; retry later".into()), 429),
            (ModelError::Stopped("embedding worker has stopped".into()), 503),
            (ModelError::Tokenizer("invalid utf-8".into()), 422),
            (ModelError::InvalidInput { field: "input".into(), message: "input 3 is too long".into() }, 422),
        ];
        for (e, status) in cases {
            let said = e.to_string();
            let s = ServiceError::from(e);
            assert_eq!(s.status().as_u16(), status, "{said}");
            assert!(s.to_string().contains(said.trim_start_matches("tokenizer failed: ")), "{s} keeps {said}");
        }
        match ServiceError::from(ModelError::InvalidInput { field: "input".into(), message: "too long".into() }) {
            ServiceError::InvalidField { field, .. } => assert_eq!(field.as_deref(), Some("input")),
            other => panic!("expected a 422 naming the field, got {other:?}"),
        }
    }
}
