//! AFL++ target `onnx`: [`lsskd_edge_fuzz::onnx`] in persistent mode (`scripts/fuzz.sh onnx`).
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| lsskd_edge_fuzz::onnx(data));
}
