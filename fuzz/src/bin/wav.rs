//! AFL++ target `wav`: [`lsskd_edge_fuzz::wav`] in persistent mode (`scripts/fuzz.sh wav`).
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| lsskd_edge_fuzz::wav(data));
}
