//! Fuzz target: `shardcast_fuzz::client_message` (see `fuzz/src/lib.rs`).
fn main() {
    afl::fuzz!(|data: &[u8]| shardcast_fuzz::client_message(data));
}
