//! The answer to one request: route it, then answer plain endpoints
//! (health, stats, metrics), hand publishes to `api::publish` and upgrades
//! to `api::connect`. Every refusal is a status with a short JSON body,
//! counted by reason.

use std::rc::Rc;

use crate::api::connect::{self, Upgrade};
use crate::api::console;
use crate::api::history;
use crate::api::publish;
use crate::api::refusal::reject;
use crate::api::route::{self, Endpoint, RouteError};
use crate::ops::metrics;
use crate::proto::http::{self, Request};
use crate::shard::Shard;

/// What to do with the socket after answering a request.
pub enum Next {
    KeepAlive,
    Close,
    Upgraded(Box<Upgrade>),
}

/// The response bytes for `request` and what follows it.
pub async fn respond(shard: &Rc<Shard>, mut request: Request, port: route::Port) -> (Vec<u8>, Next) {
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
            let broker = shard.broadcaster.remote().map(|r| r.is_up());
            let status = if draining || broker == Some(false) {
                503
            } else {
                200
            };
            (
                http::json_response(
                    status,
                    &shard.board.health_json(draining, broker),
                    keep_alive,
                    &[],
                ),
                after(),
            )
        }
        Endpoint::Metrics => {
            let text = metrics::prometheus(&shard.board);
            (
                http::response(200, "text/plain; version=0.0.4", &text, keep_alive, &[]),
                after(),
            )
        }
        Endpoint::DebugLatency => {
            let text = metrics::latency_hgrm(&shard.board);
            (http::response(200, "text/plain", &text, keep_alive, &[]), after())
        }
        Endpoint::Stats => (
            http::json_response(200, &shard.board.stats_json(), keep_alive, &[]),
            after(),
        ),
        Endpoint::Publish | Endpoint::PublishBatch => {
            let reply = publish::publish(
                shard,
                &mut request,
                endpoint == Endpoint::PublishBatch,
                keep_alive,
            )
            .await;
            (reply, after())
        }
        Endpoint::Echo | Endpoint::Client { .. } | Endpoint::UserSocket { .. } | Endpoint::Monitor { .. } => {
            match connect::accept(shard, &request, endpoint) {
                Ok((reply, upgrade)) => (reply, Next::Upgraded(upgrade)),
                Err(refusal) => (refusal, Next::Close),
            }
        }
        Endpoint::History => (history::answer(shard, &request, keep_alive).await, after()),
        Endpoint::Console => (console::page(shard, port, keep_alive), after()),
        Endpoint::ConsoleAsset { file } => match console::file(&file, keep_alive) {
            Some(reply) => (reply, after()),
            None => (
                reject(shard, 404, "not_found", "no such console file", keep_alive, &[]),
                after(),
            ),
        },
        Endpoint::DeviceStatus { device_id } => (
            publish::device_status(shard, &mut request, &device_id, keep_alive).await,
            after(),
        ),
    }
}
