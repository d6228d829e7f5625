//! crash-restart's middle: after the first half of the events, kill the
//! spawned server with SIGKILL, start it again on the same port after the
//! down time, wait for every client to come back by itself (probing
//! `/health` meanwhile), then send the second half.

use std::time::{Duration, Instant};

use crate::cli::Args;
use crate::fleet::Fleet;
use crate::health::{Probed, Prober};
use crate::progress::Line;
use crate::scenario::{finish_sending, start_publisher, SendOutcome};
use crate::server::{self, SpawnPlan, Spawned};

/// What the crash and the restart measured.
pub struct Crashed {
    /// Both halves' publishing together.
    pub sent: SendOutcome,
    /// SIGKILL → the new process listening, ms.
    pub restart_ms: f64,
    /// SIGKILL → every client connected again, ms (within the 250 ms of a
    /// progress report).
    pub all_back_ms: Option<f64>,
    /// The health checks from the restart until every client was back.
    pub health: Option<Probed>,
}

/// Runs the crash and the restart; `before` clients are connected.
#[allow(clippy::too_many_arguments)]
pub fn run(
    args: &Args,
    spawned: &mut Spawned,
    spawn_plan: &SpawnPlan,
    fleet: &Fleet,
    line: &mut Line,
    rate: Option<f64>,
    deadline: Instant,
    before: u64,
) -> Result<Crashed, String> {
    let half = args.events / 2;
    // Publishes go to the admin port when the server has one.
    let publish_to = |s: &Spawned| [s.admin.unwrap_or(s.addr)];
    let first = start_publisher(args, &publish_to(spawned), rate, 0..half)?;
    let (first, ()) = finish_sending(fleet, line, deadline, first)?;
    // Right after the last answer: some deliveries are still on their way.
    spawned.kill9();
    let killed = Instant::now();
    eprintln!(
        "loadgen: server killed (SIGKILL) after {} accepted events",
        first.accepted
    );
    line.wait(
        fleet,
        "crashed",
        (killed + Duration::from_secs(10)).min(deadline),
        |v| v.connected < before,
    );
    if let Some(wait) = (killed + Duration::from_millis(args.down_ms)).checked_duration_since(Instant::now())
    {
        std::thread::sleep(wait);
    }
    let plan = SpawnPlan {
        listen: Some(spawned.addr),
        ..*spawn_plan
    };
    *spawned = server::spawn(&plan)?;
    let restart_ms = killed.elapsed().as_secs_f64() * 1e3;
    eprintln!("loadgen: server listening again {restart_ms:.0} ms after the kill");
    let prober = (args.health_every_ms > 0)
        .then(|| Prober::start(spawned.addr, Duration::from_millis(args.health_every_ms)));
    let back_by =
        (Instant::now() + Duration::from_millis(args.backoff_max_ms) + Duration::from_secs(60)).min(deadline);
    let view = line.wait(fleet, "coming back", back_by, |v| v.connected >= before);
    line.finish();
    let all_back_ms = (view.connected >= before).then(|| killed.elapsed().as_secs_f64() * 1e3);
    let health = prober.map(Prober::stop);
    let second = start_publisher(args, &publish_to(spawned), rate, half..args.events)?;
    let (second, ()) = finish_sending(fleet, line, deadline, second)?;
    Ok(Crashed {
        sent: SendOutcome {
            accepted: first.accepted + second.accepted,
            error: first.error.or(second.error),
            start_ns: first.start_ns,
        },
        restart_ms,
        all_back_ms,
        health,
    })
}
