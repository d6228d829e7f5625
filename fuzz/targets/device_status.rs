//! Fuzz target: `shardcast_fuzz::device_status` (see `fuzz/src/lib.rs`).
fn main() {
    afl::fuzz!(|data: &[u8]| shardcast_fuzz::device_status(data));
}
