//! The write path of a connection on the TLS port: frames are encrypted by
//! its session (a run of frames as one record) and the ciphertext goes out
//! with the same non-blocking `sendmsg` as plain frames, inline from
//! whoever writes. What the socket does not take stays in the session as
//! ciphertext (at most one flush's worth); frames arriving meanwhile wait
//! in the connection's queue as plaintext (shared, conflatable, bounded by
//! `max_queue_bytes`) and are encrypted by the driver when the socket drains.
//! The batched io_uring path seals a run into a buffer of its own instead
//! ([`Conn::seal`]); what the socket does not take of it is queued as
//! [`Chunk::Sealed`], ahead of anything else.

use std::cell::RefCell;
use std::io::{self, IoSlice, Write};

use crate::conn::handle::Conn;
use crate::conn::parts::State;
use crate::conn::parts::{Outcome, Published};
use crate::conn::queue::Chunk;
use crate::sys::sockets::MAX_IOVECS;
use crate::tls::session::{FdWriter, Session, VecWriter};

/// Queued plaintext encrypted per driver flush: 4 records' worth.
const FLUSH_BYTES: usize = 64 * 1024;

thread_local! {
    /// Where a run of frames is gathered to be encrypted as one record;
    /// one per shard thread, reused (no allocation once grown).
    static RUN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Conn {
    /// `push` for a TLS connection with nothing queued.
    pub(super) fn push_tls(&self, tls: &RefCell<Session>, chunk: Chunk) {
        let mut session = tls.borrow_mut();
        if session.pending() {
            drop(session);
            self.start_queue(chunk, 0);
            return;
        }
        session.encrypt(chunk.bytes());
        let sent = session.send(&mut FdWriter(self.fd));
        drop(session);
        match sent {
            Ok(true) => {}
            Ok(false) => self.wake(),
            Err(_) => self.kill(),
        }
    }

    /// `send_shared` for a TLS connection with nothing queued.
    pub(super) fn send_shared_tls<E: Published>(
        &self,
        tls: &RefCell<Session>,
        events: &[&E],
        max_queue: usize,
        close_deadline: u32,
    ) -> Outcome {
        let mut session = tls.borrow_mut();
        if session.pending() {
            drop(session);
            return self.queue_events(events, 0, max_queue, close_deadline);
        }
        encrypt(&mut session, events, self.deflate);
        let sent = session.send(&mut FdWriter(self.fd));
        drop(session);
        match sent {
            Ok(true) => Outcome::Written,
            Ok(false) => {
                self.wake();
                Outcome::Queued { conflated: 0 }
            }
            Err(_) => {
                self.kill();
                Outcome::Dropped
            }
        }
    }

    /// The session of a TLS connection that could take a batched send now:
    /// open, nothing queued, no ciphertext waiting.
    pub fn tls_ready(&self) -> Option<&RefCell<Session>> {
        let tls = self.tls()?;
        (self.state.get() == State::Open && !self.has_queued()).then_some(tls)
    }

    /// Encrypts `events` (a run as one record) and moves the ciphertext
    /// into `sealed`, for the batched send path.
    pub fn seal<E: Published>(&self, tls: &RefCell<Session>, events: &[&E], sealed: &mut Vec<u8>) {
        let mut session = tls.borrow_mut();
        encrypt(&mut session, events, self.deflate);
        let _ = session.send(&mut VecWriter(sealed));
    }

    /// After a batched send of `sealed` returned `result`: queues what the
    /// socket did not take, or kills the connection on an error.
    pub fn finish_sealed(&self, sealed: &[u8], result: io::Result<usize>) -> Outcome {
        let written = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => 0,
            Err(_) => {
                self.kill();
                return Outcome::Dropped;
            }
        };
        if written >= sealed.len() {
            return Outcome::Written;
        }
        self.start_queue(Chunk::Sealed(sealed[written..].to_vec()), 0);
        Outcome::Queued { conflated: 0 }
    }

    /// The driver's flush of a TLS connection: sends waiting ciphertext,
    /// then encrypts queued frames (up to [`FLUSH_BYTES`] at a time) and
    /// sends them, until all is out (`Ok(true)`) or the socket is full
    /// (`Ok(false)`; `out` armed the wake-up).
    pub fn flush_tls(&self, tls: &RefCell<Session>, out: &mut impl Write) -> io::Result<bool> {
        loop {
            let mut session = tls.borrow_mut();
            if !session.send(out)? {
                return Ok(false);
            }
            let mut slot = self.out.borrow_mut();
            let Some(queue) = slot.as_mut() else {
                return Ok(true);
            };
            if queue.is_empty() {
                *slot = None;
                return Ok(true);
            }
            if let Some(records) = queue.sealed_head() {
                match out.write(records) {
                    Ok(n) => queue.consume(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = queue.io_slices(&mut slices);
            let taken = RUN.with(|scratch| {
                let mut run = scratch.borrow_mut();
                run.clear();
                // A sealed chunk is only ever the head (handled above).
                for slice in &slices[..n] {
                    if !run.is_empty() && run.len() + slice.len() > FLUSH_BYTES {
                        break;
                    }
                    run.extend_from_slice(slice);
                }
                session.encrypt(&run);
                run.len()
            });
            queue.consume(taken);
        }
    }
}

/// Encrypts one event, or a run of them as one record (each frame the
/// variant for a `window`-bit deflate window).
fn encrypt<E: Published>(session: &mut Session, events: &[&E], window: u8) {
    match events {
        [event] => session.encrypt(event.frame_for(window)),
        run => RUN.with(|scratch| {
            let frames = run.iter().map(|event| &event.frame_for(window)[..]);
            session.encrypt_run(frames, &mut scratch.borrow_mut());
        }),
    }
}
