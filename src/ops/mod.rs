//! What operators see: bounded metric labels, per-shard counters summed at
//! scrape time, latency histograms, and their Prometheus and hgrm renderings.

pub mod labels;
pub mod latency;
pub mod metrics;
pub mod refusal_log;
pub mod stats;
