//! Wire types: OpenAI + OPEA protocol (`openai`), DocArray-like docs (`docarray`), and the
//! range checks every request goes through (`validate`).

pub mod dataprep;
pub mod docarray;
pub mod openai;
pub mod params;
pub mod validate;

pub use dataprep::*;
pub use docarray::*;
pub use openai::*;
pub use params::{SamplingParams, SearchParams};
pub use validate::Validate;
