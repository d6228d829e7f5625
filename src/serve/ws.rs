//! The task that drives one upgraded connection's socket until it closes:
//! flush queued frames with vectored sends, read and answer client frames
//! (`handle`), run the close handshake, then unregister.

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::api::client_msg::{self, Action};
use crate::auth::admission::{Admission, SocketSlot};
use crate::auth::token::Claims;
use crate::conn::handle::{Conn, Role, State};
use crate::conn::queue::Chunk;
use crate::conn::rate::RateBucket;
use crate::proto::close::CloseReason;
use crate::proto::decode::{Message, ProtocolError, Receiver};
use crate::proto::deflate::{Agreed, InflateError};
use crate::proto::frame::{self, Control, Data, OpCode};
use crate::shard::{Shard, Since};
use crate::sys::sockets::{self, MAX_IOVECS};
use crate::tls::session::FdWriter;
use crate::tls::stream::ArmedWriter;

/// Frames read per wake-up before the driver yields to other connections.
const READ_BUDGET: usize = 16;

/// The task that drives one upgraded connection until it closes. `leftover`
/// holds bytes that arrived after the upgrade request.
///
/// The driver is the task's whole state (no async fn around it), so an idle
/// connection's task is only the few words below. It owns the connection's
/// places under the connection and socket limits from here on and gives
/// them back when it is dropped, however the task ends (see `Drop`).
pub fn run(
    shard: Rc<Shard>,
    stream: TcpStream,
    conn: Rc<Conn>,
    leftover: Vec<u8>,
    claims: Option<Claims>,
    admission: Admission,
    socket: Option<SocketSlot>,
) -> Driver {
    admission.hand_to_driver();
    match socket {
        Some(slot) => slot.hand_to_driver(),
        // Upgrades are served on the public port only; count it anyway,
        // since the driver's drop gives one back.
        None => {
            shard.board.try_open_socket(0);
        }
    }
    let mut driver = Driver {
        session: claims.map(|claims| {
            Box::new(Session {
                claims,
                publish: RateBucket::default(),
            })
        }),
        rx: Receiver::default(),
        inbuf: None,
        stream,
        conn,
        shard,
    };
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

/// What a token holder's connection keeps beyond its handle: its claims
/// and its publish budget (boxed in the driver: 8 bytes when idle).
struct Session {
    claims: Claims,
    /// Client publishes (room messages, statuses) within `client_publish_rate`.
    publish: RateBucket,
}

/// The places [`run`] took over: the connection under `max_connections`
/// (and its user's slot under `max_connections_per_user`), the socket under
/// `max_sockets`. Given back exactly once, on every exit path, cancellation
/// at shutdown included.
impl Drop for Driver {
    fn drop(&mut self) {
        let board = &self.shard.board;
        board.leave();
        if let (Some(session), true) = (&self.session, self.shard.config.max_connections_per_user > 0) {
            board.release_user_slot(&session.claims.sub);
        }
        board.close_socket();
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let done = self.as_mut().get_mut().drive(cx);
        if done.is_ready() {
            let this = self.get_mut();
            this.conn.kill();
            this.shard.unregister(&this.conn);
            if let Some(device) = this.conn.device() {
                this.shard.announce_presence(device, "offline");
            }
            // The descriptor itself closes when the task drops the stream.
            this.send_fin();
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
    /// A token holder's claims and publish budget; boxed: 8 bytes idle.
    session: Option<Box<Session>>,
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
                State::Finishing if !self.conn.has_queued() => self.shut_write(),
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
                    if self.conn.tls().is_none() {
                        self.receive(&mut scratch[..n]);
                    } else if self.receive_tls(&scratch[..n]).is_err() {
                        return Poll::Ready(());
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The close handshake is done and flushed: FIN now (the server drops
    /// TCP first), then keep reading until the peer's FIN ([`State::Shut`]).
    fn shut_write(&mut self) {
        self.send_fin();
        self.conn.shut();
    }

    /// TLS close_notify (best effort: the peer may be gone), then FIN
    /// rather than RST where the peer has read everything.
    fn send_fin(&mut self) {
        if let Some(Ok(mut session)) = self.conn.tls().map(|tls| tls.try_borrow_mut()) {
            session.close_notify();
            let _ = session.send(&mut FdWriter(self.stream.as_raw_fd()));
        }
        // SAFETY: shutdown(2) on the socket this driver owns.
        unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_WR) };
    }

    fn park(&self, cx: &Context<'_>) {
        self.conn.waker.set(Some(cx.waker().clone()));
    }

    /// Writes queued frames, many per syscall. Returns true when the socket
    /// is full and glommio will wake us once it drains.
    fn flush(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(tls) = self.conn.tls() {
            let mut out = ArmedWriter {
                stream: &mut self.stream,
                cx,
            };
            return match self.conn.flush_tls(tls, &mut out) {
                Ok(all_out) => !all_out,
                Err(_) => {
                    self.conn.kill();
                    false
                }
            };
        }
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

    /// Decrypts `n` fresh bytes of a TLS connection and handles the
    /// plaintext. `Err`: the session failed or the peer closed it (the
    /// connection is dead).
    fn receive_tls(&mut self, ciphertext: &[u8]) -> Result<(), ()> {
        let plain = self.shard.plain.clone();
        let mut plain = plain.borrow_mut();
        plain.clear();
        let fed = self
            .conn
            .tls()
            .map(|tls| tls.borrow_mut().feed(ciphertext, &mut plain));
        match fed {
            Some(Ok(peer_closed)) => {
                self.receive(&mut plain[..]);
                if peer_closed && self.conn.state() == State::Open {
                    self.conn.kill();
                    return Err(());
                }
                Ok(())
            }
            _ => {
                tracing::debug!(conn = self.conn.key, "closing on a TLS error");
                if let Some(tls) = self.conn.tls() {
                    // The alert rustls queued, best effort.
                    let _ = tls.borrow_mut().send(&mut FdWriter(self.stream.as_raw_fd()));
                }
                self.conn.kill();
                Err(())
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
        let deflate = self.conn.deflate() != 0;
        while pos < data.len() {
            let state = self.conn.state();
            if matches!(state, State::Finishing | State::Shut | State::Dead) {
                return data.len();
            }
            match self
                .rx
                .next(&mut data[pos..], self.shard.config.max_message_bytes, deflate)
            {
                Ok(None) => break,
                Ok(Some((used, Some(Message::Deflated(kind, payload))))) => {
                    pos += used;
                    let Some(codec) = &self.shard.codec else {
                        // Negotiated only where the shard has a codec.
                        self.fail(&ProtocolError::ReservedBits);
                        return data.len();
                    };
                    let mut inflated = std::mem::take(&mut codec.borrow_mut().inflated);
                    let max = self.shard.config.max_message_bytes;
                    let checked = match codec.borrow_mut().inflater.inflate(payload, max, &mut inflated) {
                        Err(InflateError::TooBig) => Err(ProtocolError::MessageTooBig {
                            size: inflated.len() as u64,
                            max,
                        }),
                        Err(InflateError::Corrupt) => Err(ProtocolError::BadDeflate),
                        Ok(()) if kind == Data::Text && std::str::from_utf8(&inflated).is_err() => {
                            Err(ProtocolError::InvalidUtf8)
                        }
                        Ok(()) => Ok(()),
                    };
                    if let Err(e) = checked {
                        codec.borrow_mut().restore(inflated);
                        self.fail(&e);
                        return data.len();
                    }
                    let message = match kind {
                        Data::Text => Message::Text(&inflated),
                        _ => Message::Binary(&inflated),
                    };
                    handle(
                        &self.conn,
                        &self.shard,
                        self.conn.role(),
                        &mut self.session,
                        state,
                        message,
                    );
                    codec.borrow_mut().restore(inflated);
                }
                Ok(Some((used, message))) => {
                    pos += used;
                    if let Some(message) = message {
                        handle(
                            &self.conn,
                            &self.shard,
                            self.conn.role(),
                            &mut self.session,
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
        let deadline = self.shard.clock() + self.shard.close_timeout_secs();
        self.conn.fail(error.close_reason(), deadline);
    }
}

/// Sends a message back (conformance testing), compressed where the client
/// negotiated permessage-deflate and that makes it smaller.
fn echo(conn: &Conn, shard: &Shard, kind: Data, payload: &[u8]) {
    let opcode = OpCode::Data(kind);
    let window = conn.deflate();
    let compressed = match &shard.codec {
        Some(codec)
            if payload.len() >= shard.config.compression_min_bytes && Agreed::fits(window, payload.len()) =>
        {
            codec.borrow_mut().frame(opcode, payload)
        }
        _ => None,
    };
    conn.send(Chunk::Owned(
        compressed.unwrap_or_else(|| frame::encode(opcode, payload)),
    ));
}

/// Answers a bad message; closes with 1008 a client that keeps sending them.
fn bad_message(conn: &Conn, shard: &Shard, reply: &str) {
    send_text(conn, reply);
    if conn.strike() {
        conn.close(
            CloseReason::BadMessages,
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
fn refresh(conn: &Rc<Conn>, shard: &Shard, session: &mut Option<Box<Session>>, token: &str) {
    let reply = match shard.verifier.verify(token) {
        Ok(new) if session.as_ref().is_some_and(|old| old.claims.sub == new.sub) => {
            conn.set_exp(new.exp.min(u32::MAX as u64) as u32);
            // From the clamped u32: an absurd `exp` must not overflow SystemTime.
            let expires = crate::time::rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(conn.exp().into()),
            );
            if let Some(session) = session {
                // The publish budget carries over: a refresh does not reset it.
                session.claims = new;
            }
            format!(r#"{{"type":"refreshed","expires_at":"{expires}"}}"#)
        }
        Ok(_) => client_msg::error("forbidden", "the new token is for another subject", None),
        Err(e) => client_msg::error("invalid_token", &e.to_string(), None),
    };
    send_text(conn, &reply);
}

/// Subscribes `conn` to a room and answers `subscribed` with where the
/// room's stream stands, then the events recovered from `since`.
fn join_room(shard: &Shard, conn: &Rc<Conn>, topic: &str, room: &str, since: &Since) {
    let joined = shard.join(conn, &[topic.to_string()], since);
    send_text(conn, &client_msg::subscribed(room, &joined));
    for frame in joined.frames {
        conn.send(Chunk::Shared(frame));
    }
}

/// Acts on one complete message from the client.
fn handle(
    conn: &Rc<Conn>,
    shard: &Rc<Shard>,
    role: Role,
    session: &mut Option<Box<Session>>,
    state: State,
    message: Message<'_>,
) {
    match (state, message) {
        (State::Open, Message::Text(payload)) => match role {
            Role::Echo => echo(conn, shard, Data::Text, payload),
            Role::Monitor => {
                let now = crate::time::now_rfc3339();
                if let Some(pong) =
                    client_msg::monitor_reply(&mut payload.to_vec(), &now, shard.config.max_json_depth)
                {
                    send_text(conn, &pong);
                }
            }
            Role::Client | Role::Device => {
                // The payload is ours to parse in place (simd-json mutates it).
                let mut text = payload.to_vec();
                let now = crate::time::now_rfc3339();
                let sender = client_msg::Sender {
                    now: &now,
                    device: conn.device(),
                    claims: session.as_deref().map(|s| &s.claims),
                    max_depth: shard.config.max_json_depth,
                    max_status_bytes: shard.config.max_status_bytes,
                };
                match client_msg::handle(&mut text, &sender) {
                    Action::Reply(reply) => send_text(conn, &reply),
                    Action::Error(reply) => bad_message(conn, shard, &reply),
                    Action::Publish { events, reply } => {
                        let (rate, burst) = (
                            shard.config.client_publish_rate,
                            shard.config.client_publish_burst,
                        );
                        let allowed = session
                            .as_mut()
                            .is_none_or(|s| s.publish.allow(std::time::Instant::now(), rate, burst));
                        if !allowed {
                            shard.counters().rate_limited();
                            let message =
                                format!("more than {rate} publishes a second (burst {burst}); slow down");
                            bad_message(conn, shard, &client_msg::error("rate_limited", &message, None));
                        } else if shard.publish_later(events) {
                            send_text(conn, &reply);
                        } else {
                            shard.counters().rate_limited();
                            let message =
                                format!("more than {rate} publishes a second (burst {burst}); slow down");
                            bad_message(conn, shard, &client_msg::error("rate_limited", &message, None));
                        }
                    }
                    Action::Subscribe { topic, room, since } => {
                        // Bounded: the connection's own topics plus at most
                        // `max_rooms_per_connection` rooms.
                        let rooms = shard.registry.borrow().rooms_of(conn);
                        if rooms >= shard.config.max_rooms_per_connection {
                            let message = format!(
                                "at most {} rooms per connection",
                                shard.config.max_rooms_per_connection
                            );
                            bad_message(conn, shard, &client_msg::error("too_many_rooms", &message, None));
                        } else {
                            let since: Vec<_> = since.map(|p| (topic.clone(), p)).into_iter().collect();
                            let topics = [topic.clone()];
                            if shard.must_prepare(&topics, &since) {
                                // The client saw events of the room on another
                                // shard first: join once this shard has them
                                // too, and between two dispatcher rounds.
                                let (shard, conn) = (shard.clone(), conn.clone());
                                let wait = shard.config.handshake_timeout;
                                glommio::spawn_local(async move {
                                    let _ = glommio::timer::timeout(wait, async {
                                        shard.prepare(&topics, &since).await;
                                        Ok(())
                                    })
                                    .await;
                                    shard.between_rounds().await;
                                    if conn.state() == State::Open {
                                        join_room(&shard, &conn, &topic, &room, &since);
                                    }
                                })
                                .detach();
                            } else {
                                join_room(shard, conn, &topic, &room, &since);
                            }
                        }
                    }
                    Action::Unsubscribe { topic, reply } => {
                        shard.unsubscribe(conn, &topic);
                        send_text(conn, &reply);
                    }
                    Action::Refresh { token } => refresh(conn, shard, session, &token),
                }
            }
        },
        (State::Open, Message::Binary(payload)) => match role {
            Role::Echo => echo(conn, shard, Data::Binary, payload),
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
            conn.peer_closed(Chunk::Owned(reply), shard.clock() + shard.close_timeout_secs());
        }
        (State::Closing, Message::Close(..)) => conn.peer_closed(
            Chunk::Owned(Vec::new()),
            shard.clock() + shard.close_timeout_secs(),
        ),
        // Pongs only refresh liveness; data after our close frame is ignored.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    /// The task of an idle connection (driver + glommio's task header) must
    /// fit mimalloc's 224-byte class (`bench/idle-rss`).
    #[test]
    fn idle_connection_task_stays_small() {
        assert!(
            std::mem::size_of::<super::Driver>() <= 160,
            "{}",
            std::mem::size_of::<super::Driver>()
        );
    }
}
