//! Timing harness for the training kernels (issue 9), side by side with the plain burn ops
//! in one process. Ignored by default; run with
//! `cargo test --features bench --lib kernels_bench -- --ignored --nocapture --test-threads 1`
//! (whole steps A/B need the `bench` feature's switch; the layer timings call burn's ops
//! directly and run without it).

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;

use super::kernels;

/// Median of `reps` timings of `f`, in ms, after one warm-up call.
fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

/// Forward, forward+backward of one conv (+BN+ReLU) layer at a resnet-s shape.
fn layer(rows: usize, ci: usize, co: usize, hw: usize, k: usize, stride: usize, reps: usize) {
    let d = Device::default().autodiff();
    let pad = k / 2;
    let conv = burn::nn::conv::Conv2dConfig::new([ci, co], [k, k])
        .with_stride([stride, stride])
        .with_padding(burn::nn::PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(&d);
    let bn = burn::nn::BatchNormConfig::new(co).init(&d);
    let x =
        Tensor::<4>::random([rows, ci, hw, hw], Distribution::Normal(0.0, 1.0), &d).require_grad();
    let w = conv.weight.val();
    let (g, b) = (bn.gamma.val(), bn.beta.val());
    let ours_conv = || kernels::conv2d(&x, &w, stride, pad).unwrap();
    let plain_conv = || conv.forward(x.clone());
    let t = |f: &dyn Fn() -> Tensor<4>| {
        let fwd = time_ms(reps, || {
            f().into_data();
        });
        let both = time_ms(reps, || {
            let _ = f().sum().backward();
        });
        (fwd, both)
    };
    let (pf, pb) = t(&plain_conv);
    let (of, ob) = t(&ours_conv);
    let y = conv.forward(x.clone()).detach().require_grad();
    let plain_bn = || {
        burn::tensor::activation::relu(
            burn::tensor::module::batch_norm_train(y.clone(), g.clone(), b.clone(), 1e-5).output,
        )
    };
    let ours_bn = || {
        kernels::batch_norm_train(&y, &g, &b, 1e-5, true)
            .unwrap()
            .output
    };
    let (pbf, pbb) = t(&plain_bn);
    let (obf, obb) = t(&ours_bn);
    eprintln!(
        "| {rows}×{ci}→{co} {hw}² k{k} s{stride} | conv fwd {pf:.1} / {of:.1} | conv fwd+bwd {pb:.1} / {ob:.1} | bn+relu fwd {pbf:.1} / {obf:.1} | bn+relu fwd+bwd {pbb:.1} / {obb:.1} |"
    );
}

#[test]
#[ignore = "timing harness"]
fn kernels_bench_layers() {
    eprintln!(
        "ms, plain burn / ours (median of 5): fwd = forward + read-back; fwd+bwd = forward, sum, backward"
    );
    for rows in [64, 128] {
        layer(rows, 1, 16, 28, 3, 1, 5);
        layer(rows, 16, 16, 28, 3, 1, 5);
        layer(rows, 16, 32, 28, 3, 2, 5);
        layer(rows, 16, 32, 28, 1, 2, 5);
        layer(rows, 32, 32, 14, 3, 1, 5);
        layer(rows, 32, 64, 14, 3, 2, 5);
        layer(rows, 64, 64, 7, 3, 1, 5);
    }
}

/// Whole steps with the kernels switched off and on: the `bench` feature's switch.
#[cfg(feature = "bench")]
mod steps {
    use std::time::Instant;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use crate::lsskd::kernels;
    use crate::lsskd::net::{ArchConfig, TrainNet};
    use crate::lsskd::train::{Method, TrainConfig, TrainData, Trainer};
    use crate::lsskd::transforms::{TransformMode, TransformSet};

    struct Synthetic {
        n: usize,
        classes: usize,
    }

    impl TrainData for Synthetic {
        fn len(&self) -> usize {
            self.n
        }
        fn label(&self, i: usize) -> usize {
            i % self.classes
        }
        fn input(&self, i: usize, _: Option<&mut StdRng>) -> Vec<f32> {
            (0..28 * 28)
                .map(|p| (((i * 31 + p * 7) % 97) as f32 / 97.0) - 0.5)
                .collect()
        }
    }

    /// Whole training steps (batch 64, resnet-s, 28×28×1), plain ops and kernels alternating.
    #[test]
    #[ignore = "timing harness"]
    fn kernels_bench_steps() {
        let data = Synthetic {
            n: 256,
            classes: 10,
        };
        let reps: usize = std::env::var("BENCH_STEPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6);
        for (method, mode) in [
            (Method::Ce, TransformMode::Sampled),
            (Method::Lsskd, TransformMode::Sampled),
        ] {
            let mut times = [Vec::new(), Vec::new()];
            let mut trainers: Vec<Trainer> = (0..2)
                .map(|_| {
                    let device = crate::lsskd::training_device(0);
                    let net = TrainNet::new(
                        &ArchConfig::default(),
                        data.classes,
                        4,
                        method.aux_heads(),
                        &device,
                    );
                    let mut cfg = TrainConfig::new(method, TransformSet::Rot4);
                    cfg.transform_mode = mode;
                    Trainer::new(net, cfg, [1, 28, 28])
                })
                .collect();
            let batch: Vec<usize> = (0..64).collect();
            let mut rng = StdRng::seed_from_u64(0);
            for rep in 0..=reps {
                for (which, trainer) in trainers.iter_mut().enumerate() {
                    kernels::set_enabled(which == 1);
                    let t0 = Instant::now();
                    trainer
                        .step(&batch, &data, 0.0, 0.01, None, &mut rng)
                        .unwrap();
                    if rep > 0 {
                        times[which].push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
            kernels::set_enabled(true);
            let med = |v: &mut Vec<f64>| {
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            };
            let (p, o) = (med(&mut times[0]), med(&mut times[1]));
            eprintln!(
                "step {} {:?}: plain {p:.0} ms, kernels {o:.0} ms, speed-up {:.2}× ({reps} steps each, median)",
                method.name(),
                mode,
                p / o
            );
        }
    }
}

#[test]
#[ignore = "timing harness"]
fn kernels_bench_bn_raw() {
    for (n, c, hw) in [(128usize, 16usize, 784usize), (64, 64, 49)] {
        let len = n * c * hw;
        let x: Vec<f32> = (0..len)
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        let dy: Vec<f32> = (0..len)
            .map(|i| ((i * 13 % 97) as f32) / 50.0 - 1.0)
            .collect();
        let g = vec![1.0f32; c];
        let b = vec![0.1f32; c];
        let t = |f: &mut dyn FnMut()| time_ms(5, f);
        let (mut mean, mut var) = (vec![], vec![]);
        let ts = t(&mut || (mean, var) = lsskd_kernels::channel_stats(&x, n, c, hw));
        let istd = lsskd_kernels::inv_std(&var, 1e-5);
        let mut y = vec![];
        let ta = t(&mut || y = lsskd_kernels::bn_apply(&x, [n, c, hw], &mean, &istd, &g, &b, true));
        let tb = t(&mut || {
            lsskd_kernels::bn_backward(&x, Some(&y), &dy, [n, c, hw], &mean, &istd, &g);
        });
        let tb0 = t(&mut || {
            lsskd_kernels::bn_backward(&x, None, &dy, [n, c, hw], &mean, &istd, &g);
        });
        eprintln!(
            "bn raw {n}×{c}×{hw}: stats {ts:.2} apply {ta:.2} bwd relu {tb:.2} bwd {tb0:.2} ms"
        );
    }
}
