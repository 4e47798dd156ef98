//! Numerics of our BERT and XLM-RoBERTa encoders against Hugging Face `transformers`, on tiny
//! randomly initialised checkpoints made by `scripts/fixtures/gen-tiny-encoders.py` (weights drawn with
//! std 0.2 so every layer matters) and committed with their reference outputs.

use std::path::PathBuf;

use comps_models::encoder::{ModelDir, Pooling};
use comps_models::{TextTokenizer, cpu};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-encoders").join(name)
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check(name: &str) {
    let dir = fixture(name);
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let md = ModelDir::open(&dir).unwrap();
    let (encoder, _) = md.load_encoder(&cpu()).unwrap();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), encoder.config().max_input_tokens()).unwrap();
    let mut worst = 0f32;
    let mut singles = 0;
    for item in expected["items"].as_array().unwrap() {
        let Some(text) = item.get("text").and_then(Value::as_str) else { continue };
        singles += 1;
        let ids = tok.encode(&[text.to_string()], false).unwrap().unwrap().remove(0);
        let want: Vec<u32> = item["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, want, "{name} {}: token ids", item["id"]);
        let hidden = encoder.forward(&[ids.as_slice()], None).unwrap();
        let mean = Pooling::Mean.pool(&hidden).remove(0);
        let cls = Pooling::Cls.pool(&hidden).remove(0);
        let d = max_diff(&mean, &floats(&item["mean"])).max(max_diff(&cls, &floats(&item["cls"])));
        assert!(d <= 1e-4, "{name} {}: max abs difference {d}", item["id"]);
        worst = worst.max(d);
    }
    assert!(singles >= 5);
    // The same texts in one packed batch give the same states.
    let texts: Vec<String> = expected["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("text").and_then(Value::as_str).map(str::to_string))
        .collect();
    let ids = tok.encode(&texts, false).unwrap().unwrap();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = Pooling::Mean.pool(&encoder.forward(&refs, None).unwrap());
    for (i, item) in expected["items"].as_array().unwrap().iter().filter(|i| i.get("text").is_some()).enumerate() {
        assert!(max_diff(&batch[i], &floats(&item["mean"])) <= 1e-4, "{name} batched item {i}");
    }
    eprintln!("{name}: worst max abs difference against transformers {worst:e}");
}

fn check_logits(name: &str) {
    use comps_models::SequenceClassifier;
    let dir = fixture(name);
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let (model, tok) = SequenceClassifier::load(&dir).unwrap();
    let mut pairs = 0;
    let mut inputs = Vec::new();
    for item in expected["items"].as_array().unwrap() {
        let Some(query) = item.get("query").and_then(Value::as_str) else { continue };
        pairs += 1;
        let (ids, types) = tok.encode_pair(query, item["passage"].as_str().unwrap()).unwrap();
        let want_ids: Vec<u32> =
            item["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let want_types: Vec<u32> =
            item["token_type_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, want_ids, "{name} {}: pair ids", item["id"]);
        assert_eq!(types, want_types, "{name} {}: token types", item["id"]);
        let logit = model.logits(&[(&ids, &types)]).unwrap()[0][0];
        let want = item["logit"].as_f64().unwrap() as f32;
        assert!((logit - want).abs() <= 1e-4, "{name} {}: logit {logit} vs {want}", item["id"]);
        inputs.push((ids, types, want));
    }
    assert!(pairs >= 3);
    // Batched pairs of different lengths give the same logits.
    let refs: Vec<(&[u32], &[u32])> = inputs.iter().map(|(i, t, _)| (i.as_slice(), t.as_slice())).collect();
    for (got, (_, _, want)) in model.logits(&refs).unwrap().iter().zip(&inputs) {
        assert!((got[0] - want).abs() <= 1e-4);
    }
    assert_eq!(model.labels(), ["LABEL_0".to_string()]);
}

#[test]
fn bert_matches_transformers() {
    check("bert");
    check_logits("bert");
}

#[test]
fn xlm_roberta_matches_transformers() {
    check("xlm-roberta");
    check_logits("xlm-roberta");
}

/// Over-long inputs never reach the tokenizer whole: refused by their size (no tokens counted)
/// when not truncating, cut to `max_bytes` when truncating with the same tokens as the whole
/// text. Pairs name the query when it alone is too long.
#[test]
fn over_long_inputs_are_cut_or_refused_before_tokenizing() {
    use comps_models::SequenceClassifier;
    use comps_models::tokenize::{Culprit, Length};

    for name in ["bert", "xlm-roberta"] {
        let (_, tok) = SequenceClassifier::load(&fixture(name)).unwrap();
        let max = tok.max_tokens();
        let max_bytes = tok.max_bytes();
        assert_eq!(max_bytes, max * comps_core::limits::TOKENIZE_BYTES_PER_TOKEN);
        // Multi-byte characters, so the cut must find a char boundary.
        let huge = "Zürich ist schön, the fox said. ".repeat(10 * 1024 * 1024 / 34);
        let short = "a short text".to_string();
        let long = "the quick brown fox ".repeat(40); // over `max` tokens, under `max_bytes`
        assert!(long.len() < max_bytes);

        let started = std::time::Instant::now();
        let refused = tok.encode(&[short.clone(), huge.clone()], false).unwrap().unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "refused in {:?}", started.elapsed());
        assert_eq!(refused.culprit, Culprit::Text(1));
        assert_eq!(refused.length, Length::Bytes { bytes: huge.len(), max_bytes });
        assert!(refused.to_string().contains(&format!("input 1 is {} bytes long", huge.len())), "{refused}");

        let started = std::time::Instant::now();
        let cut = tok.encode(std::slice::from_ref(&huge), true).unwrap().unwrap().remove(0);
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "cut in {:?}", started.elapsed());
        let head: String = huge.chars().take(1_000).collect();
        assert_eq!(cut, tok.encode(&[head], true).unwrap().unwrap().remove(0), "{name}: same first tokens");
        assert_eq!(cut.len(), max);

        let e = tok.encode(std::slice::from_ref(&long), false).unwrap().unwrap_err();
        assert_eq!((e.culprit, e.max), (Culprit::Text(0), max));
        assert!(matches!(e.length, Length::Tokens(n) if n > max), "{e:?}");

        // Pairs: the passage, or the query, by size or by tokens.
        let pairs = |q: &str, texts: &[String]| tok.encode_pairs(q, texts, false).unwrap().unwrap_err();
        let e = pairs("fox", &[short.clone(), huge.clone()]);
        assert_eq!((e.culprit, e.length), (Culprit::Text(1), Length::Bytes { bytes: huge.len(), max_bytes }));
        let e = pairs(&huge, std::slice::from_ref(&short));
        assert_eq!((e.culprit, e.length), (Culprit::Query, Length::Bytes { bytes: huge.len(), max_bytes }));
        let e = pairs("fox", &[short.clone(), long.clone()]);
        assert!(e.culprit == Culprit::Text(1) && matches!(e.length, Length::Tokens(n) if n > max), "{e:?}");
        let e = pairs(&long, &[short.clone(), short.clone()]);
        assert!(e.culprit == Culprit::Query && matches!(e.length, Length::Tokens(n) if n > max), "{e:?}");

        // Truncating pairs: a huge passage or query gives the pair of its prefix.
        let head: String = huge.chars().take(1_000).collect();
        let started = std::time::Instant::now();
        let got = tok.encode_pairs("fox", std::slice::from_ref(&huge), true).unwrap().unwrap();
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "pair cut in {:?}", started.elapsed());
        assert_eq!(got[0], tok.encode_pair("fox", &head).unwrap());
        assert_eq!(tok.encode_pair(&huge, "fox").unwrap(), tok.encode_pair(&head, "fox").unwrap());
        assert_eq!(got[0].0.len(), max);
    }
}
