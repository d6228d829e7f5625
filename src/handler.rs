//! One accepted socket before it becomes a WebSocket: read HTTP requests
//! (keep-alive), route them, authenticate, answer plain requests (health,
//! stats, publish) and hand upgrades to `conn` with their subscriptions.
//! Every refusal is a status with a short JSON body.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use serde::Serialize;

use crate::auth::{self, AuthError};
use crate::broadcast::Batch;
use crate::conn::Role;
use crate::http::{self, HttpError, Request};
use crate::queue::Chunk;
use crate::route::{self, Endpoint, RouteError};
use crate::shard::{Shard, SocketSlot};
use crate::token::Claims;
use crate::{devices, publish, time, topic, upgrade};

/// An error response, counted by reason for `/metrics`.
fn reject(
    shard: &Shard,
    status: u16,
    code: &str,
    message: &str,
    keep_alive: bool,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    shard.counters().reject(code);
    http::error_response(status, code, message, keep_alive, headers)
}

/// What to do with the socket after answering a request.
enum Next {
    KeepAlive,
    Close,
    Upgraded(Box<Upgrade>),
}

/// An accepted upgrade: how the connection behaves and what it hears.
struct Upgrade {
    role: Role,
    client_type: Option<u16>,
    topics: Vec<String>,
    /// Sent first: the `connected` event, or a monitor's last known statuses.
    first: Vec<Arc<[u8]>>,
    /// A device connection's id (publishes online now, offline at close).
    device: Option<String>,
    /// The token's claims (expiry, room rights).
    claims: Option<Claims>,
}

/// How long a keep-alive connection may wait for its next request while at
/// least three quarters of `max_sockets` are open (else `handshake_timeout`).
const KEEP_ALIVE_UNDER_PRESSURE: Duration = Duration::from_secs(1);

/// How long a refused socket is drained before it closes, so the 503 is
/// read rather than lost to a reset.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Answers a socket past `max_sockets` with 503 at once and closes it.
pub async fn refuse_socket(shard: Rc<Shard>, mut stream: TcpStream) {
    let message = format!("server at its socket limit ({})", shard.config.max_sockets);
    let reply = reject(
        &shard,
        503,
        "too_many_connections",
        &message,
        false,
        &[("Retry-After", RETRY_AFTER)],
    );
    if http::write_all(&mut stream, &reply).await.is_ok() {
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
    }
}

/// Reads the next request within `handshake_timeout`. While no byte of it
/// has arrived and three quarters of `max_sockets` are open, the wait is
/// cut to [`KEEP_ALIVE_UNDER_PRESSURE`], checked again every such slice,
/// so idle keep-alive connections make room under pressure. `Err(None)`:
/// close silently (peer gone, idle); `Err(Some(reply))`: answer, then close.
async fn next_request(
    shard: &Shard,
    stream: &mut TcpStream,
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

/// Serves `stream` until it closes, times out or upgrades. `slot` counts
/// the socket against `max_sockets` (none on the admin port).
pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream, port: route::Port, slot: Option<SocketSlot>) {
    let accepted = Instant::now();
    let _ = stream.set_nodelay(true);
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
            if let Next::Upgraded(up) = &next {
                release(&shard, up);
            }
            return;
        }
        match next {
            Next::KeepAlive => continue,
            Next::Close => return,
            Next::Upgraded(up) => {
                let micros = accepted.elapsed().as_micros() as u64;
                crate::metrics::record(&shard.board.latencies(shard.id).handshake, micros);
                let leftover = if buf.is_empty() {
                    Vec::new()
                } else {
                    std::mem::take(&mut buf)
                };
                drop(buf);
                let conn = shard.register(stream.as_raw_fd(), up.client_type);
                conn.conflate.set(up.role == Role::Monitor);
                // Snapshot and subscription in one turn of this shard: no
                // status update can fall between them.
                for topic in &up.topics {
                    shard.subscribe(&conn, topic);
                }
                for frame in up.first {
                    conn.send(Chunk::Shared(frame));
                }
                if let Some(device) = up.device {
                    let now = time::now_rfc3339();
                    if let Ok(events) = devices::events(&device, &devices::bare("online"), &now, usize::MAX) {
                        shard.publish_later(events);
                    }
                    let _ = conn.device.set(Rc::new(device));
                }
                // A task of its own: the handshake's larger state is freed
                // now instead of living as long as the connection.
                if let Some(claims) = &up.claims {
                    conn.exp.set(claims.exp.min(u32::MAX as u64) as u32);
                }
                glommio::spawn_local(crate::driver::run(
                    shard, stream, conn, leftover, up.role, up.claims, slot,
                ))
                .detach();
                return;
            }
        }
    }
}

/// The response bytes for `request` and what follows it.
async fn respond(shard: &Rc<Shard>, mut request: Request, port: route::Port) -> (Vec<u8>, Next) {
    let keep_alive = request.keep_alive() && !shard.draining();
    let after = || if keep_alive { Next::KeepAlive } else { Next::Close };
    let endpoint = match route::route_on(port, &request.method, &request.path, &shard.config) {
        Ok(endpoint) => endpoint,
        Err(RouteError::NotFound) => {
            return (
                reject(shard, 404, "not_found", "no such endpoint", keep_alive, &[]),
                after(),
            );
        }
        Err(RouteError::MethodNotAllowed { allow }) => {
            let message = format!("method {} not allowed here", request.method);
            let body = reject(
                shard,
                405,
                "method_not_allowed",
                &message,
                keep_alive,
                &[("Allow", allow)],
            );
            return (body, after());
        }
    };
    match endpoint {
        Endpoint::Health => {
            let draining = shard.draining();
            let status = if draining { 503 } else { 200 };
            (
                http::json_response(status, &shard.board.health_json(draining), keep_alive, &[]),
                after(),
            )
        }
        Endpoint::Metrics => {
            let text = crate::metrics::prometheus(&shard.board);
            (
                http::response(200, "text/plain; version=0.0.4", &text, keep_alive, &[]),
                after(),
            )
        }
        Endpoint::DebugLatency => {
            let text = crate::metrics::latency_hgrm(&shard.board);
            (http::response(200, "text/plain", &text, keep_alive, &[]), after())
        }
        Endpoint::Stats => (
            http::json_response(200, &shard.board.stats_json(), keep_alive, &[]),
            after(),
        ),
        Endpoint::Publish | Endpoint::PublishBatch => {
            let reply = publish(
                shard,
                &mut request,
                endpoint == Endpoint::PublishBatch,
                keep_alive,
            )
            .await;
            (reply, after())
        }
        Endpoint::Echo => accept_upgrade(shard, &request, || {
            check_limits(shard, None, None)?;
            Ok(Upgrade {
                role: Role::Echo,
                client_type: None,
                topics: Vec::new(),
                first: Vec::new(),
                device: None,
                claims: None,
            })
        }),
        Endpoint::Client { client_type } => accept_upgrade(shard, &request, || {
            let name = &shard.config.client_types[client_type as usize];
            let claims = client_claims(shard, &request)?;
            if !claims.types.iter().any(|t| t == name) {
                return Err(AuthError::Forbidden(format!("client type '{name}'")).into());
            }
            let is_device = shard.config.device_types.iter().any(|t| t == name);
            check_limits(shard, Some(client_type), Some(&claims.sub))?;
            Ok(Upgrade {
                role: if is_device { Role::Device } else { Role::Client },
                client_type: Some(client_type),
                topics: vec![
                    "all".into(),
                    format!("type:{name}"),
                    format!("user:{}", claims.sub),
                ],
                first: vec![connected(shard, Some(name), &claims.sub)],
                device: is_device.then(|| claims.sub.clone()),
                claims: Some(claims),
            })
        }),
        Endpoint::UserSocket { user_id } => accept_upgrade(shard, &request, || {
            let claims = client_claims(shard, &request)?;
            if claims.sub != user_id {
                return Err(AuthError::Forbidden(format!("user '{user_id}'")).into());
            }
            check_limits(shard, None, Some(&claims.sub))?;
            Ok(Upgrade {
                role: Role::Client,
                client_type: None,
                topics: vec![format!("user:{}", claims.sub), "all".into()],
                first: vec![connected(shard, None, &claims.sub)],
                device: None,
                claims: Some(claims),
            })
        }),
        Endpoint::Monitor { device } => accept_upgrade(shard, &request, || {
            if let Some(id) = &device {
                topic::check_name(id).map_err(|e| Refusal::BadRequest(format!("invalid device id: {e}")))?;
            }
            let claims = client_claims(shard, &request)?;
            let allowed = |id: &str| claims.devices.iter().any(|d| d == "*" || d == id);
            let (topic, first) = match &device {
                None if allowed("*") => (
                    "devices".to_string(),
                    shard.devices.borrow().frames().cloned().collect(),
                ),
                Some(id) if allowed(id) => {
                    let last = shard.devices.borrow().get(id.as_str()).cloned();
                    (format!("device:{id}"), last.into_iter().collect())
                }
                None => return Err(AuthError::Forbidden("watching all devices".into()).into()),
                Some(id) => return Err(AuthError::Forbidden(format!("watching device '{id}'")).into()),
            };
            check_limits(shard, None, Some(&claims.sub))?;
            Ok(Upgrade {
                role: Role::Monitor,
                client_type: None,
                topics: vec![topic],
                first,
                device: None,
                claims: Some(claims),
            })
        }),
        Endpoint::DeviceStatus { device_id } => (
            device_status(shard, &mut request, &device_id, keep_alive).await,
            after(),
        ),
    }
}

/// Why an upgrade is refused after a valid handshake.
enum Refusal {
    Auth(AuthError),
    /// A connection limit is reached (503 + Retry-After).
    Full(String),
    /// The request names something that cannot exist (400).
    BadRequest(String),
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Refusal {
        Refusal::Auth(e)
    }
}

/// Seconds a client refused for a full server should wait.
const RETRY_AFTER: &str = "5";

/// Checks the total, per-type and per-user limits. On success the
/// connection is admitted (and holds a user slot when it has a user) until
/// [`release`] or its close.
fn check_limits(shard: &Shard, client_type: Option<u16>, user: Option<&str>) -> Result<(), Refusal> {
    let c = &shard.config;
    if let Some(t) = client_type.filter(|_| c.max_connections_per_type > 0) {
        if shard.board.of_type(t) >= c.max_connections_per_type {
            let name = &c.client_types[t as usize];
            return Err(Refusal::Full(format!(
                "connection limit for '{name}' ({}) reached",
                c.max_connections_per_type
            )));
        }
    }
    if !shard.board.try_admit(c.max_connections) {
        return Err(Refusal::Full(format!(
            "connection limit ({}{}) reached",
            c.max_connections,
            if c.max_connections_from_nofile {
                ", set by the server's open-file limit"
            } else {
                ""
            }
        )));
    }
    if let Some(user) = user.filter(|_| c.max_connections_per_user > 0) {
        if !shard.board.take_user_slot(user, c.max_connections_per_user) {
            shard.board.leave();
            return Err(Refusal::Full(format!(
                "connection limit per user ({}) reached",
                c.max_connections_per_user
            )));
        }
    }
    Ok(())
}

/// Gives back the admission (and user slot) of an upgrade that did not happen.
fn release(shard: &Shard, up: &Upgrade) {
    shard.board.leave();
    if let (Some(claims), true) = (&up.claims, shard.config.max_connections_per_user > 0) {
        shard.board.release_user_slot(&claims.sub);
    }
}

/// Checks the handshake, then `authorize`; answers 101 or the refusal.
fn accept_upgrade(
    shard: &Shard,
    request: &Request,
    authorize: impl FnOnce() -> Result<Upgrade, Refusal>,
) -> (Vec<u8>, Next) {
    let accept = match upgrade::accept(request) {
        Ok(accept) => accept,
        Err(error) => {
            let (status, code, headers) = error.status();
            return (
                reject(shard, status, code, &error.to_string(), false, headers),
                Next::Close,
            );
        }
    };
    if shard.draining() {
        let body = reject(shard, 503, "shutting_down", "server is shutting down", false, &[]);
        return (body, Next::Close);
    }
    if request.header_count("origin") > 1 {
        let message = "more than one Origin header";
        return (
            reject(shard, 400, "bad_handshake", message, false, &[]),
            Next::Close,
        );
    }
    if let Some(origin) = request.header("origin") {
        if !auth::origin_allowed(origin, &shard.config.allowed_origins) {
            let body = reject(
                shard,
                403,
                "origin_not_allowed",
                "this Origin is not allowed",
                false,
                &[],
            );
            return (body, Next::Close);
        }
    }
    match authorize() {
        Ok(up) => (accept, Next::Upgraded(Box::new(up))),
        Err(Refusal::Auth(error)) => {
            tracing::debug!(%error, path = %request.path, "upgrade refused");
            let (status, code) = error.status();
            (
                reject(shard, status, code, &error.to_string(), false, &[]),
                Next::Close,
            )
        }
        Err(Refusal::BadRequest(message)) => (
            reject(shard, 400, "bad_request", &message, false, &[]),
            Next::Close,
        ),
        Err(Refusal::Full(message)) => {
            let headers = [("Retry-After", RETRY_AFTER)];
            (
                reject(shard, 503, "too_many_connections", &message, false, &headers),
                Next::Close,
            )
        }
    }
}

/// A verified token whose `sub` can name a user topic.
fn client_claims(shard: &Shard, request: &Request) -> Result<Claims, AuthError> {
    let claims = shard.verifier.from_request(request)?;
    topic::check_name(&claims.sub).map_err(|_| AuthError::InvalidToken)?;
    Ok(claims)
}

#[derive(Serialize)]
struct Connected<'a> {
    connection_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_type: Option<&'a str>,
    user_id: &'a str,
}

/// The `connected` event a client receives first.
fn connected(shard: &Shard, client_type: Option<&str>, user_id: &str) -> Arc<[u8]> {
    let data = Connected {
        connection_id: shard.next_id(),
        client_type,
        user_id,
    };
    publish::envelope_frame("connected", &time::now_rfc3339(), &data)
}

#[derive(Serialize)]
struct Accepted<'a> {
    id: &'a str,
    events: usize,
    timestamp: &'a str,
}

/// What a publish endpoint refuses: status, code, message.
type Refused = (u16, &'static str, String);

/// The publish endpoints: API key, then `parse` (which validates and encodes
/// each event once), broadcast to every shard, 202 with the id.
async fn publish_with(
    shard: &Shard,
    request: &mut Request,
    keep_alive: bool,
    parse: impl FnOnce(&mut Vec<u8>, &str) -> Result<Vec<crate::broadcast::Event>, Refused>,
) -> Vec<u8> {
    if !auth::has_api_key(request, &shard.config.api_key) {
        let (status, code) = AuthError::BadApiKey.status();
        let message = AuthError::BadApiKey.to_string();
        return reject(
            shard,
            status,
            code,
            &message,
            keep_alive,
            &[("WWW-Authenticate", "Bearer")],
        );
    }
    let accepted = Instant::now();
    let timestamp = time::now_rfc3339();
    let events = match parse(&mut request.body, &timestamp) {
        Ok(events) => events,
        Err((status, code, message)) => return reject(shard, status, code, &message, keep_alive, &[]),
    };
    let count = events.len();
    let id = shard.next_id();
    shard.broadcaster.publish(Batch { events, accepted }).await;
    let body = simd_json::to_string(&Accepted {
        id: &id,
        events: count,
        timestamp: &timestamp,
    })
    .unwrap_or_default();
    http::json_response(202, &body, keep_alive, &[])
}

/// `POST /api/v1/publish[/batch]`: `{topic, event, data}` or `{"events":[…]}`.
async fn publish(shard: &Shard, request: &mut Request, batch: bool, keep_alive: bool) -> Vec<u8> {
    let max = shard.config.max_batch_events;
    let depth = shard.config.max_json_depth;
    publish_with(shard, request, keep_alive, |body, ts| {
        let parsed = if batch {
            publish::parse_batch(body, ts, max, depth)
        } else {
            publish::parse_one(body, ts, depth)
        };
        parsed.map_err(|e| {
            let (status, code) = e.status();
            (status, code, e.to_string())
        })
    })
    .await
}

/// `POST /api/v1/devices/{id}/status`: validate, record, fan out.
async fn device_status(shard: &Shard, request: &mut Request, device_id: &str, keep_alive: bool) -> Vec<u8> {
    let (depth, max_bytes) = (shard.config.max_json_depth, shard.config.max_status_bytes);
    publish_with(shard, request, keep_alive, |body, ts| {
        devices::parse(body, depth)
            .and_then(|report| devices::events(device_id, &report, ts, max_bytes))
            .map_err(|e| {
                let (status, code) = e.status();
                (status, code, e.to_string())
            })
    })
    .await
}
