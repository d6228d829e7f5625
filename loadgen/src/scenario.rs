//! One run of a scenario, start to finish: check the limits, start the
//! server (`--spawn`) and the worker processes, connect, send on schedule,
//! drain, stop everything and build the report. Every phase has a
//! deadline, so a run always ends by itself.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::cli::{
    parse_ips, parse_rate, parse_target, parse_targets, Args, Kind, DEV_API_KEY, DEV_JWT_SECRET,
};
use crate::client::Plan;
use crate::fleet::Fleet;
use crate::progress::Line;
use crate::report::{Percentiles, Report};
use crate::stats::WorkerStats;
use crate::{devices, limits, payload, publisher, server};

/// How the senders did.
pub struct SendOutcome {
    pub accepted: u64,
    pub error: Option<String>,
    pub start_ns: u64,
}

/// Runs `kind` with `args`; an `Err` is a run that could not be made.
/// Returns the report and the histogram to plot (delivery latency, or
/// handshake time for a connect storm).
pub fn run(kind: Kind, args: &Args) -> Result<(Report, Histogram<u64>), String> {
    if args.publishers > 1 && args.publisher == publisher::Mode::Pipelined {
        return Err(
            "--publishers N needs --publisher sequential (a pipelined publisher is one connection)".into(),
        );
    }
    if args.publishers == 0 {
        return Err("--publishers must be at least 1".into());
    }
    let started = Instant::now();
    let hard_deadline = started + Duration::from_secs(args.max_secs);
    let nofile = limits::raise_nofile();
    let ips = parse_ips(&args.source_ips)?;
    let device_count = if kind == Kind::DeviceStatus {
        args.devices.max(1)
    } else {
        0
    };
    limits::check_sources(
        args.conns + device_count as usize + args.slowloris,
        &ips,
        limits::ephemeral_ports(),
    )?;
    let rate = parse_rate(&args.rate)?;
    if kind == Kind::CrashRestart && !(args.spawn && args.nodes == 1) {
        return Err("crash-restart needs --spawn (one node): it kills and restarts the server itself".into());
    }
    if args.sigterm_after_ms.is_some() && !(kind == Kind::ProductApproved && args.spawn && args.nodes == 1) {
        return Err(
            "--sigterm-after-ms needs product-approved with --spawn (one node): it stops the server itself"
                .into(),
        );
    }
    if args.slowloris > limits::per_worker(nofile) {
        return Err(format!(
            "--slowloris {} is more than this process can hold (open-file limit {nofile})",
            args.slowloris
        ));
    }
    let spawn_plan = server::SpawnPlan {
        bin: args.server_bin.as_deref(),
        jwt_secret: &args.jwt_secret,
        api_key: &args.api_key,
        dev_secret: args.jwt_secret == DEV_JWT_SECRET && args.api_key == DEV_API_KEY,
        shards: args.shards,
        pin: args.pin,
        extra: &args.server_arg,
        listen: None,
    };
    let mut spawned = if args.spawn {
        let nodes = (0..args.nodes.max(1))
            .map(|_| server::spawn(&spawn_plan))
            .collect::<Result<Vec<_>, _>>()?;
        let per_node = (args.conns + device_count as usize).div_ceil(nodes.len());
        if per_node > limits::per_worker(nofile) {
            eprintln!(
                "loadgen: note: each spawned node holds at most about {} connections (its \
                 open-file limit is {nofile}); connections past that are refused",
                limits::per_worker(nofile)
            );
        }
        nodes
    } else {
        Vec::new()
    };
    let (targets, mut server_pids): (Vec<SocketAddr>, Vec<u32>) = if spawned.is_empty() {
        (parse_targets(args.target.as_deref())?, args.server_pid.clone())
    } else {
        spawned.iter().map(|s| (s.addr, s.pid())).unzip()
    };
    // A spawned server with an admin port takes publishes there.
    let publish_targets: Vec<SocketAddr> = match spawned.iter().map(|s| s.admin).collect::<Option<Vec<_>>>() {
        Some(admins) if !admins.is_empty() => admins,
        _ => targets.clone(),
    };
    let target = targets[0];
    let plans = plans(kind, args, &targets, ips.clone(), device_count, nofile)?;
    let conns = args.conns as u64;
    let mut fleet = Fleet::start(&plans)?;
    let mut line = Line::new(conns);

    // Connect (a connect storm's health checks go on meanwhile).
    let prober = (kind == Kind::ConnectStorm && args.health_every_ms > 0)
        .then(|| crate::health::Prober::start(target, Duration::from_millis(args.health_every_ms)));
    let connect_start = Instant::now();
    let connect_deadline = (connect_start + Duration::from_secs(60 + conns / 500)).min(hard_deadline);
    let view = line.wait(&fleet, "connecting", connect_deadline, |v| {
        v.connected + v.failed >= conns
    });
    let connect_secs = connect_start.elapsed().as_secs_f64();
    line.finish();
    let mut health = prober.map(crate::health::Prober::stop);
    eprintln!(
        "loadgen: {}/{conns} connected, {} refused or failed ({connect_secs:.1} s)",
        view.connected, view.failed
    );

    // Slow peers from here to the end, beside the measured clients.
    let slow = match args.slowloris {
        0 => None,
        n => Some(crate::slowloris::Slowloris::start(
            target,
            &args.path,
            &ips,
            n,
            Duration::from_millis(args.slowloris_every_ms.max(1)),
        )?),
    };

    // Send.
    let mut cpu_before = None;
    let mut sent = None;
    let mut crashed = None;
    let mut drained = None;
    if kind == Kind::ReconnectStorm && view.connected > 0 {
        // Everyone drops; the events go out while they are away; all come
        // back at once with `since`.
        std::thread::sleep(Duration::from_millis(200));
        fleet.tell("drop");
        let drop_deadline = (Instant::now() + Duration::from_secs(30 + conns / 1000)).min(hard_deadline);
        line.wait(&fleet, "dropping", drop_deadline, |v| v.connected == 0);
        line.finish();
        let sender = start_publisher(args, &publish_targets, rate, 0..args.events)?;
        sent = Some(finish_sending(&fleet, &mut line, hard_deadline, sender)?.0);
        cpu_before = server::cpu_ticks_of(&server_pids);
        fleet.tell("reconnect");
        let back_deadline = (Instant::now() + Duration::from_secs(60 + conns / 500)).min(hard_deadline);
        line.wait(&fleet, "reconnecting", back_deadline, |v| {
            v.connected + v.failed >= conns && v.finished >= v.connected
        });
        line.finish();
    } else if kind == Kind::CrashRestart && view.connected > 0 {
        std::thread::sleep(Duration::from_millis(200));
        let c = crate::crash::run(
            args,
            &mut spawned[0],
            &spawn_plan,
            &fleet,
            &mut line,
            rate,
            hard_deadline,
            view.connected,
        )?;
        server_pids = vec![spawned[0].pid()];
        sent = Some(c.sent);
        crashed = Some((c.restart_ms, c.all_back_ms));
        health = c.health;
        let drain_deadline = (Instant::now() + Duration::from_secs(args.drain_secs)).min(hard_deadline);
        line.wait(&fleet, "draining", drain_deadline, |v| v.finished >= v.connected);
        line.finish();
    } else if kind != Kind::ConnectStorm && view.connected > 0 {
        if kind == Kind::DeviceStatus {
            let plan = device_plan(args, target, &ips, device_count, rate)?;
            let mut device_streams = devices::connect(&plan)?;
            // The devices' `online` statuses carry no sequence numbers;
            // give them a moment to pass before timing starts.
            std::thread::sleep(Duration::from_millis(200));
            cpu_before = server::cpu_ticks_of(&server_pids);
            let sender = std::thread::spawn(move || {
                let s = devices::run(&mut device_streams, &plan);
                (
                    SendOutcome {
                        accepted: s.sent,
                        error: s.error,
                        start_ns: s.start_ns,
                    },
                    device_streams,
                )
            });
            sent = Some(finish_sending(&fleet, &mut line, hard_deadline, sender)?.0);
        } else if args.sigterm_after_ms.is_some() {
            std::thread::sleep(Duration::from_millis(200));
            let d = crate::drain::run(
                args,
                &mut spawned[0],
                &publish_targets,
                &fleet,
                &mut line,
                rate,
                hard_deadline,
            )?;
            sent = Some(SendOutcome {
                accepted: d.sent.accepted,
                error: None,
                start_ns: d.sent.start_ns,
            });
            drained = Some(d);
        } else {
            std::thread::sleep(Duration::from_millis(200));
            cpu_before = server::cpu_ticks_of(&server_pids);
            let sender = start_publisher(args, &publish_targets, rate, 0..args.events)?;
            sent = Some(finish_sending(&fleet, &mut line, hard_deadline, sender)?.0);
        }
        // Drain: wait until every connected connection has everything (a
        // stopped server has closed them all already).
        if drained.is_none() {
            let drain_deadline = (Instant::now() + Duration::from_secs(args.drain_secs)).min(hard_deadline);
            line.wait(&fleet, "draining", drain_deadline, |v| v.finished >= v.connected);
            line.finish();
        }
    }
    let slowed = slow.map(crate::slowloris::Slowloris::stop);
    if let Some(path) = &args.timeline {
        write_timeline(path, &fleet.windows())?;
    }
    let cpu_after = server::cpu_ticks_of(&server_pids);
    let rss = server::rss_kib_of(&server_pids);
    let results = fleet.stop(Instant::now() + Duration::from_secs(15))?;
    drop(spawned);
    let mut total = WorkerStats::new(args.events as usize);
    for r in &results {
        total.merge(r);
    }
    let report = build_report(
        kind,
        args,
        Measured {
            total: &total,
            sent,
            rate,
            devices: device_count,
            connect_secs,
            cpu: cpu_before.zip(cpu_after),
            rss,
            crashed,
            health,
            drained,
            slowed,
        },
    );
    let histogram = if kind == Kind::ConnectStorm {
        total.handshake
    } else {
        total.latency
    };
    Ok((report, histogram))
}

/// `--timeline`: one CSV row per window.
fn write_timeline(path: &str, windows: &[crate::fleet::Window]) -> Result<(), String> {
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut text = String::from("end_unix_ms,connected,deliveries,p50_ms,p99_ms,max_ms\n");
    for w in windows {
        text.push_str(&format!(
            "{},{},{},{:.3},{:.3},{:.3}\n",
            w.end_ms,
            w.connected,
            w.count,
            ms(w.p50_ns),
            ms(w.p99_ns),
            ms(w.max_ns)
        ));
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))
}

/// Starts the HTTP publisher of events `range` on its own thread.
pub fn start_publisher(
    args: &Args,
    targets: &[SocketAddr],
    rate: Option<f64>,
    range: std::ops::Range<u64>,
) -> Result<std::thread::JoinHandle<(SendOutcome, ())>, String> {
    let publish_to = match args.publish_target.as_deref() {
        Some(text) => vec![parse_target(Some(text))?],
        None => targets.to_vec(),
    };
    let plan = publisher::PublishPlan {
        targets: publish_to,
        api_key: args.api_key.clone(),
        topic: args.topic.clone(),
        events: range.end,
        first: range.start,
        rate,
        payload_bytes: args.payload_bytes,
        mode: args.publisher,
        publishers: args.publishers,
    };
    Ok(std::thread::spawn(move || {
        let outcome = match publisher::run(&plan) {
            Ok(p) => SendOutcome {
                accepted: p.accepted,
                error: p.error,
                start_ns: p.start_ns,
            },
            Err(e) => SendOutcome {
                accepted: 0,
                error: Some(format!("publisher: {e}")),
                start_ns: payload::now_ns(),
            },
        };
        (outcome, ())
    }))
}

/// Waits for the sender thread while showing progress; returns its result.
pub fn finish_sending<T>(
    fleet: &Fleet,
    line: &mut Line,
    deadline: Instant,
    sender: std::thread::JoinHandle<(SendOutcome, T)>,
) -> Result<(SendOutcome, T), String> {
    line.wait(fleet, "sending", deadline, |_| sender.is_finished());
    if !sender.is_finished() {
        return Err("the run reached --max-secs while sending".into());
    }
    sender
        .join()
        .map_err(|_| "the sender thread panicked".to_string())
}

/// One plan per worker process, the connections split evenly.
fn plans(
    kind: Kind,
    args: &Args,
    targets: &[SocketAddr],
    source_ips: Vec<Ipv4Addr>,
    device_count: u64,
    nofile: u64,
) -> Result<Vec<Plan>, String> {
    // A whole number of workers per node: worker `w` connects to node `w % n`.
    let n = targets.len().max(1);
    let workers = limits::workers_for(args.conns, args.workers, nofile)
        .max(n)
        .div_ceil(n)
        .saturating_mul(n)
        .min(args.conns.max(1));
    let (path, single_path, single_from, sources) = match kind {
        Kind::ProductApproved | Kind::ConnectStorm | Kind::ReconnectStorm | Kind::CrashRestart => {
            let token = mint_token(&args.jwt_secret, "loadgen", &["user"], &[])?;
            let sep = if args.path.contains('?') { '&' } else { '?' };
            // Sequential publishers each keep their own order: event `i`
            // comes from publisher `i % N`.
            let sources = match args.publisher {
                publisher::Mode::Sequential => args.publishers.max(1) as u64,
                publisher::Mode::Pipelined => 1,
            };
            (
                format!("{}{sep}token={token}", args.path),
                String::new(),
                args.conns,
                sources,
            )
        }
        Kind::DeviceStatus => {
            let token = mint_token(&args.jwt_secret, "loadgen-monitor", &[], &["*"])?;
            let share = args.single_share.clamp(0.0, 1.0);
            let single = (args.conns as f64 * share).round() as usize;
            (
                format!("/ws/devices/all?token={token}"),
                format!("/ws/devices/{}{{device}}?token={token}", device_prefix()),
                args.conns - single,
                device_count,
            )
        }
    };
    let warmup = args.warmup.unwrap_or(args.events / 20).min(args.events);
    let mut first = 0;
    Ok((0..workers)
        .map(|w| {
            let count = args.conns / workers + usize::from(w < args.conns % workers);
            let plan = Plan {
                target: targets[w % n],
                path: path.clone(),
                single_path: single_path.clone(),
                single_from,
                source_ips: source_ips.clone(),
                events: args.events,
                sources,
                warmup,
                storm: kind == Kind::ConnectStorm,
                reconnect: kind == Kind::ReconnectStorm,
                connect_concurrency: args.connect_concurrency,
                connect_rate: args.connect_rate.map(|r| r / workers as f64),
                handshake_timeout_ms: args.handshake_timeout_ms,
                tls_ca: args.tls_ca.clone(),
                deflate: args.compression,
                resilient: (args.reconnect || kind == Kind::CrashRestart).then_some(crate::client::Backoff {
                    min_ms: args.backoff_min_ms,
                    max_ms: args.backoff_max_ms.max(args.backoff_min_ms),
                }),
                churn_per_min: args.churn.max(0.0),
                late_from: (kind == Kind::CrashRestart).then_some(args.events / 2),
                window_ms: if args.timeline.is_some() {
                    args.window_secs.max(1) * 1000
                } else {
                    0
                },
                not_before_ns: payload::now_ns(),
                first,
                count,
            };
            first += count;
            plan
        })
        .collect())
}

/// Device names carry the coordinator's pid, so runs against a shared
/// server do not mix.
fn device_prefix() -> String {
    format!("lg{}-", std::process::id())
}

fn device_plan(
    args: &Args,
    target: SocketAddr,
    ips: &[Ipv4Addr],
    devices: u64,
    rate: Option<f64>,
) -> Result<devices::DevicePlan, String> {
    let prefix = device_prefix();
    let paths = (0..devices)
        .map(|d| {
            let token = mint_token(&args.jwt_secret, &format!("{prefix}{d}"), &["pico"], &[])?;
            Ok(format!("/ws/pico?token={token}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(devices::DevicePlan {
        target,
        paths,
        source_ips: ips.to_vec(),
        events: args.events,
        rate,
        payload_bytes: args.payload_bytes,
    })
}

/// What a run measured, before it becomes a report.
struct Measured<'a> {
    total: &'a WorkerStats,
    sent: Option<SendOutcome>,
    rate: Option<f64>,
    devices: u64,
    connect_secs: f64,
    /// Server CPU ticks before and after sending.
    cpu: Option<(u64, u64)>,
    rss: Option<u64>,
    /// crash-restart: SIGKILL → listening again, and → every client back (ms).
    crashed: Option<(f64, Option<f64>)>,
    health: Option<crate::health::Probed>,
    drained: Option<crate::drain::Drained>,
    slowed: Option<crate::slowloris::Slowed>,
}

fn build_report(kind: Kind, args: &Args, m: Measured) -> Report {
    let Measured {
        total,
        sent,
        rate,
        devices,
        connect_secs,
        cpu,
        rss,
        crashed,
        health,
        drained,
        slowed,
    } = m;
    let (published, publish_errors, start_ns) = match &sent {
        Some(s) => (s.accepted, s.error.clone(), s.start_ns),
        None => (0, None, 0),
    };
    let span_ns = total.last_ns.saturating_sub(start_ns).max(1);
    let cpu_us = cpu.and_then(|(a, b)| {
        (total.received > 0).then(|| (b - a) as f64 * 1e6 / server::ticks_per_sec() / total.received as f64)
    });
    let connect_span = total
        .last_connect_ns
        .saturating_sub(total.first_connect_ns.min(total.last_connect_ns));
    let latency = Percentiles::of(&total.latency);
    let warmup = if kind == Kind::ConnectStorm {
        0
    } else {
        args.warmup.unwrap_or(args.events / 20).min(args.events)
    };
    let paced = kind != Kind::ConnectStorm;
    // A drain: closes with 1001 are what it asks for; every connected client
    // expected every event, so what the server refused is not loss.
    let going_away: u64 = total
        .closes
        .iter()
        .filter(|(reason, _)| reason.starts_with("close 1001"))
        .map(|(_, n)| n)
        .sum();
    let lost_acknowledged = total
        .gaps
        .saturating_sub(total.connected * args.events.saturating_sub(published));
    let receivers = total.expected.checked_div(args.events.max(1)).unwrap_or(0) as f64;
    Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        run: crate::report::RunInfo::here(args.spawn.then_some(args.shards).flatten(), &args.server_arg),
        scenario: kind.name().into(),
        conns: args.conns,
        connected: total.connected as usize,
        devices: (kind == Kind::DeviceStatus).then_some(devices),
        events: if kind == Kind::ConnectStorm {
            0
        } else {
            args.events
        },
        warmup_events: warmup,
        payload_bytes: args.payload_bytes,
        published,
        expected_deliveries: total.expected,
        deliveries: total.received,
        lost: if kind == Kind::CrashRestart {
            total.late_gaps
        } else if drained.is_some() {
            lost_acknowledged
        } else {
            total.gaps
        },
        duplicates: total.duplicates,
        connect_errors: total.connect_errors,
        refusals: total.failures.clone(),
        unexpected_closes: if drained.is_some() {
            total.unexpected_closes - going_away
        } else {
            total.unexpected_closes
        },
        closes: total.closes.clone(),
        drain: drained.as_ref().map(|d| crate::report::Drain {
            sigterm_after_ms: args.sigterm_after_ms.unwrap_or(0),
            exit_ms: d.exit_ms,
            exit_status: d.status.clone(),
            clean_exit: d.clean,
            refused: d.sent.error.clone(),
            going_away,
            lost_acknowledged,
        }),
        slowloris: slowed.map(|s| crate::report::SlowPeers {
            peers: args.slowloris,
            every_ms: args.slowloris_every_ms,
            opened: s.opened,
            connect_failures: s.connect_failures,
            cuts: s.cuts,
            cut_after_us: Percentiles::of(&s.cut_after),
            oldest_open_ms: s.oldest_open_ns as f64 / 1e6,
        }),
        publish_errors,
        offset_gaps: total.offset_gaps,
        offset_duplicates: total.offset_duplicates,
        reconnect: (kind == Kind::ReconnectStorm).then(|| crate::report::Reconnect {
            reconnected: total.reconnected,
            recovered_events: total.recovered,
            not_recovered: total.not_recovered.clone(),
            caught_up_us: Percentiles::of(&total.caught_up),
        }),
        resilience: (args.reconnect || kind == Kind::CrashRestart).then(|| crate::report::Resilience {
            reconnects: total.reconnected,
            drops: total.drops.clone(),
            failed_attempts: total.retries,
            away_us: Percentiles::of(&total.downtime),
            recovered_events: total.recovered,
            not_recovered: total.not_recovered.clone(),
        }),
        crash: crashed.map(|(restart_ms, all_back_ms)| crate::report::Crash {
            restart_ms,
            all_back_ms,
            lost_at_crash: total.gaps.saturating_sub(total.late_gaps),
            lost_after_restart: total.late_gaps,
        }),
        health: health.map(|h| crate::report::Health {
            probes: h.latency.len() + h.failures,
            failures: h.failures,
            not_ready: h.not_ready,
            latency_us: Percentiles::of(&h.latency),
        }),
        publisher: matches!(
            kind,
            Kind::ProductApproved | Kind::ReconnectStorm | Kind::CrashRestart
        )
        .then(|| match args.publisher {
            publisher::Mode::Pipelined => "pipelined".to_string(),
            publisher::Mode::Sequential => format!("sequential ×{}", args.publishers),
        }),
        offered_events_per_sec: rate.filter(|_| paced),
        offered_deliveries_per_sec: rate.filter(|_| paced).map(|r| r * receivers),
        deliveries_per_sec: total.received as f64 * 1e9 / span_ns as f64,
        latency_us: latency,
        // crash-restart's halves have two schedules: no one completion figure.
        event_completion_us: if kind == Kind::CrashRestart {
            Percentiles::default()
        } else {
            Percentiles::of(&crate::report::completion(total, start_ns, rate, warmup))
        },
        handshake_us: Percentiles::of(&total.handshake),
        handshakes_per_sec: if connect_span > 0 {
            total.connected as f64 * 1e9 / connect_span as f64
        } else {
            total.connected as f64 / connect_secs.max(1e-9)
        },
        server_cpu_us_per_delivery: cpu_us,
        server_rss_kib: rss,
        compression: args.compression,
        wire_bytes_per_delivery: (total.text_frames > 0)
            .then(|| total.wire_bytes as f64 / total.text_frames as f64),
        compressed_share: (total.text_frames > 0)
            .then(|| total.compressed_frames as f64 / total.text_frames as f64),
    }
}

/// A JWT for loadgen's connections.
fn mint_token(secret: &str, sub: &str, types: &[&str], device_rights: &[&str]) -> Result<String, String> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: u64,
        types: &'a [&'a str],
        devices: &'a [&'a str],
    }
    let exp = payload::now_ns() / 1_000_000_000 + 24 * 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &Claims {
            sub,
            exp,
            types,
            devices: device_rights,
        },
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot mint a token: {e}"))
}
