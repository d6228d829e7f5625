//! The batched io_uring send path (`--send-path uring`): one SQE per
//! recipient that has nothing queued, one `io_uring_enter` per broadcast
//! (or per ring-full), instead of one `sendmsg` syscall per recipient.
//! Sends carry `MSG_DONTWAIT`, so each completes (or fails with EAGAIN)
//! during the submit; the completions are reaped before the dispatcher
//! moves on, and each goes through the same `Conn::finish_direct` as a
//! direct send. A ring of its own per shard, used only by the dispatcher.
//! A TLS recipient's run is sealed (encrypted) into the slot's own buffer
//! and sent from there; what the socket does not take is queued as
//! ciphertext (`Conn::finish_sealed`).

use std::io;
use std::rc::Rc;

use io_uring::{opcode, types, IoUring};

use crate::conn::handle::{Conn, Outcome, Published};
use crate::fanout::broadcast::Event;
use crate::sys::sockets::MAX_IOVECS;

/// Submission queue entries: recipients per `io_uring_enter`. 1,024 keeps
/// the slot storage (64 iovecs each) at 1 MiB per shard, touched only by
/// multi-frame runs; more would save few syscalls.
pub const ENTRIES: u32 = 1024;

/// A shard's batched sender.
pub struct UringSender {
    ring: IoUring,
    /// Recipients of the SQEs in flight; `user_data` indexes it.
    inflight: Vec<Rc<Conn>>,
    /// One `msghdr` and `MAX_IOVECS` iovecs per slot, for multi-frame runs;
    /// allocated once, never moved while SQEs point at them.
    msgs: Box<[libc::msghdr]>,
    iovecs: Box<[libc::iovec]>,
    /// Completion result per slot of the current round (`None`: pending).
    results: Vec<Option<i32>>,
    /// Per slot, the ciphertext of a TLS recipient's run (empty for a
    /// plain one); capacity kept between rounds.
    sealed: Vec<Vec<u8>>,
}

impl UringSender {
    pub fn new() -> io::Result<UringSender> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(ENTRIES)
            .or_else(|_| IoUring::new(ENTRIES))?;
        // SAFETY: msghdr and iovec are plain C structs; all-zero is valid.
        let zero_msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Ok(UringSender {
            ring,
            inflight: Vec::with_capacity(ENTRIES as usize),
            msgs: vec![zero_msg; ENTRIES as usize].into_boxed_slice(),
            iovecs: vec![zero_iov; ENTRIES as usize * MAX_IOVECS].into_boxed_slice(),
            results: Vec::with_capacity(ENTRIES as usize),
            sealed: vec![Vec::new(); ENTRIES as usize],
        })
    }

    /// Delivers `events` (one topic's consecutive events) to every
    /// connection in `targets`; calls `tally` with each outcome. After a
    /// ring failure ([`RingFailed`]) every remaining target is sent to
    /// directly, and the caller should stop using this sender.
    pub fn send_run<'a>(
        &mut self,
        targets: impl Iterator<Item = &'a Rc<Conn>>,
        events: &[&Event],
        max_queue: usize,
        close_deadline: u32,
        mut tally: impl FnMut(Outcome),
    ) -> Result<(), RingFailed> {
        if events.is_empty() {
            return Ok(());
        }
        let sent = &events[..events.len().min(MAX_IOVECS)];
        let mut failed = None;
        for conn in targets {
            // A TLS recipient is sealed into the slot; a plain one sent as is.
            let tls = conn.tls_ready();
            if failed.is_some() || !(tls.is_some() || conn.direct_ready()) {
                tally(conn.send_shared(events, max_queue, close_deadline));
                continue;
            }
            if self.inflight.len() == ENTRIES as usize {
                if let Err(e) = self.complete(events, max_queue, close_deadline, &mut tally) {
                    failed = Some(e);
                    tally(conn.send_shared(events, max_queue, close_deadline));
                    continue;
                }
            }
            let slot = self.inflight.len();
            let entry = match tls {
                Some(tls) => {
                    let sealed = &mut self.sealed[slot];
                    conn.seal(tls, events, sealed);
                    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
                    opcode::Send::new(types::Fd(conn.fd()), sealed.as_ptr(), sealed.len() as u32)
                        .flags(flags)
                        .build()
                        .user_data(slot as u64)
                }
                None => self.entry(slot, conn.fd(), conn.deflate(), sent),
            };
            // SAFETY: the buffers (frames held by `events`, this slot's
            // msghdr/iovecs or sealed ciphertext) outlive the SQE: `complete`
            // reaps it before this function returns, and nothing touches
            // them until then.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_err() {
                // Cannot happen (the ring holds ENTRIES); fall back anyway.
                tally(conn.send_shared(events, max_queue, close_deadline));
                continue;
            }
            self.inflight.push(conn.clone());
        }
        let last = self.complete(events, max_queue, close_deadline, &mut tally);
        failed.map_or(last, Err)
    }

    /// The SQE sending `frames` (each the variant for a `window`-bit
    /// deflate window) to `fd`, using slot `slot`'s storage.
    fn entry(&mut self, slot: usize, fd: i32, window: u8, frames: &[&Event]) -> io_uring::squeue::Entry {
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        if let [event] = frames {
            let frame = event.frame_for(window);
            return opcode::Send::new(types::Fd(fd), frame.as_ptr(), frame.len() as u32)
                .flags(flags)
                .build()
                .user_data(slot as u64);
        }
        let iovs = &mut self.iovecs[slot * MAX_IOVECS..(slot + 1) * MAX_IOVECS];
        for (iov, event) in iovs.iter_mut().zip(frames) {
            let frame = event.frame_for(window);
            iov.iov_base = frame.as_ptr() as *mut libc::c_void;
            iov.iov_len = frame.len();
        }
        let msg = &mut self.msgs[slot];
        msg.msg_iov = iovs.as_mut_ptr();
        msg.msg_iovlen = frames.len() as _;
        opcode::SendMsg::new(types::Fd(fd), msg as *const libc::msghdr)
            .flags(flags as u32)
            .build()
            .user_data(slot as u64)
    }

    /// Submits what is queued, waits for every completion and settles each
    /// recipient.
    ///
    /// If the ring fails, SQEs may still sit unsubmitted in it, pointing at
    /// slot storage the next round would overwrite; so the ring is never
    /// used again ([`RingFailed`]). A recipient whose completion was not
    /// seen may or may not have been sent its bytes: it is closed (it
    /// reconnects) rather than risk a duplicated or lost frame.
    fn complete(
        &mut self,
        events: &[&Event],
        max_queue: usize,
        close_deadline: u32,
        tally: &mut impl FnMut(Outcome),
    ) -> Result<(), RingFailed> {
        let want = self.inflight.len();
        if want == 0 {
            return Ok(());
        }
        let mut done = 0;
        let mut failure = None;
        self.results.clear();
        self.results.resize(want, None);
        while done < want {
            if let Err(e) = self.ring.submit_and_wait(want - done) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::warn!(error = %e, "io_uring submit failed: this shard sends directly from now on");
                failure = Some(RingFailed);
                break;
            }
            for cqe in self.ring.completion() {
                if let Some(result) = self.results.get_mut(cqe.user_data() as usize) {
                    if result.is_none() {
                        *result = Some(cqe.result());
                        done += 1;
                    }
                }
            }
        }
        // Frames past the first MAX_IOVECS were not in the SQE: as after a
        // direct send, finish_direct queues them.
        for (slot, (conn, result)) in self.inflight.drain(..).zip(&self.results).enumerate() {
            let sealed = std::mem::take(&mut self.sealed[slot]);
            let Some(result) = *result else {
                conn.kill();
                tally(Outcome::Dropped);
                self.sealed[slot] = reuse(sealed);
                continue;
            };
            let result = match result {
                n if n >= 0 => Ok(n as usize),
                e => Err(io::Error::from_raw_os_error(-e)),
            };
            if sealed.is_empty() {
                tally(conn.finish_direct(events, result, max_queue, close_deadline));
            } else {
                tally(conn.finish_sealed(&sealed, result));
            }
            self.sealed[slot] = reuse(sealed);
        }
        failure.map_or(Ok(()), Err)
    }
}

/// An emptied buffer, its capacity kept for the next round.
fn reuse(mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    buf
}

/// The ring failed; it must not be used again (see [`UringSender::send_run`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFailed;
