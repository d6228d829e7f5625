//! Per shard: receive published batches and deliver each frame to the
//! shard's local subscribers. Consecutive events for one topic go to each
//! subscriber in one vectored write; a subscriber with nothing queued is
//! written inline, with no allocation, copy or task wake-up.

use std::rc::Rc;
use std::sync::Arc;

use crate::broadcast::{Batch, Event};
use crate::conn::Outcome;
use crate::registry::Registry;
use crate::shard::Shard;

/// Most batches taken from the channel per round.
const MAX_DRAIN: usize = 256;

/// What one round of delivery did, for the shard's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Frames handed to connections (written or queued).
    pub frames: u64,
    /// Connections closed as slow consumers.
    pub slow_consumers: u64,
    /// Frames not delivered, by `metrics::DROP_REASONS` index: superseded
    /// statuses (conflated), a slow consumer's backlog, closing connections.
    pub dropped: [u64; 3],
}

/// Limits applied while delivering.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_queue_bytes: usize,
    /// Shard clock by which a slow consumer's close must complete.
    pub close_deadline: u32,
}

/// The dispatcher task of one shard.
pub async fn run(shard: Rc<Shard>, rx: flume::Receiver<Arc<Batch>>) {
    let mut pending: Vec<Arc<Batch>> = Vec::with_capacity(MAX_DRAIN);
    let mut path = SendPath::for_config(shard.config.send_path, shard.id);
    while let Ok(first) = rx.recv_async().await {
        pending.push(first);
        while pending.len() < MAX_DRAIN {
            match rx.try_recv() {
                Ok(batch) => pending.push(batch),
                Err(_) => break,
            }
        }
        let policy = Policy {
            max_queue_bytes: shard.config.max_queue_bytes,
            close_deadline: shard.clock() + shard.close_timeout_secs(),
        };
        let mut devices = shard.devices.borrow_mut();
        let mut forgotten = 0;
        for event in pending.iter().flat_map(|b| b.events.iter()) {
            if let Some(device) = &event.device {
                forgotten += devices.record(device, &event.frame);
            }
        }
        drop(devices);
        if forgotten > 0 {
            shard.counters().devices_forgotten(forgotten);
        }
        let done = deliver(&shard.registry.borrow(), &pending, policy, &mut path);
        shard
            .counters()
            .delivered(pending.iter().map(|b| b.events.len() as u64).sum(), done);
        // Publish accepted → written to this shard's last local subscriber:
        // one sample per batch, one lock per round.
        if let Ok(mut h) = shard.board.latencies(shard.id).fanout.lock() {
            for batch in &pending {
                let _ = h.record((batch.accepted.elapsed().as_micros() as u64).clamp(1, 60_000_000));
            }
        }
        pending.clear();
    }
}

/// How the dispatcher writes to sockets that have nothing queued.
pub enum SendPath {
    /// One `sendmsg` per recipient, inline.
    Direct,
    /// One io_uring SQE per recipient, one submit per run.
    Uring(Box<crate::uring_send::UringSender>),
}

impl SendPath {
    /// The configured path; `uring` falls back to `direct` (with a warning)
    /// where a ring cannot be set up.
    pub fn for_config(kind: crate::config::SendPathKind, shard: usize) -> SendPath {
        match kind {
            crate::config::SendPathKind::Direct => SendPath::Direct,
            crate::config::SendPathKind::Uring => match crate::uring_send::UringSender::new() {
                Ok(sender) => SendPath::Uring(Box::new(sender)),
                Err(error) => {
                    tracing::warn!(shard, %error, "no io_uring send ring; using direct sends");
                    SendPath::Direct
                }
            },
        }
    }
}

/// Delivers `batches` in order to the subscribers in `registry`.
pub fn deliver(
    registry: &Registry,
    batches: &[Arc<Batch>],
    policy: Policy,
    path: &mut SendPath,
) -> Delivered {
    let mut done = Delivered::default();
    let mut run: Vec<&Event> = Vec::new();
    let mut run_topic: Option<&str> = None;
    for event in batches.iter().flat_map(|b| b.events.iter()) {
        if run_topic != Some(&event.topic) {
            if let Some(topic) = run_topic {
                deliver_run(registry, topic, &run, policy, path, &mut done);
            }
            run.clear();
            run_topic = Some(&event.topic);
        }
        run.push(event);
    }
    if let Some(topic) = run_topic {
        deliver_run(registry, topic, &run, policy, path, &mut done);
    }
    done
}

/// Writes `frames` (consecutive events of one topic) to each subscriber.
fn deliver_run(
    registry: &Registry,
    topic: &str,
    frames: &[&Event],
    policy: Policy,
    path: &mut SendPath,
    done: &mut Delivered,
) {
    let Some(subscribers) = registry.subscribers(topic) else {
        return;
    };
    match path {
        SendPath::Direct => {
            for (_, conn) in subscribers {
                let outcome = conn.send_shared(frames, policy.max_queue_bytes, policy.close_deadline);
                tally(outcome, frames.len(), done);
            }
        }
        SendPath::Uring(sender) => sender.send_run(
            subscribers.iter().map(|(_, c)| c),
            frames,
            policy.max_queue_bytes,
            policy.close_deadline,
            |outcome| tally(outcome, frames.len(), done),
        ),
    }
}

/// Counts one recipient's outcome of a run of `frames` frames.
fn tally(outcome: Outcome, frames: usize, done: &mut Delivered) {
    match outcome {
        Outcome::Written => done.frames += frames as u64,
        Outcome::Queued { conflated } => {
            done.frames += frames as u64;
            done.dropped[0] += u64::from(conflated);
        }
        Outcome::SlowConsumer { discarded } => {
            done.slow_consumers += 1;
            done.dropped[1] += u64::from(discarded);
        }
        Outcome::Dropped => done.dropped[2] += frames as u64,
    }
}
