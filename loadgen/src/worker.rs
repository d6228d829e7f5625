//! A worker process (`loadgen worker`, started by the coordinator): holds
//! its share of the connections on one glommio executor, so no single
//! process's open-file limit caps a run.
//!
//! Protocol on stdio, one line each: the coordinator writes the [`Plan`] as
//! JSON, later `stop` (or closes stdin); in a reconnect storm also `drop`
//! and `reconnect` before it. The worker writes
//! `progress <connected> <failed> <finished> <received> <p99 ns>` four times
//! a second, with `--timeline` also `window <end ms> <connected> <count>
//! <p50 ns> <p99 ns> <max ns>` for the deliveries timed in each window, and,
//! after the stop, `result <WorkerStats JSON>`.

use std::cell::RefCell;
use std::io::Write;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::client::{self, Commands, Live, Plan};
use crate::stats::WorkerStats;

/// Runs one worker process to completion.
pub fn main() -> ExitCode {
    crate::limits::raise_nofile();
    let mut first = String::new();
    if std::io::stdin().read_line(&mut first).unwrap_or(0) == 0 {
        return ExitCode::from(2);
    }
    let plan: Plan = match simd_json::serde::from_slice(&mut first.into_bytes()) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("loadgen worker: bad plan: {e}");
            return ExitCode::from(2);
        }
    };
    let commands = Arc::new(Commands::default());
    let flags = commands.clone();
    std::thread::spawn(move || {
        // `stop`, or the coordinator going away, ends the run.
        for line in std::io::stdin().lines() {
            match line.as_deref().map(str::trim) {
                Ok("drop") => flags.drop.store(true, Relaxed),
                Ok("reconnect") => flags.reconnect.store(true, Relaxed),
                Ok("stop") | Err(_) => break,
                Ok(_) => {}
            }
        }
        flags.stop.store(true, Relaxed);
    });
    // A delivery's completion waits for this thread's next io_uring enter
    // instead of interrupting it. Without this, the kernel kicks a busy
    // worker with an IPI that the sending core pays for: on loopback, the
    // server's core. Measured: about 3 µs per delivery, charged to every
    // server under test, which a remote client never costs a server.
    glommio::set_coop_taskrun(true);
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("loadgen-worker")
        .io_memory(64 * 1024)
        .spawn(move || work(plan, commands));
    let stats = match handle.map(|h| h.join()) {
        Ok(Ok(stats)) => stats,
        Ok(Err(e)) => {
            eprintln!("loadgen worker: {e}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("loadgen worker: cannot start an executor: {e}");
            return ExitCode::from(1);
        }
    };
    let json = simd_json::to_string(&stats).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "result {json}");
    let _ = out.flush();
    ExitCode::SUCCESS
}

async fn work(plan: Plan, commands: Arc<Commands>) -> WorkerStats {
    let plan = Rc::new(plan);
    let stats = Rc::new(RefCell::new(WorkerStats::new(plan.events as usize)));
    let live = Rc::new(Live::default());
    let gate = Rc::new(glommio::sync::Semaphore::new(
        plan.connect_concurrency.max(1) as u64
    ));
    let reporter = glommio::spawn_local(report_progress(
        stats.clone(),
        live.clone(),
        commands.clone(),
        plan.window_ms,
    ));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(plan.count);
    for j in 0..plan.count {
        if let Some(rate) = plan.connect_rate {
            let at = start + Duration::from_secs_f64(j as f64 / rate);
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                glommio::timer::sleep(wait).await;
            }
        }
        if commands.stop.load(Relaxed) {
            break;
        }
        let (plan, commands, live, stats, gate) = (
            plan.clone(),
            commands.clone(),
            live.clone(),
            stats.clone(),
            gate.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            client::run(plan.first + j, &plan, &commands, &live, &stats, &gate).await;
        }));
    }
    for task in tasks {
        task.await;
    }
    commands.stop.store(true, Relaxed);
    reporter.await;
    let stats = stats.borrow().clone();
    stats
}

/// Prints a progress line every 250 ms until the stop, and a window line
/// at every multiple of `window_ms` of the wall clock (when not 0).
async fn report_progress(
    stats: Rc<RefCell<WorkerStats>>,
    live: Rc<Live>,
    commands: Arc<Commands>,
    window_ms: u64,
) {
    let mut window = Window::new(window_ms);
    loop {
        let last = commands.stop.load(Relaxed);
        let (received, p99, ended) = {
            let s = stats.borrow();
            let p99 = if s.latency.is_empty() {
                0
            } else {
                s.latency.value_at_quantile(0.99)
            };
            (s.received, p99, window.ended(&s.latency))
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "progress {} {} {} {received} {p99}",
            live.connected.get(),
            live.failed.get(),
            live.finished.get()
        );
        if let Some((end_ms, h)) = ended {
            let q = |q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
            let _ = writeln!(
                out,
                "window {end_ms} {} {} {} {} {}",
                live.connected.get(),
                h.len(),
                q(0.5),
                q(0.99),
                h.max()
            );
        }
        let _ = out.flush();
        drop(out);
        if last {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(250)).await;
    }
}

/// `--timeline`: the deliveries timed since the last window's end.
struct Window {
    every_ms: u64,
    /// The end of the current window, ms since the epoch.
    end_ms: u64,
    /// Everything timed before the current window.
    before: hdrhistogram::Histogram<u64>,
}

impl Window {
    fn new(every_ms: u64) -> Window {
        let now = crate::payload::now_ns() / 1_000_000;
        Window {
            every_ms,
            end_ms: now.checked_div(every_ms).map_or(u64::MAX, |w| (w + 1) * every_ms),
            before: crate::stats::histogram(),
        }
    }

    /// Once the current window is over: its end and what it timed.
    fn ended(&mut self, all: &hdrhistogram::Histogram<u64>) -> Option<(u64, hdrhistogram::Histogram<u64>)> {
        let now = crate::payload::now_ns() / 1_000_000;
        if now < self.end_ms {
            return None;
        }
        let mut this = all.clone();
        let _ = this.subtract(&self.before);
        self.before = all.clone();
        let end = self.end_ms;
        self.end_ms = (now / self.every_ms + 1) * self.every_ms;
        Some((end, this))
    }
}
