//! Every refusal of a request: a status with a short JSON body, counted by
//! reason for `/metrics`.

use crate::proto::http;
use crate::shard::Shard;

/// Seconds a client refused for a full server should wait.
pub const RETRY_AFTER: &str = "5";

/// An error response, counted by reason for `/metrics`.
pub fn reject(
    shard: &Shard,
    status: u16,
    code: &str,
    message: &str,
    keep_alive: bool,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    shard.refused(status, code, message);
    http::error_response(status, code, message, keep_alive, headers)
}
