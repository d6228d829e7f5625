//! One WebSocket connection's shared handle (`Conn`), which other tasks
//! write through; the task that drives its socket is `serve::ws`. The
//! handle is made whole by its constructor ([`ConnSpec`]) and its close
//! state changes only through the methods here (one state machine).
//!
//! Writers never wait: `Conn::send` writes inline when nothing is queued and
//! only parks the remainder (and wakes the driver) when the socket is full.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Waker;

pub use crate::conn::parts::{ConnSpec, Expiry, Outcome, Published, Role, State, Subscription};
use crate::conn::queue::{Chunk, OutQueue};
use crate::proto::close::CloseReason;
use crate::proto::frame::{self, Control, Data, OpCode};
use crate::sys::sockets;
use crate::tls::session::Session;

/// The handle of one connection, shared by its driver and by whatever
/// writes to it (heartbeat, shutdown, fan-out). `fd` is only touched while
/// the state is not `Dead`: the driver marks it `Dead` before closing the
/// socket, so a stale handle never writes to a reused descriptor.
pub struct Conn {
    /// Key in the shard's connection slab.
    pub key: u32,
    pub(super) fd: RawFd,
    pub(super) state: Cell<State>,
    /// Frames the socket did not take yet; allocated only while non-empty,
    /// so an idle connection carries no queue.
    pub(crate) out: RefCell<Option<Box<OutQueue>>>,
    /// The driver's waker while it is parked; taken by the first wake.
    pub(crate) waker: Cell<Option<Waker>>,
    /// Shard clock (seconds) of the last byte received.
    pub(crate) last_seen: Cell<u32>,
    /// Shard clock of the last heartbeat ping sent.
    last_ping: Cell<u32>,
    /// Shard clock after which a `Closing` connection is dropped.
    close_deadline: Cell<u32>,
    /// Index into the configured client types, for the per-type counters.
    client_type: u16,
    /// Recent bad messages (halved every sweep); at `MAX_STRIKES`: 1008.
    strikes: Cell<u8>,
    /// Why the connection is ending (`metrics::CLOSE_REASONS` index); set
    /// by the first close, `NO_REASON` until then.
    close_reason: Cell<u8>,
    /// The token's `exp` (Unix seconds; 0: none). At `exp` the connection is
    /// closed with 4001 unless the client refreshed its token.
    exp: Cell<u32>,
    /// `token_expiring` was sent for the current `exp`.
    expiry_notified: Cell<bool>,
    /// What the connection does with client messages.
    role: Role,
    /// permessage-deflate: the window the client can inflate (0: plain).
    pub(super) deflate: u8,
    /// A device's id and a TLS connection's session; boxed, so that a
    /// plain, non-device connection pays 8 bytes for them.
    extra: Option<Box<Extra>>,
    /// Topics this connection is subscribed to, to undo on close. A boxed
    /// slice (rebuilt on the rare change) keeps `Conn` in a smaller class.
    pub(crate) subscriptions: RefCell<Box<[Subscription]>>,
}

impl Conn {
    /// A connection on `fd`; `tls`: the session over it, after its handshake.
    pub fn new(key: u32, fd: RawFd, now: u32, spec: ConnSpec, tls: Option<Session>) -> Conn {
        let extra = (spec.device.is_some() || tls.is_some()).then(|| {
            Box::new(Extra {
                device: spec.device,
                tls: tls.map(RefCell::new),
            })
        });
        Conn {
            key,
            fd,
            state: Cell::new(State::Open),
            out: RefCell::new(None),
            waker: Cell::new(None),
            last_seen: Cell::new(now),
            last_ping: Cell::new(now),
            close_deadline: Cell::new(u32::MAX),
            client_type: spec.client_type.unwrap_or(NO_TYPE),
            strikes: Cell::new(0),
            close_reason: Cell::new(NO_REASON),
            subscriptions: RefCell::new(Box::default()),
            extra,
            role: spec.role,
            deflate: spec.deflate,
            exp: Cell::new(spec.exp),
            expiry_notified: Cell::new(false),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The LZ77 window (bits) the client can inflate; 0 when it did not
    /// negotiate permessage-deflate.
    pub fn deflate(&self) -> u8 {
        self.deflate
    }

    /// The device id of a device connection.
    pub fn device(&self) -> Option<&str> {
        self.extra.as_ref()?.device.as_deref().map(String::as_str)
    }

    /// The TLS session of a connection on the TLS port.
    pub fn tls(&self) -> Option<&RefCell<Session>> {
        self.extra.as_ref()?.tls.as_ref()
    }

    /// Slow-consumer policy: device monitors first keep only the newest
    /// status per device; everyone else is closed with 1008 past the limit.
    pub(super) fn conflates(&self) -> bool {
        self.role == Role::Monitor
    }

    /// Adopts a refreshed token's `exp` (a new `token_expiring` will follow).
    pub fn set_exp(&self, exp: u32) {
        self.exp.set(exp);
        self.expiry_notified.set(false);
    }

    pub fn exp(&self) -> u32 {
        self.exp.get()
    }

    /// Index into the configured client types, for the per-type counters.
    pub fn client_type(&self) -> Option<u16> {
        (self.client_type != NO_TYPE).then_some(self.client_type)
    }

    /// Counts one bad message; true when the client has sent too many.
    pub(crate) fn strike(&self) -> bool {
        let n = self.strikes.get().saturating_add(1);
        self.strikes.set(n);
        n >= MAX_STRIKES
    }

    pub fn state(&self) -> State {
        self.state.get()
    }

    /// Queues a frame for an open connection (dropped otherwise).
    pub fn send(&self, chunk: Chunk) {
        if self.state.get() == State::Open {
            self.push(chunk);
        }
    }

    /// Writes inline when nothing is queued; otherwise, or for what the
    /// socket did not take, appends to the queue. The driver is woken only
    /// when the queue goes from empty to non-empty: after that it is either
    /// already woken or waiting for the socket to drain.
    pub(crate) fn push(&self, chunk: Chunk) {
        let mut out = self.out.borrow_mut();
        if let Some(queue) = out.as_mut() {
            queue.push(chunk, 0);
            return;
        }
        if let Some(tls) = self.tls() {
            drop(out);
            self.push_tls(tls, chunk);
            return;
        }
        let bytes = chunk.bytes();
        let sent = match sockets::send(self.fd, bytes) {
            Ok(n) if n == bytes.len() => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => 0,
            Err(_) => {
                drop(out);
                self.kill();
                return;
            }
        };
        drop(out);
        self.start_queue(chunk, sent);
    }

    /// Starts the queue (nothing is queued) with `chunk`, of which `sent`
    /// bytes were written already, and wakes the driver to write the rest.
    pub(super) fn start_queue(&self, chunk: Chunk, sent: usize) {
        let mut queue = Box::<OutQueue>::default();
        queue.push(chunk, sent);
        *self.out.borrow_mut() = Some(queue);
        self.wake();
    }

    /// How many of this connection's subscriptions satisfy `is_room`.
    pub fn room_count(&self, is_room: impl Fn(u32) -> bool) -> usize {
        self.subscriptions
            .borrow()
            .iter()
            .filter(|s| is_room(s.topic))
            .count()
    }

    /// Bytes waiting in the outbound queue.
    pub fn queued_bytes(&self) -> usize {
        self.out.borrow().as_ref().map_or(0, |q| q.bytes())
    }

    /// Frames or (TLS) ciphertext wait for the socket.
    pub(crate) fn has_queued(&self) -> bool {
        self.out.borrow().is_some()
            || self
                .tls()
                .is_some_and(|tls| tls.try_borrow().map_or(true, |s| s.pending()))
    }

    /// Starts the close handshake: sends a close frame for `reason`, then
    /// waits for the peer's close until `deadline` (shard clock).
    ///
    /// The close state machine, whole:
    /// - `Open` → `Closing` here (we close first), or → `Finishing` in
    ///   [`Conn::peer_closed`] (the peer closed first: our reply is queued)
    ///   and in [`Conn::fail`] (a protocol violation: its stream cannot be
    ///   parsed past it, so its close frame could never be found);
    /// - `Closing` → `Finishing` when the peer's close frame arrives;
    /// - `Finishing`: the driver flushes what is queued, then drops TCP
    ///   first, as the server must (RFC 6455 §7.1.1): it sends FIN and
    ///   goes `Shut` ([`Conn::shut`]), reading and dropping what the peer
    ///   still sends until its FIN or the deadline;
    /// - any → `Dead` ([`Conn::kill`]) on an I/O error, a vanished peer, or
    ///   a close deadline passed.
    pub fn close(&self, reason: CloseReason, deadline: u32) {
        if self.state.get() == State::Open {
            self.note_reason(reason);
            self.push(Chunk::Owned(frame::close(reason.code(), reason.text())));
            self.close_deadline.set(deadline);
            if self.state.get() == State::Open {
                self.state.set(State::Closing);
            }
            self.wake();
        }
    }

    /// The peer's close frame arrived, with `reply` (our echo of its code)
    /// to send if we had not closed first.
    pub(crate) fn peer_closed(&self, reply: Chunk, deadline: u32) {
        match self.state.get() {
            State::Open => {
                self.push(reply);
                self.note_reason(CloseReason::ClientClose);
                self.close_deadline.set(deadline);
                if self.state.get() == State::Open {
                    self.state.set(State::Finishing);
                }
            }
            State::Closing => self.state.set(State::Finishing),
            State::Finishing | State::Shut | State::Dead => {}
        }
    }

    /// Our FIN is out after the close handshake (see [`State::Shut`]).
    pub(crate) fn shut(&self) {
        if self.state.get() == State::Finishing {
            self.state.set(State::Shut);
        }
    }

    /// Fails the connection for a protocol violation (RFC 6455 §7.1.7): our
    /// close frame with `reason`, then TCP is dropped as soon as it is out.
    /// The peer's close is not awaited: its stream cannot be parsed past the
    /// violation, so that frame could never be found.
    pub(crate) fn fail(&self, reason: CloseReason, deadline: u32) {
        if self.state.get() != State::Open {
            self.kill();
            return;
        }
        self.close(reason, deadline);
        if self.state.get() == State::Closing {
            self.state.set(State::Finishing);
        }
    }

    /// Records why the connection ends, unless a reason is already set.
    fn note_reason(&self, reason: CloseReason) {
        if self.close_reason.get() == NO_REASON {
            self.close_reason.set(reason as u8);
        }
    }

    /// Why the connection ended: a peer that vanished without a close
    /// handshake is a `Disconnect`.
    pub fn close_reason(&self) -> CloseReason {
        CloseReason::from_index(self.close_reason.get()).unwrap_or(CloseReason::Disconnect)
    }

    /// Ends the connection now, without a close handshake.
    pub fn kill(&self) {
        self.state.set(State::Dead);
        *self.out.borrow_mut() = None;
        self.wake();
    }

    pub(super) fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Heartbeat and timeouts, called by the shard's sweeper each tick.
    pub fn tick(&self, now: u32, heartbeat: u32, idle: u32, close_timeout: u32, expiry: Expiry) {
        self.strikes.set(self.strikes.get() / 2);
        let exp = self.exp.get();
        if self.state.get() == State::Open && exp != 0 {
            if expiry.now >= exp {
                self.close(CloseReason::TokenExpired, now + close_timeout);
                return;
            }
            if !self.expiry_notified.get() && expiry.now + expiry.notice >= exp {
                self.expiry_notified.set(true);
                // Monitors parse every message as a status object: no notice.
                if !self.conflates() {
                    let text = format!(
                        r#"{{"type":"token_expiring","expires_at":"{}"}}"#,
                        crate::time::rfc3339(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp.into())
                        )
                    );
                    self.send(Chunk::Owned(frame::encode(
                        OpCode::Data(Data::Text),
                        text.as_bytes(),
                    )));
                }
            }
        }
        match self.state.get() {
            State::Open if now.saturating_sub(self.last_seen.get()) >= idle => {
                self.close(CloseReason::IdleTimeout, now + close_timeout);
            }
            State::Open if now.saturating_sub(self.last_ping.get()) >= heartbeat => {
                self.last_ping.set(now);
                self.push(Chunk::Owned(frame::encode(OpCode::Control(Control::Ping), b"")));
            }
            State::Closing | State::Finishing | State::Shut if now >= self.close_deadline.get() => {
                self.kill()
            }
            _ => {}
        }
    }
}

/// What only some connections have (see `Conn::extra`).
struct Extra {
    device: Option<Rc<String>>,
    tls: Option<RefCell<Session>>,
}

/// `client_type` of a connection without one.
const NO_TYPE: u16 = u16::MAX;

/// `Conn::close_reason` before any close.
const NO_REASON: u8 = u8::MAX;
/// Bad messages (decaying by half every sweep, twice a second) after which
/// a client is closed with 1008.
const MAX_STRIKES: u8 = 10;

#[cfg(test)]
mod tests {
    /// Idle connections must stay small (target: <= 1 KiB of RSS each,
    /// `bench/idle-rss`): `Conn` (96 bytes with its subscription list and
    /// device id) plus its `Rc` header fits mimalloc's 112-byte class.
    #[test]
    fn idle_connection_handle_stays_small() {
        assert!(
            std::mem::size_of::<super::Conn>() <= 96,
            "{}",
            std::mem::size_of::<super::Conn>()
        );
    }
}
