//! Model compute shared by the services (feature `models`): BERT-family encoders and pooling
//! on candle ([`encoder`]), tokenizers ([`tokenize`]), sentence embeddings ([`embed`]) and the
//! dynamic batcher ([`batcher`]). Megaservices never compile this.

pub mod batcher;
pub mod classifier;
pub mod embed;
pub mod encoder;
pub mod hub;
pub mod kernels;
pub mod quant;
pub mod tokenize;

pub use batcher::{BatchArgs, BatchConfig, BatchItem, BatchModel, Batcher};
pub use classifier::SequenceClassifier;
pub use embed::EmbeddingModel;
pub use encoder::{Encoder, EncoderConfig, ModelDir, Pooling};
pub use tokenize::TextTokenizer;

/// Why a model could not be loaded or run.
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
    /// The tokenizer failed.
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
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
