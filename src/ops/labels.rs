//! Bounded metric label sets (a leaf: counters, rendering and the code that
//! refuses or drops things all name their reasons from here). Close reasons
//! are `proto::close::CloseReason`.

/// Reasons a request is refused before or at the upgrade (bounded label).
pub const REJECT_REASONS: &[&str] = &[
    "bad_request",
    "header_too_large",
    "body_too_large",
    "timeout",
    "bad_handshake",
    "unauthorized",
    "forbidden",
    "origin_not_allowed",
    "too_many_connections",
    "not_found",
    "method_not_allowed",
    "tls",
    "other",
];

/// Why published frames were not delivered (bounded label; the order of
/// `ops::stats::Delivered::dropped`).
pub const DROP_REASONS: &[&str] = &["conflated", "slow_consumer", "closing"];

/// Index of a rejection code in [`REJECT_REASONS`].
pub fn reject_reason(code: &str) -> usize {
    let code = match code {
        "bad_json" | "bad_event" | "bad_status" | "length_required" => "bad_request",
        "too_many_events" | "status_too_large" => "body_too_large",
        "upgrade_required" => "bad_handshake",
        "token_expired" => "unauthorized",
        other => other,
    };
    REJECT_REASONS
        .iter()
        .position(|r| *r == code)
        .unwrap_or(REJECT_REASONS.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_codes_map_to_bounded_reasons() {
        assert_eq!(REJECT_REASONS[reject_reason("bad_json")], "bad_request");
        assert_eq!(REJECT_REASONS[reject_reason("forbidden")], "forbidden");
        assert_eq!(REJECT_REASONS[reject_reason("something-new")], "other");
    }
}
