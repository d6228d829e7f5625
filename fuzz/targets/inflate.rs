//! Fuzz target: `shardcast_fuzz::inflate` (see `fuzz/src/lib.rs`).
fn main() {
    afl::fuzz!(|data: &[u8]| shardcast_fuzz::inflate(data));
}
