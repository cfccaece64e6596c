//! Turning logits into decisions: argmax, softmax probabilities, the top k labels.

use serde::Serialize;

/// One label and its softmax probability.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Scored {
    pub label: String,
    pub score: f32,
}

/// Softmax of logits, sorted descending, first `k`.
pub fn top_k(logits: &[f32], classes: &[String], k: usize) -> Vec<Scored> {
    top_k_of(&softmax(logits), classes, k)
}

/// The `k` largest of the probabilities `probs` (a softmax already taken), descending.
pub fn top_k_of(probs: &[f32], classes: &[String], k: usize) -> Vec<Scored> {
    let mut scored: Vec<Scored> = probs
        .iter()
        .copied()
        .zip(classes)
        .map(|(score, c)| Scored {
            label: c.clone(),
            score,
        })
        .collect();
    scored.sort_by(|a, b| b.score.total_cmp(&a.score));
    scored.truncate(k);
    scored
}

/// Index of the largest value (first one on ties); 0 for an empty slice.
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv { (i, x) } else { (bi, bv) }
        })
        .0
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_picks_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1000.0, 1000.0, 0.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[0] - 0.5).abs() < 1e-6 && p[2] < 1e-6);
    }
}
