//! The HTTP session of one accepted socket: read requests (keep-alive,
//! bounded in time; idle sockets make room under socket pressure), answer
//! them through `api::respond`, and turn an accepted upgrade into a
//! registered connection driven by `serve::ws`.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;

use crate::api::connect::Upgrade;
use crate::api::refusal::{reject, RETRY_AFTER};
use crate::api::respond::{respond, Next};
use crate::api::route;
use crate::auth::admission::SocketSlot;
use crate::conn::queue::Chunk;
use crate::ops::latency::record;
use crate::proto::http::{self, HttpError, Request};
use crate::serve::ws;
use crate::shard::Shard;
use crate::sys::sockets;
use crate::tls::session::{Session, TlsError};
use crate::tls::stream::{tls_error, Stream};

/// How long a keep-alive connection may wait for its next request while at
/// least three quarters of `max_sockets` are open (else `handshake_timeout`).
const KEEP_ALIVE_UNDER_PRESSURE: Duration = Duration::from_secs(1);

/// How long a refused socket is drained before it closes, so the 503 is
/// read rather than lost to a reset.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Refused sockets one shard lets linger at once (well within the
/// descriptors `sys::limits` keeps free for answers).
const MAX_LINGERING: u32 = 8;

/// How long a refused TLS socket may take to finish its handshake and send
/// its request, so that the 503 can be encrypted for it.
const TLS_REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// The session for a socket accepted on a TLS port (`None`: plain).
fn open(shard: &Shard, tcp: TcpStream, tls: bool) -> Option<Stream> {
    if !tls {
        return Some(Stream::Plain(tcp));
    }
    let keys = shard.tls.as_ref()?;
    match Session::new(keys.config()) {
        Ok(session) => Some(Stream::tls(tcp, session)),
        Err(error) => {
            tracing::warn!(%error, "cannot start a TLS session");
            None
        }
    }
}

/// Answers a socket past `max_sockets` with 503 at once and closes it.
pub async fn refuse_socket(shard: Rc<Shard>, tcp: TcpStream, tls: bool) {
    let Some(mut stream) = open(&shard, tcp, tls) else {
        return;
    };
    if stream.is_tls() {
        // A TLS client must finish its handshake before it can read an
        // answer: wait (briefly) for the first bytes of its request.
        let mut first = [0u8; 1];
        let read = glommio::timer::timeout(TLS_REFUSAL_WAIT, async {
            Ok(futures_lite::AsyncReadExt::read(&mut stream, &mut first).await)
        })
        .await;
        if !matches!(read, Ok(Ok(1))) {
            return;
        }
    }
    let message = format!("server at its socket limit ({})", shard.config.max_sockets);
    let reply = reject(
        &shard,
        503,
        "too_many_connections",
        &message,
        false,
        &[("Retry-After", RETRY_AFTER)],
    );
    // Lingering keeps the descriptor a while: in a storm only a few may,
    // or the refusals themselves would exhaust the open-file limit.
    if http::write_all(&mut stream, &reply).await.is_ok() && shard.try_linger(MAX_LINGERING) {
        // FIN, then discard what the client sent: closing with unread bytes
        // would reset the connection and could destroy the answer.
        // SAFETY: shutdown(2) on the socket this task owns.
        unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) };
        let _ = glommio::timer::timeout(REFUSAL_LINGER, async {
            let mut sink = [0u8; 512];
            while matches!(futures_lite::AsyncReadExt::read(&mut stream, &mut sink).await, Ok(n) if n > 0) {}
            Ok(())
        })
        .await;
        shard.end_linger();
    }
}

/// Reads the next request within `handshake_timeout`. While no byte of it
/// has arrived and three quarters of `max_sockets` are open, the wait is
/// cut to [`KEEP_ALIVE_UNDER_PRESSURE`], checked again every such slice,
/// so idle keep-alive connections make room under pressure. `Err(None)`:
/// close silently (peer gone, idle); `Err(Some(reply))`: answer, then close.
async fn next_request(
    shard: &Shard,
    stream: &mut Stream,
    buf: &mut Vec<u8>,
) -> Result<Request, Option<Vec<u8>>> {
    let config = &shard.config;
    let deadline = Instant::now() + config.handshake_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let slice = left.min(KEEP_ALIVE_UNDER_PRESSURE);
        let read =
            glommio::timer::timeout(slice, async { Ok(http::read_request(stream, buf, config).await) }).await;
        match read {
            Ok(Ok(request)) => return Ok(request),
            Ok(Err(HttpError::Io(error))) if tls_error(&error).is_some() => {
                refuse_tls(shard, stream, tls_error(&error));
                return Err(None);
            }
            Ok(Err(error)) => {
                if let Some((status, code)) = error.status() {
                    tracing::debug!(%error, "rejecting request");
                    return Err(Some(reject(shard, status, code, &error.to_string(), false, &[])));
                }
                if !matches!(error, HttpError::Closed) {
                    tracing::debug!(%error, "connection error before upgrade");
                }
                return Err(None);
            }
            Err(_) if buf.is_empty() => {
                let open = shard.board.open_sockets();
                let under_pressure = open.saturating_mul(4) >= config.max_sockets.saturating_mul(3);
                if under_pressure || Instant::now() >= deadline {
                    // Idle, not a request: close without an answer.
                    return Err(None);
                }
            }
            Err(_) if Instant::now() >= deadline => {
                let msg = "request not received in time";
                return Err(Some(reject(shard, 408, "timeout", msg, false, &[])));
            }
            Err(_) => {}
        }
    }
}

/// Counts a socket that failed its TLS handshake; one that sent plain HTTP
/// to the TLS port is told so in plain HTTP (as nginx does).
fn refuse_tls(shard: &Shard, stream: &Stream, error: Option<&TlsError>) {
    let message = match error {
        Some(TlsError::NotTls { http: true }) => {
            "a plain HTTP request was sent to the TLS port; use https:// or wss://"
        }
        Some(TlsError::NotTls { http: false }) => "not a TLS ClientHello",
        _ => "TLS handshake failed",
    };
    tracing::debug!(?error, "closing a TLS session");
    let reply = reject(shard, 400, "tls", message, false, &[]);
    if matches!(error, Some(TlsError::NotTls { http: true })) {
        // Small enough for an empty socket buffer; best effort.
        let _ = sockets::send(stream.as_raw_fd(), &reply);
    }
}

/// Serves a socket until it closes, times out or upgrades: `tls` when it
/// was accepted on a TLS port. `slot` counts the socket against
/// `max_sockets` (none on the admin port).
pub async fn serve(shard: Rc<Shard>, tcp: TcpStream, port: route::Port, slot: Option<SocketSlot>, tls: bool) {
    let accepted = Instant::now();
    let _ = tcp.set_nodelay(true);
    let Some(mut stream) = open(&shard, tcp, tls) else {
        return;
    };
    let mut buf = Vec::new();
    loop {
        if shard.draining() {
            return;
        }
        let request = match next_request(&shard, &mut stream, &mut buf).await {
            Ok(request) => request,
            Err(None) => return,
            Err(Some(reply)) => {
                let _ = http::write_all(&mut stream, &reply).await;
                return;
            }
        };
        // The request and reply must not live on in this task's state for
        // the connection's lifetime: an idle connection should cost bytes.
        let head_only = request.method == "HEAD";
        let (mut reply, next) = respond(&shard, request, port).await;
        if head_only {
            http::strip_body(&mut reply);
        }
        let written = http::write_all(&mut stream, &reply).await;
        drop(reply);
        if written.is_err() {
            // Dropping `next` gives back an upgrade's admission.
            return;
        }
        match next {
            Next::KeepAlive => continue,
            Next::Close => return,
            Next::Upgraded(up) => {
                let micros = accepted.elapsed().as_micros() as u64;
                record(&shard.board.latencies(shard.id).handshake, micros);
                let leftover = if buf.is_empty() {
                    Vec::new()
                } else {
                    std::mem::take(&mut buf)
                };
                drop(buf);
                if shard.must_prepare(&up.topics, &up.since) {
                    // Bounded: a batch lost at shutdown, or a broker that
                    // does not answer, must not hold the client forever (it
                    // would then at worst see an event twice, or miss a recovery).
                    let wait = shard.config.handshake_timeout;
                    let _ = glommio::timer::timeout(wait, async {
                        shard.prepare(&up.topics, &up.since).await;
                        Ok(())
                    })
                    .await;
                }
                shard.between_rounds().await;
                start_connection(shard, stream, *up, leftover, slot);
                return;
            }
        }
    }
}

/// Turns an accepted upgrade into a registered connection and its driver
/// task. Subscriptions and the first frames (the `connected` event with
/// positions, recovered events, a monitor's snapshot) happen in one turn of
/// this shard: no event can fall between them or arrive twice.
fn start_connection(
    shard: Rc<Shard>,
    stream: Stream,
    up: Upgrade,
    mut leftover: Vec<u8>,
    socket: Option<SocketSlot>,
) {
    let (stream, tls) = stream.into_parts();
    let session = tls.map(|(session, plain)| {
        // Decrypted bytes not read yet follow what the request left over.
        leftover.extend_from_slice(&plain);
        *session
    });
    let conn = shard.register(stream.as_raw_fd(), up.spec(), session);
    let joined = shard.join(&conn, &up.topics, &up.since);
    if let Some(connected) = up.connected(&joined) {
        conn.send(Chunk::Shared(connected));
    }
    for frame in up.first_frames(&shard).into_iter().chain(joined.frames) {
        conn.send(Chunk::Shared(frame));
    }
    if let Some(device) = conn.device() {
        shard.announce_presence(device, "online");
    }
    // A task of its own: the handshake's larger state is freed now instead
    // of living as long as the connection.
    let driver = ws::run(shard, stream, conn, leftover, up.claims, up.admission, socket);
    glommio::spawn_local(driver).detach();
}
