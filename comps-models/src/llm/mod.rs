//! The LLM engine: chat models in-process on CPU (quantized GGUF: llama, qwen2, qwen3, on our
//! own forward pass and kernels or on candle; safetensors: llama, qwen2, on candle), the
//! scheduler that batches every active sequence into one step ([`engine`]), the sampler,
//! stop strings and incremental detokenizing, and the GGUF tokenizer rebuild.

pub mod attention;
pub mod decode;
pub mod engine;
pub mod model;
pub mod native;
pub mod prefix;
pub mod sampling;
pub mod tokenizer;

pub use engine::{Engine, EngineConfig, GenDone, GenEvent, GenRequest};
pub use model::{Backend, BatchInput, ChatModel, PrefixState, Quantize};
