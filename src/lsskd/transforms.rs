//! Joint-label transforms (LSSKD.md §3): `rot4` for images, `flip4` for spectrograms, and
//! the sample-major batch expansion with joint labels k = y·M + j.
//!
//! Pure functions on CHW `f32` buffers, so they are unit-testable without burn.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The transform group applied for the self-supervised joint labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransformSet {
    /// Rotations by j·90°, j = 0..3 (square inputs only).
    Rot4,
    /// Identity, time reversal (H axis), frequency flip (W axis), both — shape-preserving,
    /// for T×F spectrograms.
    Flip4,
}

/// How many transformed rows each sample contributes per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransformMode {
    /// All M transforms: B·M rows.
    All,
    /// *(choice)* The untransformed row plus one random non-identity transform: 2·B rows,
    /// M/2× cheaper. The identity row is always kept because L_final is defined on
    /// untransformed inputs.
    Sampled,
}

impl std::str::FromStr for TransformMode {
    type Err = String;

    /// `sampled` or `all` (the command line's spelling).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sampled" => Ok(TransformMode::Sampled),
            "all" => Ok(TransformMode::All),
            _ => Err(format!(
                "unknown transform mode `{s}` (expected sampled or all)"
            )),
        }
    }
}

impl TransformSet {
    /// M, the size of the group.
    pub const fn len(self) -> usize {
        4
    }

    pub const fn is_empty(self) -> bool {
        false
    }

    /// `t_j(x)` for a `[c, h, w]` buffer.
    pub fn apply(self, x: &[f32], [c, h, w]: [usize; 3], j: usize) -> Vec<f32> {
        match self {
            TransformSet::Rot4 => rot90(x, [c, h, w], j),
            TransformSet::Flip4 => flip(x, [c, h, w], j & 1 == 1, j & 2 == 2),
        }
    }
}

/// Counter-clockwise rotation by `k`·90° of each `h×w` plane (requires `h == w` for odd k).
pub fn rot90(x: &[f32], [c, h, w]: [usize; 3], k: usize) -> Vec<f32> {
    let k = k % 4;
    assert!(
        k.is_multiple_of(2) || h == w,
        "rot90 by an odd multiple needs a square input"
    );
    let mut out = vec![0.0; x.len()];
    for ch in 0..c {
        let src = &x[ch * h * w..(ch + 1) * h * w];
        let dst = &mut out[ch * h * w..(ch + 1) * h * w];
        for r in 0..h {
            for col in 0..w {
                // Output pixel (r, col) takes the input pixel that lands there after rotation.
                let (sr, sc) = match k {
                    0 => (r, col),
                    1 => (col, w - 1 - r),
                    2 => (h - 1 - r, w - 1 - col),
                    _ => (h - 1 - col, r),
                };
                dst[r * w + col] = src[sr * w + sc];
            }
        }
    }
    out
}

/// Reverse the H axis (`flip_h`, time for spectrograms) and/or the W axis (`flip_w`, frequency).
pub fn flip(x: &[f32], [c, h, w]: [usize; 3], flip_h: bool, flip_w: bool) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for ch in 0..c {
        for r in 0..h {
            let sr = if flip_h { h - 1 - r } else { r };
            for col in 0..w {
                let sc = if flip_w { w - 1 - col } else { col };
                out[(ch * h + r) * w + col] = x[(ch * h + sr) * w + sc];
            }
        }
    }
    out
}

/// A batch expanded with transforms, sample-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    /// `[rows, c, h, w]` flattened.
    pub inputs: Vec<f32>,
    /// Rows per sample (M for `All`, 2 for `Sampled`).
    pub per_sample: usize,
    /// Transform index j of each row.
    pub transform: Vec<usize>,
    /// Joint label y·M + j of each row.
    pub joint: Vec<usize>,
}

/// Expand B samples (each `[c, h, w]`) into transformed rows. Row `i·per_sample + r` holds
/// sample i; its first row is always the identity.
pub fn expand<R: Rng>(
    samples: &[Vec<f32>],
    labels: &[usize],
    shape: [usize; 3],
    set: TransformSet,
    mode: TransformMode,
    rng: &mut R,
) -> Expanded {
    let m = set.len();
    let per_sample = match mode {
        TransformMode::All => m,
        TransformMode::Sampled => 2,
    };
    let mut out = Expanded {
        inputs: Vec::with_capacity(samples.len() * per_sample * shape.iter().product::<usize>()),
        per_sample,
        transform: Vec::with_capacity(samples.len() * per_sample),
        joint: Vec::with_capacity(samples.len() * per_sample),
    };
    for (x, &y) in samples.iter().zip(labels) {
        let js: Vec<usize> = match mode {
            TransformMode::All => (0..m).collect(),
            TransformMode::Sampled => vec![0, rng.random_range(1..m)],
        };
        for j in js {
            if j == 0 {
                out.inputs.extend_from_slice(x);
            } else {
                out.inputs.extend(set.apply(x, shape, j));
            }
            out.transform.push(j);
            out.joint.push(y * m + j);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    // 1 channel 2×2: [[a, b], [c, d]] = [1, 2, 3, 4]
    const SQ: [f32; 4] = [1.0, 2.0, 3.0, 4.0];

    #[test]
    fn rot4_rotates_counter_clockwise() {
        let s = [1, 2, 2];
        assert_eq!(rot90(&SQ, s, 0), SQ.to_vec());
        // 90° CCW of [[1,2],[3,4]] is [[2,4],[1,3]].
        assert_eq!(rot90(&SQ, s, 1), vec![2.0, 4.0, 1.0, 3.0]);
        assert_eq!(rot90(&SQ, s, 2), vec![4.0, 3.0, 2.0, 1.0]);
        assert_eq!(rot90(&SQ, s, 3), vec![3.0, 1.0, 4.0, 2.0]);
    }

    #[test]
    fn four_quarter_turns_are_identity_on_every_channel() {
        let x: Vec<f32> = (0..2 * 3 * 3).map(|v| v as f32).collect();
        let s = [2, 3, 3];
        let mut y = x.clone();
        for _ in 0..4 {
            y = rot90(&y, s, 1);
        }
        assert_eq!(y, x);
        assert_eq!(rot90(&rot90(&x, s, 1), s, 1), rot90(&x, s, 2));
        // Channel planes stay separate: channel 1 of the rotation only holds channel-1 values.
        assert!(rot90(&x, s, 1)[9..].iter().all(|&v| v >= 9.0));
    }

    #[test]
    fn flip4_reverses_time_and_frequency_on_non_square_input() {
        // 1 channel, T = 2 rows (time), F = 3 columns (frequency).
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let s = [1, 2, 3];
        let set = TransformSet::Flip4;
        assert_eq!(set.apply(&x, s, 0), x.to_vec());
        assert_eq!(set.apply(&x, s, 1), vec![4.0, 5.0, 6.0, 1.0, 2.0, 3.0]); // time reversal
        assert_eq!(set.apply(&x, s, 2), vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]); // frequency flip
        assert_eq!(set.apply(&x, s, 3), vec![6.0, 5.0, 4.0, 3.0, 2.0, 1.0]); // both
    }

    #[test]
    fn expand_all_is_sample_major_with_joint_labels() {
        let mut rng = StdRng::seed_from_u64(0);
        let samples = vec![SQ.to_vec(), vec![5.0, 6.0, 7.0, 8.0]];
        let e = expand(
            &samples,
            &[3, 1],
            [1, 2, 2],
            TransformSet::Rot4,
            TransformMode::All,
            &mut rng,
        );
        assert_eq!(e.per_sample, 4);
        assert_eq!(e.transform, vec![0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(e.joint, vec![12, 13, 14, 15, 4, 5, 6, 7]);
        assert_eq!(&e.inputs[4..8], &[2.0, 4.0, 1.0, 3.0]); // row 0·M+1 = rot90(x_0)
        assert_eq!(&e.inputs[16..20], &[5.0, 6.0, 7.0, 8.0]); // row 1·M+0 = x_1
    }

    #[test]
    fn expand_sampled_keeps_identity_and_one_other_transform() {
        let mut rng = StdRng::seed_from_u64(7);
        let samples = vec![SQ.to_vec(); 50];
        let labels = vec![2; 50];
        let e = expand(
            &samples,
            &labels,
            [1, 2, 2],
            TransformSet::Rot4,
            TransformMode::Sampled,
            &mut rng,
        );
        assert_eq!(e.per_sample, 2);
        assert_eq!(e.inputs.len(), 50 * 2 * 4);
        for i in 0..50 {
            assert_eq!(e.transform[2 * i], 0);
            let j = e.transform[2 * i + 1];
            assert!((1..4).contains(&j));
            assert_eq!(e.joint[2 * i + 1], 2 * 4 + j);
            assert_eq!(
                &e.inputs[(2 * i + 1) * 4..(2 * i + 2) * 4],
                rot90(&SQ, [1, 2, 2], j).as_slice()
            );
        }
        // All three non-identity transforms get drawn.
        for j in 1..4 {
            assert!(e.transform.contains(&j));
        }
    }
}
