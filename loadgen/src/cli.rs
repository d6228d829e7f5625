//! loadgen's command line: the scenarios, their flags and the parsing of
//! the flags' values.

use std::net::{Ipv4Addr, SocketAddr};

use clap::{Parser, Subcommand};

pub const DEV_JWT_SECRET: &str = "shardcast-dev-secret-NOT-FOR-PRODUCTION";
pub const DEV_API_KEY: &str = "shardcast-dev-api-key";

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for shardcast: p99 delivery latency of mass fan-out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// N user connections on /ws/user; a publisher POSTs product.approved
    /// events to type:user.
    ProductApproved(Args),
    /// D device connections (/ws/pico) report status changes; N monitors on
    /// /ws/devices/all and /ws/devices/{id} receive them.
    DeviceStatus(Args),
    /// Opens N connections as fast as the server accepts them: handshakes/s
    /// and handshake-time percentiles.
    ConnectStorm(Args),
    /// N user connections on /ws/user note their positions and drop; the
    /// publisher sends the events while they are away; all reconnect at
    /// once with `since`: recovered events, time to caught up (p50/p99),
    /// duplicates and gaps (must be 0).
    ReconnectStorm(Args),
    /// N user connections that reconnect by themselves (`--reconnect` is
    /// implied); half the events go out, the spawned server is killed with
    /// SIGKILL right after the last answer and started again on the same
    /// port after `--down-ms`; once every client is back the other half
    /// goes out. Reports the time clients were away, why recovery did or
    /// did not replay (`epoch changed` on the in-memory default), the loss
    /// at the crash and after it (must be 0), and `/health` meanwhile.
    CrashRestart(Args),
    /// Internal: one worker process, started by the others.
    #[command(hide = true)]
    Worker,
}

/// Which scenario a run is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ProductApproved,
    DeviceStatus,
    ConnectStorm,
    ReconnectStorm,
    CrashRestart,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::ProductApproved => "product-approved",
            Kind::DeviceStatus => "device-status",
            Kind::ConnectStorm => "connect-storm",
            Kind::ReconnectStorm => "reconnect-storm",
            Kind::CrashRestart => "crash-restart",
        }
    }
}

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Measured connections (subscribers, monitors, or storm connections).
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Events (or status changes) to send in total.
    #[arg(long, default_value_t = 100)]
    pub events: u64,
    /// Events per second, or `max` for a back-to-back burst.
    #[arg(long, default_value = "10")]
    pub rate: String,
    /// product-approved: `pipelined` (every request on one connection as its
    /// time comes) or `sequential` (each after the previous answer, as most
    /// backends' HTTP clients publish).
    #[arg(long, value_enum, default_value = "pipelined")]
    pub publisher: crate::publisher::Mode,
    /// product-approved with `--publisher sequential`: concurrent
    /// publishers (event `i` is sent by publisher `i % N`).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Offer permessage-deflate on every connection (no context takeover)
    /// and inflate compressed events; the report gives the bytes on the
    /// wire per delivery and the share that came compressed.
    #[arg(long)]
    pub compression: bool,
    /// Approximate size of each event as clients see it, bytes.
    #[arg(long, default_value_t = 400)]
    pub payload_bytes: usize,
    /// First events excluded from the latency histogram (still checked for
    /// loss); default 5% of --events.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// device-status: device connections sending the status changes.
    #[arg(long, default_value_t = 100)]
    pub devices: u64,
    /// device-status: share of monitors watching one device (the rest watch
    /// /ws/devices/all).
    #[arg(long, default_value_t = 0.5)]
    pub single_share: f64,
    /// Server to test, e.g. http://127.0.0.1:8080 (or use --spawn); several
    /// nodes of one cluster comma-separated: clients and sequential
    /// publishers are spread over them round robin.
    #[arg(long)]
    pub target: Option<String>,
    /// Where product-approved publishes, when not the --target itself
    /// (shardcast's --admin-listen, or a peer with a separate publish port).
    #[arg(long)]
    pub publish_target: Option<String>,
    /// Start a local `shardcast serve` on a free port and stop it afterwards.
    #[arg(long)]
    pub spawn: bool,
    /// Connect with wss:// (TLS), trusting the CA (or self-signed
    /// certificate) in this PEM file; the server name checked is
    /// `localhost`. Publishes stay plain (the admin port, or --publish-target).
    #[arg(long)]
    pub tls_ca: Option<String>,
    /// The shardcast binary for --spawn (default: next to this binary).
    #[arg(long)]
    pub server_bin: Option<String>,
    /// Extra argument for the spawned server (repeat it), e.g.
    /// `--server-arg=--max-connections=5000`.
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// Shards for --spawn.
    #[arg(long)]
    pub shards: Option<usize>,
    /// For --spawn: nodes to start (give them a shared broker with
    /// `--server-arg=--broker=redis://…`); clients and publishers are
    /// spread over them as over a --target list.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// For --spawn: pin the server's shards to CPUs (off by default: the
    /// loadgen shares the machine's cores with the server).
    #[arg(long)]
    pub pin: bool,
    /// Server process id, to report its CPU per delivery and RSS (repeat
    /// it for every node of a cluster: they are summed).
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// Source addresses, round robin: `127.0.0.1-127.0.0.16`.
    #[arg(long, default_value = "127.0.0.2-127.0.0.9")]
    pub source_ips: String,
    /// Worker processes holding the connections (raised automatically so
    /// none exceeds the open-file limit).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Handshakes in flight per worker.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// New connections per second over all workers (default: as fast as
    /// the server accepts).
    #[arg(long)]
    pub connect_rate: Option<f64>,
    /// Give up on a handshake after this many milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
    /// JWT secret for the tokens (default: shardcast's dev secret).
    #[arg(long, default_value = DEV_JWT_SECRET)]
    pub jwt_secret: String,
    /// API key for publishing (default: shardcast's dev key).
    #[arg(long, default_value = DEV_API_KEY)]
    pub api_key: String,
    /// product-approved: subscriber path.
    #[arg(long, default_value = "/ws/user")]
    pub path: String,
    /// product-approved: topic to publish to.
    #[arg(long, default_value = "type:user")]
    pub topic: String,
    /// Give up waiting for deliveries this long after the last send.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    /// The whole run ends after this many seconds, whatever its state.
    #[arg(long, default_value_t = 900)]
    pub max_secs: u64,
    /// Connections the server ends come back by themselves with `since`
    /// (exponential backoff with full jitter between attempts).
    #[arg(long)]
    pub reconnect: bool,
    /// `--reconnect`: the first attempt's longest wait, ms (doubling per
    /// failed attempt).
    #[arg(long, default_value_t = 250)]
    pub backoff_min_ms: u64,
    /// `--reconnect`: the longest wait between attempts, ms.
    #[arg(long, default_value_t = 5000)]
    pub backoff_max_ms: u64,
    /// `--reconnect`: share of the connections that drop themselves each
    /// minute and come back, e.g. 0.01 (a soak's churn).
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// crash-restart: how long the server stays dead, ms.
    #[arg(long, default_value_t = 1000)]
    pub down_ms: u64,
    /// connect-storm and crash-restart: probe `GET /health` this often, ms
    /// (each on a fresh connection, as a load balancer does); 0 is off.
    #[arg(long, default_value_t = 10)]
    pub health_every_ms: u64,
    /// product-approved with --spawn: SIGTERM the server this many ms after
    /// publishing starts (a drain under load). The publisher goes on until
    /// the server refuses or is gone; the report gives the close codes, the
    /// time to exit and its status, and the loss of acknowledged events
    /// (must be 0; events refused are not loss).
    #[arg(long)]
    pub sigterm_after_ms: Option<u64>,
    /// Also hold this many slowloris connections while the run goes on:
    /// each sends an upgrade's request head one byte every
    /// --slowloris-every-ms and is opened again when the server cuts it.
    #[arg(long, default_value_t = 0)]
    pub slowloris: usize,
    /// `--slowloris`: ms between two bytes of a slow connection.
    #[arg(long, default_value_t = 1000)]
    pub slowloris_every_ms: u64,
    /// Write the run's timeline here (CSV: each window's end, connections,
    /// deliveries timed and their p50/p99/max in ms), e.g. for a soak.
    #[arg(long)]
    pub timeline: Option<String>,
    /// `--timeline`: the length of a window, seconds.
    #[arg(long, default_value_t = 10)]
    pub window_secs: u64,
    /// Write every figure as JSON here.
    #[arg(long)]
    pub json: Option<String>,
    /// Write the latency distribution here (HdrHistogram .hgrm text).
    #[arg(long)]
    pub hgrm: Option<String>,
    /// Write a latency-by-percentile plot here (SVG).
    #[arg(long)]
    pub svg: Option<String>,
}

/// `--rate`: events per second, or `None` for `max` (back to back).
pub fn parse_rate(text: &str) -> Result<Option<f64>, String> {
    match text {
        "max" => Ok(None),
        r => r
            .parse::<f64>()
            .ok()
            .filter(|r| *r > 0.0 && r.is_finite())
            .map(Some)
            .ok_or_else(|| format!("--rate must be a positive number or 'max' (got '{text}')")),
    }
}

/// `--target`: `http://IP:PORT[,http://IP:PORT…]`.
pub fn parse_targets(text: Option<&str>) -> Result<Vec<SocketAddr>, String> {
    let text = text.ok_or("give --target http://HOST:PORT or --spawn")?;
    text.split(',')
        .filter(|t| !t.is_empty())
        .map(|t| parse_target(Some(t)))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| {
            if v.is_empty() {
                Err("--target: no address".into())
            } else {
                Ok(v)
            }
        })
}

/// `--target`/`--publish-target`: `http://IP:PORT`.
pub fn parse_target(text: Option<&str>) -> Result<SocketAddr, String> {
    let text = text.ok_or("give --target http://HOST:PORT or --spawn")?;
    let addr = text.trim_start_matches("http://").trim_end_matches('/');
    addr.parse()
        .map_err(|_| format!("--target: '{text}' is not http://IP:PORT"))
}

/// `127.0.0.2-127.0.0.9` or `127.0.0.2,127.0.0.3`.
pub fn parse_ips(text: &str) -> Result<Vec<Ipv4Addr>, String> {
    let bad = || format!("--source-ips: '{text}' is not A.B.C.D[-A.B.C.E][,…]");
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (Ipv4Addr, Ipv4Addr) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if u32::from(b) < u32::from(a) || u32::from(b) - u32::from(a) > 65_535 {
                    return Err(bad());
                }
                out.extend((u32::from(a)..=u32::from(b)).map(Ipv4Addr::from));
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_expand_and_bad_ones_are_named() {
        let ips = parse_ips("127.0.0.2-127.0.0.4,127.0.1.1").unwrap();
        assert_eq!(ips.len(), 4);
        assert_eq!(ips[3], Ipv4Addr::new(127, 0, 1, 1));
        assert!(parse_ips("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_ips("localhost").unwrap_err().contains("--source-ips"));
    }

    #[test]
    fn rates_are_positive_or_max() {
        assert_eq!(parse_rate("max").unwrap(), None);
        assert_eq!(parse_rate("2.5").unwrap(), Some(2.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
