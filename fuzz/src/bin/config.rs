//! AFL++ target `config`: [`lsskd_edge_fuzz::config`] in persistent mode (`scripts/fuzz.sh config`).
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| lsskd_edge_fuzz::config(data));
}
