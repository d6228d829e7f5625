//! A per-connection message budget: on average `rate` messages a second,
//! at most `burst` at once (GCRA: one timestamp, no timer, no refill task).
//! Used for client publishes, so that one client cannot flood a room's
//! members into slow-consumer disconnects.

use std::time::{Duration, Instant};

/// The theoretical arrival time of the next message within budget.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateBucket {
    tat: Option<Instant>,
}

impl RateBucket {
    /// Takes one message from the budget at `now`; false (and nothing
    /// taken) when the client is over it.
    pub fn allow(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        let interval = Duration::from_secs(1) / rate.max(1);
        let tat = self.tat.map_or(now, |t| t.max(now));
        let next = tat + interval;
        if next.duration_since(now) > interval * burst.max(1) {
            return false;
        }
        self.tat = Some(next);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut b = RateBucket::default();
        let ok = (0..5).filter(|_| b.allow(t0, 10, 3)).count();
        assert_eq!(ok, 3, "the burst");
        // One interval later exactly one more fits.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.allow(t1, 10, 3));
        assert!(!b.allow(t1, 10, 3));
        // A quiet second refills the whole burst, not more.
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| b.allow(t2, 10, 3)).count(), 3);
    }

    #[test]
    fn steady_sending_at_the_rate_is_never_refused() {
        let t0 = Instant::now();
        let mut b = RateBucket::default();
        for i in 0..1000 {
            assert!(b.allow(t0 + Duration::from_millis(20 * i), 50, 1), "message {i}");
        }
    }
}
