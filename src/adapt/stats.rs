//! The gate's statistics: confidence bounds on an accuracy (Wilson score, Clopper–Pearson)
//! and on the accuracy drop of paired before/after predictions (Agresti–Min), plus the
//! exact one-sided McNemar test. Pure functions, no dependencies.
//!
//! Every bound here is *one-sided at `confidence`*: with `confidence` 0.95 the true value
//! lies above the lower bound with probability 0.95 and below the upper bound with
//! probability 0.95 (so `[lower, upper]` together is a 90 % interval).

/// Φ⁻¹(p), the standard normal quantile (Acklam's rational approximation, relative error
/// below 1.2e-9 on (0, 1)).
pub fn normal_quantile(p: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0, "quantile of {p}");
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.38357751867269e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    const LOW: f64 = 0.02425;
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// A point estimate with one-sided lower and upper bounds at a confidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
}

/// Wilson score bounds of a proportion `k / n` (one-sided at `confidence` each).
/// `n == 0`: estimate 0, bounds [0, 1] (no evidence either way).
pub fn wilson(k: usize, n: usize, confidence: f64) -> Bounds {
    if n == 0 {
        return Bounds {
            estimate: 0.0,
            lower: 0.0,
            upper: 1.0,
        };
    }
    let z = normal_quantile(confidence);
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Bounds {
        estimate: p,
        lower: (centre - half).max(0.0),
        upper: (centre + half).min(1.0),
    }
}

/// ln C(n, k).
fn ln_choose(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    (0..k)
        .map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln())
        .sum()
}

/// P(X ≥ k) for X ~ Binomial(n, p).
pub fn binomial_upper_tail(k: usize, n: usize, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    (k..=n)
        .map(|i| (ln_choose(n, i) + i as f64 * lp + (n - i) as f64 * lq).exp())
        .sum::<f64>()
        .min(1.0)
}

/// Clopper–Pearson ("exact") bounds of `k / n`, one-sided at `confidence` each.
pub fn clopper_pearson(k: usize, n: usize, confidence: f64) -> Bounds {
    if n == 0 {
        return Bounds {
            estimate: 0.0,
            lower: 0.0,
            upper: 1.0,
        };
    }
    // P(X ≥ j | p) increases with p: bisect for the p where it reaches `target`.
    let solve = |j: usize, target: f64| {
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if binomial_upper_tail(j, n, mid) < target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    };
    // Lower: P(X ≥ k | p) = 1 − c. Upper: P(X ≤ k | p) = 1 − c, i.e. P(X ≥ k + 1 | p) = c.
    let lower = if k == 0 {
        0.0
    } else {
        solve(k, 1.0 - confidence)
    };
    let upper = if k == n {
        1.0
    } else {
        solve(k + 1, confidence)
    };
    Bounds {
        estimate: k as f64 / n as f64,
        lower,
        upper,
    }
}

/// Paired before/after outcomes on the same items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Paired {
    pub n: usize,
    /// Right before and after.
    pub both: usize,
    /// Right before, wrong after.
    pub losses: usize,
    /// Wrong before, right after.
    pub gains: usize,
}

impl Paired {
    pub fn add(&mut self, before_right: bool, after_right: bool) {
        self.n += 1;
        match (before_right, after_right) {
            (true, true) => self.both += 1,
            (true, false) => self.losses += 1,
            (false, true) => self.gains += 1,
            (false, false) => {}
        }
    }

    pub fn before(&self) -> f64 {
        (self.both + self.losses) as f64 / self.n.max(1) as f64
    }

    pub fn after(&self) -> f64 {
        (self.both + self.gains) as f64 / self.n.max(1) as f64
    }

    /// Accuracy drop (before − after), point estimate.
    pub fn drop(&self) -> f64 {
        (self.losses as f64 - self.gains as f64) / self.n.max(1) as f64
    }

    /// Bounds of the drop, one-sided at `confidence` each: the Wald interval of the paired
    /// difference after adding ½ to each of the four cells (Agresti & Min 2005, "Simple
    /// improved confidence intervals for comparing matched proportions"), which keeps its
    /// coverage with few or no discordant pairs. `n == 0`: [−1, 1].
    pub fn drop_bounds(&self, confidence: f64) -> Bounds {
        if self.n == 0 {
            return Bounds {
                estimate: 0.0,
                lower: -1.0,
                upper: 1.0,
            };
        }
        let z = normal_quantile(confidence);
        let n = self.n as f64 + 2.0;
        let p10 = (self.losses as f64 + 0.5) / n;
        let p01 = (self.gains as f64 + 0.5) / n;
        let d = p10 - p01;
        let se = ((p10 + p01 - d * d) / n).max(0.0).sqrt();
        Bounds {
            estimate: self.drop(),
            lower: (d - z * se).max(-1.0),
            upper: (d + z * se).min(1.0),
        }
    }

    /// Exact one-sided McNemar test of "after is worse than before": the probability of at
    /// least `losses` losses among the discordant pairs if losses and gains were equally
    /// likely. 1 when there are no discordant pairs.
    pub fn mcnemar_p(&self) -> f64 {
        binomial_upper_tail(self.losses, self.losses + self.gains, 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn normal_quantiles_are_right() {
        assert!(close(normal_quantile(0.975), 1.959964, 1e-6));
        assert!(close(normal_quantile(0.95), 1.644854, 1e-6));
        assert!(close(normal_quantile(0.5), 0.0, 1e-12));
        assert!(close(normal_quantile(0.01), -2.326348, 1e-6));
        assert!(close(normal_quantile(0.999), 3.090232, 1e-6));
    }

    #[test]
    fn wilson_matches_published_values() {
        // 8/10 at 95 % two-sided (0.975 one-sided per end): [0.4902, 0.9433].
        let b = wilson(8, 10, 0.975);
        assert!(
            close(b.lower, 0.4902, 1e-4) && close(b.upper, 0.9433, 1e-4),
            "{b:?}"
        );
        // 0/10: lower 0, upper 0.2775.
        let b = wilson(0, 10, 0.975);
        assert!(b.lower == 0.0 && close(b.upper, 0.2775, 1e-4), "{b:?}");
        // 5/5 at 95 % one-sided: n / (n + z²) = 0.6489.
        assert!(close(
            wilson(5, 5, 0.95).lower,
            5.0 / (5.0 + 1.644854f64.powi(2)),
            1e-6
        ));
        assert_eq!(wilson(0, 0, 0.95).upper, 1.0);
    }

    #[test]
    fn clopper_pearson_matches_published_values() {
        // 8/10 at 95 % two-sided: [0.4439, 0.9748].
        let b = clopper_pearson(8, 10, 0.975);
        assert!(
            close(b.lower, 0.4439, 1e-4) && close(b.upper, 0.9748, 1e-4),
            "{b:?}"
        );
        // 0/n: upper 1 − α^(1/n) ("rule of three" territory).
        let b = clopper_pearson(0, 20, 0.95);
        assert!(
            close(b.upper, 1.0 - 0.05f64.powf(1.0 / 20.0), 1e-6),
            "{b:?}"
        );
        let b = clopper_pearson(20, 20, 0.95);
        assert!(close(b.lower, 0.05f64.powf(1.0 / 20.0), 1e-6), "{b:?}");
    }

    #[test]
    fn exact_mcnemar_is_the_binomial_tail() {
        let p = Paired {
            n: 100,
            both: 80,
            losses: 10,
            gains: 2,
        };
        assert!(close(p.mcnemar_p(), 79.0 / 4096.0, 1e-12));
        assert_eq!(Paired::default().mcnemar_p(), 1.0);
    }

    fn paired(n: usize, losses: usize, gains: usize) -> Paired {
        Paired {
            n,
            both: n - losses - gains - n / 10,
            losses,
            gains,
        }
    }

    #[test]
    fn a_real_drop_is_caught_and_noise_is_not() {
        // 500 gate images, 30 lost and 5 gained: a 5-point drop; the evidence says it is
        // above 2 points.
        let real = paired(500, 30, 5).drop_bounds(0.95);
        assert!(close(real.estimate, 0.05, 1e-12));
        assert!(real.lower > 0.02, "{real:?}");
        // Noise: 8 lost, 6 gained (0.4 points): nowhere near a 2-point drop, and no
        // evidence of any drop either.
        let noise = paired(500, 8, 6);
        assert!(noise.drop_bounds(0.95).lower < 0.0);
        assert!(noise.mcnemar_p() > 0.05);
        // The same 5-point drop on 40 images is not evidence (too few).
        assert!(paired(40, 3, 1).drop_bounds(0.95).lower < 0.02);
        // No discordant pair at all: the bounds still have width.
        let none = paired(500, 0, 0).drop_bounds(0.95);
        assert!(
            none.lower < 0.0 && none.upper > 0.0 && none.upper < 0.01,
            "{none:?}"
        );
    }

    #[test]
    fn drop_bounds_cover_the_truth_about_as_often_as_promised() {
        // Simulated pairs with a true drop of 0.02 (3 % losses, 1 % gains), n = 500: the
        // lower bound at 0.95 exceeds the truth in about 5 % of draws.
        let mut seed = 12345u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let trials = 2000;
        let mut above = 0;
        for _ in 0..trials {
            let mut p = Paired::default();
            for _ in 0..500 {
                let u = rnd();
                p.add(u >= 0.01, !(0.01..0.04).contains(&u));
            }
            above += usize::from(p.drop_bounds(0.95).lower > 0.02);
        }
        let rate = above as f64 / trials as f64;
        assert!((0.02..0.08).contains(&rate), "{rate}");
    }
}
