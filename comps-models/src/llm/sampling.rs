//! Choosing the next token from the logits: penalties as vLLM applies them, then greedy
//! (temperature 0) or temperature / top-k / top-p / typical sampling from a seeded generator,
//! so the same seed gives the same text.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Per-request sampling settings, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 is off.
    pub top_p: f32,
    /// Keep this many most likely tokens; 0 is off.
    pub top_k: usize,
    /// Locally typical sampling mass in (0, 1]; 1 is off.
    pub typical_p: f32,
    /// > 1 discourages every token already in the prompt or output (1 is off).
    pub repetition_penalty: f32,
    /// Subtracted once per earlier occurrence in the output.
    pub frequency_penalty: f32,
    /// Subtracted once if the token occurred in the output.
    pub presence_penalty: f32,
    /// Added to given tokens' logits (OpenAI `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
    /// The generator's seed.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            typical_p: 1.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

/// Below this temperature sampling is greedy (OPEA sends 0.01 for "almost greedy"; that is
/// still sampled).
const GREEDY_BELOW: f32 = 1e-5;

/// The sampler of one sequence.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Tokens of the prompt (for the repetition penalty).
    prompt: Vec<bool>,
    /// Occurrences in the output so far.
    output_counts: HashMap<u32, u32>,
}

impl Sampler {
    /// A sampler for a sequence whose prompt is `prompt_ids`.
    pub fn new(params: SamplingParams, prompt_ids: &[u32]) -> Self {
        let mut prompt = Vec::new();
        if params.repetition_penalty != 1.0 {
            for &id in prompt_ids {
                let i = id as usize;
                if i >= prompt.len() {
                    prompt.resize(i + 1, false);
                }
                prompt[i] = true;
            }
        }
        Self { rng: StdRng::seed_from_u64(params.seed), params, prompt, output_counts: HashMap::new() }
    }

    /// Pick the next token and remember it.
    pub fn next(&mut self, logits: &mut [f32]) -> u32 {
        self.apply_penalties(logits);
        let id = if self.params.temperature < GREEDY_BELOW { argmax(logits) } else { self.sample(logits) };
        *self.output_counts.entry(id).or_insert(0) += 1;
        id
    }

    fn apply_penalties(&self, logits: &mut [f32]) {
        let p = &self.params;
        for &(id, bias) in &p.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        if p.repetition_penalty != 1.0 {
            let rp = p.repetition_penalty;
            let seen_in_prompt = self.prompt.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i);
            let seen_in_output = self
                .output_counts
                .keys()
                .map(|&i| i as usize)
                .filter(|&i| !self.prompt.get(i).copied().unwrap_or(false));
            for i in seen_in_prompt.chain(seen_in_output) {
                if let Some(l) = logits.get_mut(i) {
                    *l = if *l > 0.0 { *l / rp } else { *l * rp };
                }
            }
        }
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            for (&id, &n) in &self.output_counts {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l -= p.frequency_penalty * n as f32 + p.presence_penalty;
                }
            }
        }
    }

    fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let n = logits.len();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weight = |i: u32| ((logits[i as usize] - max) / p.temperature).exp();
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);

        // The top-k set (unordered), then its normalizer.
        let mut order: Vec<u32> = (0..n as u32).collect();
        let limit = if p.top_k > 0 { p.top_k.min(n) } else { n };
        if limit < n {
            order.select_nth_unstable_by(limit - 1, by_logit);
            order.truncate(limit);
        }
        let total: f32 = order.iter().map(|&i| weight(i)).sum();

        // Top-p keeps a most-likely prefix: sort only a head of the set, growing it until the
        // nucleus fits (usually a few dozen tokens out of tens of thousands).
        if p.top_p < 1.0 {
            let mut head = 64.min(order.len());
            loop {
                if head < order.len() {
                    order.select_nth_unstable_by(head - 1, by_logit);
                }
                order[..head].sort_unstable_by(by_logit);
                let mut mass = 0.0;
                let nucleus = order[..head].iter().position(|&i| {
                    mass += weight(i) / total;
                    mass >= p.top_p
                });
                match nucleus {
                    Some(j) => {
                        order.truncate(j + 1);
                        break;
                    }
                    None if head == order.len() => break,
                    None => head = (head * 8).min(order.len()),
                }
            }
        }
        let mut probs: Vec<f32> = order.iter().map(|&i| weight(i)).collect();
        if p.typical_p < 1.0 {
            (order, probs) = typical(order, probs, p.typical_p);
        }

        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, &x) in probs.iter().enumerate() {
            if r < x {
                return order[i];
            }
            r -= x;
        }
        order[probs.len() - 1]
    }
}

/// Locally typical sampling: keep the tokens whose surprise is closest to the entropy until
/// their mass reaches `mass`.
fn typical(order: Vec<u32>, probs: Vec<f32>, mass: f32) -> (Vec<u32>, Vec<f32>) {
    let total: f32 = probs.iter().sum();
    let entropy: f32 = probs.iter().filter(|&&x| x > 0.0).map(|&x| -(x / total) * (x / total).ln()).sum();
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    let dist = |i: usize| {
        let x = probs[i] / total;
        if x > 0.0 { (-x.ln() - entropy).abs() } else { f32::INFINITY }
    };
    idx.sort_by(|&a, &b| dist(a).total_cmp(&dist(b)));
    let mut acc = 0.0;
    let mut kept = Vec::new();
    for i in idx {
        kept.push(i);
        acc += probs[i] / total;
        if acc >= mass {
            break;
        }
    }
    (kept.iter().map(|&i| order[i]).collect(), kept.iter().map(|&i| probs[i]).collect())
}

/// The index of the largest logit (the first one on ties, as `argmax` everywhere; NaNs are
/// skipped, and 0 is the answer when there is nothing else). Two passes written to vectorise,
/// the maximum over sixteen lanes and then the first block holding it, since a vocabulary of
/// 150k logits per sequence per token made the one-compare-at-a-time loop show in a batched
/// step.
pub fn argmax(logits: &[f32]) -> u32 {
    const W: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; W];
    let (blocks, rest) = logits.as_chunks::<W>();
    for b in blocks {
        for (m, &l) in lanes.iter_mut().zip(b) {
            *m = m.max(l);
        }
    }
    let max = lanes.iter().chain(rest).copied().fold(f32::NEG_INFINITY, f32::max);
    const SPAN: usize = 256;
    logits
        .chunks(SPAN)
        .enumerate()
        .find(|(_, c)| c.iter().fold(false, |hit, &l| hit | (l == max)))
        .and_then(|(i, c)| c.iter().position(|&l| l == max).map(|j| i * SPAN + j))
        .unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 0.5, 2.9]
    }

    #[test]
    fn greedy_takes_the_largest() {
        let mut s = Sampler::new(SamplingParams::default(), &[]);
        assert_eq!(s.next(&mut logits()), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_bounds_the_choice() {
        let params = SamplingParams { temperature: 1.5, top_k: 2, seed: 7, ..Default::default() };
        let run = || {
            let mut s = Sampler::new(params.clone(), &[]);
            (0..50).map(|_| s.next(&mut logits())).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.iter().all(|&t| t == 1 || t == 4), "top_k=2 keeps tokens 1 and 4 only: {a:?}");
        assert!(a.contains(&1) && a.contains(&4), "both are sampled at temperature 1.5: {a:?}");
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Token 0 holds ~88% of the mass: top_p 0.5 leaves only it.
        let params = SamplingParams { temperature: 1.0, top_p: 0.5, seed: 1, ..Default::default() };
        let mut s = Sampler::new(params, &[]);
        for _ in 0..30 {
            assert_eq!(s.next(&mut [5.0, 3.0, 1.0, 0.0]), 0);
        }
    }

    #[test]
    fn penalties_change_the_greedy_choice() {
        // Token 1 is in the prompt: penalty 2 halves its logit (3 -> 1.5), token 4 wins.
        let params = SamplingParams { repetition_penalty: 2.0, ..Default::default() };
        let mut s = Sampler::new(params, &[1]);
        assert_eq!(s.next(&mut logits()), 4);
        // Presence penalty: once token 1 was produced it drops below token 4.
        let params = SamplingParams { presence_penalty: 0.5, ..Default::default() };
        let mut s = Sampler::new(params, &[]);
        assert_eq!(s.next(&mut logits()), 1);
        assert_eq!(s.next(&mut logits()), 4);
        // logit_bias forces a token.
        let params = SamplingParams { logit_bias: vec![(3, 100.0)], ..Default::default() };
        assert_eq!(Sampler::new(params, &[]).next(&mut logits()), 3);
    }

    #[test]
    fn argmax_takes_the_first_maximum_anywhere() {
        assert_eq!(argmax(&logits()), 1);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[f32::NAN, -3.0, -1.0, f32::NAN]), 2);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 5]), 0);
        // Every length around the lane and search widths, the maximum (twice, the first must
        // win) at every kind of place: a lane block, the remainder, a later search span.
        for len in [1, 15, 16, 17, 255, 256, 257, 1000, 151_936] {
            for at in [0, len / 3, len - 1] {
                let mut v: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
                v[at] = 5.0;
                if at + 1 < len {
                    v[len - 1] = 5.0;
                }
                let want = v.iter().enumerate().fold(0, |b, (i, &l)| if l > v[b] { i } else { b });
                assert_eq!(argmax(&v), want as u32, "len {len}, maximum at {at}");
            }
        }
    }
}
