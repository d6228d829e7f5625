//! A worker process (`loadgen worker`, started by the coordinator): holds
//! its share of the connections on one glommio executor, so no single
//! process's open-file limit caps a run.
//!
//! Protocol on stdio, one line each: the coordinator writes the [`Plan`] as
//! JSON, later `stop` (or closes stdin); in a reconnect storm also `drop`
//! and `reconnect` before it. The worker writes
//! `progress <connected> <failed> <finished> <received> <p99 ns>` four times
//! a second and, after the stop, `result <WorkerStats JSON>`.

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
    let reporter = glommio::spawn_local(report_progress(stats.clone(), live.clone(), commands.clone()));
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

/// Prints a progress line every 250 ms until the stop.
async fn report_progress(stats: Rc<RefCell<WorkerStats>>, live: Rc<Live>, commands: Arc<Commands>) {
    loop {
        let last = commands.stop.load(Relaxed);
        let (received, p99) = {
            let s = stats.borrow();
            let p99 = if s.latency.is_empty() {
                0
            } else {
                s.latency.value_at_quantile(0.99)
            };
            (s.received, p99)
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "progress {} {} {} {received} {p99}",
            live.connected.get(),
            live.failed.get(),
            live.finished.get()
        );
        let _ = out.flush();
        drop(out);
        if last {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(250)).await;
    }
}
