//! AFL++ target `sample`: [`lsskd_edge_fuzz::sample`] in persistent mode (`scripts/fuzz.sh sample`).
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| lsskd_edge_fuzz::sample(data));
}
