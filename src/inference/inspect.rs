//! Static inspection of an ONNX file with prost alone (no tract).
//!
//! Owns [`inspect`] and [`GraphSummary`], plus the structural checks that the classifier
//! also runs before handing a model to tract. Receives a path or bytes ([`ModelSource`]);
//! produces the input name and shape, output names and shapes, per-op-type node counts,
//! node names and the number of learned parameters (float elements of initializers whose
//! name does not start with `const.`). Used to check that an exported model carries no
//! auxiliary-head nodes and that its parameter count equals [`DeployedNet::param_count`].
//!
//! [`DeployedNet::param_count`]: super::graph::DeployedNet::param_count

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb;

use super::error::{IN_MEMORY, InferenceError};
use super::onnx::CONST_PREFIX;

/// Where a model comes from: a file or bytes already in memory.
#[derive(Debug, Clone, Copy)]
pub enum ModelSource<'a> {
    /// An ONNX file on disk.
    Path(&'a Path),
    /// ONNX protobuf bytes.
    Bytes(&'a [u8]),
}

impl<'a> From<&'a Path> for ModelSource<'a> {
    fn from(p: &'a Path) -> Self {
        ModelSource::Path(p)
    }
}

impl<'a> From<&'a PathBuf> for ModelSource<'a> {
    fn from(p: &'a PathBuf) -> Self {
        ModelSource::Path(p)
    }
}

impl<'a> From<&'a [u8]> for ModelSource<'a> {
    fn from(b: &'a [u8]) -> Self {
        ModelSource::Bytes(b)
    }
}

impl<'a> From<&'a Vec<u8>> for ModelSource<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        ModelSource::Bytes(b)
    }
}

/// What an ONNX graph looks like, read straight from the protobuf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphSummary {
    /// Name of the (single non-initializer) graph input.
    pub input_name: String,
    /// Its dims; symbolic or missing dims are `-1`.
    pub input_shape: Vec<i64>,
    /// Graph outputs in order, with dims (symbolic or missing dims are `-1`).
    pub outputs: Vec<(String, Vec<i64>)>,
    /// Number of nodes per op type.
    pub op_types: BTreeMap<String, usize>,
    /// Node names in graph order.
    pub node_names: Vec<String>,
    /// Float elements in initializers whose name does not start with `const.`.
    pub param_count: usize,
}

/// Decodes the ONNX model at `source` (a `&Path`, `&PathBuf`, `&[u8]` or `&Vec<u8>`) and
/// summarises its graph. Bad, truncated or dangling models give [`InferenceError::Parse`].
pub fn inspect<'a>(source: impl Into<ModelSource<'a>>) -> Result<GraphSummary, InferenceError> {
    let (model, path) = match source.into() {
        ModelSource::Path(p) => {
            let bytes = std::fs::read(p).map_err(|source| InferenceError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            (decode_model(&bytes, p)?, p.to_path_buf())
        }
        ModelSource::Bytes(b) => (
            decode_model(b, Path::new(IN_MEMORY))?,
            PathBuf::from(IN_MEMORY),
        ),
    };
    summarise(&model, &path)
}

/// Decodes `bytes` as a `ModelProto` and checks its structure ([`check_structure`]).
pub(crate) fn decode_model(bytes: &[u8], path: &Path) -> Result<pb::ModelProto, InferenceError> {
    let model = pb::ModelProto::decode(bytes).map_err(|e| parse_err(path, e.to_string()))?;
    check_structure(&model, path)?;
    Ok(model)
}

pub(crate) fn parse_err(path: &Path, message: impl Into<String>) -> InferenceError {
    InferenceError::Parse {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Rejects models that protobuf accepts but that are not a usable graph: no IR version,
/// no default-domain opset (a file cut just before its trailing `opset_import`), no graph,
/// no nodes, no outputs, a node input or graph output naming a tensor nothing produces, or a
/// float initializer whose data does not match its dims. (Random or truncated bytes
/// sometimes decode as a valid, mostly empty `ModelProto`; tract may panic on such graphs.)
pub(crate) fn check_structure(model: &pb::ModelProto, path: &Path) -> Result<(), InferenceError> {
    if model.ir_version <= 0 {
        return Err(parse_err(path, "model has no IR version"));
    }
    if !model
        .opset_import
        .iter()
        .any(|o| (o.domain.is_empty() || o.domain == "ai.onnx") && o.version > 0)
    {
        return Err(parse_err(path, "model imports no default-domain opset"));
    }
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| parse_err(path, "model has no graph"))?;
    if g.node.is_empty() {
        return Err(parse_err(path, "graph has no nodes"));
    }
    if g.output.is_empty() {
        return Err(parse_err(path, "graph has no outputs"));
    }
    let mut known: HashSet<&str> = g.input.iter().map(|i| i.name.as_str()).collect();
    known.extend(g.initializer.iter().map(|t| t.name.as_str()));
    for t in &g.initializer {
        check_initializer(t, path)?;
    }
    // Nodes must be topologically sorted (ONNX requires it), so one pass suffices.
    for (ix, n) in g.node.iter().enumerate() {
        if n.op_type.is_empty() {
            return Err(parse_err(path, format!("node #{ix} has no op_type")));
        }
        if let Some(missing) = n
            .input
            .iter()
            .find(|i| !i.is_empty() && !known.contains(i.as_str()))
        {
            return Err(parse_err(
                path,
                format!(
                    "node `{}` ({}) reads `{missing}`, which no input, initializer or earlier node provides",
                    n.name, n.op_type
                ),
            ));
        }
        known.extend(
            n.output
                .iter()
                .filter(|o| !o.is_empty())
                .map(String::as_str),
        );
    }
    if let Some(o) = g.output.iter().find(|o| !known.contains(o.name.as_str())) {
        return Err(parse_err(
            path,
            format!("graph output `{}` is produced by no node", o.name),
        ));
    }
    Ok(())
}

/// A float initializer's stored data must have exactly `prod(dims)` elements.
fn check_initializer(t: &pb::TensorProto, path: &Path) -> Result<(), InferenceError> {
    if t.data_type != pb::tensor_proto::DataType::Float as i32 || t.data_location == Some(1) {
        return Ok(());
    }
    let expected = element_count(&t.dims).ok_or_else(|| {
        parse_err(
            path,
            format!("initializer `{}` has bad dims {:?}", t.name, t.dims),
        )
    })?;
    let stored = if t.raw_data.is_empty() {
        t.float_data.len()
    } else if t.raw_data.len().is_multiple_of(4) {
        t.raw_data.len() / 4
    } else {
        usize::MAX
    };
    if stored != expected {
        return Err(parse_err(
            path,
            format!(
                "initializer `{}` has dims {:?} ({expected} floats) but stores {} bytes raw / {} floats",
                t.name,
                t.dims,
                t.raw_data.len(),
                t.float_data.len()
            ),
        ));
    }
    Ok(())
}

/// `prod(dims)`, or `None` for a negative dim or overflow.
fn element_count(dims: &[i64]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Dims of a value info; symbolic or missing dims are `-1`, a missing shape is empty.
pub(crate) fn value_dims(v: &pb::ValueInfoProto) -> Vec<i64> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(t)),
        ..
    }) = &v.r#type
    else {
        return vec![];
    };
    t.shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Value::DimValue(v)) => v,
                    _ => -1,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The single graph input that is not an initializer.
pub(crate) fn graph_input<'g>(
    g: &'g pb::GraphProto,
    path: &Path,
) -> Result<&'g pb::ValueInfoProto, InferenceError> {
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut inputs = g.input.iter().filter(|i| !inits.contains(i.name.as_str()));
    match (inputs.next(), inputs.next()) {
        (Some(i), None) => Ok(i),
        (None, _) => Err(parse_err(path, "graph has no (non-initializer) input")),
        (Some(_), Some(_)) => Err(parse_err(path, "graph has more than one input")),
    }
}

fn summarise(model: &pb::ModelProto, path: &Path) -> Result<GraphSummary, InferenceError> {
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| parse_err(path, "model has no graph"))?;
    let input = graph_input(g, path)?;
    let mut op_types = BTreeMap::new();
    for n in &g.node {
        *op_types.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    let param_count = g
        .initializer
        .iter()
        .filter(|t| {
            !t.name.starts_with(CONST_PREFIX)
                && t.data_type == pb::tensor_proto::DataType::Float as i32
        })
        .map(|t| element_count(&t.dims).unwrap_or(0))
        .sum();
    Ok(GraphSummary {
        input_name: input.name.clone(),
        input_shape: value_dims(input),
        outputs: g
            .output
            .iter()
            .map(|o| (o.name.clone(), value_dims(o)))
            .collect(),
        op_types,
        node_names: g.node.iter().map(|n| n.name.clone()).collect(),
        param_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::onnx::write_onnx;
    use crate::inference::test_nets::{cosine_net, linear_net};

    fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn cosine_model_summary_lists_expected_ops_and_shapes() {
        let net = cosine_net(11);
        let s = inspect(&write_onnx(&net)).expect("inspect");
        assert_eq!(s.input_name, "input");
        assert_eq!(s.input_shape, vec![1, 3, 10, 12]);
        assert_eq!(
            s.outputs,
            vec![
                ("logits".to_string(), vec![1, 5]),
                ("embedding".to_string(), vec![1, 8])
            ]
        );
        assert_eq!(
            s.op_types,
            counts(&[
                ("Add", 2),
                ("Conv", 6),
                ("Div", 1),
                ("Flatten", 1),
                ("GlobalAveragePool", 1),
                ("MatMul", 2),
                ("Max", 1),
                ("Mul", 1),
                ("Relu", 5),
                ("Sqrt", 1),
            ])
        );
        assert!(!s.node_names.iter().any(|n| n.contains("aux")));
        assert_eq!(s.node_names.len(), 21);
    }

    #[test]
    fn param_count_matches_net_and_excludes_constants() {
        for net in [cosine_net(12), linear_net(13)] {
            let s = inspect(&write_onnx(&net)).expect("inspect");
            assert_eq!(s.param_count, net.param_count());
        }
        // The cosine model does store helper constants; they must not be counted.
        let bytes = write_onnx(&cosine_net(12));
        let g = pb::ModelProto::decode(bytes.as_slice())
            .expect("decode")
            .graph
            .expect("graph");
        assert!(g.initializer.iter().any(|t| t.name == "const.ones"));
    }

    #[test]
    fn linear_model_uses_gemm_head() {
        let s = inspect(&write_onnx(&linear_net(14))).expect("inspect");
        assert_eq!(s.op_types.get("Gemm"), Some(&1));
        assert_eq!(s.op_types.get("MatMul"), None);
        assert_eq!(s.input_shape, vec![1, 1, 8, 8]);
    }

    #[test]
    fn inspect_reads_from_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.onnx");
        let net = linear_net(15);
        std::fs::write(&path, write_onnx(&net)).expect("write");
        let s = inspect(&path).expect("inspect");
        assert_eq!(s.param_count, net.param_count());
    }

    #[test]
    fn missing_file_is_a_read_error_naming_the_path() {
        let err = inspect(Path::new("/nonexistent/model.onnx")).expect_err("must fail");
        assert!(matches!(err, InferenceError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/model.onnx"));
    }

    #[test]
    fn every_truncation_of_a_model_is_rejected() {
        let bytes = write_onnx(&cosine_net(16));
        for len in 0..bytes.len() {
            let r = inspect(&bytes[..len]);
            assert!(
                matches!(r, Err(InferenceError::Parse { .. })),
                "prefix of {len} bytes gave {r:?}"
            );
        }
    }

    #[test]
    fn garbage_bytes_are_a_parse_error() {
        let err = inspect(b"this is not an onnx model at all".as_slice()).expect_err("garbage");
        assert!(matches!(err, InferenceError::Parse { .. }));
        assert!(err.to_string().contains(IN_MEMORY));
    }

    #[test]
    fn dangling_output_name_is_rejected() {
        let bytes = write_onnx(&linear_net(17));
        let mut m = pb::ModelProto::decode(bytes.as_slice()).expect("decode");
        if let Some(g) = m.graph.as_mut() {
            g.output[0].name = "nowhere".into();
        }
        let err = inspect(&m.encode_to_vec()).expect_err("dangling");
        assert!(err.to_string().contains("nowhere"), "{err}");
    }

    #[test]
    fn initializer_with_short_data_is_rejected() {
        let bytes = write_onnx(&linear_net(18));
        let mut m = pb::ModelProto::decode(bytes.as_slice()).expect("decode");
        if let Some(g) = m.graph.as_mut() {
            g.initializer[0].raw_data.truncate(8);
        }
        let err = inspect(&m.encode_to_vec()).expect_err("short initializer");
        assert!(err.to_string().contains("stem.weight"), "{err}");
    }
}
