//! AFL++ target `image`: [`lsskd_edge_fuzz::image`] in persistent mode (`scripts/fuzz.sh image`).
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| lsskd_edge_fuzz::image(data));
}
