//! Prompt-injection classifiers against `transformers`: tiny randomly initialised
//! DeBERTa-v2 and BERT sequence classifiers (written by `scripts/fixtures/gen-tiny-classifiers.py`),
//! their tokenizers' ids and their logits, one text at a time and as a padded batch.

use std::path::PathBuf;

use comps_guardrail::{ClassifierGuard, Guard};
use comps_models::deberta::DebertaClassifier;
use comps_models::{BatchConfig, SequenceClassifier, TextTokenizer};
use serde_json::Value;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-classifiers").join(name)
}

fn reference(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir(name).join("reference.json")).unwrap()).unwrap()
}

fn max_diff(a: &[f32], b: &Value) -> f32 {
    let b: Vec<f32> = serde_json::from_value(b.clone()).unwrap();
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Token ids of each reference text, checked against the fixture.
fn ids(name: &str, tok: &TextTokenizer, r: &Value) -> Vec<Vec<u32>> {
    r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let got = tok.encode(&[item["text"].as_str().unwrap().to_string()], false).unwrap().unwrap().remove(0);
            let want: Vec<u32> = serde_json::from_value(item["input_ids"].clone()).unwrap();
            assert_eq!(got, want, "{name}: ids of {:?}", item["text"]);
            got
        })
        .collect()
}

#[test]
fn tiny_deberta_v2_matches_transformers() {
    let r = reference("deberta-v2");
    assert!(DebertaClassifier::is_deberta(&dir("deberta-v2")));
    let model = DebertaClassifier::load(&dir("deberta-v2")).unwrap();
    assert_eq!(model.labels(), ["SAFE", "INJECTION"]);
    let tok = TextTokenizer::from_file(&dir("deberta-v2").join("tokenizer.json"), model.max_tokens).unwrap();
    let ids = ids("deberta-v2", &tok, &r);
    let mut worst = 0.0f32;
    for (i, item) in r["items"].as_array().unwrap().iter().enumerate() {
        let single = model.logits(&[&ids[i]]).unwrap();
        worst = worst.max(max_diff(&single[0], &item["logits"]));
    }
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = model.logits(&refs).unwrap();
    for (i, row) in batch.iter().enumerate() {
        worst = worst.max(max_diff(row, &r["batch"]["logits"][i]));
    }
    println!("deberta-v2: max |logit - transformers| = {worst:.2e}");
    assert!(worst <= 1e-4, "DeBERTa-v2 logits differ by {worst}");
}

#[test]
fn tiny_bert_classifier_matches_transformers() {
    let r = reference("bert");
    let (model, tok) = SequenceClassifier::load(&dir("bert")).unwrap();
    assert_eq!(model.labels(), ["SAFE", "INJECTION"]);
    let ids = ids("bert", &tok, &r);
    let types: Vec<Vec<u32>> = ids.iter().map(|i| vec![0; i.len()]).collect();
    let mut worst = 0.0f32;
    for (i, item) in r["items"].as_array().unwrap().iter().enumerate() {
        let single = model.logits(&[(&ids[i], &types[i])]).unwrap();
        worst = worst.max(max_diff(&single[0], &item["logits"]));
    }
    let pairs: Vec<(&[u32], &[u32])> = ids.iter().zip(&types).map(|(i, t)| (i.as_slice(), t.as_slice())).collect();
    for (i, row) in model.logits(&pairs).unwrap().iter().enumerate() {
        worst = worst.max(max_diff(row, &r["batch"]["logits"][i]));
    }
    println!("bert: max |logit - transformers| = {worst:.2e}");
    assert!(worst <= 1e-4, "BERT logits differ by {worst}");
}

#[tokio::test]
async fn the_classifier_guard_flags_what_the_model_labels_injection() {
    for name in ["deberta-v2", "bert"] {
        let r = reference(name);
        let guard = ClassifierGuard::load(&dir(name), vec!["injection".into()], 0.5, BatchConfig::default()).unwrap();
        for item in r["items"].as_array().unwrap() {
            let v = guard.check(item["text"].as_str().unwrap()).await.unwrap();
            let expected = item["label"] == "INJECTION";
            assert_eq!(!v.violations.is_empty(), expected, "{name}: {:?} -> {:?}", item["text"], v.violations);
        }
    }
}
