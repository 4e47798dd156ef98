//! Scores from a TEI `/rerank` upstream: `{"query", "texts", "raw_scores", "truncate"}` →
//! `[{"index", "score"}]`, read strictly (an index out of range or given twice, a score that is
//! not a number, a text left unscored: the node's error).

use serde_json::{Value, json};

use super::{Upstream, shape_error};
use crate::error::ServiceError;

/// A client of one rerank upstream.
#[derive(Debug, Clone)]
pub struct RerankClient {
    upstream: Upstream,
}

impl RerankClient {
    /// A client of the TEI `/rerank` route at `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }

    /// The score of each of `texts` against `query`, in the texts' order.
    pub async fn scores(
        &self,
        query: &str,
        texts: &[String],
        raw_scores: bool,
        truncate: bool,
    ) -> Result<Vec<f32>, ServiceError> {
        let body = json!({"query": query, "texts": texts, "raw_scores": raw_scores, "truncate": truncate});
        let answer = self.upstream.json(&body).await?;
        let mut scores: Vec<Option<f32>> = vec![None; texts.len()];
        for (i, s) in parse_scores(&self.upstream.node, &answer, texts.len())? {
            scores[i] = Some(s as f32);
        }
        let missing = scores.iter().filter(|s| s.is_none()).count();
        if missing > 0 {
            return Err(self.upstream.bad_answer(format!("no score for {missing} of {} texts", texts.len())));
        }
        Ok(scores.into_iter().flatten().collect())
    }
}

/// A TEI rerank answer: `(index, score)` pairs as listed, each index below `n` and given once.
pub fn parse_scores(node: &str, v: &Value, n: usize) -> Result<Vec<(usize, f64)>, ServiceError> {
    let rows = v.as_array().ok_or_else(|| shape_error(node, v, "a list of {index, score}"))?;
    let mut seen = vec![false; n];
    rows.iter()
        .map(|r| {
            let index = r.get("index").and_then(Value::as_u64).map(|i| i as usize);
            let score = r.get("score").and_then(Value::as_f64);
            match (index, score) {
                (Some(i), Some(s)) if i < n && !std::mem::replace(&mut seen[i], true) => Ok((i, s)),
                _ => Err(shape_error(node, r, &format!("{{index < {n}, score}}, each index once"))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_read_as_listed_and_strictly() {
        let v = json!([{"index": 2, "score": 0.9}, {"index": 0, "score": 0.1}, {"index": 1, "score": -3}]);
        assert_eq!(parse_scores("rerank", &v, 3).unwrap(), vec![(2, 0.9), (0, 0.1), (1, -3.0)]);
        assert_eq!(parse_scores("rerank", &json!([]), 3).unwrap(), vec![]);
        for (bad, says) in [
            (json!({"error": "overloaded"}), "expected a list of {index, score}"),
            (json!([{"index": 3, "score": 0.5}]), "{index < 3, score}"),
            (json!([{"index": 0, "score": "high"}]), "{index < 3, score}"),
            (json!([{"index": 0, "score": 0.5}, {"index": 0, "score": 0.4}]), "each index once"),
        ] {
            let e = parse_scores("rerank", &bad, 3).unwrap_err();
            assert_eq!(e.status(), 502);
            assert!(e.to_string().starts_with("node rerank answered ") && e.to_string().contains(says), "{e}");
        }
    }
}
