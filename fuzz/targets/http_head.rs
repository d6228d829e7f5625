//! Fuzz target: `shardcast_fuzz::http_head` (see `fuzz/src/lib.rs`).
fn main() {
    afl::fuzz!(|data: &[u8]| shardcast_fuzz::http_head(data));
}
