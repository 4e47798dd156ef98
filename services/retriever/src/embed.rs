//! Embeddings through the embedding service: OpenAI `/v1/embeddings` (ours, or any
//! OpenAI-compatible server) or TEI `/embed`, in batches.

use std::time::Duration;

use comps_core::ServiceResult;
use comps_core::client::{EmbedInputs, EmbedRequest, EmbeddingsClient, EmbeddingsWire, Upstream};

/// The node name failures are reported under.
pub const NODE: &str = "embedding";

/// A client of the embedding service.
#[derive(Debug, Clone)]
pub struct EmbeddingClient {
    client: EmbeddingsClient,
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
        let (wire, url) = EmbeddingsClient::wire_of(url);
        Self {
            client: EmbeddingsClient::new(Upstream::new(NODE, url, timeout), wire, batch),
            prompts: Prompts::default(),
        }
    }

    /// Name these prompts in each call (TEI's `prompt_name`; the OpenAI form has none).
    pub fn with_prompts(mut self, prompts: Prompts) -> anyhow::Result<Self> {
        if self.client.wire() != EmbeddingsWire::Tei && (prompts.passage.is_some() || prompts.query.is_some()) {
            anyhow::bail!(
                "prompt names need the TEI form of the embedding URL (.../embed), not {}",
                self.client.upstream().url
            );
        }
        self.prompts = prompts;
        Ok(self)
    }

    /// Unit-length embeddings of `texts`, in order, embedded as `role`.
    pub async fn embed(&self, texts: &[String], role: Role) -> ServiceResult<Vec<Vec<f32>>> {
        let prompt_name = match role {
            Role::Passage => self.prompts.passage.as_deref(),
            Role::Query => self.prompts.query.as_deref(),
        };
        let req = EmbedRequest { normalize: true, truncate: Some(true), prompt_name, field: None };
        Ok(self.client.embed(EmbedInputs::Texts(texts), &req).await?.vectors)
    }
}
