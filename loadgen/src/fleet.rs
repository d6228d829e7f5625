//! The worker processes of a run, seen from the coordinator: start them
//! with their plans, watch their progress lines, stop them and collect
//! their statistics. Workers die with the coordinator (PR_SET_PDEATHSIG),
//! so an interrupted run leaves nothing behind.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::Plan;
use crate::stats::WorkerStats;

/// The latest figures of one worker (or, summed, of all).
#[derive(Default, Clone)]
pub struct View {
    pub connected: u64,
    pub failed: u64,
    pub finished: u64,
    pub received: u64,
    /// Highest p99 so far over the workers, ns.
    pub p99_ns: u64,
    /// The worker's statistics, once it sent them.
    pub result: Option<WorkerStats>,
    /// The worker's output ended.
    pub gone: bool,
    /// `--timeline`: the windows it reported, oldest first.
    pub windows: Vec<Window>,
}

/// One worker's figures for one window of `--timeline`.
#[derive(Default, Clone, Copy)]
pub struct Window {
    /// Its end, ms since the epoch (a multiple of the window's length).
    pub end_ms: u64,
    pub connected: u64,
    /// Deliveries timed in it, and their p50, p99 and max, ns.
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// The running worker processes.
pub struct Fleet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    views: Arc<Mutex<Vec<View>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts one worker process per plan (this same binary, `worker`).
    pub fn start(plans: &[Plan]) -> Result<Fleet, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
        let views = Arc::new(Mutex::new(vec![View::default(); plans.len()]));
        let mut fleet = Fleet {
            children: Vec::new(),
            stdins: Vec::new(),
            views: views.clone(),
            readers: Vec::new(),
        };
        for (w, plan) in plans.iter().enumerate() {
            let mut cmd = Command::new(&exe);
            cmd.arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            // SAFETY: prctl in the forked child before exec; async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = cmd.spawn().map_err(|e| format!("cannot start worker {w}: {e}"))?;
            let mut stdin = child.stdin.take().ok_or("worker without stdin")?;
            let stdout = child.stdout.take().ok_or("worker without stdout")?;
            let line = simd_json::to_string(plan).map_err(|e| e.to_string())?;
            writeln!(stdin, "{line}").map_err(|e| format!("worker {w}: {e}"))?;
            let views = views.clone();
            fleet
                .readers
                .push(std::thread::spawn(move || read_worker(w, stdout, &views)));
            fleet.children.push(child);
            fleet.stdins.push(stdin);
        }
        Ok(fleet)
    }

    /// Every worker's figures summed.
    pub fn totals(&self) -> View {
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        views.iter().fold(View::default(), |mut t, v| {
            t.connected += v.connected;
            t.failed += v.failed;
            t.finished += v.finished;
            t.received += v.received;
            t.p99_ns = t.p99_ns.max(v.p99_ns);
            t.gone |= v.gone;
            t
        })
    }

    /// `--timeline`: each window over all workers, oldest first: the sums of
    /// connections and deliveries, and the highest of the workers' p50, p99
    /// and max (a worker's percentile is not mergeable; the highest bounds it).
    pub fn windows(&self) -> Vec<Window> {
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_end = std::collections::BTreeMap::<u64, Window>::new();
        for w in views.iter().flat_map(|v| v.windows.iter()) {
            let t = by_end.entry(w.end_ms).or_insert(Window {
                end_ms: w.end_ms,
                ..Window::default()
            });
            t.connected += w.connected;
            t.count += w.count;
            t.p50_ns = t.p50_ns.max(w.p50_ns);
            t.p99_ns = t.p99_ns.max(w.p99_ns);
            t.max_ns = t.max_ns.max(w.max_ns);
        }
        by_end.into_values().collect()
    }

    /// Writes `word` (one line) to every worker.
    pub fn tell(&mut self, word: &str) {
        for stdin in &mut self.stdins {
            let _ = writeln!(stdin, "{word}");
            let _ = stdin.flush();
        }
    }

    /// Tells every worker to stop and collects their statistics, killing
    /// any that has not answered by `deadline`.
    pub fn stop(mut self, deadline: Instant) -> Result<Vec<WorkerStats>, String> {
        for stdin in &mut self.stdins {
            let _ = writeln!(stdin, "stop");
            let _ = stdin.flush();
        }
        while !self.views_done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for child in &mut self.children {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        views
            .iter()
            .enumerate()
            .map(|(w, v)| {
                v.result
                    .clone()
                    .ok_or_else(|| format!("worker {w} ended without its statistics"))
            })
            .collect()
    }

    fn views_done(&self) -> bool {
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        views.iter().all(|v| v.gone)
    }
}

fn read_worker(w: usize, stdout: std::process::ChildStdout, views: &Mutex<Vec<View>>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let mut views = views.lock().unwrap_or_else(|e| e.into_inner());
        let view = &mut views[w];
        if let Some(rest) = line.strip_prefix("progress ") {
            let n: Vec<u64> = rest.split(' ').filter_map(|v| v.parse().ok()).collect();
            if let [connected, failed, finished, received, p99] = n[..] {
                (view.connected, view.failed, view.finished) = (connected, failed, finished);
                (view.received, view.p99_ns) = (received, p99);
            }
        } else if let Some(rest) = line.strip_prefix("window ") {
            let n: Vec<u64> = rest.split(' ').filter_map(|v| v.parse().ok()).collect();
            if let [end_ms, connected, count, p50_ns, p99_ns, max_ns] = n[..] {
                view.windows.push(Window {
                    end_ms,
                    connected,
                    count,
                    p50_ns,
                    p99_ns,
                    max_ns,
                });
            }
        } else if let Some(json) = line.strip_prefix("result ") {
            match simd_json::serde::from_slice::<WorkerStats>(&mut json.as_bytes().to_vec()) {
                Ok(stats) => view.result = Some(stats),
                Err(e) => eprintln!("loadgen: worker {w} sent unreadable statistics: {e}"),
            }
        }
    }
    let mut views = views.lock().unwrap_or_else(|e| e.into_inner());
    views[w].gone = true;
}
