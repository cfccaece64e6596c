//! Weight imprinting of new classes (LSSKD.md §6.1; Qi et al., CVPR 2018): a new class's
//! row in the cosine head is the normalised mean of its support samples' normalised pooled
//! features, and every auxiliary head gets M new rows, one per transform j, imprinted from
//! that head's pooled features of t_j(x). Usable at once, no gradient step.

use burn::module::{Module, Param};
use burn::prelude::*;

use super::infer::BatchOutput;
use super::net::{ClassifierHead, TrainNet};
use super::transforms::TransformSet;
use super::{LsskdError, device_of, rows};

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter().map(|x| x / n).collect()
}

/// `mean_k normalise(f_k)` of a group of feature rows (not normalised).
fn mean_direction<'a>(features: impl Iterator<Item = &'a Vec<f32>>) -> Option<Vec<f32>> {
    let mut sum: Option<Vec<f32>> = None;
    let mut n = 0usize;
    for f in features {
        let f = normalised(f);
        n += 1;
        match &mut sum {
            None => sum = Some(f),
            Some(s) => s.iter_mut().zip(&f).for_each(|(a, b)| *a += b),
        }
    }
    sum.map(|s| s.into_iter().map(|v| v / n as f32).collect())
}

/// `normalise(mean_k normalise(f_k) − centre)`.
fn prototype<'a>(
    features: impl Iterator<Item = &'a Vec<f32>>,
    centre: Option<&Vec<f32>>,
) -> Option<Vec<f32>> {
    let mut p = mean_direction(features)?;
    if let Some(c) = centre {
        p.iter_mut().zip(c).for_each(|(a, b)| *a -= b);
    }
    Some(normalised(&p))
}

/// Pooled features of a set of inputs.
struct Features {
    /// The student's embedding of each untransformed input.
    student: Vec<Vec<f32>>,
    /// The student's logits of each untransformed input.
    logits: Vec<Vec<f32>>,
    /// Per auxiliary head, the pooled feature of every row `input · M + j`.
    aux: Vec<Vec<Vec<f32>>>,
}

/// Pooled features of every input under every transform.
fn features(
    valid: &TrainNet,
    inputs: &[Vec<f32>],
    set: TransformSet,
    shape: [usize; 3],
) -> Result<Features, LsskdError> {
    let m = set.len();
    let [ch, h, w] = shape;
    let device = device_of(valid);
    let mut student_rows = Vec::with_capacity(inputs.len());
    let mut logit_rows = Vec::with_capacity(inputs.len());
    let mut aux_rows: Vec<Vec<Vec<f32>>> = vec![Vec::new(); valid.aux.len()];
    for chunk in inputs.chunks(32) {
        let flat: Vec<f32> = chunk
            .iter()
            .flat_map(|x| (0..m).flat_map(move |j| set.apply(x, shape, j)))
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(flat, [chunk.len() * m, ch, h, w]), &device);
        let out = valid.forward(x);
        // The student head only ever sees untransformed inputs: rows i·M.
        student_rows.extend(rows(out.student.embedding)?.into_iter().step_by(m));
        logit_rows.extend(rows(out.student.logits)?.into_iter().step_by(m));
        for (l, a) in out.aux.into_iter().enumerate() {
            aux_rows[l].extend(rows(a.pooled)?);
        }
    }
    Ok(Features {
        student: student_rows,
        logits: logit_rows,
        aux: aux_rows,
    })
}

fn append_rows(c: &mut ClassifierHead, new_rows: Vec<Vec<f32>>) {
    let old = c.weight.val();
    let device = old.device();
    let [_, d] = old.dims();
    let n = new_rows.len();
    let flat: Vec<f32> = new_rows.into_iter().flatten().collect();
    let new = Tensor::<2>::from_data(TensorData::new(flat, [n, d]), &device);
    c.weight = Param::from_tensor(Tensor::cat(vec![old, new], 0).detach());
    if !c.offset.is_empty() {
        c.offset.resize(c.offset.len() + n, 0.0);
    }
}

/// Keep the rows of `c` that `keep` says yes to (and their offsets and biases).
fn keep_rows(c: &mut ClassifierHead, keep: impl Fn(usize) -> bool) {
    let w = c.weight.val();
    let device = w.device();
    let [rows, d] = w.dims();
    let kept: Vec<usize> = (0..rows).filter(|&r| keep(r)).collect();
    let data: Vec<f32> = w.into_data().try_to_vec::<f32>().expect("f32 weights");
    let flat: Vec<f32> = kept
        .iter()
        .flat_map(|&r| data[r * d..(r + 1) * d].iter().copied())
        .collect();
    let n = kept.len();
    c.weight = Param::from_tensor(Tensor::<2>::from_data(
        TensorData::new(flat, [n, d]),
        &device,
    ));
    if let Some(b) = &c.bias {
        let data: Vec<f32> = b.val().into_data().try_to_vec::<f32>().expect("f32 bias");
        let flat: Vec<f32> = kept.iter().map(|&r| data[r]).collect();
        c.bias = Some(Param::from_tensor(Tensor::<1>::from_data(
            TensorData::new(flat, [n]),
            &device,
        )));
    }
    if !c.offset.is_empty() {
        c.offset = kept.iter().map(|&r| c.offset[r]).collect();
    }
}

/// `net` without class `class`: its row of the student's classifier and its `m` rows
/// (joint labels `class·M + j`) of every auxiliary head go; every other row, and so every
/// other class's logits, is unchanged (the classes after it move down one index). The
/// inverse of imprinting a class; `forget` uses it for a label learnt on the device.
pub fn remove_class(mut net: TrainNet, class: usize, m: usize) -> Result<TrainNet, LsskdError> {
    let classes = net.student.classifier.classes();
    if class >= classes || classes < 2 {
        return Err(LsskdError::Arch(format!(
            "cannot remove class {class} of {classes}"
        )));
    }
    keep_rows(&mut net.student.classifier, |r| r != class);
    for head in &mut net.aux {
        keep_rows(&mut head.classifier, |r| r / m.max(1) != class);
    }
    Ok(net)
}

/// *(choice)* The centres of centred imprinting: the mean normalised pooled feature of the
/// existing classes' exemplars (the package's replay), per head and, for auxiliary heads,
/// per transform. Post-ReLU pooled features all lie near one common direction, so a plain
/// centroid scores high against *every* input and takes over the predictions of the old
/// classes; a prototype minus the centre is a discriminative direction, like the trained
/// rows. They depend only on the network before imprinting and the exemplars, so one
/// adaptation computes them once for all its fine-tunes. [`Centres::default`] (no
/// exemplars) gives plain imprinting.
#[derive(Debug, Clone, Default)]
pub struct Centres {
    student: Option<Vec<f32>>,
    /// `aux[l][j]`: auxiliary head `l`, transform `j`.
    aux: Vec<Vec<Option<Vec<f32>>>>,
}

impl Centres {
    /// The centres of `reference` (inputs `[C, H, W]` = `shape`) under `net`, with the
    /// student's logits and embedding of each untransformed input from the same pass.
    pub fn of(
        net: &TrainNet,
        reference: &[Vec<f32>],
        set: TransformSet,
        shape: [usize; 3],
    ) -> Result<(Centres, BatchOutput), LsskdError> {
        let m = set.len();
        let f = features(&net.valid(), reference, set, shape)?;
        let centres = Centres {
            student: mean_direction(f.student.iter()),
            aux: f
                .aux
                .iter()
                .map(|rows| {
                    (0..m)
                        .map(|j| mean_direction(rows.iter().skip(j).step_by(m)))
                        .collect()
                })
                .collect(),
        };
        let outputs = BatchOutput {
            logits: f.logits,
            embeddings: f.student,
        };
        Ok((centres, outputs))
    }

    fn aux(&self, l: usize, j: usize) -> Option<&Vec<f32>> {
        self.aux
            .get(l)
            .and_then(|h| h.get(j))
            .and_then(Option::as_ref)
    }
}

/// Add `new_classes` classes to `net`. `labels[i] ∈ 0..new_classes` is the new class of
/// support input `inputs[i]` (each `[C, H, W]` = `shape`); every new class needs at least
/// one sample. Old rows are untouched, so old-class logits do not change. Each prototype
/// has `centres` (of the same `net`) subtracted before it is normalised.
pub fn imprint(
    mut net: TrainNet,
    inputs: &[Vec<f32>],
    labels: &[usize],
    new_classes: usize,
    centres: &Centres,
    set: TransformSet,
    shape: [usize; 3],
) -> Result<TrainNet, LsskdError> {
    if !net.student.classifier.is_cosine() || net.aux.iter().any(|a| !a.classifier.is_cosine()) {
        return Err(LsskdError::Arch(
            "imprinting needs cosine classifiers".into(),
        ));
    }
    if let Some(c) = (0..new_classes).find(|c| !labels.contains(c)) {
        return Err(LsskdError::Arch(format!(
            "new class {c} has no support sample"
        )));
    }
    let m = set.len();
    let valid = net.valid();
    let Features {
        student: student_rows,
        aux: aux_rows,
        ..
    } = features(&valid, inputs, set, shape)?;
    let protos: Vec<Vec<f32>> = (0..new_classes)
        .map(|c| {
            prototype(
                student_rows
                    .iter()
                    .zip(labels)
                    .filter(|(_, y)| **y == c)
                    .map(|(f, _)| f),
                centres.student.as_ref(),
            )
            .expect("every class has support (checked above)")
        })
        .collect();
    append_rows(&mut net.student.classifier, protos);
    for (l, head) in net.aux.iter_mut().enumerate() {
        let feats = &aux_rows[l];
        let mut new_rows = Vec::with_capacity(new_classes * m);
        // Joint label k = y·M + j: new classes come after the old ones, M rows each.
        for c in 0..new_classes {
            for j in 0..m {
                let group = labels
                    .iter()
                    .enumerate()
                    .filter(|(_, y)| **y == c)
                    .map(|(i, _)| &feats[i * m + j]);
                new_rows.push(
                    prototype(group, centres.aux(l, j))
                        .expect("every class has support (checked above)"),
                );
            }
        }
        append_rows(&mut head.classifier, new_rows);
    }
    Ok(net)
}
