//! Fuzz target: `shardcast_fuzz::publish_body` (see `fuzz/src/lib.rs`).
fn main() {
    afl::fuzz!(|data: &[u8]| shardcast_fuzz::publish_body(data));
}
