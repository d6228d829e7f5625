//! A load balancer's health check, while a storm or a restart goes on:
//! `GET /health` on a fresh connection every few milliseconds, each timed
//! from `connect()` to the status line, on its own thread.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::stats;

/// Longest a probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the probes saw.
pub struct Probed {
    /// Connect → status line of every answered probe, ns.
    pub latency: Histogram<u64>,
    /// Probes that got no answer in time (refused, reset, timed out).
    pub failures: u64,
    /// Answers other than `200` (a 503 while the broker is not up yet).
    pub not_ready: u64,
}

/// A running prober; [`Prober::stop`] ends it and returns its figures.
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Probed>,
}

impl Prober {
    /// Probes `target` every `every` until stopped.
    pub fn start(target: SocketAddr, every: Duration) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = Probed {
                latency: stats::histogram(),
                failures: 0,
                not_ready: 0,
            };
            let mut next = Instant::now();
            while !flag.load(Relaxed) {
                match probe(target) {
                    Some((took, ok)) => {
                        let ns = (took.as_nanos() as u64).clamp(1, stats::MAX_LATENCY_NS);
                        let _ = out.latency.record(ns);
                        out.not_ready += u64::from(!ok);
                    }
                    None => out.failures += 1,
                }
                next += every;
                match next.checked_duration_since(Instant::now()) {
                    Some(wait) => std::thread::sleep(wait),
                    None => next = Instant::now(),
                }
            }
            out
        });
        Prober { stop, thread }
    }

    pub fn stop(self) -> Probed {
        self.stop.store(true, Relaxed);
        self.thread.join().unwrap_or_else(|_| Probed {
            latency: stats::histogram(),
            failures: 1,
            not_ready: 0,
        })
    }
}

/// One probe: the time to the status line and whether it was `200`, or
/// `None` without an answer.
fn probe(target: SocketAddr) -> Option<(Duration, bool)> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&target, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_nodelay(true).ok()?;
    let request = format!("GET /health HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut status = String::new();
    BufReader::new(stream).read_line(&mut status).ok()?;
    let took = start.elapsed();
    status
        .starts_with("HTTP/1.1 ")
        .then_some((took, status.starts_with("HTTP/1.1 200")))
}
