//! The final report: a latency table on stdout and every figure as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::WorkerStats;

/// Every figure of a run.
#[derive(Serialize)]
pub struct Report {
    pub command: String,
    pub scenario: String,
    pub conns: usize,
    pub connected: usize,
    pub events: u64,
    pub payload_bytes: usize,
    /// Publish requests the server accepted (2xx).
    pub published: u64,
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub connect_errors: u64,
    pub unexpected_closes: u64,
    pub publish_errors: Option<String>,
    /// Deliveries per second between the first scheduled send and the last receive.
    pub deliveries_per_sec: f64,
    pub latency_us: Percentiles,
    /// Per event: time until its last recipient got it.
    pub event_completion_us: Percentiles,
    /// Server CPU time (user + system) per delivery, when the server's pid is known.
    pub server_cpu_us_per_delivery: Option<f64>,
    pub server_rss_kib: Option<u64>,
    /// Shorthand for `latency_us.p99`.
    pub p99: f64,
}

/// Latency percentiles in microseconds.
#[derive(Serialize, Default)]
pub struct Percentiles {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            p99_99: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        }
    }
}

/// Per-event completion times as a histogram (ns since each event's send).
pub fn completion(stats: &WorkerStats, start_ns: u64, rate: Option<f64>) -> hdrhistogram::Histogram<u64> {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, crate::stats::MAX_LATENCY_NS, 3)
        .expect("valid histogram bounds");
    for (seq, &last) in stats.last_receive.iter().enumerate() {
        if last == 0 {
            continue;
        }
        let sent = start_ns + rate.map_or(0, |r| (seq as f64 / r * 1e9) as u64);
        let _ = h.record(last.saturating_sub(sent).clamp(1, crate::stats::MAX_LATENCY_NS));
    }
    h
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {}  conns {}/{}  events {}  payload {} B",
            self.scenario, self.connected, self.conns, self.events, self.payload_bytes
        );
        let _ = writeln!(
            out,
            "published {}/{}  deliveries {}/{}  lost {}  duplicates {}  connect errors {}  unexpected closes {}",
            self.published,
            self.events,
            self.deliveries,
            self.expected_deliveries,
            self.lost,
            self.duplicates,
            self.connect_errors,
            self.unexpected_closes
        );
        let _ = writeln!(out, "deliveries/s {:.0}", self.deliveries_per_sec);
        if let Some(cpu) = self.server_cpu_us_per_delivery {
            let _ = writeln!(out, "server CPU per delivery {cpu:.3} µs");
        }
        let _ = writeln!(
            out,
            "{:<24}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency (µs)", "min", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (name, p) in [
            ("send → receive", &self.latency_us),
            ("event → last recipient", &self.event_completion_us),
        ] {
            let _ = writeln!(
                out,
                "{name:<24}{:>10.0}{:>10.0}{:>10.0}{:>10.0}{:>10.0}{:>10.0}{:>10.0}",
                p.min, p.p50, p.p90, p.p99, p.p99_9, p.p99_99, p.max
            );
        }
        if let Some(e) = &self.publish_errors {
            let _ = writeln!(out, "publish error: {e}");
        }
        out
    }
}
