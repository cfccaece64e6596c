//! AFL++ target `manifest`: [`lsskd_edge_fuzz::manifest`] in persistent mode (`scripts/fuzz.sh manifest`).
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| lsskd_edge_fuzz::manifest(data));
}
