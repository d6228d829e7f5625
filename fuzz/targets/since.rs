//! Fuzz target: `shardcast_fuzz::since_value` (see `fuzz/src/lib.rs`).
fn main() {
    afl::fuzz!(|data: &[u8]| shardcast_fuzz::since_value(data));
}
