//! Embeddings from an upstream: OpenAI `/v1/embeddings` (`{"input"}` →
//! `{"data": [{"index", "embedding"}], "usage"}`) or TEI `/embed` (`{"inputs"}` → `[[float]]`),
//! sent in slices the upstream takes, read back in input order. Every answer is read strictly:
//! a vector that is missing, not all numbers, at an index out of range or given twice, or a
//! count that differs from the inputs', is the node's error, never a silently shorter list.

use serde_json::{Value, json};

use super::{Upstream, floats};
use crate::error::ServiceError;

/// The wire an embeddings upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingsWire {
    /// OpenAI `/v1/embeddings`: texts or token ids, usage counted.
    OpenAi,
    /// TEI `/embed`: texts, with `normalize`, `truncate` and `prompt_name`.
    Tei,
}

/// What to embed.
#[derive(Debug, Clone, Copy)]
pub enum EmbedInputs<'a> {
    /// Texts.
    Texts(&'a [String]),
    /// Token id sequences (OpenAI's form only).
    Tokens(&'a [Vec<u32>]),
}

impl EmbedInputs<'_> {
    /// How many inputs.
    pub fn len(&self) -> usize {
        match self {
            Self::Texts(t) => t.len(),
            Self::Tokens(t) => t.len(),
        }
    }

    /// No inputs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The options of one call.
#[derive(Debug, Clone, Default)]
pub struct EmbedRequest<'a> {
    /// Ask the upstream to normalize (TEI), and make every vector unit length here (OpenAI
    /// servers take no such flag, and a TEI may have been started without it).
    pub normalize: bool,
    /// Ask the upstream to truncate over-long inputs (TEI).
    pub truncate: Option<bool>,
    /// TEI's `prompt_name` (E5's `query` / `passage`).
    pub prompt_name: Option<&'a str>,
    /// The request field the inputs came from, named in input errors (`input` when unset).
    pub field: Option<&'static str>,
}

/// Vectors in input order, and the prompt tokens the upstream counted (0 when it does not say).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embeddings {
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// `usage.prompt_tokens` of OpenAI answers, summed over the slices.
    pub prompt_tokens: usize,
}

/// A client of one embeddings upstream.
#[derive(Debug, Clone)]
pub struct EmbeddingsClient {
    upstream: Upstream,
    wire: EmbeddingsWire,
    batch: usize,
    model: Option<String>,
}

impl EmbeddingsClient {
    /// A client of `upstream` speaking `wire`, sending at most `batch` inputs per call.
    pub fn new(upstream: Upstream, wire: EmbeddingsWire, batch: usize) -> Self {
        Self { upstream, wire, batch: batch.max(1), model: None }
    }

    /// The wire of a URL as users write it: `.../embed` is TEI; `.../embeddings` is OpenAI; a
    /// bare base URL means OpenAI's route (`/v1/embeddings` is appended).
    pub fn wire_of(url: &str) -> (EmbeddingsWire, String) {
        let trimmed = url.trim_end_matches('/');
        if trimmed.ends_with("/embed") {
            (EmbeddingsWire::Tei, trimmed.to_string())
        } else if trimmed.ends_with("/embeddings") {
            (EmbeddingsWire::OpenAi, trimmed.to_string())
        } else {
            (EmbeddingsWire::OpenAi, format!("{trimmed}/v1/embeddings"))
        }
    }

    /// Name this model in OpenAI calls.
    pub fn with_model(mut self, model: Option<String>) -> Self {
        self.model = model;
        self
    }

    /// The wire this client speaks.
    pub fn wire(&self) -> EmbeddingsWire {
        self.wire
    }

    /// The upstream it calls.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Vectors of `inputs`, in order.
    pub async fn embed(&self, inputs: EmbedInputs<'_>, req: &EmbedRequest<'_>) -> Result<Embeddings, ServiceError> {
        let mut out = Embeddings { vectors: Vec::with_capacity(inputs.len()), prompt_tokens: 0 };
        let mut start = 0;
        while start < inputs.len() {
            let end = start.saturating_add(self.batch).min(inputs.len());
            let (body, n) = self.body(inputs, start..end, req)?;
            let answer = self.upstream.json(&body).await?;
            let (vectors, tokens) = match self.wire {
                EmbeddingsWire::Tei => (parse_tei(&self.upstream, &answer, n)?, 0),
                EmbeddingsWire::OpenAi => parse_openai(&self.upstream, &answer, n)?,
            };
            out.vectors.extend(vectors);
            out.prompt_tokens += tokens;
            start = end;
        }
        if req.normalize {
            out.vectors.iter_mut().for_each(|v| crate::vector::normalize(v));
        }
        Ok(out)
    }

    fn body(
        &self,
        inputs: EmbedInputs<'_>,
        range: std::ops::Range<usize>,
        req: &EmbedRequest<'_>,
    ) -> Result<(Value, usize), ServiceError> {
        let n = range.len();
        match self.wire {
            EmbeddingsWire::Tei => {
                let EmbedInputs::Texts(texts) = inputs else {
                    return Err(ServiceError::invalid(
                        req.field.unwrap_or("input"),
                        "token-id input is not supported by a TEI upstream",
                    ));
                };
                let mut body = json!({"inputs": &texts[range], "normalize": req.normalize});
                if let Some(t) = req.truncate {
                    body["truncate"] = json!(t);
                }
                if let Some(p) = req.prompt_name {
                    body["prompt_name"] = json!(p);
                }
                Ok((body, n))
            }
            EmbeddingsWire::OpenAi => {
                let input = match inputs {
                    EmbedInputs::Texts(t) => json!(&t[range]),
                    EmbedInputs::Tokens(t) => json!(&t[range]),
                };
                let mut body = json!({"input": input, "encoding_format": "float"});
                if let Some(m) = &self.model {
                    body["model"] = json!(m);
                }
                Ok((body, n))
            }
        }
    }
}

/// TEI's `[[float]]`, exactly `n` vectors.
pub fn parse_tei(node: &Upstream, v: &Value, n: usize) -> Result<Vec<Vec<f32>>, ServiceError> {
    let rows = v.as_array().ok_or_else(|| node.bad_answer("something other than a list of vectors"))?;
    let vectors = rows
        .iter()
        .enumerate()
        .map(|(i, r)| floats(r).ok_or_else(|| node.bad_answer(format!("a vector {i} that is not a list of numbers"))))
        .collect::<Result<Vec<_>, _>>()?;
    if vectors.len() != n {
        return Err(node.bad_answer(format!("{} vectors for {n} inputs", vectors.len())));
    }
    Ok(vectors)
}

/// OpenAI's `{"data": [{"index", "embedding"}], "usage": {"prompt_tokens"}}`: exactly `n`
/// vectors, placed by `index` (an entry without one takes its position), and the prompt tokens.
pub fn parse_openai(node: &Upstream, v: &Value, n: usize) -> Result<(Vec<Vec<f32>>, usize), ServiceError> {
    let data = v.get("data").and_then(Value::as_array).ok_or_else(|| node.bad_answer("no 'data' list"))?;
    if data.len() != n {
        return Err(node.bad_answer(format!("{} vectors for {n} inputs", data.len())));
    }
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; n];
    for (pos, d) in data.iter().enumerate() {
        let i = match d.get("index") {
            None | Some(Value::Null) => pos,
            Some(i) => i
                .as_u64()
                .map(|i| i as usize)
                .filter(|&i| i < n)
                .ok_or_else(|| node.bad_answer(format!("an index {i} outside 0..{n}")))?,
        };
        let e = d
            .get("embedding")
            .and_then(floats)
            .ok_or_else(|| node.bad_answer(format!("entry {pos} without a float 'embedding'")))?;
        if vectors[i].replace(e).is_some() {
            return Err(node.bad_answer(format!("index {i} twice")));
        }
    }
    let tokens = v.pointer("/usage/prompt_tokens").and_then(Value::as_u64).unwrap_or(0) as usize;
    // n entries, none twice, all in range: every slot is filled.
    Ok((vectors.into_iter().flatten().collect(), tokens))
}

/// The one vector of a single-text answer, in whichever shape an embedding node gives it:
/// OpenAI's `{"data": [{"embedding"}]}`, OPEA's `{"embedding"}` (EmbedDoc), TEI's `[[float]]`
/// or a bare `[float]`; the JSON list itself, so it travels on unchanged. `None` when it is
/// none of these or holds anything but numbers.
pub fn parse_vector(v: &Value) -> Option<&Value> {
    let vector = match v {
        Value::Object(o) => match o.get("data") {
            Some(d) => d.get(0)?.get("embedding")?,
            None => o.get("embedding")?,
        },
        Value::Array(a) if a.first().is_some_and(Value::is_array) => a.first()?,
        other => other,
    };
    vector.as_array().filter(|a| !a.is_empty() && a.iter().all(Value::is_number)).map(|_| vector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn node() -> Upstream {
        Upstream::new("embedding", "http://127.0.0.1:1/v1/embeddings", Duration::from_secs(1))
    }

    #[test]
    fn openai_answers_are_read_by_index_with_usage() {
        let v = json!({"data": [{"index": 1, "embedding": [3.0, 4.0]}, {"index": 0, "embedding": [1, 2]}],
                       "usage": {"prompt_tokens": 7}});
        let (vectors, tokens) = parse_openai(&node(), &v, 2).unwrap();
        assert_eq!(vectors, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        assert_eq!(tokens, 7);
        let no_index = json!({"data": [{"embedding": [1.0]}, {"embedding": [2.0]}]});
        assert_eq!(parse_openai(&node(), &no_index, 2).unwrap().0, vec![vec![1.0], vec![2.0]]);
    }

    #[test]
    fn bad_openai_answers_are_errors_naming_the_node() {
        let cases = [
            (json!({"object": "list"}), "no 'data' list"),
            (json!({"data": [{"index": 0, "embedding": [1.0]}]}), "1 vectors for 2 inputs"),
            (json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}]}), "index 0 twice"),
            (json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 5, "embedding": [2.0]}]}), "outside 0..2"),
            (json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [2.0, "x"]}]}), "entry 1"),
            (json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1}]}), "entry 1"),
        ];
        for (v, says) in cases {
            let e = parse_openai(&node(), &v, 2).unwrap_err();
            assert_eq!(e.status(), 502);
            let m = e.to_string();
            assert!(m.contains("node embedding at http://127.0.0.1:1/v1/embeddings") && m.contains(says), "{m}");
        }
    }

    #[test]
    fn tei_answers_are_read_strictly() {
        assert_eq!(parse_tei(&node(), &json!([[1.0, 2.0], [3, 4]]), 2).unwrap(), vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        assert!(parse_tei(&node(), &json!([[1.0]]), 2).unwrap_err().to_string().contains("1 vectors for 2 inputs"));
        assert!(parse_tei(&node(), &json!([[1.0], ["a"]]), 2).unwrap_err().to_string().contains("vector 1"));
        assert!(parse_tei(&node(), &json!({"error": "x"}), 1).is_err());
    }

    #[test]
    fn a_single_vector_is_found_in_every_shape() {
        for v in [
            json!({"data": [{"index": 0, "embedding": [0.5, 1.0]}]}),
            json!({"id": "x", "text": "q", "embedding": [0.5, 1.0]}),
            json!([[0.5, 1.0]]),
            json!([0.5, 1.0]),
        ] {
            assert_eq!(parse_vector(&v), Some(&json!([0.5, 1.0])), "{v}");
        }
        for v in [json!({"embedding": []}), json!({"text": "q"}), json!("x"), json!([["a"]])] {
            assert_eq!(parse_vector(&v), None, "{v}");
        }
    }

    #[test]
    fn urls_name_their_wire() {
        let tei = EmbeddingsClient::wire_of("http://h:80/embed/");
        assert_eq!(tei, (EmbeddingsWire::Tei, "http://h:80/embed".into()));
        assert_eq!(EmbeddingsClient::wire_of("http://h:6006").1, "http://h:6006/v1/embeddings");
        assert_eq!(EmbeddingsClient::wire_of("http://h/v1/embeddings").0, EmbeddingsWire::OpenAi);
    }

    #[test]
    fn bodies_carry_each_wires_options() {
        let texts = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let tei = EmbeddingsClient::new(node(), EmbeddingsWire::Tei, 2);
        let req = EmbedRequest { normalize: true, truncate: Some(true), prompt_name: Some("query"), field: None };
        let (body, n) = tei.body(EmbedInputs::Texts(&texts), 2..3, &req).unwrap();
        assert_eq!(n, 1);
        assert_eq!(body, json!({"inputs": ["c"], "normalize": true, "truncate": true, "prompt_name": "query"}));
        let ids = vec![vec![1u32, 2]];
        assert_eq!(tei.body(EmbedInputs::Tokens(&ids), 0..1, &req).unwrap_err().status(), 422);
        let openai = EmbeddingsClient::new(node(), EmbeddingsWire::OpenAi, 8).with_model(Some("m".into()));
        let (body, _) = openai.body(EmbedInputs::Tokens(&ids), 0..1, &EmbedRequest::default()).unwrap();
        assert_eq!(body, json!({"input": [[1, 2]], "encoding_format": "float", "model": "m"}));
    }
}
