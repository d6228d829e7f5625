//! Fuzz target: `shardcast_fuzz::frame` (see `fuzz/src/lib.rs`).
fn main() {
    afl::fuzz!(|data: &[u8]| shardcast_fuzz::frame(data));
}
