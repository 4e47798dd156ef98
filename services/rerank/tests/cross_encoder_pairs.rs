//! Cross-encoders with segment ids, against `transformers`: tiny random BERT (two token types,
//! the passage in segment 1, like the ms-marco MiniLM rerankers) and XLM-RoBERTa (one segment)
//! sequence classifiers written by `scripts/fixtures/gen-tiny-cross-encoders.py`. Our tokenizer must give
//! every (query, passage) pair the ids and token type ids transformers used, and the service
//! started as `--mode cross-encoder` must answer transformers' raw logits within 1e-4.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use comps_core::{CommonArgs, ServerHandle};
use comps_models::TextTokenizer;
use comps_rerank::{AppState, Args, Reranker};
use serde_json::{Value, json};

const TOL: f64 = 1e-4;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-cross-encoders").join(name)
}

fn reference(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir(name).join("reference.json")).unwrap()).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The reranker the binary builds from its flags.
async fn cross_encoder(name: &str) -> Arc<dyn Reranker> {
    let model = dir(name).to_string_lossy().into_owned();
    let args = Args::parse_from(["comps-rerank", "--mode", "cross-encoder", "--model", &model]);
    let reranker = comps_rerank::build_reranker(&args).await.unwrap();
    assert_eq!(reranker.info().kind, "cross-encoder");
    reranker
}

async fn serve(reranker: Arc<dyn Reranker>) -> ServerHandle {
    let state = AppState { reranker, max_client_batch_size: 16 };
    comps_rerank::server(state, &CommonArgs::local(), 0).bind().await.unwrap().spawn()
}

/// `/rerank` raw scores of `texts` for `query`, in input order.
async fn raw_scores(h: &ServerHandle, query: &str, texts: &[&str], truncate: bool) -> Vec<f64> {
    let body = json!({"query": query, "texts": texts, "raw_scores": true, "truncate": truncate});
    let r = comps_core::http_client().post(format!("{}/rerank", h.url())).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ranked: Value = r.json().await.unwrap();
    let by_index: HashMap<u64, f64> = ranked
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["index"].as_u64().unwrap(), x["score"].as_f64().unwrap()))
        .collect();
    (0..texts.len() as u64).map(|i| by_index[&i]).collect()
}

/// Our tokenizer on the fixture's pairs: one at a time, per query (refusing and truncating
/// tokenizers alike), and the over-long pair cut longest-first.
fn check_tokenizer(name: &str) {
    let r = reference(name);
    let max = r["max_input_tokens"].as_u64().unwrap() as usize;
    let tok = TextTokenizer::from_file(&dir(name).join("tokenizer.json"), max).unwrap();
    let mut segments = std::collections::BTreeSet::new();
    for group in r["groups"].as_array().unwrap() {
        let query = group["query"].as_str().unwrap();
        let pairs = group["pairs"].as_array().unwrap();
        let want: Vec<(Vec<u32>, Vec<u32>)> =
            pairs.iter().map(|p| (u32s(&p["input_ids"]), u32s(&p["token_type_ids"]))).collect();
        for (p, w) in pairs.iter().zip(&want) {
            assert_eq!(&tok.encode_pair(query, p["passage"].as_str().unwrap()).unwrap(), w, "{name}: {p}");
            segments.extend(w.1.iter().copied());
        }
        let texts: Vec<String> = pairs.iter().map(|p| p["passage"].as_str().unwrap().to_string()).collect();
        for truncate in [false, true] {
            let got = tok.encode_pairs(query, &texts, truncate).unwrap().unwrap();
            assert_eq!(got, want, "{name}: pairs of {query:?} (truncate {truncate})");
        }
    }
    let want_segments: Vec<u32> = if name.starts_with("bert") { vec![0, 1] } else { vec![0] };
    assert_eq!(segments.into_iter().collect::<Vec<_>>(), want_segments, "{name}: segments in the fixture");

    let t = &r["truncated"];
    let (query, passage) = (t["query"].as_str().unwrap(), t["passage"].as_str().unwrap());
    let want = (u32s(&t["input_ids"]), u32s(&t["token_type_ids"]));
    assert_eq!(want.0.len(), max);
    assert_eq!(tok.encode_pair(query, passage).unwrap(), want, "{name}: truncated pair");
    let got = tok.encode_pairs(query, &[passage.to_string()], true).unwrap().unwrap();
    assert_eq!(got, [want], "{name}: truncated pair in a list");
    let refused = tok.encode_pairs(query, &[passage.to_string()], false).unwrap().unwrap_err();
    assert_eq!(refused.max, max, "{name}: the over-long pair is refused without truncate");
}

/// The service's raw scores: every query with all its passages in one request (so pairs of
/// different lengths share a batch), every pair alone, and the truncated pair. Fails on any
/// score more than 1e-4 off; returns the largest difference from transformers.
async fn check_service(name: &str) -> f64 {
    let r = reference(name);
    let h = serve(cross_encoder(name).await).await;
    let mut worst = 0.0f64;
    let mut off: Vec<String> = Vec::new();
    let mut check = |got: f64, want: &Value, what: &str| {
        let want = want.as_f64().unwrap();
        let d = (got - want).abs();
        if d > TOL {
            off.push(format!("{what}: raw score {got} vs transformers {want} (|diff| {d:.3e})"));
        }
        worst = worst.max(d);
    };
    let mut all: Vec<f64> = Vec::new();
    for group in r["groups"].as_array().unwrap() {
        let query = group["query"].as_str().unwrap();
        let pairs = group["pairs"].as_array().unwrap();
        let texts: Vec<&str> = pairs.iter().map(|p| p["passage"].as_str().unwrap()).collect();
        let together = raw_scores(&h, query, &texts, false).await;
        for (k, (got, p)) in together.iter().zip(pairs).enumerate() {
            check(*got, &p["logit"], &format!("{query:?} passage {k} in its group"));
            let alone = raw_scores(&h, query, &texts[k..=k], false).await;
            check(alone[0], &p["logit"], &format!("{query:?} passage {k} alone"));
        }
        all.extend(together);
    }
    // The padded batch transformers ran agrees with the single runs, so with ours too.
    for (got, want) in all.iter().zip(r["batch"]["logits"].as_array().unwrap()) {
        check(*got, want, "vs the padded batch");
    }
    let t = &r["truncated"];
    let got = raw_scores(&h, t["query"].as_str().unwrap(), &[t["passage"].as_str().unwrap()], true).await;
    check(got[0], &t["logit"], "truncated pair");
    h.shutdown().await.unwrap();
    println!("{name} cross-encoder: max |raw score - transformers| = {worst:.2e} over {} pairs", all.len() + 1);
    assert!(
        off.is_empty(),
        "{name}: {} scores off by more than {TOL} (max {worst:.3e}):\n{}",
        off.len(),
        off.join("\n")
    );
    worst
}

#[test]
fn bert_pairs_tokenize_with_segment_ids_like_transformers() {
    check_tokenizer("bert");
}

#[test]
fn bert_pairs_tokenize_the_same_when_the_model_takes_no_segment_ids() {
    check_tokenizer("bert-no-type-input");
}

#[test]
fn xlm_roberta_pairs_tokenize_like_transformers() {
    check_tokenizer("xlm-roberta");
}

#[tokio::test]
async fn bert_cross_encoder_with_segment_ids_matches_transformers() {
    let r = reference("bert");
    assert_eq!(r["logits_use_token_type_ids"], true);
    // The fixture is only a test of segment ids if they matter: zeroing them moves each logit
    // by far more than the tolerance.
    assert!(r["logit_move_with_segment_ids_zeroed"]["min"].as_f64().unwrap() > 100.0 * TOL);
    assert!(check_service("bert").await <= TOL);
}

/// The same weights with a tokenizer that, as transformers 5 saves a generic tokenizer, lists
/// only input_ids and attention_mask as model inputs: transformers then never passes the
/// passage's segment ids, and BERT runs on all-zero token types. So must we.
#[tokio::test]
async fn bert_cross_encoder_whose_tokenizer_gives_no_segment_ids_matches_transformers() {
    let r = reference("bert-no-type-input");
    assert_eq!(r["logits_use_token_type_ids"], false);
    assert_eq!(r["seed"], reference("bert")["seed"], "the same model as the bert fixture");
    assert!(check_service("bert-no-type-input").await <= TOL);
}

#[tokio::test]
async fn xlm_roberta_cross_encoder_matches_transformers() {
    assert!(check_service("xlm-roberta").await <= TOL);
}
