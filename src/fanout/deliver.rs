//! Deliver published batches to a shard's local subscribers. Consecutive
//! events for one topic go to each subscriber in one vectored write; a
//! subscriber with nothing queued is written inline, with no allocation,
//! copy or task wake-up. A round can be delivered in steps of bounded
//! work ([`Round`]), so a large fan-out shares its core.

use std::sync::Arc;

use crate::conn::handle::{Outcome, Published};
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

/// Delivers `batches` in order to the subscribers in `registry`, all at once.
pub fn deliver(
    registry: &Registry,
    batches: &[Arc<Batch>],
    policy: Policy,
    path: &mut SendPath,
) -> Delivered {
    let mut round = Round::new(batches);
    while !round.step(registry, policy, path, usize::MAX) {}
    round.done
}

/// One dispatcher round: `batches` delivered in order, a bounded number of
/// recipients per [`Round::step`], so the shard's other tasks can run in
/// between. Between two steps subscribers may leave (their slots empty);
/// none may join: a joiner's positions are those of the last finished
/// round, so it must not see part of this one (`Shard::between_rounds`).
pub struct Round<'a> {
    events: Vec<&'a Event>,
    /// The current run (consecutive events of one topic): `start..end`.
    start: usize,
    end: usize,
    /// The next subscriber slot of the current run.
    slot: usize,
    /// What the round has done so far.
    pub done: Delivered,
}

impl<'a> Round<'a> {
    pub fn new(batches: &'a [Arc<Batch>]) -> Round<'a> {
        Round {
            events: batches.iter().flat_map(|b| b.events.iter()).collect(),
            start: 0,
            end: 0,
            slot: 0,
            done: Delivered::default(),
        }
    }

    /// Delivers to at most `budget` more recipients (a run's recipients
    /// count once for all its frames); true when the round is complete.
    pub fn step(&mut self, registry: &Registry, policy: Policy, path: &mut SendPath, budget: usize) -> bool {
        let mut left = budget;
        while self.start < self.events.len() {
            if self.end == self.start {
                let topic = &self.events[self.start].topic;
                self.end = self.start
                    + self.events[self.start..]
                        .iter()
                        .take_while(|e| e.topic == *topic)
                        .count();
                self.slot = 0;
            }
            if left == 0 {
                return false;
            }
            let frames = &self.events[self.start..self.end];
            let reached_end = deliver_run(
                registry,
                frames,
                policy,
                path,
                &mut self.slot,
                &mut left,
                &mut self.done,
            );
            if !reached_end {
                return false;
            }
            self.start = self.end;
        }
        true
    }
}

/// Writes `frames` (consecutive events of one topic) to its subscribers
/// from slot `*slot` on, at most `*left` of them; advances both. True when
/// no subscriber is left past `*slot`.
fn deliver_run(
    registry: &Registry,
    frames: &[&Event],
    policy: Policy,
    path: &mut SendPath,
    slot: &mut usize,
    left: &mut usize,
    done: &mut Delivered,
) -> bool {
    let Some(subscribers) = registry.subscribers(&frames[0].topic) else {
        return true;
    };
    let end = subscribers.capacity();
    let (mut next, mut taken, mut compressed) = (*slot, 0usize, 0u64);
    let budget = *left;
    let targets = (*slot..end)
        .filter_map(|k| subscribers.get(k).map(|c| (k, c)))
        .take(budget)
        .map(|(k, c)| {
            next = k + 1;
            taken += 1;
            if c.deflate() != 0 {
                compressed += compressed_for(frames, c.deflate());
            }
            c
        });
    match path {
        SendPath::Direct => {
            for conn in targets {
                let outcome = conn.send_shared(frames, policy.max_queue_bytes, policy.close_deadline);
                tally(outcome, frames.len(), done);
            }
        }
        SendPath::Uring(sender) => {
            let sent = sender.send_run(
                targets,
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
    done.compressed += compressed;
    *slot = next;
    *left -= taken;
    taken < budget
}

/// How many of `frames` a client with a `window`-bit deflate window gets
/// compressed.
fn compressed_for(frames: &[&Event], window: u8) -> u64 {
    frames
        .iter()
        .filter(|e| !std::ptr::eq(e.frame_for(window).as_ptr(), e.frame.as_ptr()))
        .count() as u64
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
