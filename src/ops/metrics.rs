//! Metrics: names, the per-shard latency histograms, and the Prometheus
//! text and hgrm renderings. Counters live in `stats::ShardCounters`
//! (written by their shard only, summed here at scrape time); histograms
//! are recorded once per dispatch round or handshake, never per delivery.

use std::fmt::Write as _;
use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::ops::labels::{DROP_REASONS, REJECT_REASONS};
use crate::ops::latency::Latencies;
use crate::ops::stats::{Board, ShardCounters};
use crate::proto::close::CloseReason;

pub const CONNECTIONS: &str = "shardcast_connections";
pub const EVENTS: &str = "shardcast_events_total";
pub const DELIVERIES: &str = "shardcast_deliveries_total";
pub const SLOW_CONSUMERS: &str = "shardcast_slow_consumer_disconnects_total";
pub const REJECTED: &str = "shardcast_requests_rejected_total";
pub const OPENED: &str = "shardcast_connections_opened_total";
pub const CLOSED: &str = "shardcast_connections_closed_total";
pub const DROPPED: &str = "shardcast_dropped_frames_total";
pub const QUEUED: &str = "shardcast_queue_backlog_bytes";
pub const DEVICES_FORGOTTEN: &str = "shardcast_devices_forgotten_total";
pub const RATE_LIMITED: &str = "shardcast_client_publishes_rate_limited_total";
pub const DISPATCH_YIELDS: &str = "shardcast_dispatch_yields_total";
pub const JOINS_DEFERRED: &str = "shardcast_joins_deferred_total";
pub const COMPRESSED_FRAMES: &str = "shardcast_compressed_frames_total";
pub const DEFLATE_IN: &str = "shardcast_compression_bytes_in_total";
pub const DEFLATE_OUT: &str = "shardcast_compression_bytes_out_total";
pub const SOCKETS: &str = "shardcast_open_sockets";
pub const HISTORY_BYTES: &str = "shardcast_history_bytes";
pub const HISTORY_STREAMS: &str = "shardcast_history_streams";
pub const HISTORY_EVICTED: &str = "shardcast_history_evicted_total";
pub const FANOUT: &str = "shardcast_fanout_latency_seconds";
pub const HANDSHAKE: &str = "shardcast_handshake_duration_seconds";
pub const TLS_MODE: &str = "shardcast_tls_mode";
pub const TLS_RELOADS: &str = "shardcast_tls_reloads_total";
pub const TLS_NOT_AFTER: &str = "shardcast_tls_certificate_not_after_seconds";

/// Upper bounds (seconds) of the `_bucket` series.
const BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The Prometheus text exposition of every metric.
pub fn prometheus(board: &Board) -> String {
    let mut out = String::new();
    let shards = board.shard_count();
    header(&mut out, CONNECTIONS, "gauge", "Open WebSocket connections.");
    for s in 0..shards {
        let c = board.shard(s);
        let _ = writeln!(
            out,
            "{CONNECTIONS}{{shard=\"{s}\",client_type=\"any\"}} {}",
            c.connections()
        );
        for (i, name) in board.client_types().iter().enumerate() {
            let _ = writeln!(
                out,
                "{CONNECTIONS}{{shard=\"{s}\",client_type=\"{name}\"}} {}",
                c.of_type(i)
            );
        }
    }
    let per_shard = |out: &mut String, name, kind, help, value: &dyn Fn(&ShardCounters) -> u64| {
        header(out, name, kind, help);
        for s in 0..shards {
            let _ = writeln!(out, "{name}{{shard=\"{s}\"}} {}", value(board.shard(s)));
        }
    };
    let by_reason =
        |out: &mut String, name, help, reasons: &[&str], value: &dyn Fn(&ShardCounters, usize) -> u64| {
            header(out, name, "counter", help);
            for s in 0..shards {
                for (i, reason) in reasons.iter().enumerate() {
                    let n = value(board.shard(s), i);
                    let _ = writeln!(out, "{name}{{shard=\"{s}\",reason=\"{reason}\"}} {n}");
                }
            }
        };
    per_shard(
        &mut out,
        EVENTS,
        "counter",
        "Published events received by the shard's dispatcher.",
        &|c| c.delivery_counts().0,
    );
    per_shard(
        &mut out,
        DELIVERIES,
        "counter",
        "Frames handed to local connections (written or queued).",
        &|c| c.delivery_counts().1,
    );
    per_shard(
        &mut out,
        SLOW_CONSUMERS,
        "counter",
        "Connections closed with 1008 slow consumer.",
        &|c| c.delivery_counts().2,
    );
    per_shard(
        &mut out,
        OPENED,
        "counter",
        "WebSocket connections opened.",
        &ShardCounters::opened_total,
    );
    by_reason(
        &mut out,
        CLOSED,
        "WebSocket connections closed, by reason.",
        &CloseReason::ALL.map(CloseReason::label),
        &ShardCounters::closed_by,
    );
    by_reason(
        &mut out,
        DROPPED,
        "Published frames not delivered, by reason.",
        DROP_REASONS,
        &ShardCounters::dropped,
    );
    per_shard(
        &mut out,
        QUEUED,
        "gauge",
        "Bytes still to be written, summed over connections as of the shard's last sweep (every 500 ms); \
         a broadcast frame queued for N connections counts N times but is held in memory once.",
        &ShardCounters::queued_bytes,
    );
    per_shard(
        &mut out,
        DEVICES_FORGOTTEN,
        "counter",
        "Devices whose last status was forgotten to stay within max_devices.",
        &ShardCounters::devices_forgotten_total,
    );
    per_shard(
        &mut out,
        RATE_LIMITED,
        "counter",
        "Client publishes (room messages, device statuses) refused by the per-connection rate limit.",
        &ShardCounters::rate_limited_total,
    );
    per_shard(
        &mut out,
        DISPATCH_YIELDS,
        "counter",
        "Times the dispatcher gave its core to the shard's other tasks part-way through a fan-out.",
        &ShardCounters::dispatch_yields_total,
    );
    per_shard(
        &mut out,
        JOINS_DEFERRED,
        "counter",
        "Subscriptions (new connections, rooms) that waited for a fan-out in progress to finish.",
        &ShardCounters::joins_deferred_total,
    );
    per_shard(
        &mut out,
        COMPRESSED_FRAMES,
        "counter",
        "Frames handed to connections compressed (permessage-deflate); the rest of deliveries went plain.",
        &ShardCounters::compressed_frames_total,
    );
    per_shard(
        &mut out,
        DEFLATE_IN,
        "counter",
        "Payload bytes of the events this shard compressed, before compression (once per event).",
        &ShardCounters::deflate_in_total,
    );
    per_shard(
        &mut out,
        DEFLATE_OUT,
        "counter",
        "The same events' payload bytes after compression.",
        &ShardCounters::deflate_out_total,
    );
    header(
        &mut out,
        SOCKETS,
        "gauge",
        "Accepted sockets (HTTP and WebSocket) on the public port.",
    );
    let _ = writeln!(out, "{SOCKETS} {}", board.open_sockets());
    let [bytes, streams, evicted] = board.history();
    for (name, kind, help, value) in [
        (
            HISTORY_BYTES,
            "gauge",
            "Bytes the topic histories hold (frames and bookkeeping), as of the last sweep.",
            bytes,
        ),
        (HISTORY_STREAMS, "gauge", "Topics with a history stream.", streams),
        (
            HISTORY_EVICTED,
            "counter",
            "Topic histories dropped to stay within history_max_bytes (their epoch changes).",
            evicted,
        ),
    ] {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    if let Some(mode) = board.tls.mode.get() {
        header(
            &mut out,
            TLS_MODE,
            "gauge",
            "How each shard makes TLS records (userspace: rustls; kernel: kTLS).",
        );
        for s in 0..shards {
            let _ = writeln!(out, "{TLS_MODE}{{shard=\"{s}\",mode=\"{mode}\"}} 1");
        }
        header(
            &mut out,
            TLS_RELOADS,
            "counter",
            "Certificate reloads (SIGHUP), by result.",
        );
        let (ok, failed) = (&board.tls.reloads, &board.tls.reload_failures);
        let _ = writeln!(
            out,
            "{TLS_RELOADS}{{result=\"ok\"}} {}",
            ok.load(std::sync::atomic::Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "{TLS_RELOADS}{{result=\"failed\"}} {}",
            failed.load(std::sync::atomic::Ordering::Relaxed)
        );
        header(
            &mut out,
            TLS_NOT_AFTER,
            "gauge",
            "When the certificate in use expires (Unix seconds).",
        );
        let not_after = board.tls.not_after.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "{TLS_NOT_AFTER} {not_after}");
    }
    by_reason(
        &mut out,
        REJECTED,
        "Requests refused before or at the upgrade, by reason.",
        REJECT_REASONS,
        &ShardCounters::rejected,
    );
    histogram(
        &mut out,
        board,
        FANOUT,
        "Publish accepted to frame written to the shard's last local subscriber.",
        |l| &l.fanout,
    );
    histogram(
        &mut out,
        board,
        HANDSHAKE,
        "Accepted socket to 101 written.",
        |l| &l.handshake,
    );
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(
    out: &mut String,
    board: &Board,
    name: &str,
    help: &str,
    pick: fn(&Latencies) -> &Mutex<Histogram<u64>>,
) {
    header(out, name, "histogram", help);
    for s in 0..board.shard_count() {
        let Ok(h) = pick(board.latencies(s)).lock().map(|h| h.clone()) else {
            continue;
        };
        for le in BUCKETS {
            let micros = (le * 1e6) as u64;
            let count = if h.is_empty() {
                0
            } else {
                h.count_between(0, micros)
            };
            let _ = writeln!(out, "{name}_bucket{{shard=\"{s}\",le=\"{le}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{shard=\"{s}\",le=\"+Inf\"}} {}", h.len());
        let sum = h.mean() * h.len() as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{shard=\"{s}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{shard=\"{s}\"}} {}", h.len());
    }
}

/// The fan-out latency of all shards merged, as an HdrHistogram percentile
/// distribution (hgrm text, values in microseconds).
pub fn latency_hgrm(board: &Board) -> String {
    let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    for s in 0..board.shard_count() {
        if let Ok(h) = board.latencies(s).fanout.lock() {
            let _ = merged.add(&*h);
        }
    }
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    if !merged.is_empty() {
        let mut total = 0;
        for v in merged.iter_quantiles(1) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 { 1.0 / (1.0 - q) } else { f64::INFINITY };
            let _ = writeln!(
                out,
                "{:12.3} {:14.12} {:10} {:14.2}",
                v.value_iterated_to() as f64,
                q,
                total,
                inv
            );
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n#[Values are in microseconds]",
        merged.mean(),
        merged.stdev(),
        merged.max() as f64,
        merged.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::latency::record;

    #[test]
    fn prometheus_text_has_types_and_buckets() {
        let board = Board::new(1, vec!["user".into()]);
        record(&board.latencies(0).fanout, 700);
        let text = prometheus(&board);
        assert!(text.contains("# TYPE shardcast_fanout_latency_seconds histogram"));
        assert!(
            text.contains(r#"shardcast_fanout_latency_seconds_bucket{shard="0",le="0.0005"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"shardcast_fanout_latency_seconds_bucket{shard="0",le="0.001"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"shardcast_fanout_latency_seconds_count{shard="0"} 1"#));
        assert!(latency_hgrm(&board).contains("Percentile"));
    }
}
