//! Running an ONNX classifier with tract.
//!
//! Owns [`Classifier`] (a tract optimized, runnable plan plus the shapes read from it) and
//! [`Output`]. Receives an ONNX file or bytes with one input `[1, C, H, W]` (a symbolic
//! batch dim is pinned to 1) and float outputs named `logits` and `embedding`, as written by
//! [`super::write_onnx`]; produces, per call to [`Classifier::classify`], the logits and the
//! embedding for one `C*H*W` input. A `Classifier` is `Send + Sync`: the daemon can share
//! it between threads or swap it for a new one behind a lock.
//!
//! The bytes are decoded and structurally checked with prost before tract sees them, and
//! tract calls run under `catch_unwind`, so a bad model file is an error, never a crash.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::error::{IN_MEMORY, InferenceError};
use super::inspect::{decode_model, graph_input, parse_err, value_dims};
use super::onnx::{EMBEDDING_NAME, LOGITS_NAME};

/// The bytes of the model file at `path`.
fn read(path: &Path) -> Result<Vec<u8>, InferenceError> {
    std::fs::read(path).map_err(|source| InferenceError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The runnable tract plan type the classifier holds.
type Plan = Arc<TypedRunnableModel>;

/// One classification result.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Class scores, `num_classes()` values.
    pub logits: Vec<f32>,
    /// Pooled feature, `embedding_dim()` values.
    pub embedding: Vec<f32>,
}

/// Rounds and runs per round of [`Classifier::load_fastest`]'s timing.
pub const CHOICE_ROUNDS: usize = 5;
pub const CHOICE_RUNS: usize = 4;

/// What [`Classifier::load_fastest`] chose, and the timings it chose by (milliseconds a
/// run; `None` when there was nothing to choose).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KernelChoice {
    pub kernel: String,
    pub direct_ms: Option<f64>,
    pub tract_ms: Option<f64>,
}

/// Mean milliseconds of [`CHOICE_RUNS`] runs of `c` on `x`.
fn mean_ms(c: &Classifier, x: &[f32]) -> Result<f64, InferenceError> {
    let t = std::time::Instant::now();
    for _ in 0..CHOICE_RUNS {
        c.classify(x)?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / CHOICE_RUNS as f64)
}

/// A loaded, optimized ONNX classifier.
#[derive(Debug, Clone)]
pub struct Classifier {
    plan: Plan,
    input_shape: [usize; 3],
    num_classes: usize,
    embedding_dim: usize,
    logits_ix: usize,
    embedding_ix: usize,
    source: PathBuf,
    /// How many convolutions run as [`super::direct::DirectConv`].
    direct: usize,
}

impl Classifier {
    /// Reads and loads the ONNX model at `path`, its convolutions swapped for ours
    /// ([`super::direct`]) where they fit.
    pub fn load(path: &Path) -> Result<Classifier, InferenceError> {
        Self::from_bytes_at(&read(path)?, path, true)
    }

    /// Reads and loads the ONNX model at `path` with tract's own convolutions only: what
    /// `bench` times for the comparison with ours (`LSSKD_EDGE_DIRECT_CONV=0`,
    /// `scripts/bench-latency.sh`). Only in a build with the `bench` feature.
    #[cfg(feature = "bench")]
    pub fn load_tract_only(path: &Path) -> Result<Classifier, InferenceError> {
        Self::from_bytes_at(&read(path)?, path, false)
    }

    /// Reads the model at `path` and loads it both ways, with our convolutions and with
    /// tract's own, times both on this machine and keeps the faster: a kernel of ours runs
    /// only where it wins. The timing is the best of [`CHOICE_ROUNDS`] rounds (the two
    /// alternating, after a warm-up) of [`CHOICE_RUNS`] runs on a zero input, so a busy
    /// moment slows both. A model with no convolution ours can take is loaded once.
    pub fn load_fastest(path: &Path) -> Result<(Classifier, KernelChoice), InferenceError> {
        let bytes = read(path)?;
        let direct = Self::from_bytes_at(&bytes, path, true)?;
        if direct.direct == 0 {
            let choice = KernelChoice {
                kernel: direct.kernel(),
                direct_ms: None,
                tract_ms: None,
            };
            return Ok((direct, choice));
        }
        let tract = Self::from_bytes_at(&bytes, path, false)?;
        let x = vec![0.0f32; direct.input_shape.iter().product()];
        let (mut d_ms, mut t_ms) = (f64::INFINITY, f64::INFINITY);
        for c in [&direct, &tract] {
            for _ in 0..CHOICE_RUNS {
                c.classify(&x)?;
            }
        }
        for _ in 0..CHOICE_ROUNDS {
            d_ms = d_ms.min(mean_ms(&direct, &x)?);
            t_ms = t_ms.min(mean_ms(&tract, &x)?);
        }
        let chosen = if d_ms <= t_ms { direct } else { tract };
        let choice = KernelChoice {
            kernel: chosen.kernel(),
            direct_ms: Some(d_ms),
            tract_ms: Some(t_ms),
        };
        tracing::debug!(model = %path.display(), kernel = %choice.kernel, direct_ms = d_ms, tract_ms = t_ms, "convolution kernel chosen");
        Ok((chosen, choice))
    }

    /// Which convolutions run: `direct <isa>` (ours, [`super::direct::isa`]) or `tract`.
    pub fn kernel(&self) -> String {
        if self.direct > 0 {
            format!("direct {}", super::direct::isa())
        } else {
            "tract".into()
        }
    }

    /// Loads an ONNX model from memory (with our convolutions, as [`Self::load`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Classifier, InferenceError> {
        Self::from_bytes_at(bytes, Path::new(IN_MEMORY), true)
    }

    /// Loads an ONNX model from memory with tract's own convolutions only.
    #[cfg(test)]
    pub(crate) fn from_bytes_tract_only(bytes: &[u8]) -> Result<Classifier, InferenceError> {
        Self::from_bytes_at(bytes, Path::new(IN_MEMORY), false)
    }

    fn from_bytes_at(
        bytes: &[u8],
        path: &Path,
        direct: bool,
    ) -> Result<Classifier, InferenceError> {
        let proto = decode_model(bytes, path)?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| parse_err(path, "model has no graph"))?;
        let input_shape = input_chw(&value_dims(graph_input(graph, path)?), path)?;
        let output_ix = |name: &str| {
            graph
                .output
                .iter()
                .position(|o| o.name == name)
                .ok_or_else(|| parse_err(path, format!("graph has no output named `{name}`")))
        };
        let (logits_ix, embedding_ix) = (output_ix(LOGITS_NAME)?, output_ix(EMBEDDING_NAME)?);

        let [c, h, w] = input_shape;
        let mut replaced = 0;
        let plan = guard(path, || {
            let mut model = tract_onnx::onnx().model_for_proto_model(&proto)?;
            model.set_input_fact(0, f32::fact([1, c, h, w]).into())?;
            let mut model = model.into_typed()?.into_decluttered()?;
            if direct {
                replaced = super::direct::use_direct_convolutions(&mut model)?;
            }
            model.into_optimized()?.into_runnable()
        })?;

        let out_len = |ix: usize, name: &str| -> Result<usize, InferenceError> {
            let fact = plan
                .model()
                .output_fact(ix)
                .map_err(|e| parse_err(path, format!("output `{name}`: {e:#}")))?;
            if fact.datum_type != f32::datum_type() {
                return Err(parse_err(
                    path,
                    format!("output `{name}` is {:?}, expected f32", fact.datum_type),
                ));
            }
            match fact.shape.as_concrete() {
                Some([1, n]) => Ok(*n),
                other => Err(InferenceError::Shape(format!(
                    "{}: output `{name}` has shape {other:?}, expected [1, n]",
                    path.display()
                ))),
            }
        };
        let num_classes = out_len(logits_ix, LOGITS_NAME)?;
        let embedding_dim = out_len(embedding_ix, EMBEDDING_NAME)?;
        tracing::debug!(
            model = %path.display(),
            ?input_shape,
            num_classes,
            embedding_dim,
            direct_convolutions = replaced,
            "loaded ONNX classifier"
        );
        Ok(Classifier {
            plan,
            input_shape,
            num_classes,
            embedding_dim,
            logits_ix,
            embedding_ix,
            source: path.to_path_buf(),
            direct: replaced,
        })
    }

    /// `[C, H, W]` of the model input.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    /// Number of logits.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Length of the embedding.
    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    /// How many of the model's convolutions run as our direct kernel
    /// ([`super::direct`]), the others through tract's own lowering.
    pub fn direct_convolutions(&self) -> usize {
        self.direct
    }

    /// The file the model was loaded from, or `<in-memory ONNX>`.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Runs the model on one `C*H*W` input (row-major `[C, H, W]`).
    pub fn classify(&self, input: &[f32]) -> Result<Output, InferenceError> {
        let [c, h, w] = self.input_shape;
        if input.len() != c * h * w {
            return Err(InferenceError::InputLength {
                expected: c * h * w,
                got: input.len(),
            });
        }
        let run = || -> TractResult<Output> {
            let tensor = Tensor::from_shape(&[1, c, h, w], input)?;
            let outputs = self.plan.run(tvec!(tensor.into()))?;
            let take = |ix: usize| -> TractResult<Vec<f32>> {
                let t = outputs
                    .get(ix)
                    .ok_or_else(|| anyhow::anyhow!("model produced no output #{ix}"))?;
                Ok(t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
            };
            Ok(Output {
                logits: take(self.logits_ix)?,
                embedding: take(self.embedding_ix)?,
            })
        };
        match catch_unwind(AssertUnwindSafe(run)) {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(InferenceError::Run(format!(
                "{}: {e:#}",
                self.source.display()
            ))),
            Err(_) => Err(InferenceError::Run(format!(
                "{}: tract panicked",
                self.source.display()
            ))),
        }
    }
}

/// Time one node of the optimized plan took per run, for [`Classifier::profile`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeTime {
    /// The plan's node name (tract's lowering adds suffixes to the ONNX node's name).
    pub node: String,
    /// tract's operator name.
    pub op: String,
    /// Mean milliseconds per run.
    pub ms: f64,
}

impl Classifier {
    /// Mean time per node of the optimized plan over `iterations` runs on `input` (after one
    /// untimed run), in plan order: tract's own evaluation, one node at a time.
    pub fn profile(
        &self,
        input: &[f32],
        iterations: usize,
    ) -> Result<Vec<NodeTime>, InferenceError> {
        let [c, h, w] = self.input_shape;
        let runs = iterations.max(1);
        let run = || -> TractResult<Vec<NodeTime>> {
            let model = self.plan.model();
            let mut secs = vec![0f64; model.nodes().len()];
            let mut state = tract_onnx::tract_core::plan::SimpleState::new(&self.plan)?;
            for it in 0..=runs {
                let tensor = Tensor::from_shape(&[1, c, h, w], input)?;
                state.run_plan_with_eval(tvec!(tensor.into()), |ctx, op_state, node, inputs| {
                    let t0 = std::time::Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    if it > 0 {
                        secs[node.id] += t0.elapsed().as_secs_f64();
                    }
                    out
                })?;
            }
            Ok(self
                .plan
                .order_without_consts()
                .iter()
                .map(|&id| {
                    let node = model.node(id);
                    NodeTime {
                        node: node.name.clone(),
                        op: node.op().name().to_string(),
                        ms: secs[id] * 1e3 / runs as f64,
                    }
                })
                .collect())
        };
        catch_unwind(AssertUnwindSafe(run))
            .map_err(|_| InferenceError::Run(format!("{}: tract panicked", self.source.display())))?
            .map_err(|e| InferenceError::Run(format!("{}: {e:#}", self.source.display())))
    }
}

/// Multiply-adds per node of the model at `path` before tract lowers it (decluttered: one
/// node per ONNX operator, named as in the file), for the nodes that report them
/// (convolutions, matrix products). Pairs of node name and count.
pub fn fma_per_node(path: &Path) -> Result<Vec<(String, u64)>, InferenceError> {
    let bytes = std::fs::read(path).map_err(|source| InferenceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let proto = decode_model(&bytes, path)?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| parse_err(path, "model has no graph"))?;
    let [c, h, w] = input_chw(&value_dims(graph_input(graph, path)?), path)?;
    guard(path, || {
        let mut model = tract_onnx::onnx().model_for_proto_model(&proto)?;
        model.set_input_fact(0, f32::fact([1, c, h, w]).into())?;
        let model = model.into_typed()?.into_decluttered()?;
        let mut out = Vec::new();
        for node in model.nodes() {
            let facts = model.node_input_facts(node.id)?;
            let fma: i64 = node
                .op
                .cost(&facts)?
                .iter()
                .filter(|(cost, _)| matches!(cost, tract_onnx::tract_core::ops::Cost::FMA(_)))
                .map(|(_, n)| n.to_i64().unwrap_or(0))
                .sum();
            if fma > 0 {
                out.push((node.name.clone(), fma as u64));
            }
        }
        Ok(out)
    })
}

/// `[C, H, W]` from the input dims `[1 or symbolic, C, H, W]`.
fn input_chw(dims: &[i64], path: &Path) -> Result<[usize; 3], InferenceError> {
    let fixed = |d: i64| usize::try_from(d).ok().filter(|&d| d > 0);
    match dims {
        [1 | -1, c, h, w] => match (fixed(*c), fixed(*h), fixed(*w)) {
            (Some(c), Some(h), Some(w)) => Ok([c, h, w]),
            _ => Err(InferenceError::Shape(format!(
                "{}: input dims {dims:?} must be fixed and positive",
                path.display()
            ))),
        },
        _ => Err(InferenceError::Shape(format!(
            "{}: input dims {dims:?} are not [1, C, H, W]",
            path.display()
        ))),
    }
}

/// Runs a tract loading step, turning both its errors and its panics into `Parse` errors.
fn guard<T>(path: &Path, f: impl FnOnce() -> TractResult<T>) -> Result<T, InferenceError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(parse_err(path, format!("tract: {e:#}"))),
        Err(_) => Err(parse_err(path, "tract panicked while loading the model")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::graph::{DeployedNet, Head};
    use crate::inference::onnx::{save_onnx, write_onnx};
    use crate::inference::test_nets::{cosine_net, linear_net, random_input, reference_forward};

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "length mismatch");
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn assert_matches_reference(net: &DeployedNet, seeds: std::ops::Range<u64>) {
        let clf = Classifier::from_bytes(&write_onnx(net)).expect("load");
        for seed in seeds {
            let x = random_input(net.input_shape, seed);
            let out = clf.classify(&x).expect("classify");
            let (logits, embedding) = reference_forward(net, &x);
            let de = max_abs_diff(&out.embedding, &embedding);
            let dl = max_abs_diff(&out.logits, &logits);
            assert!(de <= 1e-5, "embedding differs by {de}");
            assert!(dl <= 1e-5, "logits differ by {dl}");
            // Guard against a vacuous comparison of all-zero outputs.
            assert!(logits.iter().any(|v| v.abs() > 1e-3));
        }
    }

    #[test]
    fn cosine_model_matches_reference_forward_pass() {
        assert_matches_reference(&cosine_net(21), 100..104);
    }

    #[test]
    fn cosine_model_with_logit_offsets_adds_them_in_the_graph() {
        let plain = cosine_net(23);
        let mut net = plain.clone();
        let Head::Cosine { offset, .. } = &mut net.head else {
            panic!("cosine head");
        };
        *offset = vec![0.5, -1.0, 0.0, 2.0, 0.25];
        let want = offset.clone();
        assert_matches_reference(&net, 300..303);
        assert_eq!(net.param_count(), plain.param_count() + 5);
        let (a, b) = (
            Classifier::from_bytes(&write_onnx(&plain)).expect("load"),
            Classifier::from_bytes(&write_onnx(&net)).expect("load"),
        );
        let x = random_input(net.input_shape, 7);
        let (a, b) = (a.classify(&x).expect("run"), b.classify(&x).expect("run"));
        for ((a, b), o) in a.logits.iter().zip(&b.logits).zip(&want) {
            assert!((b - a - o).abs() < 1e-5, "{b} - {a} != {o}");
        }
    }

    #[test]
    fn linear_model_matches_reference_forward_pass() {
        assert_matches_reference(&linear_net(22), 200..204);
    }

    #[test]
    fn reports_shapes_from_the_graph() {
        let clf = Classifier::from_bytes(&write_onnx(&cosine_net(23))).expect("load");
        assert_eq!(clf.input_shape(), [3, 10, 12]);
        assert_eq!(clf.num_classes(), 5);
        assert_eq!(clf.embedding_dim(), 8);
        let clf = Classifier::from_bytes(&write_onnx(&linear_net(24))).expect("load");
        assert_eq!(clf.input_shape(), [1, 8, 8]);
        assert_eq!(clf.num_classes(), 3);
        assert_eq!(clf.embedding_dim(), 6);
    }

    #[test]
    fn cosine_norm_is_clamped_at_eps_for_zero_embedding() {
        let mut net = cosine_net(25);
        // The last block's ReLU output is all zero, so the embedding is zero.
        let last = net.blocks.last_mut().expect("blocks");
        last.conv2.weight.iter_mut().for_each(|w| *w = 0.0);
        last.conv2.bias.iter_mut().for_each(|b| *b = -1.0);
        if let Some(sc) = last.shortcut.as_mut() {
            sc.weight.iter_mut().for_each(|w| *w = 0.0);
            sc.bias.iter_mut().for_each(|b| *b = 0.0);
        }
        let clf = Classifier::from_bytes(&write_onnx(&net)).expect("load");
        let out = clf
            .classify(&random_input(net.input_shape, 1))
            .expect("classify");
        assert!(out.embedding.iter().all(|v| *v == 0.0));
        assert!(
            out.logits.iter().all(|v| v.is_finite() && *v == 0.0),
            "{:?}",
            out.logits
        );
    }

    #[test]
    fn cosine_logits_ignore_embedding_scale() {
        let net = cosine_net(26);
        let Head::Cosine { weight, .. } = &net.head else {
            panic!("cosine head");
        };
        let clf = Classifier::from_bytes(&write_onnx(&net)).expect("load");
        let out = clf
            .classify(&random_input(net.input_shape, 2))
            .expect("classify");
        // logits = unit(h) · Wᵀ, so |logit_n| ≤ ‖W_n‖.
        let dim = net.embedding_dim();
        for (n, l) in out.logits.iter().enumerate() {
            let row_norm: f32 = weight[n * dim..(n + 1) * dim]
                .iter()
                .map(|v| v * v)
                .sum::<f32>()
                .sqrt();
            assert!(l.abs() <= row_norm + 1e-5, "logit {n} = {l} > {row_norm}");
        }
    }

    #[test]
    fn load_from_path_gives_same_outputs_as_from_bytes() {
        let net = cosine_net(27);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.onnx");
        save_onnx(&net, &path).expect("save");
        let a = Classifier::load(&path).expect("load");
        let b = Classifier::from_bytes(&write_onnx(&net)).expect("from_bytes");
        assert_eq!(a.source(), path.as_path());
        let x = random_input(net.input_shape, 3);
        assert_eq!(
            a.classify(&x).expect("classify"),
            b.classify(&x).expect("classify")
        );
    }

    #[test]
    fn missing_file_is_a_read_error_naming_the_path() {
        let err = Classifier::load(Path::new("/nonexistent/dir/model.onnx")).expect_err("missing");
        assert!(matches!(err, InferenceError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/dir/model.onnx"));
    }

    #[test]
    fn wrong_input_length_is_rejected() {
        let clf = Classifier::from_bytes(&write_onnx(&linear_net(28))).expect("load");
        let err = clf.classify(&[0.0; 63]).expect_err("short input");
        assert!(matches!(
            err,
            InferenceError::InputLength {
                expected: 64,
                got: 63
            }
        ));
        assert!(clf.classify(&[0.0; 65]).is_err());
        assert!(clf.classify(&[0.0; 64]).is_ok());
    }

    #[test]
    fn garbage_and_truncated_bytes_are_parse_errors() {
        let bytes = write_onnx(&cosine_net(29));
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for bad in [
            &b""[..],
            &b"not onnx"[..],
            &garbage[..],
            &bytes[..bytes.len() / 2],
            &bytes[..bytes.len() - 1],
            &bytes[..40],
        ] {
            let err = Classifier::from_bytes(bad).expect_err("bad bytes");
            assert!(matches!(err, InferenceError::Parse { .. }), "{err}");
        }
    }

    #[test]
    fn corrupt_file_error_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("corrupt.onnx");
        let bytes = write_onnx(&linear_net(30));
        std::fs::write(&path, &bytes[..bytes.len() - 7]).expect("write");
        let err = Classifier::load(&path).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt.onnx"), "{err}");
    }

    #[test]
    fn model_without_embedding_output_is_rejected() {
        use prost::Message;
        let bytes = write_onnx(&linear_net(31));
        let mut m = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).expect("decode");
        if let Some(g) = m.graph.as_mut() {
            g.output.retain(|o| o.name != "embedding");
        }
        let err = Classifier::from_bytes(&m.encode_to_vec()).expect_err("no embedding");
        assert!(err.to_string().contains("embedding"), "{err}");
    }

    #[test]
    fn unsupported_op_is_a_parse_error_not_a_panic() {
        use prost::Message;
        let bytes = write_onnx(&linear_net(32));
        let mut m = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).expect("decode");
        if let Some(g) = m.graph.as_mut() {
            g.node[1].op_type = "NoSuchOp".into();
        }
        let err = Classifier::from_bytes(&m.encode_to_vec()).expect_err("bad op");
        assert!(matches!(err, InferenceError::Parse { .. }), "{err}");
    }

    #[test]
    fn classifier_is_send_and_sync_and_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Classifier>();
        let net = cosine_net(33);
        let clf = Arc::new(Classifier::from_bytes(&write_onnx(&net)).expect("load"));
        let x = random_input(net.input_shape, 4);
        let expected = clf.classify(&x).expect("classify");
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let clf = Arc::clone(&clf);
                let x = x.clone();
                std::thread::spawn(move || clf.classify(&x).expect("classify"))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().expect("thread"), expected);
        }
    }
}
