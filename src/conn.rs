//! One WebSocket connection: the shared handle other tasks write through
//! (`Conn`), and the task that drives its socket (`run`): flush queued
//! frames with vectored sends, read and answer client frames, close.
//!
//! Writers never wait: `Conn::send` writes inline when nothing is queued and
//! only parks the remainder (and wakes the driver) when the socket is full.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use std::sync::Arc;

use crate::broadcast::Event;
use crate::client_msg::{self, Action};
use crate::devices;
use crate::frame::{self, Control, Data, OpCode};
use crate::protocol::{Message, ProtocolError, Receiver};
use crate::queue::{Chunk, OutQueue};
use crate::registry::Subscription;
use crate::shard::Shard;
use crate::sockets::{self, MAX_IOVECS};
use crate::token::Claims;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Exchanging messages.
    Open,
    /// We sent a close frame and wait for the peer's (until the deadline).
    Closing,
    /// The close handshake is done: flush what is queued, then drop TCP.
    Finishing,
    /// Gone: nothing more is written, the driver ends.
    Dead,
}

/// What a connection does with the messages its client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sends every text and binary message back (conformance testing).
    Echo,
    /// An application client: JSON messages (`client_msg`).
    Client,
    /// A device (`device_types`): a client that may also report its status.
    Device,
    /// A device-status monitor: receives status objects only, answers nothing.
    Monitor,
}

/// What happened to frames handed to [`Conn::send_shared`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written to the socket inline.
    Written,
    /// (Partly) queued; the driver writes the rest when the socket drains.
    /// A monitor's queue may have dropped this many superseded statuses.
    Queued { conflated: u32 },
    /// The queue passed its limit: the connection is being closed (1008);
    /// this many queued frames were discarded.
    SlowConsumer { discarded: u32 },
    /// The connection is closing or gone; nothing was sent.
    Dropped,
}

/// The handle of one connection, shared by its driver and by whatever
/// writes to it (heartbeat, shutdown, fan-out). `fd` is only touched while
/// the state is not `Dead`: the driver marks it `Dead` before closing the
/// socket, so a stale handle never writes to a reused descriptor.
pub struct Conn {
    /// Key in the shard's connection slab.
    pub key: u32,
    fd: RawFd,
    state: Cell<State>,
    /// Frames the socket did not take yet; allocated only while non-empty,
    /// so an idle connection carries no queue.
    out: RefCell<Option<Box<OutQueue>>>,
    /// The driver's waker while it is parked; taken by the first wake.
    waker: Cell<Option<Waker>>,
    /// Shard clock (seconds) of the last byte received.
    last_seen: Cell<u32>,
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
    pub exp: Cell<u32>,
    /// `token_expiring` was sent for the current `exp`.
    expiry_notified: Cell<bool>,
    /// What the connection does with client messages (set at upgrade).
    pub role: Cell<Role>,
    /// Slow-consumer policy: `false` closes with 1008 past the queue limit;
    /// `true` (device monitors) first keeps only the newest status per device.
    pub conflate: Cell<bool>,
    /// The device id of a device connection (its token's `sub`).
    pub device: std::cell::OnceCell<Rc<String>>,
    /// Topics this connection is subscribed to, to undo on close. A boxed
    /// slice (rebuilt on the rare change) keeps `Conn` in a smaller class.
    pub subscriptions: RefCell<Box<[Subscription]>>,
}

impl Conn {
    pub fn new(key: u32, fd: RawFd, now: u32, client_type: Option<u16>) -> Conn {
        Conn {
            key,
            fd,
            state: Cell::new(State::Open),
            out: RefCell::new(None),
            waker: Cell::new(None),
            last_seen: Cell::new(now),
            last_ping: Cell::new(now),
            close_deadline: Cell::new(u32::MAX),
            client_type: client_type.unwrap_or(NO_TYPE),
            strikes: Cell::new(0),
            close_reason: Cell::new(NO_REASON),
            subscriptions: RefCell::new(Box::default()),
            device: std::cell::OnceCell::new(),
            conflate: Cell::new(false),
            role: Cell::new(Role::Echo),
            exp: Cell::new(0),
            expiry_notified: Cell::new(false),
        }
    }

    /// Index into the configured client types, for the per-type counters.
    pub fn client_type(&self) -> Option<u16> {
        (self.client_type != NO_TYPE).then_some(self.client_type)
    }

    /// Counts one bad message; true when the client has sent too many.
    fn strike(&self) -> bool {
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
    fn push(&self, chunk: Chunk) {
        let mut out = self.out.borrow_mut();
        if let Some(queue) = out.as_mut() {
            queue.push(chunk, 0);
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
        let mut queue = Box::<OutQueue>::default();
        queue.push(chunk, sent);
        *out = Some(queue);
        drop(out);
        self.wake();
    }

    /// Hands consecutive shared events (one topic's) to this
    /// connection, in order. With nothing queued they go out in one vectored
    /// write, inline; what the socket does not take is queued (one `Arc`
    /// clone per queued frame) and the driver woken. A queue past
    /// `max_queue` closes the connection as a slow consumer (1008): the
    /// dispatcher never waits and memory stays bounded.
    pub fn send_shared(&self, events: &[&Event], max_queue: usize, close_deadline: u32) -> Outcome {
        if self.state.get() != State::Open || events.is_empty() {
            return Outcome::Dropped;
        }
        let mut out = self.out.borrow_mut();
        if let Some(queue) = out.as_mut() {
            for event in events {
                queue.push(chunk(event), 0);
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
        let result = if let [event] = events {
            sockets::send(self.fd, &event.frame)
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = events.len().min(MAX_IOVECS);
            for (slot, event) in slices.iter_mut().zip(events) {
                *slot = IoSlice::new(&event.frame);
            }
            sockets::send_vectored(self.fd, &slices[..n])
        };
        self.finish_direct(events, result, max_queue, close_deadline)
    }

    /// Whether `send_shared` would write to the socket now (open, nothing
    /// queued): the batched io_uring path then sends for it.
    pub fn direct_ready(&self) -> bool {
        self.state.get() == State::Open && !self.has_queued()
    }

    /// The socket, for the batched io_uring send path.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// After a direct send of `events` (at most `MAX_IOVECS` of them went
    /// out in the call) returned `result`: queues what the socket did not
    /// take, or kills the connection on an error.
    pub fn finish_direct(
        &self,
        events: &[&Event],
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
        while first < events.len() && written >= events[first].frame.len() {
            written -= events[first].frame.len();
            first += 1;
        }
        if first == events.len() {
            return Outcome::Written;
        }
        let mut queue = Box::<OutQueue>::default();
        queue.push(chunk(events[first]), written);
        for event in &events[first + 1..] {
            queue.push(chunk(event), 0);
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
    fn over_limit(&self, queue: &mut OutQueue, max_queue: usize) -> (bool, u32) {
        if queue.bytes() <= max_queue {
            return (false, 0);
        }
        let conflated = if self.conflate.get() {
            queue.conflate() as u32
        } else {
            0
        };
        (queue.bytes() > max_queue, conflated)
    }

    /// Drops what this reader is behind on (keeping a partly written frame
    /// so the stream stays valid) and closes with 1008 "slow consumer".
    /// Returns the frames discarded.
    fn slow_consumer(&self, close_deadline: u32) -> u32 {
        let discarded = self
            .out
            .borrow_mut()
            .as_mut()
            .map_or(0, |queue| queue.keep_partial_head() as u32);
        self.close(1008, "slow consumer", close_deadline);
        discarded
    }

    /// Rooms this connection joined.
    pub fn room_count(&self, registry: &crate::registry::Registry) -> usize {
        self.subscriptions
            .borrow()
            .iter()
            .filter(|s| registry.is_room(s.topic))
            .count()
    }

    /// Bytes waiting in the outbound queue.
    pub fn queued_bytes(&self) -> usize {
        self.out.borrow().as_ref().map_or(0, |q| q.bytes())
    }

    fn has_queued(&self) -> bool {
        self.out.borrow().is_some()
    }

    /// Starts the close handshake: sends close `code`, then waits for the
    /// peer's close until `deadline` (shard clock).
    pub fn close(&self, code: u16, reason: &str, deadline: u32) {
        if self.state.get() == State::Open {
            self.note_reason(crate::metrics::close_reason(code, reason));
            self.push(Chunk::Owned(frame::close(code, reason)));
            self.close_deadline.set(deadline);
            if self.state.get() == State::Open {
                self.state.set(State::Closing);
            }
            self.wake();
        }
    }

    /// Records why the connection ends, unless a reason is already set.
    fn note_reason(&self, reason: u8) {
        if self.close_reason.get() == NO_REASON {
            self.close_reason.set(reason);
        }
    }

    /// Why the connection ended (`metrics::CLOSE_REASONS` index): a peer
    /// that vanished without a close handshake is a `disconnect`.
    pub fn close_reason(&self) -> u8 {
        match self.close_reason.get() {
            NO_REASON => crate::metrics::DISCONNECT,
            r => r,
        }
    }

    /// Ends the connection now, without a close handshake.
    pub fn kill(&self) {
        self.state.set(State::Dead);
        *self.out.borrow_mut() = None;
        self.wake();
    }

    fn wake(&self) {
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
                self.close(4001, "token expired", now + close_timeout);
                return;
            }
            if !self.expiry_notified.get() && expiry.now + expiry.notice >= exp {
                self.expiry_notified.set(true);
                // Monitors parse every message as a status object: no notice.
                if !self.conflate.get() {
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
                self.close(1001, "idle timeout", now + close_timeout);
            }
            State::Open if now.saturating_sub(self.last_ping.get()) >= heartbeat => {
                self.last_ping.set(now);
                self.push(Chunk::Owned(frame::encode(OpCode::Control(Control::Ping), b"")));
            }
            State::Closing | State::Finishing if now >= self.close_deadline.get() => self.kill(),
            _ => {}
        }
    }
}

/// `client_type` of a connection without one.
const NO_TYPE: u16 = u16::MAX;

/// `Conn::close_reason` before any close.
const NO_REASON: u8 = u8::MAX;
/// Bad messages (decaying by half every sweep, twice a second) after which
/// a client is closed with 1008.
const MAX_STRIKES: u8 = 10;

/// Wall-clock facts for token expiry, computed once per sweep.
#[derive(Clone, Copy, Debug)]
pub struct Expiry {
    /// Unix seconds now.
    pub now: u32,
    /// Seconds before `exp` to send `token_expiring`.
    pub notice: u32,
}

/// The queue entry for a shared event: device statuses stay replaceable.
fn chunk(event: &Event) -> Chunk {
    match &event.device {
        Some(device) => Chunk::Status(Arc::clone(&event.frame), Arc::clone(device)),
        None => Chunk::Shared(Arc::clone(&event.frame)),
    }
}

/// Frames read per wake-up before the driver yields to other connections.
const READ_BUDGET: usize = 16;

/// The task that drives one upgraded connection until it closes. `leftover`
/// holds bytes that arrived after the upgrade request.
///
/// The driver is the task's whole state (no async fn around it), so an idle
/// connection's task is only the few words below.
pub fn run(
    shard: Rc<Shard>,
    stream: TcpStream,
    conn: Rc<Conn>,
    leftover: Vec<u8>,
    role: Role,
    claims: Option<Claims>,
) -> Driver {
    let mut driver = Driver {
        claims: claims.map(Box::new),
        rx: Receiver::default(),
        inbuf: None,
        stream,
        conn,
        shard,
    };
    driver.conn.role.set(role);
    if !leftover.is_empty() {
        let mut pending = leftover;
        let used = driver.consume(&mut pending);
        pending.drain(..used);
        if !pending.is_empty() {
            driver.inbuf = Some(Box::new(pending));
        }
    }
    driver
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let done = self.as_mut().get_mut().drive(cx);
        if done.is_ready() {
            let this = self.get_mut();
            this.conn.kill();
            this.shard.unregister(&this.conn);
            if let (Some(claims), true) = (&this.claims, this.shard.config.max_connections_per_user > 0) {
                this.shard.board.release_user_slot(&claims.sub);
            }
            if let Some(device) = this.conn.device.get() {
                let now = crate::time::now_rfc3339();
                if let Ok(events) = devices::events(device, &devices::bare("offline"), &now) {
                    this.shard.publish_later(events);
                }
            }
            // FIN rather than RST where the peer has read everything; the
            // descriptor itself closes when the task drops the stream.
            // SAFETY: shutdown(2) on the socket this driver owns.
            unsafe { libc::shutdown(this.stream.as_raw_fd(), libc::SHUT_WR) };
        }
        done
    }
}

/// The future of one connection's task; see [`run`].
pub struct Driver {
    stream: TcpStream,
    conn: Rc<Conn>,
    shard: Rc<Shard>,
    rx: Receiver,
    /// The client's token claims (room rights, refresh); boxed: 8 bytes idle.
    claims: Option<Box<Claims>>,
    /// Bytes of a frame not yet complete; `None` (no allocation) when idle.
    #[allow(
        clippy::box_collection,
        reason = "8 bytes instead of 24 in every idle connection's task"
    )]
    inbuf: Option<Box<Vec<u8>>>,
}

impl Driver {
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..READ_BUDGET {
            let write_blocked = self.flush(cx);
            match self.conn.state() {
                State::Dead => return Poll::Ready(()),
                State::Finishing if !self.conn.has_queued() => return Poll::Ready(()),
                _ => {}
            }
            // Backpressure: a client whose replies pile up is not read from
            // until its socket drains.
            if write_blocked && self.conn.queued_bytes() >= self.shard.config.max_queue_bytes {
                self.park(cx);
                return Poll::Pending;
            }
            let scratch = self.shard.scratch.clone();
            let mut scratch = scratch.borrow_mut();
            match Pin::new(&mut self.stream).poll_read(cx, &mut scratch[..]) {
                Poll::Pending => {
                    self.park(cx);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    self.conn.kill();
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => {
                    self.conn.last_seen.set(self.shard.clock());
                    self.receive(&mut scratch[..n]);
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn park(&self, cx: &Context<'_>) {
        self.conn.waker.set(Some(cx.waker().clone()));
    }

    /// Writes queued frames, many per syscall. Returns true when the socket
    /// is full and glommio will wake us once it drains.
    fn flush(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let mut out = self.conn.out.borrow_mut();
            let Some(queue) = out.as_mut() else {
                return false;
            };
            if queue.is_empty() {
                *out = None;
                return false;
            }
            let result = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = queue.io_slices(&mut slices);
                match sockets::send_vectored(self.stream.as_raw_fd(), &slices[..n]) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Let glommio arm write readiness (it retries the send first).
                        Pin::new(&mut self.stream).poll_write(cx, &slices[0])
                    }
                    other => Poll::Ready(other),
                }
            };
            match result {
                Poll::Ready(Ok(written)) => queue.consume(written),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(_)) => {
                    drop(out);
                    self.conn.kill();
                    return false;
                }
                Poll::Pending => return true,
            }
        }
    }

    /// Handles `n` fresh bytes in `data`, keeping an incomplete frame's tail.
    fn receive(&mut self, data: &mut [u8]) {
        match self.inbuf.take() {
            None => {
                let used = self.consume(data);
                if used < data.len() && self.conn.state() != State::Dead {
                    self.inbuf = Some(Box::new(data[used..].to_vec()));
                }
            }
            Some(mut pending) => {
                pending.extend_from_slice(data);
                let used = self.consume(&mut pending);
                pending.drain(..used);
                if !pending.is_empty() {
                    self.inbuf = Some(pending);
                }
            }
        }
    }

    /// Parses and handles whole frames at the start of `data`; returns the
    /// bytes used. After a protocol error the rest is discarded.
    fn consume(&mut self, data: &mut [u8]) -> usize {
        let mut pos = 0;
        while pos < data.len() {
            let state = self.conn.state();
            if matches!(state, State::Finishing | State::Dead) {
                return data.len();
            }
            match self
                .rx
                .next(&mut data[pos..], self.shard.config.max_message_bytes)
            {
                Ok(None) => break,
                Ok(Some((used, message))) => {
                    pos += used;
                    if let Some(message) = message {
                        handle(
                            &self.conn,
                            &self.shard,
                            self.conn.role.get(),
                            &mut self.claims,
                            state,
                            message,
                        );
                    }
                }
                Err(e) => {
                    self.fail(&e);
                    return data.len();
                }
            }
        }
        pos
    }

    fn fail(&self, error: &ProtocolError) {
        tracing::debug!(conn = self.conn.key, %error, "closing on protocol error");
        if self.conn.state() == State::Open {
            let deadline = self.shard.clock() + self.shard.close_timeout_secs();
            self.conn.close(error.close_code(), error.reason(), deadline);
        } else {
            self.conn.kill();
        }
    }
}

/// Answers a bad message; closes with 1008 a client that keeps sending them.
fn bad_message(conn: &Conn, shard: &Shard, reply: &str) {
    send_text(conn, reply);
    if conn.strike() {
        conn.close(
            1008,
            "too many bad messages",
            shard.clock() + shard.close_timeout_secs(),
        );
    }
}

fn send_text(conn: &Conn, text: &str) {
    conn.send(Chunk::Owned(frame::encode(
        OpCode::Data(Data::Text),
        text.as_bytes(),
    )));
}

/// `{"type":"refresh"}`: adopt a valid token for the same subject.
fn refresh(conn: &Rc<Conn>, shard: &Shard, claims: &mut Option<Box<Claims>>, token: &str) {
    let reply = match shard.verifier.verify(token) {
        Ok(new) if claims.as_ref().is_some_and(|old| old.sub == new.sub) => {
            conn.exp.set(new.exp.min(u32::MAX as u64) as u32);
            conn.expiry_notified.set(false);
            // From the clamped u32: an absurd `exp` must not overflow SystemTime.
            let expires = crate::time::rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(conn.exp.get().into()),
            );
            *claims = Some(Box::new(new));
            format!(r#"{{"type":"refreshed","expires_at":"{expires}"}}"#)
        }
        Ok(_) => client_msg::error("forbidden", "the new token is for another subject", None),
        Err(e) => client_msg::error("invalid_token", &e.to_string(), None),
    };
    send_text(conn, &reply);
}

/// Acts on one complete message from the client.
fn handle(
    conn: &Rc<Conn>,
    shard: &Shard,
    role: Role,
    claims: &mut Option<Box<Claims>>,
    state: State,
    message: Message<'_>,
) {
    match (state, message) {
        (State::Open, Message::Text(payload)) => match role {
            Role::Echo => conn.send(Chunk::Owned(frame::encode(OpCode::Data(Data::Text), payload))),
            Role::Monitor => {}
            Role::Client | Role::Device => {
                // The payload is ours to parse in place (simd-json mutates it).
                let mut text = payload.to_vec();
                let now = crate::time::now_rfc3339();
                let sender = client_msg::Sender {
                    now: &now,
                    device: conn.device.get().map(|d| d.as_str()),
                    claims: claims.as_deref(),
                };
                match client_msg::handle(&mut text, &sender) {
                    Action::Reply(reply) => send_text(conn, &reply),
                    Action::Error(reply) => bad_message(conn, shard, &reply),
                    Action::Publish { events, reply } => {
                        shard.publish_later(events);
                        send_text(conn, &reply);
                    }
                    Action::Subscribe { topic, reply } => {
                        // Bounded: the connection's own topics plus at most
                        // `max_rooms_per_connection` rooms.
                        let rooms = conn.room_count(&shard.registry.borrow());
                        if rooms >= shard.config.max_rooms_per_connection {
                            let message = format!(
                                "at most {} rooms per connection",
                                shard.config.max_rooms_per_connection
                            );
                            bad_message(conn, shard, &client_msg::error("too_many_rooms", &message, None));
                        } else {
                            shard.subscribe(conn, &topic);
                            send_text(conn, &reply);
                        }
                    }
                    Action::Unsubscribe { topic, reply } => {
                        shard.unsubscribe(conn, &topic);
                        send_text(conn, &reply);
                    }
                    Action::Refresh { token } => refresh(conn, shard, claims, &token),
                }
            }
        },
        (State::Open, Message::Binary(payload)) => match role {
            Role::Echo => conn.send(Chunk::Owned(frame::encode(OpCode::Data(Data::Binary), payload))),
            Role::Monitor => {}
            Role::Client | Role::Device => bad_message(conn, shard, &client_msg::binary_reply()),
        },
        (State::Open, Message::Ping(payload)) => {
            conn.send(Chunk::Owned(frame::encode(
                OpCode::Control(Control::Pong),
                payload,
            )));
        }
        (State::Open, Message::Close(code, _)) => {
            // Echo the peer's code; the server then drops TCP first (RFC 6455 §7.1.1).
            let reply = match code {
                Some(code) => frame::close(code, ""),
                None => frame::encode(OpCode::Control(Control::Close), b""),
            };
            conn.push(Chunk::Owned(reply));
            conn.note_reason(crate::metrics::CLIENT_CLOSE);
            conn.close_deadline
                .set(shard.clock() + shard.close_timeout_secs());
            if conn.state() == State::Open {
                conn.state.set(State::Finishing);
            }
        }
        (State::Closing, Message::Close(..)) => conn.state.set(State::Finishing),
        // Pongs only refresh liveness; data after our close frame is ignored.
        _ => {}
    }
}
#[cfg(test)]
mod tests {
    /// Idle connections must stay small (target: <= 1 KiB of RSS each,
    /// `bench/idle-rss`): `Conn` (96 bytes with its subscription list and
    /// device id) plus its `Rc` header fits mimalloc's 112-byte class, and the task (driver +
    /// glommio's task header) fits the 224-byte class.
    #[test]
    fn idle_connection_state_stays_small() {
        assert!(
            std::mem::size_of::<super::Conn>() <= 96,
            "{}",
            std::mem::size_of::<super::Conn>()
        );
        assert!(
            std::mem::size_of::<super::Driver>() <= 160,
            "{}",
            std::mem::size_of::<super::Driver>()
        );
    }
}
