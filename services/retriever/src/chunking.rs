//! How dataprep cuts a document into chunks.
//!
//! A request that gives `chunk_size` / `chunk_overlap` is cut by characters, as OPEA does.
//! A request that gives neither is cut by the embedder's own tokenizer when the retriever has
//! one (`--chunk-tokenizer`): each chunk, its overlap and the special tokens the embedder adds
//! fit the embedder's window (`--chunk-tokens`), so no chunk is embedded by its head only. A
//! character size cannot promise that: 1,500 characters are ~330 MiniLM tokens of English and
//! ~1,500 of Chinese.

use std::path::Path;
use std::sync::Arc;

use comps_core::limits::{DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE};
use text_splitter::{ChunkConfig, ChunkSizer, TextSplitter};
use tokenizers::{PostProcessor, Tokenizer};

use crate::ingest::{IngestError, check_chunking};

/// A tokenizer measuring chunks in tokens, without the special tokens (counted apart).
pub struct TokenSizer {
    tokenizer: Tokenizer,
    /// Special tokens the embedder adds to one sequence (`[CLS]`, `[SEP]`: 2 for BERT).
    pub specials: usize,
}

impl std::fmt::Debug for TokenSizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSizer").field("specials", &self.specials).finish_non_exhaustive()
    }
}

impl TokenSizer {
    /// Load `tokenizer.json` from `path` (the file, or a model directory holding it), with its
    /// padding and truncation turned off so that counts are the text's own.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
        let mut tokenizer =
            Tokenizer::from_file(&file).map_err(|e| anyhow::anyhow!("--chunk-tokenizer {}: {e}", file.display()))?;
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| anyhow::anyhow!("--chunk-tokenizer {}: {e}", file.display()))?;
        let specials = tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false));
        Ok(Self { tokenizer, specials })
    }
}

impl ChunkSizer for TokenSizer {
    fn size(&self, chunk: &str) -> usize {
        match self.tokenizer.encode_fast(chunk, false) {
            Ok(enc) => enc.len(),
            // A text the tokenizer cannot read cannot be embedded either: count it as
            // characters, an upper bound for WordPiece and byte-level BPE alike.
            Err(_) => chunk.chars().count(),
        }
    }
}

/// The deployment's default chunking, for requests that choose none.
#[derive(Debug, Clone, Default)]
pub enum DefaultChunking {
    /// OPEA's 1,500 characters with 100 shared.
    #[default]
    Characters,
    /// Chunks of at most `window` tokens, special tokens included, sharing up to `overlap`.
    Tokens {
        /// The embedder's tokenizer.
        sizer: Arc<TokenSizer>,
        /// The embedder's window.
        window: usize,
        /// Tokens shared by consecutive chunks.
        overlap: usize,
    },
}

impl DefaultChunking {
    /// Token chunking with `tokenizer`, checked: the window must leave room for text beyond
    /// the special tokens and the overlap.
    pub fn tokens(sizer: TokenSizer, window: usize, overlap: usize) -> anyhow::Result<Self> {
        let room = window.saturating_sub(sizer.specials);
        if overlap >= room {
            anyhow::bail!(
                "--chunk-token-overlap ({overlap}) must be smaller than --chunk-tokens ({window}) less the \
                 tokenizer's {} special tokens",
                sizer.specials
            );
        }
        Ok(Self::Tokens { sizer: Arc::new(sizer), window, overlap })
    }

    /// What the log and the docs call it.
    pub fn describe(&self) -> String {
        match self {
            Self::Characters => format!("{DEFAULT_CHUNK_SIZE} characters, {DEFAULT_CHUNK_OVERLAP} shared"),
            Self::Tokens { window, overlap, sizer } => {
                format!("{window} tokens ({} special), {overlap} shared", sizer.specials)
            }
        }
    }
}

/// How one request's documents are cut.
#[derive(Debug, Clone)]
pub enum Chunking {
    /// `size` characters, `overlap` shared (the request's numbers, or OPEA's defaults).
    Characters {
        /// Characters per chunk.
        size: usize,
        /// Characters shared.
        overlap: usize,
    },
    /// The deployment's token chunking.
    Tokens {
        /// The embedder's tokenizer.
        sizer: Arc<TokenSizer>,
        /// Tokens of text per chunk (the window less the special tokens).
        size: usize,
        /// Tokens shared.
        overlap: usize,
    },
}

impl Chunking {
    /// The chunking for a request that gave `size` / `overlap` (characters) or neither.
    pub fn for_request(
        size: Option<usize>,
        overlap: Option<usize>,
        default: &DefaultChunking,
    ) -> Result<Self, IngestError> {
        match (size, overlap, default) {
            (None, None, DefaultChunking::Tokens { sizer, window, overlap }) => {
                Ok(Self::Tokens { sizer: sizer.clone(), size: window - sizer.specials, overlap: *overlap })
            }
            _ => {
                let size = size.unwrap_or(DEFAULT_CHUNK_SIZE);
                let overlap = overlap.unwrap_or(DEFAULT_CHUNK_OVERLAP);
                check_chunking(size, overlap)?;
                Ok(Self::Characters { size, overlap })
            }
        }
    }

    /// Cut `text` at the largest semantic boundary that fits (paragraph, sentence, word).
    pub fn cut(&self, text: &str) -> Result<Vec<String>, IngestError> {
        let bad = |e: text_splitter::ChunkConfigError| IngestError::BadInput(format!("chunk_overlap: {e}"));
        let pieces: Vec<String> = match self {
            Self::Characters { size, overlap } => {
                let cfg = ChunkConfig::new(*size).with_overlap(*overlap).map_err(bad)?.with_trim(true);
                TextSplitter::new(cfg).chunks(text).map(str::to_string).collect()
            }
            Self::Tokens { sizer, size, overlap } => {
                let cfg = ChunkConfig::new(*size).with_overlap(*overlap).map_err(bad)?.with_trim(true);
                TextSplitter::new(cfg.with_sizer(sizer.as_ref())).chunks(text).map(str::to_string).collect()
            }
        };
        Ok(pieces.into_iter().filter(|c| !c.is_empty()).collect())
    }
}
