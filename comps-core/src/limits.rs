//! Every limit a request meets that is not a per-deployment flag, in one place, so a reviewer
//! (and a fuzzer) finds the bounds of the work one request can cause here. Per-deployment
//! limits (body size, upload size, timeouts, concurrency) are flags whose defaults are also
//! declared here.

/// Characters of a client's value quoted back in an error message; longer values are cut with
/// "…" and their length said. Keeps a 10 MB bad value from becoming a 10 MB error body.
pub const ERROR_EXCERPT_CHARS: usize = 120;

/// Characters of a whole error message (the envelope's `message`), whatever built it.
pub const ERROR_MESSAGE_CHARS: usize = 2_000;

/// Smallest `chunk_size` dataprep accepts, in characters.
pub const MIN_CHUNK_SIZE: usize = 50;

/// Largest `chunk_size` dataprep accepts, in characters.
pub const MAX_CHUNK_SIZE: usize = 100_000;

/// Dataprep's default `chunk_size` in characters (OPEA's), used when a request gives none and
/// the retriever has no `--chunk-tokenizer` to cut by tokens.
pub const DEFAULT_CHUNK_SIZE: usize = 1_500;

/// Dataprep's default `chunk_overlap` in characters (OPEA's).
pub const DEFAULT_CHUNK_OVERLAP: usize = 100;

/// Default for the retriever's `--chunk-tokens`: the tokens of one chunk, special tokens
/// included, when chunks are cut by the embedder's tokenizer. all-MiniLM-L6-v2 (and TEI
/// serving it) reads 256; a chunk past the window would be embedded by its head only.
pub const DEFAULT_CHUNK_TOKENS: usize = 256;

/// Default for the retriever's `--chunk-token-overlap`: tokens shared by consecutive chunks
/// (about a tenth of a chunk, as OPEA's 100 of 1,500 characters is about a fifteenth).
pub const DEFAULT_CHUNK_TOKEN_OVERLAP: usize = 24;

/// Inputs of one OpenAI `/v1/embeddings` request (OpenAI's own limit). TEI's `/embed` keeps
/// its configurable `--max-client-batch-size`.
pub const OPENAI_MAX_EMBEDDING_INPUTS: usize = 2_048;

/// Inputs per request sent to a remote TEI `/embed` (TEI's default `--max-client-batch-size`):
/// a larger OpenAI request is sent in slices of this size.
pub const REMOTE_TEI_BATCH: usize = 32;

/// Bytes of text looked at per token of a model's window before tokenizing: an input longer
/// than `max_tokens * TOKENIZE_BYTES_PER_TOKEN` is cut (when truncating) or refused (when
/// not) before the tokenizer sees it, so a 10 MB input costs no more than a long one.
pub const TOKENIZE_BYTES_PER_TOKEN: usize = 32;

/// Consecutive batches whose model compute panicked after which a batcher reports itself
/// unhealthy (its `/health` answers 503) until a batch runs cleanly again. One panic is an
/// input the kernel could not take; several in a row look like a broken model.
pub const BATCHER_UNHEALTHY_AFTER_PANICS: u32 = 3;

/// Bytes of an `--api-key-file` (a key is one line; a larger file is refused, so a wrong path
/// such as a device or a log file fails fast instead of being read whole).
pub const API_KEY_FILE_MAX_BYTES: usize = 16 * 1024;

/// Default for the retriever's `--max-upload-bytes`.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

/// Default for the retriever's `--max-extracted-bytes`: the text one upload may expand to.
pub const DEFAULT_MAX_EXTRACTED_BYTES: usize = 32 * 1024 * 1024;

/// Default for the retriever's `--extract-memory-mb`: address space of the process that reads
/// one uploaded document (a decompression bomb hits this, not the service).
pub const DEFAULT_EXTRACT_MEMORY_MB: u64 = 1_024;

/// Default for the retriever's `--extract-timeout-secs`.
pub const DEFAULT_EXTRACT_TIMEOUT_SECS: u64 = 60;

/// Characters of an upstream's answer quoted in the error that reports it.
pub const UPSTREAM_BODY_EXCERPT_CHARS: usize = 300;

/// Cut `value` for quoting in an error: at most [`ERROR_EXCERPT_CHARS`] characters, with the
/// full length said when it was cut.
pub fn excerpt(value: &str) -> String {
    excerpt_to(value, ERROR_EXCERPT_CHARS)
}

/// [`excerpt`] with an explicit bound.
pub fn excerpt_to(value: &str, max_chars: usize) -> String {
    match value.char_indices().nth(max_chars) {
        None => value.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &value[..cut], value.len()),
    }
}

/// Seconds a streamed answer may stay silent (a request queued behind others, a long prefill)
/// before an SSE comment line is sent: proxies and load balancers cut idle streams, often at 60 s.
/// Clients ignore comment lines.
pub const SSE_KEEP_ALIVE_SECS: u64 = 15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_bounded_and_say_the_length() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(10_000);
        let e = excerpt(&long);
        assert!(e.chars().count() < ERROR_EXCERPT_CHARS + 40, "{e}");
        assert!(e.ends_with("(20000 bytes in all)"), "{e}");
    }
}
