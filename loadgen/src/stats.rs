//! Per-worker latency histograms and delivery accounting, merged at the end.

use hdrhistogram::Histogram;

/// Highest latency recorded, ns (60 s); larger values are clamped.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// What one worker saw.
#[derive(Clone)]
pub struct WorkerStats {
    /// Send (scheduled) → receive latency of every delivery, ns.
    pub latency: Histogram<u64>,
    pub received: u64,
    /// Events a connection skipped (sequence gaps).
    pub gaps: u64,
    /// Events a connection received twice or out of order.
    pub duplicates: u64,
    pub connect_errors: u64,
    pub unexpected_closes: u64,
    /// Per event: the latest receive time (ns) over this worker's connections.
    pub last_receive: Vec<u64>,
    /// Earliest and latest receive of any delivery, ns.
    pub first_ns: u64,
    pub last_ns: u64,
}

impl WorkerStats {
    pub fn new(events: usize) -> WorkerStats {
        WorkerStats {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds"),
            received: 0,
            gaps: 0,
            duplicates: 0,
            connect_errors: 0,
            unexpected_closes: 0,
            last_receive: vec![0; events],
            first_ns: u64::MAX,
            last_ns: 0,
        }
    }

    /// Records one delivery of event `seq` sent at `sent_ns`, received at `now_ns`.
    pub fn record(&mut self, seq: u64, sent_ns: u64, now_ns: u64) {
        self.received += 1;
        let _ = self
            .latency
            .record(now_ns.saturating_sub(sent_ns).clamp(1, MAX_LATENCY_NS));
        if let Some(last) = self.last_receive.get_mut(seq as usize) {
            *last = (*last).max(now_ns);
        }
        self.first_ns = self.first_ns.min(now_ns);
        self.last_ns = self.last_ns.max(now_ns);
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &WorkerStats) {
        let _ = self.latency.add(&other.latency);
        self.received += other.received;
        self.gaps += other.gaps;
        self.duplicates += other.duplicates;
        self.connect_errors += other.connect_errors;
        self.unexpected_closes += other.unexpected_closes;
        for (a, b) in self.last_receive.iter_mut().zip(&other.last_receive) {
            *a = (*a).max(*b);
        }
        self.first_ns = self.first_ns.min(other.first_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
    }
}

/// Sequence tracking for one connection: counts gaps and duplicates.
#[derive(Default, Clone, Copy)]
pub struct SeqTracker {
    next: u64,
}

impl SeqTracker {
    /// Notes `seq`; returns (gaps, duplicates) it reveals.
    pub fn see(&mut self, seq: u64) -> (u64, u64) {
        if seq < self.next {
            (0, 1)
        } else {
            let gaps = seq - self.next;
            self.next = seq + 1;
            (gaps, 0)
        }
    }

    /// Events not yet seen out of `expected`.
    pub fn missing(&self, expected: u64) -> u64 {
        expected.saturating_sub(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_keep_every_value() {
        let mut a = WorkerStats::new(2);
        let mut b = WorkerStats::new(2);
        a.record(0, 0, 1_000);
        b.record(0, 0, 3_000);
        b.record(1, 0, 5_000);
        a.merge(&b);
        assert_eq!(a.latency.len(), 3);
        assert_eq!(a.received, 3);
        assert_eq!(a.last_receive, vec![3_000, 5_000]);
        assert!(a.latency.max() >= 5_000 && a.latency.min() <= 1_000);
    }

    #[test]
    fn gaps_and_duplicates_are_detected() {
        let mut t = SeqTracker::default();
        assert_eq!(t.see(0), (0, 0));
        assert_eq!(t.see(3), (2, 0));
        assert_eq!(t.see(2), (0, 1));
        assert_eq!(t.see(4), (0, 0));
        assert_eq!(t.missing(10), 5);
    }
}
