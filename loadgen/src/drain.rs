//! A drain under load (`--sigterm-after-ms`): SIGTERM to the spawned
//! server while the publisher keeps going, as a redeploy does; the
//! publisher goes on until the server refuses or is gone, then the run
//! waits for the server to exit and reads its status.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cli::Args;
use crate::fleet::Fleet;
use crate::progress::Line;
use crate::scenario::{finish_sending, start_publisher, SendOutcome};
use crate::server::Spawned;

/// What the drain measured.
pub struct Drained {
    pub sent: SendOutcome,
    /// SIGTERM → the process gone, ms (`None`: still running at the deadline).
    pub exit_ms: Option<f64>,
    /// Its exit status, as the shell would say it.
    pub status: String,
    /// Exited by itself with status 0.
    pub clean: bool,
}

/// Publishes every event to `publish_to`, sends SIGTERM
/// `--sigterm-after-ms` into it, and waits for the exit (`drain_secs` past the SIGTERM at most).
pub fn run(
    args: &Args,
    spawned: &mut Spawned,
    publish_to: &[SocketAddr],
    fleet: &Fleet,
    line: &mut Line,
    rate: Option<f64>,
    deadline: Instant,
) -> Result<Drained, String> {
    let after_ms = args.sigterm_after_ms.unwrap_or(0);
    let sender = start_publisher(args, publish_to, rate, 0..args.events)?;
    let at = (Instant::now() + Duration::from_millis(after_ms)).min(deadline);
    line.wait(fleet, "sending", at, |_| sender.is_finished());
    if sender.is_finished() {
        eprintln!("loadgen: note: every event was sent before the SIGTERM (raise --events)");
    }
    spawned.terminate();
    let termed = Instant::now();
    eprintln!("loadgen: SIGTERM sent to the server");
    let (sent, ()) = finish_sending(fleet, line, deadline, sender)?;
    let exit_by = (termed + Duration::from_secs(args.drain_secs)).min(deadline);
    let status = spawned.wait_exit(exit_by);
    if status.is_none() {
        // A drain that hangs must not hang the run too.
        spawned.kill9();
    }
    let exit_ms = status.map(|_| termed.elapsed().as_secs_f64() * 1e3);
    line.finish();
    eprintln!(
        "loadgen: {} accepted before the server stopped taking events; {}",
        sent.accepted,
        exit_ms.map_or("the server was still running".to_string(), |ms| format!(
            "the server exited {ms:.0} ms after the SIGTERM"
        ))
    );
    Ok(Drained {
        sent,
        exit_ms,
        clean: status.is_some_and(|s| s.success()),
        status: status.map_or("still running".into(), |s| s.to_string()),
    })
}
