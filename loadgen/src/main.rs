//! `loadgen`: measures shardcast's delivery latency under mass fan-out.
//!
//! `cargo run --release -p loadgen -- product-approved --spawn --conns 2000 --events 100`
//! A coordinator process starts the server (`--spawn`) and worker processes
//! that hold the connections, sends events on a schedule, times every
//! delivery against its scheduled send time and prints the figures.

mod cli;
mod client;
mod crash;
mod devices;
mod drain;
mod fleet;
mod health;
mod limits;
mod offsets;
mod payload;
mod progress;
mod publisher;
mod report;
mod scenario;
mod server;
mod slowloris;
mod stats;
mod tls;
mod worker;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, Kind};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (kind, args) = match cli.command {
        Command::Worker => return worker::main(),
        Command::ProductApproved(a) => (Kind::ProductApproved, a),
        Command::DeviceStatus(a) => (Kind::DeviceStatus, a),
        Command::ConnectStorm(a) => (Kind::ConnectStorm, a),
        Command::ReconnectStorm(a) => (Kind::ReconnectStorm, a),
        Command::CrashRestart(a) => (Kind::CrashRestart, a),
    };
    let (report, histogram) = match scenario::run(kind, &args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.table());
    let target = args.target.as_deref().unwrap_or("spawned shardcast");
    let title = format!(
        "{target} — {}: {} latency by percentile",
        report.scenario,
        if kind == Kind::ConnectStorm {
            "handshake"
        } else {
            "send → receive"
        }
    );
    let rate = report
        .offered_events_per_sec
        .map_or("back to back".to_string(), |r| format!("{r} events/s"));
    let subtitle = if kind == Kind::ConnectStorm {
        format!(
            "{}/{} connections, {}",
            report.connected, report.conns, report.run.timestamp
        )
    } else {
        format!(
            "{}/{} connections, {} events of {} B at {rate}, {} samples, {} cores, {}",
            report.connected,
            report.conns,
            report.events,
            report.payload_bytes,
            report.latency_us.samples,
            report.run.cores,
            report.run.timestamp
        )
    };
    let outputs = [
        (
            &args.json,
            simd_json::to_string_pretty(&report).unwrap_or_default(),
        ),
        (&args.hgrm, report::hgrm(&histogram)),
        (&args.svg, report::svg(&histogram, &title, &subtitle)),
    ];
    for (path, text) in outputs {
        if let Some(path) = path {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("loadgen: cannot write {path}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let failed = report.lost > 0
        || report.duplicates > 0
        || report.offset_gaps > 0
        || report.offset_duplicates > 0
        || report.connected < report.conns
        || report.unexpected_closes > 0
        || report.publish_errors.is_some()
        || report.drain.as_ref().is_some_and(|d| !d.clean_exit);
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
