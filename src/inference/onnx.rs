//! Hand-built ONNX export of a [`DeployedNet`].
//!
//! Owns the mapping from the deployed (BatchNorm-folded, auxiliary-head-free) network to an
//! ONNX `ModelProto` (IR 8, opset 13, producer `lsskd-edge`). Receives a [`DeployedNet`];
//! produces protobuf bytes ([`write_onnx`]) or a file ([`save_onnx`]).
//!
//! Graph layout, with one graph input `input` `f32 [1, C, H, W]` and two graph outputs
//! `logits` `[1, N]` and `embedding` `[1, D]`:
//!
//! ```text
//! input → Conv(stem) → Relu
//!   → per block: Conv(conv1) → Relu → Conv(conv2) ─┐
//!                shortcut: Conv(1×1) or identity ──┴→ Add → Relu
//!   → GlobalAveragePool → Flatten(axis=1) = embedding
//! cosine head: norm = Sqrt(Max(MatMul(Mul(h, h), const.ones[D,1]), const.eps2))
//!              logits = MatMul(Div(h, norm), head.weight[D, N])
//! linear head: logits = Gemm(h, head.weight[N, D], head.bias[N], transB = 1)
//! ```
//!
//! Initializers holding learned parameters are named after their layer (`stem.weight`,
//! `blocks.3.conv1.bias`, `head.weight`); helper constants start with `const.` so that
//! parameter counting (the `inspect` module, which reads [`CONST_PREFIX`]) can leave them out.

use std::path::Path;

use prost::Message;
use tract_onnx::pb;

use super::error::InferenceError;
use super::graph::{ConvLayer, DeployedNet, Head};

/// ONNX IR version written into every model.
pub const IR_VERSION: i64 = 8;
/// Default-domain operator set version written into every model.
pub const OPSET_VERSION: i64 = 13;
/// `producer_name` written into every model.
pub const PRODUCER_NAME: &str = "lsskd-edge";
/// Name of the graph input.
pub const INPUT_NAME: &str = "input";
/// Name of the graph output holding the class scores `[1, N]`.
pub const LOGITS_NAME: &str = "logits";
/// Name of the graph output holding the pooled feature `[1, D]`.
pub const EMBEDDING_NAME: &str = "embedding";
/// Prefix of initializers that are helper constants, not learned parameters.
pub const CONST_PREFIX: &str = "const.";

/// Serialises `net` as an ONNX model. Does not check the net; see [`save_onnx`] /
/// [`DeployedNet::validate`] for that (an inconsistent net gives a model tract rejects).
pub fn write_onnx(net: &DeployedNet) -> Vec<u8> {
    build_model(net).encode_to_vec()
}

/// Validates `net` ([`DeployedNet::validate`]) and writes its ONNX model to `path`.
pub fn save_onnx(net: &DeployedNet, path: &Path) -> Result<(), InferenceError> {
    net.validate()?;
    std::fs::write(path, write_onnx(net)).map_err(|source| InferenceError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds the `ModelProto` for `net`.
fn build_model(net: &DeployedNet) -> pb::ModelProto {
    let mut g = GraphBuilder::default();
    let [c, h, w] = net.input_shape;

    let mut x = g.conv("stem", &net.stem, INPUT_NAME);
    x = g.unary("Relu", "stem.relu", &x);
    for (i, block) in net.blocks.iter().enumerate() {
        let p = format!("blocks.{i}");
        let y = g.conv(&format!("{p}.conv1"), &block.conv1, &x);
        let y = g.unary("Relu", &format!("{p}.relu1"), &y);
        let y = g.conv(&format!("{p}.conv2"), &block.conv2, &y);
        let short = match &block.shortcut {
            Some(sc) => g.conv(&format!("{p}.shortcut"), sc, &x),
            None => x.clone(),
        };
        let sum = g.node("Add", &format!("{p}.add"), &[&y, &short], vec![]);
        x = g.unary("Relu", &format!("{p}.relu2"), &sum);
    }
    let pooled = g.unary("GlobalAveragePool", "pool", &x);
    let h_name = g.node_to(
        "Flatten",
        "flatten",
        &[&pooled],
        EMBEDDING_NAME,
        vec![attr_int("axis", 1)],
    );

    match &net.head {
        Head::Cosine {
            weight,
            classes,
            dim,
            eps,
            offset,
        } => {
            g.init("const.ones", &[*dim, 1], &vec![1.0; *dim]);
            g.init("const.eps2", &[], &[eps * eps]);
            g.init(
                "head.weight",
                &[*dim, *classes],
                &transpose(weight, *classes, *dim),
            );
            let sq = g.node("Mul", "head.square", &[&h_name, &h_name], vec![]);
            let sum = g.node("MatMul", "head.sum_squares", &[&sq, "const.ones"], vec![]);
            let clamped = g.node("Max", "head.clamp", &[&sum, "const.eps2"], vec![]);
            let norm = g.unary("Sqrt", "head.norm", &clamped);
            let unit = g.node("Div", "head.normalize", &[&h_name, &norm], vec![]);
            if offset.is_empty() {
                g.node_to(
                    "MatMul",
                    "head.matmul",
                    &[&unit, "head.weight"],
                    LOGITS_NAME,
                    vec![],
                );
            } else {
                g.init("head.offset", &[*classes], offset);
                let cosine = g.node("MatMul", "head.matmul", &[&unit, "head.weight"], vec![]);
                g.node_to(
                    "Add",
                    "head.add_offset",
                    &[&cosine, "head.offset"],
                    LOGITS_NAME,
                    vec![],
                );
            }
        }
        Head::Linear {
            weight,
            bias,
            classes,
            dim,
        } => {
            g.init("head.weight", &[*classes, *dim], weight);
            g.init("head.bias", &[*classes], bias);
            g.node_to(
                "Gemm",
                "head.gemm",
                &[&h_name, "head.weight", "head.bias"],
                LOGITS_NAME,
                vec![attr_int("transB", 1)],
            );
        }
    }

    let graph = pb::GraphProto {
        name: "lsskd_edge_deployed".into(),
        node: g.nodes,
        initializer: g.initializers,
        input: vec![value_info(INPUT_NAME, &[1, c, h, w])],
        output: vec![
            value_info(LOGITS_NAME, &[1, net.num_classes()]),
            value_info(EMBEDDING_NAME, &[1, net.embedding_dim()]),
        ],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET_VERSION,
        }],
        producer_name: PRODUCER_NAME.into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    }
}

/// Accumulates nodes and initializers; every node's single output tensor is named after
/// the node unless given explicitly.
#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
}

impl GraphBuilder {
    /// Adds node `name` whose output tensor is also called `name`; returns that name.
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<pb::AttributeProto>,
    ) -> String {
        self.node_to(op, name, inputs, name, attrs)
    }

    /// Adds node `name` writing tensor `output`; returns `output`.
    fn node_to(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<pb::AttributeProto>,
    ) -> String {
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: name.to_string(),
            op_type: op.to_string(),
            attribute: attrs,
            ..Default::default()
        });
        output.to_string()
    }

    fn unary(&mut self, op: &str, name: &str, input: &str) -> String {
        self.node(op, name, &[input], vec![])
    }

    /// Adds an f32 initializer stored as little-endian `raw_data`.
    fn init(&mut self, name: &str, dims: &[usize], data: &[f32]) {
        self.initializers.push(pb::TensorProto {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
    }

    /// Adds `{prefix}.weight` / `{prefix}.bias` and a Conv node named `prefix`.
    fn conv(&mut self, prefix: &str, layer: &ConvLayer, input: &str) -> String {
        let [out_c, in_c, kh, kw] = layer.shape;
        let weight = format!("{prefix}.weight");
        let bias = format!("{prefix}.bias");
        self.init(&weight, &[out_c, in_c, kh, kw], &layer.weight);
        self.init(&bias, &[out_c], &layer.bias);
        let (s, p) = (layer.stride as i64, layer.padding as i64);
        self.node(
            "Conv",
            prefix,
            &[input, &weight, &bias],
            vec![
                attr_ints("kernel_shape", &[kh as i64, kw as i64]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", 1),
            ],
        )
    }
}

/// `[rows, cols]` row-major → `[cols, rows]` row-major (short input yields zeros).
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            if let Some(v) = m.get(r * cols + c) {
                t[c * rows + r] = *v;
            }
        }
    }
    t
}

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

/// A float tensor `ValueInfoProto` with fixed dims.
fn value_info(name: &str, dims: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::test_nets::{cosine_net, linear_net};

    fn decode(net: &DeployedNet) -> pb::ModelProto {
        pb::ModelProto::decode(write_onnx(net).as_slice()).expect("decodes")
    }

    #[test]
    fn model_header_has_ir8_opset13_and_producer() {
        let m = decode(&cosine_net(1));
        assert_eq!(m.ir_version, 8);
        assert_eq!(m.producer_name, "lsskd-edge");
        assert_eq!(m.opset_import.len(), 1);
        assert_eq!(m.opset_import[0].version, 13);
        assert!(m.opset_import[0].domain.is_empty());
    }

    #[test]
    fn cosine_head_weight_is_stored_transposed() {
        let net = cosine_net(2);
        let Head::Cosine {
            weight,
            classes,
            dim,
            ..
        } = &net.head
        else {
            panic!("cosine_net has a cosine head");
        };
        let g = decode(&net).graph.expect("graph");
        let t = g
            .initializer
            .iter()
            .find(|t| t.name == "head.weight")
            .expect("head.weight");
        assert_eq!(t.dims, vec![*dim as i64, *classes as i64]);
        let stored: Vec<f32> = t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // Element (n, d) of the [N, D] weight sits at (d, n) of the stored [D, N].
        assert_eq!(stored[3 * classes + 1], weight[dim + 3]);
        assert_eq!(stored[*classes], weight[1]);
    }

    #[test]
    fn conv_nodes_carry_stride_and_padding_attributes() {
        let net = cosine_net(3);
        let g = decode(&net).graph.expect("graph");
        let node = g
            .node
            .iter()
            .find(|n| n.name == "blocks.1.shortcut")
            .expect("shortcut conv");
        let get = |name: &str| {
            node.attribute
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.ints.clone())
                .expect("attribute")
        };
        assert_eq!(get("strides"), vec![2, 2]);
        assert_eq!(get("pads"), vec![0, 0, 0, 0]);
        assert_eq!(get("kernel_shape"), vec![1, 1]);
        assert_eq!(node.input[0], "blocks.0.relu2");
    }

    #[test]
    fn identity_shortcut_adds_block_input_directly() {
        let g = decode(&cosine_net(4)).graph.expect("graph");
        let add = g
            .node
            .iter()
            .find(|n| n.name == "blocks.0.add")
            .expect("add");
        assert_eq!(add.input, vec!["blocks.0.conv2", "stem.relu"]);
        assert!(!g.node.iter().any(|n| n.name == "blocks.0.shortcut"));
    }

    #[test]
    fn outputs_declare_fixed_shapes() {
        let net = linear_net(5);
        let g = decode(&net).graph.expect("graph");
        let names: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, vec!["logits", "embedding"]);
        let Some(pb::type_proto::Value::TensorType(t)) =
            g.output[0].r#type.as_ref().and_then(|t| t.value.clone())
        else {
            panic!("tensor type");
        };
        let dims: Vec<_> = t
            .shape
            .expect("shape")
            .dim
            .into_iter()
            .map(|d| d.value)
            .collect();
        use pb::tensor_shape_proto::dimension::Value;
        assert_eq!(
            dims,
            vec![
                Some(Value::DimValue(1)),
                Some(Value::DimValue(net.num_classes() as i64))
            ]
        );
    }

    #[test]
    fn save_onnx_rejects_inconsistent_net_and_writes_nothing() {
        let mut net = cosine_net(6);
        net.blocks[1].conv1.bias.pop();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.onnx");
        let err = save_onnx(&net, &path).expect_err("must reject");
        assert!(matches!(err, InferenceError::Shape(ref m) if m.contains("blocks.1.conv1")));
        assert!(!path.exists());
    }

    #[test]
    fn save_onnx_writes_the_same_bytes_as_write_onnx() {
        let net = linear_net(7);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.onnx");
        save_onnx(&net, &path).expect("save");
        assert_eq!(std::fs::read(&path).expect("read"), write_onnx(&net));
    }

    #[test]
    fn save_onnx_into_missing_directory_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("no/such/dir/m.onnx");
        let err = save_onnx(&linear_net(8), &path).expect_err("must fail");
        assert!(matches!(err, InferenceError::Write { .. }));
        assert!(err.to_string().contains("m.onnx"));
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        let m = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [2, 3]
        assert_eq!(transpose(&m, 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
