//! Loss terms of LSSKD.md §4 on burn tensors, and the CPU-side soft targets.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Mean over rows of `−Σ_k target·log softmax(logits)`; `logits`, `target`: `[R, K]`.
pub fn soft_cross_entropy(logits: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    let [rows, _] = logits.dims();
    (target * log_softmax(logits, 1)).sum().neg() / rows as f32
}

/// `KL(softmax(teacher/τ) ‖ softmax(student/τ))`, mean over rows, teacher detached.
pub fn kl_divergence(teacher: Tensor<2>, student: Tensor<2>, tau: f32) -> Tensor<1> {
    let [rows, _] = student.dims();
    let lt = log_softmax(teacher.detach() / tau, 1);
    let ls = log_softmax(student / tau, 1);
    (lt.clone().exp() * (lt - ls)).sum() / rows as f32
}

/// Mean squared error over all elements, `target` detached.
pub fn feature_mse(a: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
    (a - target.detach()).powf_scalar(2.0).mean()
}

/// `(1 − α)·onehot(label) + α·previous`, written into `out` (`k` classes). `previous` is
/// `None` (or NaN, meaning never recorded) at the first epoch: plain one-hot.
pub fn progressive_target(out: &mut [f32], label: usize, alpha: f32, previous: Option<&[f32]>) {
    match previous.filter(|p| !p[0].is_nan()) {
        Some(p) => {
            for (o, &q) in out.iter_mut().zip(p) {
                *o = alpha * q;
            }
            out[label] += 1.0 - alpha;
        }
        None => {
            out.fill(0.0);
            out[label] = 1.0;
        }
    }
}

/// `(1 − β)·target + β·anchor`: the anchor is a distribution over the first
/// `anchor.len()` classes (the model before adaptation, over its own classes); the classes
/// after those get none of its mass. *(choice, against forgetting in few-shot fine-tunes)*
pub fn mix_anchor(target: &mut [f32], anchor: &[f32], beta: f32) {
    for (k, t) in target.iter_mut().enumerate() {
        *t = (1.0 - beta) * *t + beta * anchor.get(k).copied().unwrap_or(0.0);
    }
}

/// `α_e = α_T·(e+1)/E` (LSSKD.md §4).
pub fn alpha_at(alpha_t: f32, epoch: usize, epochs: usize) -> f32 {
    alpha_t * (epoch + 1) as f32 / epochs.max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_mixes_into_the_old_classes_only() {
        let mut t = vec![0.0, 1.0, 0.0, 0.0];
        mix_anchor(&mut t, &[0.2, 0.8], 0.5);
        assert_eq!(t, vec![0.1, 0.9, 0.0, 0.0]);
        assert!((t.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let mut new_class = vec![0.0, 0.0, 1.0];
        mix_anchor(&mut new_class, &[0.5, 0.5], 0.25);
        assert_eq!(new_class, vec![0.125, 0.125, 0.75]);
    }

    #[test]
    fn progressive_target_mixes_one_hot_with_previous_prediction() {
        let mut t = [0.0; 3];
        progressive_target(&mut t, 1, 0.5, Some(&[0.2, 0.6, 0.2]));
        assert_eq!(t, [0.1, 0.8, 0.1]);
        progressive_target(&mut t, 2, 0.5, None);
        assert_eq!(t, [0.0, 0.0, 1.0]);
        progressive_target(&mut t, 0, 0.5, Some(&[f32::NAN, 0.0, 0.0]));
        assert_eq!(t, [1.0, 0.0, 0.0]);
        assert!((t.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn alpha_grows_linearly_to_alpha_t() {
        assert!((alpha_at(0.8, 0, 4) - 0.2).abs() < 1e-6);
        assert!((alpha_at(0.8, 3, 4) - 0.8).abs() < 1e-6);
    }

    #[test]
    fn losses_match_hand_computed_values() {
        let device = Device::default();
        let logits = Tensor::<2>::from_data([[0.0f32, 0.0], [0.0, 0.0]], &device);
        let target = Tensor::<2>::from_data([[1.0f32, 0.0], [0.5, 0.5]], &device);
        let ce = soft_cross_entropy(logits.clone(), target).into_scalar::<f32>();
        assert!((ce - std::f32::consts::LN_2).abs() < 1e-5, "{ce}");
        let kl_same = kl_divergence(logits.clone(), logits.clone(), 3.0).into_scalar::<f32>();
        assert!(kl_same.abs() < 1e-6);
        let other = Tensor::<2>::from_data([[3.0f32, 0.0], [0.0, 3.0]], &device);
        assert!(kl_divergence(other, logits, 1.0).into_scalar::<f32>() > 0.1);
        let a = Tensor::<4>::ones([1, 1, 2, 2], &device);
        let b = Tensor::<4>::zeros([1, 1, 2, 2], &device);
        assert!((feature_mse(a, b).into_scalar::<f32>() - 1.0).abs() < 1e-6);
    }
}
