//! Per-worker latency histograms and delivery accounting: recorded by one
//! worker process, sent to the coordinator as JSON, merged there.

use std::collections::BTreeMap;

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded, ns (60 s); larger values are clamped.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// An empty latency histogram (1 ns .. 60 s, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// What one worker saw.
#[derive(Clone, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Send (scheduled) → receive latency of every measured delivery, ns.
    #[serde(with = "hex_histogram")]
    pub latency: Histogram<u64>,
    /// Socket creation → `101 Switching Protocols`, ns, per connection.
    #[serde(with = "hex_histogram")]
    pub handshake: Histogram<u64>,
    pub received: u64,
    /// Deliveries the connected connections should have received.
    pub expected: u64,
    /// Events a connection skipped (sequence gaps, or never received).
    pub gaps: u64,
    /// Events a connection received twice or out of order.
    pub duplicates: u64,
    pub connected: u64,
    pub connect_errors: u64,
    pub unexpected_closes: u64,
    /// Why connections were refused or failed, with counts.
    pub failures: BTreeMap<String, u64>,
    /// Why open connections ended early (close code and reason), with counts.
    pub closes: BTreeMap<String, u64>,
    /// Per event: the latest receive time (ns) over this worker's connections.
    pub last_receive: Vec<u64>,
    /// Earliest and latest receive of any delivery, ns.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Earliest and latest completed handshake, ns.
    pub first_connect_ns: u64,
    pub last_connect_ns: u64,
    /// Offsets a connection skipped on a topic (loss, even across reconnects).
    pub offset_gaps: u64,
    /// Offsets a connection saw twice.
    pub offset_duplicates: u64,
    /// reconnect-storm: connections that came back, events recovery
    /// replayed to them, topics it could not recover (by reason), and
    /// reconnect start → last missed event received, ns.
    pub reconnected: u64,
    pub recovered: u64,
    pub not_recovered: BTreeMap<String, u64>,
    #[serde(with = "hex_histogram")]
    pub caught_up: Histogram<u64>,
    /// Text frames received, their bytes as they arrived (header and
    /// payload), and how many came compressed (permessage-deflate).
    #[serde(default)]
    pub text_frames: u64,
    #[serde(default)]
    pub wire_bytes: u64,
    #[serde(default)]
    pub compressed_frames: u64,
    /// `--reconnect`: why connections dropped (each came back or the run
    /// ended), failed reconnect attempts, and drop → connected again, ns.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    #[serde(default)]
    pub retries: u64,
    #[serde(with = "hex_histogram", default = "histogram")]
    pub downtime: Histogram<u64>,
    /// crash-restart: events published after the restart that a
    /// connection never received.
    #[serde(default)]
    pub late_gaps: u64,
}

impl WorkerStats {
    pub fn new(events: usize) -> WorkerStats {
        WorkerStats {
            latency: histogram(),
            handshake: histogram(),
            received: 0,
            expected: 0,
            gaps: 0,
            duplicates: 0,
            connected: 0,
            connect_errors: 0,
            unexpected_closes: 0,
            failures: BTreeMap::new(),
            closes: BTreeMap::new(),
            last_receive: vec![0; events],
            first_ns: u64::MAX,
            last_ns: 0,
            first_connect_ns: u64::MAX,
            last_connect_ns: 0,
            offset_gaps: 0,
            offset_duplicates: 0,
            reconnected: 0,
            recovered: 0,
            not_recovered: BTreeMap::new(),
            caught_up: histogram(),
            text_frames: 0,
            wire_bytes: 0,
            compressed_frames: 0,
            drops: BTreeMap::new(),
            retries: 0,
            downtime: histogram(),
            late_gaps: 0,
        }
    }

    /// Records one delivery of event `seq` sent at `sent_ns`, received at
    /// `now_ns`; warm-up events count as delivered but stay out of the
    /// latency histogram.
    pub fn record(&mut self, seq: u64, sent_ns: u64, now_ns: u64, warmup: bool) {
        self.received += 1;
        if !warmup {
            let _ = self
                .latency
                .record(now_ns.saturating_sub(sent_ns).clamp(1, MAX_LATENCY_NS));
        }
        if let Some(last) = self.last_receive.get_mut(seq as usize) {
            *last = (*last).max(now_ns);
        }
        self.first_ns = self.first_ns.min(now_ns);
        self.last_ns = self.last_ns.max(now_ns);
    }

    /// Records a completed handshake that started at `start_ns`.
    pub fn connected(&mut self, start_ns: u64, now_ns: u64) {
        self.connected += 1;
        let _ = self
            .handshake
            .record(now_ns.saturating_sub(start_ns).clamp(1, MAX_LATENCY_NS));
        self.first_connect_ns = self.first_connect_ns.min(now_ns);
        self.last_connect_ns = self.last_connect_ns.max(now_ns);
    }

    /// Records a connection that never got connected, and why.
    pub fn failed(&mut self, reason: String) {
        self.connect_errors += 1;
        *self.failures.entry(reason).or_default() += 1;
    }

    /// Records an open connection that ended before the run did, and why.
    pub fn closed_early(&mut self, reason: String) {
        self.unexpected_closes += 1;
        *self.closes.entry(reason).or_default() += 1;
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &WorkerStats) {
        let _ = self.latency.add(&other.latency);
        let _ = self.handshake.add(&other.handshake);
        self.received += other.received;
        self.expected += other.expected;
        self.gaps += other.gaps;
        self.duplicates += other.duplicates;
        self.connected += other.connected;
        self.connect_errors += other.connect_errors;
        self.unexpected_closes += other.unexpected_closes;
        for (k, v) in &other.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.closes {
            *self.closes.entry(k.clone()).or_default() += v;
        }
        if self.last_receive.len() < other.last_receive.len() {
            self.last_receive.resize(other.last_receive.len(), 0);
        }
        for (a, b) in self.last_receive.iter_mut().zip(&other.last_receive) {
            *a = (*a).max(*b);
        }
        self.first_ns = self.first_ns.min(other.first_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
        self.first_connect_ns = self.first_connect_ns.min(other.first_connect_ns);
        self.last_connect_ns = self.last_connect_ns.max(other.last_connect_ns);
        self.offset_gaps += other.offset_gaps;
        self.offset_duplicates += other.offset_duplicates;
        self.reconnected += other.reconnected;
        self.text_frames += other.text_frames;
        self.wire_bytes += other.wire_bytes;
        self.compressed_frames += other.compressed_frames;
        self.recovered += other.recovered;
        for (k, v) in &other.not_recovered {
            *self.not_recovered.entry(k.clone()).or_default() += v;
        }
        let _ = self.caught_up.add(&other.caught_up);
        for (k, v) in &other.drops {
            *self.drops.entry(k.clone()).or_default() += v;
        }
        self.retries += other.retries;
        let _ = self.downtime.add(&other.downtime);
        self.late_gaps += other.late_gaps;
    }
}

/// Sequence tracking for one connection, per event source (a device, or
/// the one publisher): counts gaps and duplicates. Sources are independent
/// because ordering only holds per sender.
#[derive(Default, Clone)]
pub struct SeqTracker {
    /// Next expected per-source sequence number, by source.
    next: Vec<u64>,
    seen: u64,
}

impl SeqTracker {
    /// Notes event `seq` of `source`; returns (gaps, duplicates) it reveals.
    pub fn see(&mut self, source: usize, seq: u64) -> (u64, u64) {
        if self.next.len() <= source {
            self.next.resize(source + 1, 0);
        }
        let next = &mut self.next[source];
        if seq < *next {
            (0, 1)
        } else {
            let gaps = seq - *next;
            *next = seq + 1;
            self.seen += 1;
            (gaps, 0)
        }
    }

    /// Distinct in-order events seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

/// Histograms travel between processes as hex of HdrHistogram's V2 encoding.
mod hex_histogram {
    use super::*;

    pub fn serialize<S: serde::Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut bytes)
            .map_err(|e| serde::ser::Error::custom(format!("{e:?}")))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let hex = String::deserialize(d)?;
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        let bytes = bytes.ok_or_else(|| serde::de::Error::custom("histogram: bad hex"))?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| serde::de::Error::custom(format!("histogram: {e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_keep_every_value() {
        let mut a = WorkerStats::new(2);
        let mut b = WorkerStats::new(2);
        a.record(0, 0, 1_000, false);
        b.record(0, 0, 3_000, false);
        b.record(1, 0, 5_000, false);
        a.merge(&b);
        assert_eq!(a.latency.len(), 3);
        assert_eq!(a.received, 3);
        assert_eq!(a.last_receive, vec![3_000, 5_000]);
        assert!(a.latency.max() >= 5_000 && a.latency.min() <= 1_000);
    }

    #[test]
    fn warmup_deliveries_count_but_are_not_timed() {
        let mut a = WorkerStats::new(2);
        a.record(0, 0, 9_000_000, true);
        a.record(1, 0, 1_000, false);
        assert_eq!(a.received, 2);
        assert_eq!(a.latency.len(), 1);
        assert!(a.latency.max() < 9_000_000);
    }

    #[test]
    fn stats_survive_the_trip_between_processes() {
        let mut a = WorkerStats::new(3);
        a.record(2, 100, 7_100, false);
        a.connected(0, 2_000);
        a.failed("HTTP 503".into());
        a.closed_early("close 1008 slow consumer".into());
        let json = simd_json::to_string(&a).unwrap();
        let mut bytes = json.into_bytes();
        let b: WorkerStats = simd_json::serde::from_slice(&mut bytes).unwrap();
        assert_eq!(b.latency.len(), 1);
        assert_eq!(b.latency.value_at_quantile(1.0), a.latency.value_at_quantile(1.0));
        assert_eq!(b.handshake.len(), 1);
        assert_eq!(b.last_receive, vec![0, 0, 7_100]);
        assert_eq!(b.failures.get("HTTP 503"), Some(&1));
        assert_eq!(b.closes.len(), 1);
        let mut merged = WorkerStats::new(3);
        merged.merge(&b);
        merged.merge(&b);
        assert_eq!(merged.failures.get("HTTP 503"), Some(&2));
        assert_eq!(merged.latency.len(), 2);
    }

    #[test]
    fn gaps_and_duplicates_are_detected_per_source() {
        let mut t = SeqTracker::default();
        assert_eq!(t.see(0, 0), (0, 0));
        assert_eq!(t.see(0, 3), (2, 0));
        assert_eq!(t.see(0, 2), (0, 1));
        assert_eq!(t.see(0, 4), (0, 0));
        // Another source has its own numbering.
        assert_eq!(t.see(5, 0), (0, 0));
        assert_eq!(t.see(5, 0), (0, 1));
        assert_eq!(t.see(5, 2), (1, 0));
        assert_eq!(t.seen(), 5);
    }
}
