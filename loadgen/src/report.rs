//! The final report: a table on stdout, every figure as JSON, the latency
//! distribution as HdrHistogram text (.hgrm) and as an SVG plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::{self, WorkerStats};

/// Where and when a run was made, for reading its figures later.
#[derive(Serialize, Default)]
pub struct RunInfo {
    /// Start of the run, RFC 3339 UTC.
    pub timestamp: String,
    pub host: String,
    /// `uname -r`.
    pub kernel: String,
    /// CPUs this process may use.
    pub cores: usize,
    /// The spawned server's shard count (`None`: not spawned, or its default).
    pub server_shards: Option<usize>,
    /// Extra arguments the spawned server got (`--server-arg`).
    pub server_args: Vec<String>,
}

impl RunInfo {
    /// Facts of this machine now.
    pub fn here(server_shards: Option<usize>, server_args: &[String]) -> RunInfo {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        RunInfo {
            timestamp: shardcast::time::now_rfc3339(),
            host: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            server_shards,
            server_args: server_args.to_vec(),
        }
    }
}

/// Every figure of a run.
#[derive(Serialize)]
pub struct Report {
    pub command: String,
    pub run: RunInfo,
    pub scenario: String,
    pub conns: usize,
    pub connected: usize,
    pub devices: Option<u64>,
    pub events: u64,
    /// Events excluded from the latency figures (still checked for loss).
    pub warmup_events: u64,
    pub payload_bytes: usize,
    /// Events the server accepted (publish 2xx, or device statuses sent).
    pub published: u64,
    pub expected_deliveries: u64,
    pub deliveries: u64,
    /// Deliveries a connected connection never received.
    pub lost: u64,
    pub duplicates: u64,
    /// Topic offsets a connection skipped (loss), and saw twice.
    pub offset_gaps: u64,
    pub offset_duplicates: u64,
    /// reconnect-storm figures.
    pub reconnect: Option<Reconnect>,
    /// `--reconnect` (and crash-restart): how connections came back.
    pub resilience: Option<Resilience>,
    /// crash-restart figures.
    pub crash: Option<Crash>,
    /// `GET /health` during a connect storm or a restart.
    pub health: Option<Health>,
    /// `--sigterm-after-ms`: the drain.
    pub drain: Option<Drain>,
    /// `--slowloris`: the slow peers beside the clients.
    pub slowloris: Option<SlowPeers>,
    /// Connections that never got connected, and why (count by reason).
    pub connect_errors: u64,
    pub refusals: BTreeMap<String, u64>,
    /// Connections the server ended before the run did, and why.
    pub unexpected_closes: u64,
    pub closes: BTreeMap<String, u64>,
    pub publish_errors: Option<String>,
    /// `pipelined` or `sequential` (product-approved), with how many
    /// concurrent publishers.
    pub publisher: Option<String>,
    /// Events per second the publisher was asked to send (`None`: back to
    /// back, a throughput run).
    pub offered_events_per_sec: Option<f64>,
    /// The offered load in deliveries per second (offered events/s ×
    /// connections that receive each event); `None` for back-to-back runs.
    pub offered_deliveries_per_sec: Option<f64>,
    /// Deliveries per second between the first scheduled send and the last
    /// receive: the achieved maximum in a back-to-back run, the offered
    /// load (if it kept up) in a paced one.
    pub deliveries_per_sec: f64,
    /// Scheduled send → receive, every delivery after the warm-up.
    pub latency_us: Percentiles,
    /// Per event: time until its last recipient got it (one sample per event).
    pub event_completion_us: Percentiles,
    /// Socket creation → `101 Switching Protocols`.
    pub handshake_us: Percentiles,
    /// Completed handshakes per second, first to last.
    pub handshakes_per_sec: f64,
    /// Server CPU time (user + system) per delivery, when the server's pid is known.
    pub server_cpu_us_per_delivery: Option<f64>,
    pub server_rss_kib: Option<u64>,
    /// permessage-deflate offered (`--compression`).
    pub compression: bool,
    /// Bytes of each text frame as it arrived (header and payload, before
    /// any inflating), averaged over every text frame received.
    pub wire_bytes_per_delivery: Option<f64>,
    /// Share of text frames that arrived compressed.
    pub compressed_share: Option<f64>,
}

/// What a reconnect storm measured.
#[derive(Serialize)]
pub struct Reconnect {
    /// Connections that came back.
    pub reconnected: u64,
    /// Events recovery replayed (the `missed` counts of `connected`).
    pub recovered_events: u64,
    /// Topics recovery could not serve, by reason.
    pub not_recovered: BTreeMap<String, u64>,
    /// Reconnect start → every missed event received, per connection.
    pub caught_up_us: Percentiles,
}

/// How `--reconnect` connections came back.
#[derive(Serialize)]
pub struct Resilience {
    /// Reconnections made, and why the connections had dropped.
    pub reconnects: u64,
    pub drops: BTreeMap<String, u64>,
    /// Attempts that failed and were retried after a backoff.
    pub failed_attempts: u64,
    /// Drop → connected again, per reconnection.
    pub away_us: Percentiles,
    /// Events recovery replayed from `since`, and topics it could not
    /// recover, by reason.
    pub recovered_events: u64,
    pub not_recovered: BTreeMap<String, u64>,
}

/// What crash-restart measured.
#[derive(Serialize)]
pub struct Crash {
    /// SIGKILL → the restarted server listening, ms.
    pub restart_ms: f64,
    /// SIGKILL → every client connected again, ms (`None`: not all came back).
    pub all_back_ms: Option<f64>,
    /// Deliveries of events accepted before the kill that never arrived
    /// (in flight when it died; the in-memory default cannot replay them).
    pub lost_at_crash: u64,
    /// Deliveries of events published after the restart that never
    /// arrived (the report's `lost`; must be 0).
    pub lost_after_restart: u64,
}

/// What a drain under load measured.
#[derive(Serialize)]
pub struct Drain {
    pub sigterm_after_ms: u64,
    /// SIGTERM → the server process gone, ms (`None`: it did not exit
    /// within --drain-secs and was killed).
    pub exit_ms: Option<f64>,
    pub exit_status: String,
    /// Exited by itself with status 0.
    pub clean_exit: bool,
    /// How the server stopped taking events (the first refusal or failure).
    pub refused: Option<String>,
    /// Connections that got close 1001 (going away).
    pub going_away: u64,
    /// Deliveries of acknowledged (202) events that never arrived (the
    /// report's `lost`; must be 0).
    pub lost_acknowledged: u64,
}

/// What the slow peers saw.
#[derive(Serialize)]
pub struct SlowPeers {
    /// Held open at once, and ms between two of their bytes.
    pub peers: usize,
    pub every_ms: u64,
    /// Opened over the run (the first ones and their replacements).
    pub opened: u64,
    pub connect_failures: u64,
    /// How the server ended them: its status (`408`) or what happened.
    pub cuts: BTreeMap<String, u64>,
    /// Connect → cut.
    pub cut_after_us: Percentiles,
    /// The longest a connection still open at the end had been open, ms.
    pub oldest_open_ms: f64,
}

/// The health checks' figures.
#[derive(Serialize)]
pub struct Health {
    pub probes: u64,
    /// Probes without an answer within 2 s, and answers other than 200
    /// (503 while a broker is not up yet, or while draining).
    pub failures: u64,
    pub not_ready: u64,
    /// Connect → status line of the answered probes.
    pub latency_us: Percentiles,
}

/// Latency percentiles in microseconds, over `samples` values.
#[derive(Serialize, Default, Clone, Copy)]
pub struct Percentiles {
    pub samples: u64,
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
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            samples: h.len(),
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

/// Per-event completion times after the warm-up, as a histogram (ns from
/// each event's scheduled send to its last recipient's receipt).
pub fn completion(stats: &WorkerStats, start_ns: u64, rate: Option<f64>, warmup: u64) -> Histogram<u64> {
    let mut h = stats::histogram();
    for (seq, &last) in stats.last_receive.iter().enumerate().skip(warmup as usize) {
        if last == 0 {
            continue;
        }
        let sent = start_ns + rate.map_or(0, |r| (seq as f64 / r * 1e9) as u64);
        let _ = h.record(last.saturating_sub(sent).clamp(1, stats::MAX_LATENCY_NS));
    }
    h
}

impl Percentiles {
    /// The percentiles `samples` can support (a p99 needs 100 samples,
    /// p99.9 a thousand, p99.99 ten thousand), as table cells.
    fn cells(&self) -> [String; 7] {
        let cell = |v: f64, need: u64| {
            if self.samples >= need {
                format!("{v:.0}")
            } else {
                "—".to_string()
            }
        };
        [
            cell(self.min, 1),
            cell(self.p50, 2),
            cell(self.p90, 10),
            cell(self.p99, 100),
            cell(self.p99_9, 1000),
            cell(self.p99_99, 10_000),
            cell(self.max, 1),
        ]
    }
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let devices = self.devices.map(|d| format!("  devices {d}")).unwrap_or_default();
        if self.scenario == "connect-storm" {
            let _ = writeln!(
                out,
                "scenario {}  conns {}/{}",
                self.scenario, self.connected, self.conns
            );
        } else {
            let offered = match self.offered_events_per_sec {
                Some(r) => format!("{r} events/s"),
                None => "back to back".to_string(),
            };
            let _ = writeln!(
                out,
                "scenario {}  conns {}/{}{devices}  events {} (warm-up {}) at {offered}  payload {} B",
                self.scenario,
                self.connected,
                self.conns,
                self.events,
                self.warmup_events,
                self.payload_bytes
            );
        }
        if self.scenario != "connect-storm" {
            let _ = writeln!(
                out,
                "published {}/{}  deliveries {}/{}  lost {}  duplicates {}  unexpected closes {}",
                self.published,
                self.events,
                self.deliveries,
                self.expected_deliveries,
                self.lost,
                self.duplicates,
                self.unexpected_closes
            );
            let _ = writeln!(
                out,
                "offsets: gaps {}  duplicates {}",
                self.offset_gaps, self.offset_duplicates
            );
            if let Some(r) = &self.reconnect {
                let _ = writeln!(
                    out,
                    "reconnected {}  recovered events {}",
                    r.reconnected, r.recovered_events
                );
                for (reason, n) in &r.not_recovered {
                    let _ = writeln!(out, "  not recovered {n}× {reason}");
                }
            }
            if let Some(r) = &self.resilience {
                let _ = writeln!(
                    out,
                    "came back {}×  failed attempts {}  recovered events {}",
                    r.reconnects, r.failed_attempts, r.recovered_events
                );
                for (reason, n) in &r.drops {
                    let _ = writeln!(out, "  dropped {n}× {reason}");
                }
                for (reason, n) in &r.not_recovered {
                    let _ = writeln!(out, "  topic not recovered {n}× {reason}");
                }
            }
            if let Some(c) = &self.crash {
                let back = c
                    .all_back_ms
                    .map_or("not all came back".to_string(), |ms| format!("{ms:.0} ms"));
                let _ = writeln!(
                    out,
                    "crash: listening again after {:.0} ms  every client back after {back}  lost at the crash {}  lost after the restart {}",
                    c.restart_ms, c.lost_at_crash, c.lost_after_restart
                );
            }
            match self.offered_deliveries_per_sec {
                Some(offered) => {
                    let _ = writeln!(
                        out,
                        "deliveries/s {:.0} (offered load {offered:.0}/s; a paced run, not a throughput figure)",
                        self.deliveries_per_sec
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "deliveries/s {:.0} (achieved, back to back)",
                        self.deliveries_per_sec
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "handshakes/s {:.0}  refused or failed {}",
            self.handshakes_per_sec, self.connect_errors
        );
        for (reason, n) in &self.refusals {
            let _ = writeln!(out, "  refused {n}× {reason}");
        }
        if let Some(h) = &self.health {
            let _ = writeln!(
                out,
                "health checks {}  unanswered {}  not 200 {}  p99 {:.1} ms  max {:.1} ms",
                h.probes,
                h.failures,
                h.not_ready,
                h.latency_us.p99 / 1e3,
                h.latency_us.max / 1e3
            );
        }
        for (reason, n) in &self.closes {
            let _ = writeln!(out, "  closed early {n}× {reason}");
        }
        if let Some(d) = &self.drain {
            let exit = d
                .exit_ms
                .map_or("did not exit in time (killed)".to_string(), |ms| {
                    format!("exited {ms:.0} ms after")
                });
            let _ = writeln!(
                out,
                "drain: SIGTERM {} ms into publishing, server {exit} ({})  close 1001 {}  acknowledged but lost {}",
                d.sigterm_after_ms, d.exit_status, d.going_away, d.lost_acknowledged
            );
            if let Some(r) = &d.refused {
                let _ = writeln!(out, "  the publisher stopped at: {r}");
            }
        }
        if let Some(s) = &self.slowloris {
            let _ = writeln!(
                out,
                "slowloris: {} held, one byte every {} ms; {} opened, {} failed to connect, oldest still open {:.0} ms",
                s.peers, s.every_ms, s.opened, s.connect_failures, s.oldest_open_ms
            );
            for (how, n) in &s.cuts {
                let _ = writeln!(out, "  cut {n}× {how}");
            }
        }
        if let Some(cpu) = self.server_cpu_us_per_delivery {
            let _ = writeln!(out, "server CPU per delivery {cpu:.3} µs");
        }
        if let Some(rss) = self.server_rss_kib {
            let _ = writeln!(out, "server RSS {rss} KiB");
        }
        if let (Some(bytes), Some(share)) = (self.wire_bytes_per_delivery, self.compressed_share) {
            let offered = if self.compression {
                "permessage-deflate offered"
            } else {
                "plain"
            };
            let _ = writeln!(
                out,
                "wire bytes per text frame {bytes:.1}  compressed {:.1}% ({offered})",
                share * 100.0
            );
        }
        let _ = writeln!(
            out,
            "{:<24}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency (µs)", "samples", "min", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        let mut rows = vec![("handshake", &self.handshake_us)];
        if let Some(r) = &self.reconnect {
            rows.push(("reconnect → caught up", &r.caught_up_us));
        }
        if let Some(r) = &self.resilience {
            rows.push(("dropped → back", &r.away_us));
        }
        if let Some(h) = &self.health {
            rows.push(("GET /health", &h.latency_us));
        }
        if let Some(s) = &self.slowloris {
            rows.push(("slowloris connect → cut", &s.cut_after_us));
        }
        if self.scenario != "connect-storm" {
            if self.event_completion_us.samples > 0 {
                rows.insert(0, ("event → last recipient", &self.event_completion_us));
            }
            rows.insert(0, ("send → receive", &self.latency_us));
        }
        for (name, p) in rows {
            let [min, p50, p90, p99, p999, p9999, max] = p.cells();
            let _ = writeln!(
                out,
                "{name:<24}{:>10}{min:>10}{p50:>10}{p90:>10}{p99:>10}{p999:>10}{p9999:>10}{max:>10}",
                p.samples
            );
        }
        if self.scenario != "connect-storm" {
            let _ = writeln!(out, "(— : too few samples for that percentile)");
        }
        if let Some(e) = &self.publish_errors {
            let _ = writeln!(out, "publish error: {e}");
        }
        out
    }
}

/// HdrHistogram's percentile distribution text (values in milliseconds),
/// the format HdrHistogram plotters read.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let ms = |ns: f64| ns / 1e6;
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    if !h.is_empty() {
        let mut total = 0;
        for v in h.iter_quantiles(1) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{:12.3} {:14.12} {:10} {:14.2}",
                    ms(v.value_iterated_to() as f64),
                    q,
                    total,
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(
                    out,
                    "{:12.3} {:14.12} {:10}",
                    ms(v.value_iterated_to() as f64),
                    q,
                    total
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n#[Values are in milliseconds]",
        ms(h.mean()),
        ms(h.stdev()),
        ms(h.max() as f64),
        h.len()
    );
    out
}

/// A latency-by-percentile plot: x is the percentile on HdrHistogram's
/// log scale (90%, 99%, 99.9%, … equally spaced), y the latency in ms.
pub fn svg(h: &Histogram<u64>, title: &str, subtitle: &str) -> String {
    let (w, ht, left, bottom, top, right) = (800.0, 480.0, 70.0, 50.0, 56.0, 48.0);
    let (pw, ph) = (w - left - right, ht - top - bottom);
    let nines = 5.0; // x axis: 0% .. 99.999%
    let x_of = |q: f64| {
        let n = if q >= 1.0 {
            nines
        } else {
            (-(1.0 - q).log10()).min(nines)
        };
        left + n / nines * pw
    };
    let max_ms = (h.max() as f64 / 1e6).max(0.001);
    let y_max = nice_ceiling(max_ms);
    let y_of = |ms: f64| top + ph - ms / y_max * ph;
    let mut points = String::new();
    if !h.is_empty() {
        for v in h.iter_quantiles(4) {
            let _ = write!(
                points,
                "{:.1},{:.1} ",
                x_of(v.quantile_iterated_to()),
                y_of(v.value_iterated_to() as f64 / 1e6)
            );
        }
    }
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{ht}" viewBox="0 0 {w} {ht}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{ht}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
<text x="{}" y="40" text-anchor="middle" font-size="11" fill="#555">{}</text>
"##,
        w / 2.0,
        escape(title),
        w / 2.0,
        escape(subtitle)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = left + i as f64 / nines * pw;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            top + ph,
            top + ph + 18.0
        );
    }
    for i in 0..=5 {
        let ms = y_max * i as f64 / 5.0;
        let y = y_of(ms);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            y + 4.0,
            trim_number(ms)
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>
<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency (ms)</text>
<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{}"/>
</svg>"##,
        left + pw / 2.0,
        ht - 10.0,
        top + ph / 2.0,
        top + ph / 2.0,
        points.trim_end()
    );
    out
}

/// 1, 2 or 5 times a power of ten, at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn trim_number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut h = stats::histogram();
        for i in 1..=1000u64 {
            h.record(i * 1_000_000).unwrap();
        }
        h
    }

    #[test]
    fn hgrm_has_cumulative_counts_and_the_plotters_header() {
        let text = hgrm(&sample());
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        let rows: Vec<&str> = text.lines().skip(2).take_while(|l| !l.starts_with('#')).collect();
        let counts: Vec<u64> = rows
            .iter()
            .map(|r| r.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "cumulative");
        assert_eq!(*counts.last().unwrap(), 1000);
        assert!(text.contains("Total count    =         1000"));
        assert!(text.contains("#[Max     =     1000.",), "{text}");
    }

    #[test]
    fn percentiles_need_enough_samples() {
        let mut h = stats::histogram();
        for i in 1..=150u64 {
            h.record(i * 1000).unwrap();
        }
        let cells = Percentiles::of(&h).cells();
        assert_ne!(cells[3], "—", "p99 from 150 samples");
        assert_eq!(cells[4], "—", "no p99.9 from 150 samples");
        assert_eq!(cells[5], "—", "no p99.99 either");
        assert_ne!(cells[6], "—", "max is always there");
    }

    #[test]
    fn svg_plots_the_distribution() {
        let s = svg(&sample(), "a <test>", "1000 conns");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt;test&gt;") && s.contains("1000 conns"));
        // The last axis label sits inside the picture.
        let x: f64 = s
            .split("text-anchor=\"middle\">99.999%")
            .next()
            .and_then(|before| before.rsplit("<text x=\"").next())
            .and_then(|t| t.split('"').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(x + 30.0 <= 800.0, "99.999% at x={x} is cut off");
        assert!(s.contains("99.99%"));
        let points = s.split("points=\"").nth(1).unwrap();
        assert!(points.split_whitespace().count() > 10);
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(1001.0), 2000.0);
        assert!(svg(&stats::histogram(), "empty", "").contains("</svg>"));
    }
}
