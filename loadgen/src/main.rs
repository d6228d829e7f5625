//! `loadgen`: measures shardcast's delivery latency under mass fan-out.
//!
//! Run with `cargo run --release -p loadgen -- product-approved --spawn --conns 2000 --events 100`.
//! Subscribers connect to `/ws/user`; a publisher POSTs `product.approved`
//! events to `type:user` on a schedule; every delivery is timed against its
//! scheduled send time.

mod client;
mod payload;
mod publisher;
mod report;
mod stats;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use glommio::{LocalExecutorBuilder, Placement};

use crate::client::{Plan, Progress};
use crate::report::{Percentiles, Report};
use crate::stats::WorkerStats;

const DEV_JWT_SECRET: &str = "shardcast-dev-secret-NOT-FOR-PRODUCTION";
const DEV_API_KEY: &str = "shardcast-dev-api-key";

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator for shardcast")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N user connections; a publisher sends product.approved to type:user.
    ProductApproved(Args),
}

#[derive(clap::Args, Clone)]
struct Args {
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Events to publish in total.
    #[arg(long, default_value_t = 100)]
    events: u64,
    /// Events per second, or `max` for a back-to-back burst.
    #[arg(long, default_value = "10")]
    rate: String,
    /// Approximate size of each event as clients see it, bytes.
    #[arg(long, default_value_t = 400)]
    payload_bytes: usize,
    /// Server to test, e.g. http://127.0.0.1:8080 (or use --spawn).
    #[arg(long)]
    target: Option<String>,
    /// Start a local `shardcast serve` on a free port and stop it afterwards.
    #[arg(long)]
    spawn: bool,
    /// The shardcast binary for --spawn (default: next to this binary).
    #[arg(long)]
    server_bin: Option<String>,
    /// Shards for --spawn.
    #[arg(long)]
    shards: Option<usize>,
    /// For --spawn: pin the server's shards to CPUs (off by default: the
    /// loadgen shares the machine's cores with the server).
    #[arg(long)]
    pin: bool,
    /// Server process id, to report its CPU per delivery and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Source addresses, round robin: `127.0.0.1-127.0.0.16`.
    #[arg(long, default_value = "127.0.0.2-127.0.0.9")]
    source_ips: String,
    /// Worker threads holding the subscriber connections.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// JWT secret for subscriber tokens (default: shardcast's dev secret).
    #[arg(long, default_value = DEV_JWT_SECRET)]
    jwt_secret: String,
    /// API key for publishing (default: shardcast's dev key).
    #[arg(long, default_value = DEV_API_KEY)]
    api_key: String,
    /// Subscriber path.
    #[arg(long, default_value = "/ws/user")]
    path: String,
    /// Topic to publish to.
    #[arg(long, default_value = "type:user")]
    topic: String,
    /// Give up waiting for deliveries this long after the last send.
    #[arg(long, default_value = "30")]
    drain_secs: u64,
    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Scenario::ProductApproved(args) = cli.scenario;
    match run(&args) {
        Ok(report) => {
            print!("{}", report.table());
            if let Some(path) = &args.json {
                let text = simd_json::to_string_pretty(&report).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("loadgen: cannot write {path}: {e}");
                    return ExitCode::from(1);
                }
            }
            if report.lost > 0 || report.connected < report.conns {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<Report, String> {
    let nofile = raise_nofile();
    let needed = args.conns as u64 + 64;
    if needed > nofile {
        return Err(format!(
            "--conns {} needs about {needed} file descriptors but this process may open {nofile} \
             (RLIMIT_NOFILE hard limit); use fewer connections or raise the hard limit",
            args.conns
        ));
    }
    let mut spawned = None;
    let (target, server_pid) = if args.spawn {
        let (child, addr) = spawn_server(args)?;
        let pid = child.id();
        spawned = Some(ServerGuard(child));
        (addr, Some(pid))
    } else {
        let text = args
            .target
            .as_deref()
            .ok_or("give --target http://HOST:PORT or --spawn")?;
        let addr = text.trim_start_matches("http://").trim_end_matches('/');
        (
            addr.parse()
                .map_err(|_| format!("--target: '{text}' is not http://IP:PORT"))?,
            args.server_pid,
        )
    };
    let rate = match args.rate.as_str() {
        "max" => None,
        r => Some(
            r.parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0)
                .ok_or("--rate must be a positive number or 'max'")?,
        ),
    };
    let token = mint_token(&args.jwt_secret)?;
    let sep = if args.path.contains('?') { '&' } else { '?' };
    let plan = Arc::new(Plan {
        target,
        path: format!("{}{sep}token={token}", args.path),
        source_ips: parse_ips(&args.source_ips)?,
        events: args.events,
        connect_concurrency: 128,
    });
    let progress = Arc::new(Progress::default());
    let workers = args.workers.max(1);
    let mut handles = Vec::new();
    let mut first = 0;
    for w in 0..workers {
        let n = args.conns / workers + usize::from(w < args.conns % workers);
        let (plan, progress) = (plan.clone(), progress.clone());
        let start = first;
        first += n;
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("loadgen-{w}"))
            .io_memory(64 * 1024)
            .spawn(move || client::run_worker(start, n, plan, progress))
            .map_err(|e| format!("cannot start worker: {e}"))?;
        handles.push(handle);
    }
    // Wait for every subscriber to connect (or fail).
    let deadline = Instant::now() + Duration::from_secs(60 + args.conns as u64 / 500);
    while progress.connected.load(Relaxed) + progress.failed.load(Relaxed) < args.conns {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connected = progress.connected.load(Relaxed);
    eprintln!("loadgen: {connected}/{} subscribers connected", args.conns);
    // Let the connected events settle before measuring.
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before = server_pid.and_then(cpu_ticks);
    let published = publisher::run(&publisher::PublishPlan {
        target,
        api_key: args.api_key.clone(),
        topic: args.topic.clone(),
        events: args.events,
        rate,
        payload_bytes: args.payload_bytes,
    })
    .map_err(|e| format!("publisher: {e}"))?;
    let drain = Instant::now() + Duration::from_secs(args.drain_secs);
    while progress.finished.load(Relaxed) < connected && Instant::now() < drain {
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu_after = server_pid.and_then(cpu_ticks);
    let rss = server_pid.and_then(rss_kib);
    progress.stop.store(true, Relaxed);
    let mut total = WorkerStats::new(args.events as usize);
    for handle in handles {
        match handle.join() {
            Ok(stats) => total.merge(&stats),
            Err(e) => return Err(format!("worker failed: {e}")),
        }
    }
    drop(spawned);
    let expected = connected as u64 * args.events;
    let span_ns = total.last_ns.saturating_sub(published.start_ns).max(1);
    let cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if total.received > 0 => {
            Some((b - a) as f64 * 1e6 / ticks_per_sec() / total.received as f64)
        }
        _ => None,
    };
    let latency = Percentiles::of(&total.latency);
    let p99 = latency.p99;
    Ok(Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        scenario: "product-approved".into(),
        conns: args.conns,
        connected,
        events: args.events,
        payload_bytes: args.payload_bytes,
        published: published.accepted,
        expected_deliveries: expected,
        deliveries: total.received,
        lost: expected.saturating_sub(total.received),
        duplicates: total.duplicates,
        connect_errors: total.connect_errors,
        unexpected_closes: total.unexpected_closes,
        publish_errors: published.error,
        deliveries_per_sec: total.received as f64 * 1e9 / span_ns as f64,
        latency_us: latency,
        event_completion_us: Percentiles::of(&report::completion(&total, published.start_ns, rate)),
        server_cpu_us_per_delivery: cpu,
        server_rss_kib: rss,
        p99,
    })
}

/// Kills the spawned server when dropped.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to our own child for a graceful stop.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn spawn_server(args: &Args) -> Result<(Child, SocketAddr), String> {
    let bin = args.server_bin.clone().unwrap_or_else(|| {
        let me = std::env::current_exe().unwrap_or_default();
        me.with_file_name("shardcast").to_string_lossy().into_owned()
    });
    let mut cmd = Command::new(&bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"]);
    if args.jwt_secret != DEV_JWT_SECRET {
        cmd.args(["--jwt-secret", &args.jwt_secret, "--api-key", &args.api_key]);
    }
    if !args.pin {
        cmd.arg("--no-pin");
    }
    if let Some(shards) = args.shards {
        cmd.args(["--shards", &shards.to_string()]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {bin}: {e} (build it: cargo build --release)"))?;
    let stdout = child.stdout.take().ok_or("no server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.strip_prefix("shardcast listening on ") {
                    break addr
                        .trim()
                        .parse()
                        .map_err(|_| "bad listening line".to_string())?;
                }
            }
            _ => return Err("the spawned server exited before listening".into()),
        }
    };
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((child, addr))
}

fn mint_token(secret: &str) -> Result<String, String> {
    #[derive(serde::Serialize)]
    struct Claims {
        sub: &'static str,
        exp: u64,
        types: [&'static str; 1],
    }
    let exp = payload::now_ns() / 1_000_000_000 + 24 * 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &Claims {
            sub: "loadgen",
            exp,
            types: ["user"],
        },
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot mint a token: {e}"))
}

/// `127.0.0.2-127.0.0.9` or `127.0.0.2,127.0.0.3`.
fn parse_ips(text: &str) -> Result<Vec<Ipv4Addr>, String> {
    let bad = || format!("--source-ips: '{text}' is not A.B.C.D[-A.B.C.E][,…]");
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (Ipv4Addr, Ipv4Addr) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                out.extend((u32::from(a)..=u32::from(b)).map(Ipv4Addr::from));
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
