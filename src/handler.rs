//! One accepted socket before it becomes a WebSocket: read HTTP requests
//! (keep-alive), route them, answer plain requests, and hand upgrades to
//! `conn`. Every refusal is a status with a short JSON body.

use std::os::fd::AsRawFd;
use std::rc::Rc;

use glommio::net::TcpStream;

use crate::conn::{self, Role};
use crate::http::{self, HttpError, Request};
use crate::route::{self, Endpoint, RouteError};
use crate::shard::Shard;
use crate::upgrade;

/// What to do with the socket after answering a request.
enum Next {
    KeepAlive,
    Close,
    Upgraded(Role),
}

/// Serves `stream` until it closes, times out or upgrades.
pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        if shard.draining() {
            return;
        }
        let config = &shard.config;
        let read = glommio::timer::timeout(config.handshake_timeout, async {
            Ok(http::read_request(&mut stream, &mut buf, config).await)
        })
        .await;
        let request = match read {
            Ok(Ok(request)) => request,
            Ok(Err(error)) => {
                if let Some((status, code)) = error.status() {
                    tracing::debug!(%error, "rejecting request");
                    let _ = http::write_all(
                        &mut stream,
                        &http::error_response(status, code, &error.to_string(), false, &[]),
                    )
                    .await;
                } else if !matches!(error, HttpError::Closed) {
                    tracing::debug!(%error, "connection error before upgrade");
                }
                return;
            }
            Err(_) => {
                // Timed out: say so only if a request had started.
                if !buf.is_empty() {
                    let msg = "request not received in time";
                    let _ = http::write_all(
                        &mut stream,
                        &http::error_response(408, "timeout", msg, false, &[]),
                    )
                    .await;
                }
                return;
            }
        };
        let (reply, next) = respond(&shard, &request);
        // The request and reply must not live on in this task's state for
        // the connection's lifetime: an idle connection should cost bytes.
        drop(request);
        let written = http::write_all(&mut stream, &reply).await;
        drop(reply);
        if written.is_err() {
            return;
        }
        match next {
            Next::KeepAlive => continue,
            Next::Close => return,
            Next::Upgraded(role) => {
                let leftover = if buf.is_empty() {
                    Vec::new()
                } else {
                    std::mem::take(&mut buf)
                };
                drop(buf);
                let conn = shard.register(stream.as_raw_fd(), None);
                // A task of its own: the handshake's larger state is freed
                // now instead of living as long as the connection.
                glommio::spawn_local(conn::run(shard, stream, conn, leftover, role)).detach();
                return;
            }
        }
    }
}

/// The response bytes for `request` and what follows it.
fn respond(shard: &Shard, request: &Request) -> (Vec<u8>, Next) {
    let keep_alive = request.keep_alive() && !shard.draining();
    let plain = |status: u16, body: &str| {
        let next = if keep_alive { Next::KeepAlive } else { Next::Close };
        (http::json_response(status, body, keep_alive, &[]), next)
    };
    let endpoint = match route::route(&request.method, &request.path, &shard.config) {
        Ok(endpoint) => endpoint,
        Err(RouteError::NotFound) => {
            let body = http::error_response(404, "not_found", "no such endpoint", keep_alive, &[]);
            return (body, if keep_alive { Next::KeepAlive } else { Next::Close });
        }
        Err(RouteError::MethodNotAllowed { allow }) => {
            let message = format!("method {} not allowed here", request.method);
            let body = http::error_response(
                405,
                "method_not_allowed",
                &message,
                keep_alive,
                &[("Allow", allow)],
            );
            return (body, if keep_alive { Next::KeepAlive } else { Next::Close });
        }
    };
    match endpoint {
        Endpoint::Health => {
            let draining = shard.draining();
            plain(
                if draining { 503 } else { 200 },
                &shard.board.health_json(draining),
            )
        }
        Endpoint::Stats => plain(200, &shard.board.stats_json()),
        Endpoint::Echo => match upgrade::accept(request) {
            Ok(accept) if !shard.draining() => (accept, Next::Upgraded(Role::Echo)),
            Ok(_) => (
                http::error_response(503, "shutting_down", "server is shutting down", false, &[]),
                Next::Close,
            ),
            Err(error) => {
                let (status, code, headers) = error.status();
                (
                    http::error_response(status, code, &error.to_string(), false, headers),
                    Next::Close,
                )
            }
        },
    }
}
