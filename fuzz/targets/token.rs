//! Fuzz target: `shardcast_fuzz::token` (see `fuzz/src/lib.rs`).
fn main() {
    afl::fuzz!(|data: &[u8]| shardcast_fuzz::token(data));
}
