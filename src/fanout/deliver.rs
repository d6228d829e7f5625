//! Deliver published batches to a shard's local subscribers. Consecutive
//! events for one topic go to each subscriber in one vectored write; a
//! subscriber with nothing queued is written inline, with no allocation,
//! copy or task wake-up.

use std::sync::Arc;

use crate::conn::handle::Outcome;
use crate::fanout::broadcast::{Batch, Event};
use crate::fanout::registry::Registry;
use crate::ops::stats::Delivered;

/// Limits applied while delivering.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_queue_bytes: usize,
    /// Shard clock by which a slow consumer's close must complete.
    pub close_deadline: u32,
}

/// How the dispatcher writes to sockets that have nothing queued.
pub enum SendPath {
    /// One `sendmsg` per recipient, inline.
    Direct,
    /// One io_uring SQE per recipient, one submit per run.
    Uring(Box<crate::fanout::uring_send::UringSender>),
}

impl SendPath {
    /// The configured path; `uring` falls back to `direct` (with a warning)
    /// where a ring cannot be set up.
    pub fn for_config(kind: crate::config::SendPathKind, shard: usize) -> SendPath {
        match kind {
            crate::config::SendPathKind::Direct => SendPath::Direct,
            crate::config::SendPathKind::Uring => match crate::fanout::uring_send::UringSender::new() {
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
        SendPath::Uring(sender) => {
            let sent = sender.send_run(
                subscribers.iter().map(|(_, c)| c),
                frames,
                policy.max_queue_bytes,
                policy.close_deadline,
                |outcome| tally(outcome, frames.len(), done),
            );
            if sent.is_err() {
                // Never reuse a failed ring: unsubmitted SQEs may be left in it.
                *path = SendPath::Direct;
            }
        }
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
