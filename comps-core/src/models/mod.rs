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

/// The CPU device (the only one these machines have).
pub fn cpu() -> candle_core::Device {
    candle_core::Device::Cpu
}
