//! Rate-limited logging of refusals: an operator chasing "my device cannot
//! connect" sees a line per reason at `info`, at most one per interval with
//! how many were refused since, never one per request (and never a token:
//! refusal messages describe the request's shape only).

use std::time::{Duration, Instant};

use crate::ops::labels::REJECT_REASONS;

/// At most one line per reason per this long.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Per refusal reason: when its last line went out, and refusals since.
pub struct RefusalLog {
    reasons: Vec<(Option<Instant>, u64)>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            reasons: vec![(None, 0); REJECT_REASONS.len()],
        }
    }
}

impl RefusalLog {
    /// Counts one refusal for reason index `reason` at `now`; returns how
    /// many refusals the line due now stands for, if one is due.
    pub fn note(&mut self, reason: usize, now: Instant) -> Option<u64> {
        let (last, count) = self.reasons.get_mut(reason)?;
        *count += 1;
        if last.is_some_and(|t| now.duration_since(t) < INTERVAL) {
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_carries_the_count() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.note(0, t0), Some(1), "the first is logged at once");
        for i in 1..=5 {
            assert_eq!(log.note(0, t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(log.note(1, t0), Some(1), "reasons are independent");
        assert_eq!(log.note(0, t0 + INTERVAL), Some(6), "5 suppressed + this one");
    }
}
