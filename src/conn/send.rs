//! The fan-out write path of a connection: shared frames written inline
//! when nothing is queued (one vectored send), the rest queued, and the
//! slow-consumer policy applied when the queue passes its limit.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::conn::handle::Conn;
use crate::conn::parts::{Outcome, Published, State};
use crate::conn::queue::{Chunk, OutQueue};
use crate::proto::close::CloseReason;
use crate::sys::sockets::{self, MAX_IOVECS};

impl Conn {
    /// Hands consecutive shared events (one topic's) to this
    /// connection, in order. With nothing queued they go out in one vectored
    /// write, inline; what the socket does not take is queued (one `Arc`
    /// clone per queued frame) and the driver woken. A queue past
    /// `max_queue` closes the connection as a slow consumer (1008): the
    /// dispatcher never waits and memory stays bounded.
    pub fn send_shared<E: Published>(&self, events: &[&E], max_queue: usize, close_deadline: u32) -> Outcome {
        if self.state.get() != State::Open || events.is_empty() {
            return Outcome::Dropped;
        }
        let mut out = self.out.borrow_mut();
        if let Some(queue) = out.as_mut() {
            for event in events {
                queue.push(chunk(*event, self.deflate), 0);
            }
            let (over, conflated) = self.over_limit(queue, max_queue);
            drop(out);
            return if over {
                Outcome::SlowConsumer {
                    discarded: self.slow_consumer(close_deadline) + conflated,
                }
            } else {
                Outcome::Queued { conflated }
            };
        }
        drop(out);
        if let Some(tls) = self.tls() {
            return self.send_shared_tls(tls, events, max_queue, close_deadline);
        }
        let result = if let [event] = events {
            sockets::send(self.fd, event.frame_for(self.deflate))
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = events.len().min(MAX_IOVECS);
            for (slot, event) in slices.iter_mut().zip(events) {
                *slot = IoSlice::new(event.frame_for(self.deflate));
            }
            sockets::send_vectored(self.fd, &slices[..n])
        };
        self.finish_direct(events, result, max_queue, close_deadline)
    }

    /// Whether `send_shared` would write to the socket now (open, nothing
    /// queued): the batched io_uring path then sends for it.
    /// TLS connections encrypt first, so they never are.
    pub fn direct_ready(&self) -> bool {
        self.state.get() == State::Open && !self.has_queued() && self.tls().is_none()
    }

    /// The socket, for the batched io_uring send path.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// After a direct send of `events` (at most `MAX_IOVECS` of them went
    /// out in the call) returned `result`: queues what the socket did not
    /// take, or kills the connection on an error.
    pub fn finish_direct<E: Published>(
        &self,
        events: &[&E],
        result: io::Result<usize>,
        max_queue: usize,
        close_deadline: u32,
    ) -> Outcome {
        let mut written = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => 0,
            Err(_) => {
                self.kill();
                return Outcome::Dropped;
            }
        };
        let mut first = 0;
        while first < events.len() && written >= events[first].frame_for(self.deflate).len() {
            written -= events[first].frame_for(self.deflate).len();
            first += 1;
        }
        if first == events.len() {
            return Outcome::Written;
        }
        self.queue_events(&events[first..], written, max_queue, close_deadline)
    }

    /// Starts the queue (nothing is queued yet) with `events`, of which the
    /// first had `sent` bytes written already; applies the slow-consumer
    /// policy and wakes the driver.
    pub(super) fn queue_events<E: Published>(
        &self,
        events: &[&E],
        sent: usize,
        max_queue: usize,
        close_deadline: u32,
    ) -> Outcome {
        let mut queue = Box::<OutQueue>::default();
        for (i, event) in events.iter().enumerate() {
            queue.push(chunk(*event, self.deflate), if i == 0 { sent } else { 0 });
        }
        let (over, conflated) = self.over_limit(&mut queue, max_queue);
        *self.out.borrow_mut() = Some(queue);
        if over {
            return Outcome::SlowConsumer {
                discarded: self.slow_consumer(close_deadline) + conflated,
            };
        }
        self.wake();
        Outcome::Queued { conflated }
    }

    /// Whether `queue` is past `max_queue` after this connection's policy:
    /// a monitor first drops statuses superseded by newer ones. Also
    /// returns the frames so dropped.
    pub(super) fn over_limit(&self, queue: &mut OutQueue, max_queue: usize) -> (bool, u32) {
        if queue.bytes() <= max_queue {
            return (false, 0);
        }
        let conflated = if self.conflates() {
            queue.conflate() as u32
        } else {
            0
        };
        (queue.bytes() > max_queue, conflated)
    }

    /// Drops what this reader is behind on (keeping a partly written frame
    /// so the stream stays valid) and closes with 1008 "slow consumer".
    /// Returns the frames discarded.
    pub(super) fn slow_consumer(&self, close_deadline: u32) -> u32 {
        let discarded = self
            .out
            .borrow_mut()
            .as_mut()
            .map_or(0, |queue| queue.keep_partial_head() as u32);
        self.close(CloseReason::SlowConsumer, close_deadline);
        discarded
    }
}

/// The queue entry for a shared event (the variant for a client with a
/// `window`-bit deflate window): device statuses stay replaceable.
fn chunk(event: &impl Published, window: u8) -> Chunk {
    let frame = Arc::clone(event.frame_for(window));
    match event.device() {
        Some(device) => Chunk::Status(frame, Arc::clone(device)),
        None => Chunk::Shared(frame),
    }
}
