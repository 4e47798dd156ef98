//! A Hugging Face `Tokenizer` built from a GGUF file's metadata, for GGUF models that come
//! without a `tokenizer.json` (the packaged SmolLM2 is one).
//!
//! GGUF stores a byte-level BPE vocabulary as `tokenizer.ggml.tokens` (ids are positions),
//! `tokenizer.ggml.merges` (`"a b"`, in rank order) and `tokenizer.ggml.token_type` (1 normal,
//! 3 control, 4 user-defined, ...). What it does not store is the pre-tokenizer: only a name
//! (`tokenizer.ggml.pre`) that llama.cpp maps to split rules. We map the names we know to the
//! pre-tokenizers the original `tokenizer.json` files declare.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// The split rule of Qwen2's and Llama 3's tokenizers (numbers cut into groups of up to three
/// digits for Llama 3, single digits for Qwen2).
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn string_array(md: &HashMap<String, Value>, key: &str) -> anyhow::Result<Vec<String>> {
    let v = md.get(key).ok_or_else(|| anyhow::anyhow!("GGUF metadata has no {key}"))?;
    let arr = v.to_vec().map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    arr.iter().map(|x| x.to_string().cloned().map_err(|e| anyhow::anyhow!("{key}: {e}"))).collect()
}

fn int_array(md: &HashMap<String, Value>, key: &str) -> anyhow::Result<Vec<i32>> {
    let Some(v) = md.get(key) else { return Ok(Vec::new()) };
    let arr = v.to_vec().map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    arr.iter().map(|x| x.to_i32().map_err(|e| anyhow::anyhow!("{key}: {e}"))).collect()
}

fn pre_tokenizer(pre: &str) -> anyhow::Result<PreTokenizerWrapper> {
    let byte_level = |use_regex| ByteLevel::new(false, true, use_regex).into();
    let split = |pattern: &str| -> anyhow::Result<PreTokenizerWrapper> {
        let s = Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| anyhow::anyhow!("split rule: {e}"))?;
        Ok(s.into())
    };
    Ok(match pre {
        // GPT-2's own split rule, inside ByteLevel.
        "default" | "gpt2" => byte_level(true),
        // SmolLM / StarCoder: every digit on its own, then GPT-2's rule.
        "smollm" | "starcoder" | "refact" => Sequence::new(vec![Digits::new(true).into(), byte_level(true)]).into(),
        "qwen2" | "deepseek-r1-qwen" => Sequence::new(vec![split(QWEN2_SPLIT)?, byte_level(false)]).into(),
        "llama3" | "llama-bpe" | "smaug-bpe" => Sequence::new(vec![split(LLAMA3_SPLIT)?, byte_level(false)]).into(),
        other => anyhow::bail!(
            "tokenizer.ggml.pre = '{other}' is not a pre-tokenizer this service knows; put the model's tokenizer.json next to the GGUF file"
        ),
    })
}

/// Build the tokenizer a GGUF file describes. Only byte-level BPE (`tokenizer.ggml.model =
/// "gpt2"`) can be rebuilt; SentencePiece models need their `tokenizer.json`.
pub fn from_gguf_metadata(md: &HashMap<String, Value>) -> anyhow::Result<Tokenizer> {
    let model = md.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok()).map(String::as_str).unwrap_or("");
    if model != "gpt2" {
        anyhow::bail!(
            "the GGUF tokenizer is '{model}', and only byte-level BPE ('gpt2') can be rebuilt from metadata; put the model's tokenizer.json next to the GGUF file"
        );
    }
    let tokens = string_array(md, "tokenizer.ggml.tokens")?;
    let merges = string_array(md, "tokenizer.ggml.merges")?;
    let types = int_array(md, "tokenizer.ggml.token_type")?;

    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| anyhow::anyhow!("tokenizer.ggml.merges has an entry without a space: {m:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| anyhow::anyhow!("building the BPE model: {e}"))?;

    let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map(String::as_str).unwrap_or("default");
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
    tok.with_decoder(Some(ByteLevelDecoder::default()));

    // Control tokens (<|im_start|>, ...) are matched whole before pre-tokenization, as in the
    // original tokenizer.json, and skipped when decoding; user-defined ones are matched whole.
    let mut special = Vec::new();
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match types.get(i).copied() {
            Some(TOKEN_TYPE_CONTROL) => special.push(AddedToken::from(t.clone(), true)),
            Some(TOKEN_TYPE_USER_DEFINED) => added.push(AddedToken::from(t.clone(), false)),
            _ => {}
        }
    }
    tok.add_special_tokens(special).map_err(|e| anyhow::anyhow!("adding control tokens: {e}"))?;
    tok.add_tokens(added).map_err(|e| anyhow::anyhow!("adding user-defined tokens: {e}"))?;
    Ok(tok)
}
