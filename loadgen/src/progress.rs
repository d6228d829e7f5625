//! The live progress line on a terminal: connections, deliveries/s and the
//! p99 so far, redrawn while the coordinator waits on the workers.

use std::io::IsTerminal;
use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::fleet::{Fleet, View};

/// The live progress line on a terminal (nothing when stderr is not one).
pub struct Line {
    tty: bool,
    conns: u64,
    shown: bool,
    last: (Instant, u64),
}

impl Line {
    pub fn new(conns: u64) -> Line {
        Line {
            tty: std::io::stderr().is_terminal(),
            conns,
            shown: false,
            last: (Instant::now(), 0),
        }
    }

    /// Polls the workers until `done` or `deadline`, redrawing the line.
    pub fn wait(
        &mut self,
        fleet: &Fleet,
        phase: &str,
        deadline: Instant,
        done: impl Fn(&View) -> bool,
    ) -> View {
        let mut drawn = Instant::now() - Duration::from_secs(1);
        loop {
            let view = fleet.totals();
            if done(&view) || view.gone || Instant::now() >= deadline {
                return view;
            }
            if self.tty && drawn.elapsed() >= Duration::from_millis(250) {
                drawn = Instant::now();
                self.draw(phase, &view);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn draw(&mut self, phase: &str, v: &View) {
        let (at, before) = self.last;
        let per_sec = (v.received - before.min(v.received)) as f64 / at.elapsed().as_secs_f64().max(1e-3);
        self.last = (Instant::now(), v.received);
        let _ = write!(
            std::io::stderr(),
            "\r\x1b[K{phase}: conns {}/{} (failed {})  deliveries {} ({per_sec:.0}/s)  p99 {:.2} ms",
            v.connected,
            self.conns,
            v.failed,
            v.received,
            v.p99_ns as f64 / 1e6
        );
        self.shown = true;
    }

    pub fn finish(&mut self) {
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}
