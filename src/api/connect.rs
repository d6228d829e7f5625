//! The connect endpoints: check the handshake, authorize the client
//! (token, client type, origin), admit it under the connection limits and
//! describe the connection it becomes (role, topics, first frames, the
//! positions it reconnects from).

use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;

use crate::api::client_msg::RecoveryOut;
use crate::api::publish;
use crate::api::refusal::{reject, RETRY_AFTER};
use crate::api::route::Endpoint;
use crate::api::since;
use crate::auth::admission::{Admission, Full};
use crate::auth::token::Claims;
use crate::auth::verify::{self, AuthError};
use crate::conn::handle::{ConnSpec, Role};
use crate::fanout::envelope::Position;
use crate::fanout::topic;
use crate::proto::deflate;
use crate::proto::handshake;
use crate::proto::http::Request;
use crate::shard::{Joined, Shard};
use crate::time;

/// An accepted upgrade: how the connection behaves and what it hears.
pub struct Upgrade {
    role: Role,
    client_type: Option<u16>,
    pub topics: Vec<String>,
    /// What a client's `connected` event says (built when it joins).
    greeting: Option<Greeting>,
    /// The positions a reconnecting client last saw (`?since=`).
    pub since: Vec<(String, Position)>,
    /// A device connection's id (publishes online now, offline at close).
    device: Option<String>,
    /// The token's claims (expiry, room rights).
    pub claims: Option<Claims>,
    /// Its place under the connection limits, held until the driver ends.
    pub admission: Admission,
    /// permessage-deflate: the window the client can inflate (0: not
    /// negotiated).
    deflate: u8,
}

/// Who a client is, for its `connected` event.
struct Greeting {
    connection_id: String,
    client_type: Option<String>,
    user_id: String,
}

impl Upgrade {
    /// Sent first (read when the connection joins, after the broker
    /// brought the statuses other nodes saw): a monitor's last known
    /// statuses of the devices it watches.
    pub fn first_frames(&self, shard: &Shard) -> Vec<Arc<[u8]>> {
        if self.role != Role::Monitor {
            return Vec::new();
        }
        let devices = shard.devices.borrow();
        match self.topics.first().and_then(|t| t.strip_prefix("device:")) {
            Some(id) => devices.get(id).cloned().into_iter().collect(),
            None => devices.frames().cloned().collect(),
        }
    }

    /// The `connected` event of a client that joined as `joined` says:
    /// its positions, and what recovery did for its `since`.
    pub fn connected(&self, joined: &Joined) -> Option<Arc<[u8]>> {
        let g = self.greeting.as_ref()?;
        let data = Connected {
            connection_id: &g.connection_id,
            client_type: g.client_type.as_deref(),
            user_id: &g.user_id,
            positions: Pairs(&joined.positions, Position::clone),
            recovery: (!self.since.is_empty()).then_some(Pairs(&joined.recovery, RecoveryOut::of)),
        };
        Some(publish::envelope_frame("connected", &time::now_rfc3339(), &data))
    }

    /// What the registered connection is made of.
    pub fn spec(&self) -> ConnSpec {
        ConnSpec {
            role: self.role,
            client_type: self.client_type,
            device: self.device.clone().map(Rc::new),
            deflate: self.deflate,
            exp: self
                .claims
                .as_ref()
                .map_or(0, |c| c.exp.min(u32::MAX as u64) as u32),
        }
    }
}

/// Answers an upgrade request to `endpoint`: the 101 bytes and the
/// connection to start, or the refusal (after which the socket closes).
pub fn accept(
    shard: &Shard,
    request: &Request,
    endpoint: Endpoint,
) -> Result<(Vec<u8>, Box<Upgrade>), Vec<u8>> {
    match endpoint {
        Endpoint::Echo => authorize_upgrade(shard, request, || {
            Ok(Upgrade {
                admission: admit(shard, None, None)?,
                role: Role::Echo,
                client_type: None,
                topics: Vec::new(),
                greeting: None,
                since: Vec::new(),
                device: None,
                claims: None,
                deflate: 0,
            })
        }),
        Endpoint::Client { client_type } => authorize_upgrade(shard, request, || {
            let name = &shard.config.client_types[client_type as usize];
            let claims = client_claims(shard, request)?;
            if !claims.types.iter().any(|t| t == name) {
                return Err(AuthError::Forbidden(format!("client type '{name}'")).into());
            }
            let is_device = shard.config.device_types.iter().any(|t| t == name);
            Ok(Upgrade {
                admission: admit(shard, Some(client_type), Some(&claims.sub))?,
                role: if is_device { Role::Device } else { Role::Client },
                client_type: Some(client_type),
                topics: vec![
                    "all".into(),
                    format!("type:{name}"),
                    format!("user:{}", claims.sub),
                ],
                greeting: Some(greeting(shard, Some(name), &claims.sub)),
                since: since::parse(request).map_err(Refusal::BadRequest)?,
                device: is_device.then(|| claims.sub.clone()),
                claims: Some(claims),
                deflate: 0,
            })
        }),
        Endpoint::UserSocket { user_id } => authorize_upgrade(shard, request, || {
            let claims = client_claims(shard, request)?;
            if claims.sub != user_id {
                return Err(AuthError::Forbidden(format!("user '{user_id}'")).into());
            }
            Ok(Upgrade {
                admission: admit(shard, None, Some(&claims.sub))?,
                role: Role::Client,
                client_type: None,
                topics: vec![format!("user:{}", claims.sub), "all".into()],
                greeting: Some(greeting(shard, None, &claims.sub)),
                since: since::parse(request).map_err(Refusal::BadRequest)?,
                device: None,
                claims: Some(claims),
                deflate: 0,
            })
        }),
        Endpoint::Monitor { device } => authorize_upgrade(shard, request, || {
            if let Some(id) = &device {
                topic::check_name(id).map_err(|e| Refusal::BadRequest(format!("invalid device id: {e}")))?;
            }
            let claims = client_claims(shard, request)?;
            let allowed = |id: &str| claims.devices.iter().any(|d| d == "*" || d == id);
            let topic = match &device {
                None if allowed("*") => "devices".to_string(),
                Some(id) if allowed(id) => format!("device:{id}"),
                None => return Err(AuthError::Forbidden("watching all devices".into()).into()),
                Some(id) => return Err(AuthError::Forbidden(format!("watching device '{id}'")).into()),
            };
            Ok(Upgrade {
                admission: admit(shard, None, Some(&claims.sub))?,
                role: Role::Monitor,
                client_type: None,
                topics: vec![topic],
                greeting: None,
                since: since::parse(request).map_err(Refusal::BadRequest)?,
                device: None,
                claims: Some(claims),
                deflate: 0,
            })
        }),
        _ => Err(reject(shard, 404, "not_found", "no such endpoint", false, &[])),
    }
}

/// Why an upgrade is refused after a valid handshake.
enum Refusal {
    Auth(AuthError),
    /// A connection limit is reached (503 + Retry-After).
    Full(Full),
    /// The request names something that cannot exist (400).
    BadRequest(String),
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Refusal {
        Refusal::Auth(e)
    }
}

/// Checks the handshake, then `authorize`; the 101 bytes with the
/// upgrade, or the refusal.
fn authorize_upgrade(
    shard: &Shard,
    request: &Request,
    authorize: impl FnOnce() -> Result<Upgrade, Refusal>,
) -> Result<(Vec<u8>, Box<Upgrade>), Vec<u8>> {
    let refuse = |status, code, message: &str, headers: &[(&str, &str)]| {
        reject(shard, status, code, message, false, headers)
    };
    let accept = handshake::accept(request).map_err(|error| {
        let (status, code, headers) = error.status();
        refuse(status, code, &error.to_string(), headers)
    })?;
    if shard.draining() {
        return Err(refuse(503, "shutting_down", "server is shutting down", &[]));
    }
    if request.header_count("origin") > 1 {
        return Err(refuse(400, "bad_handshake", "more than one Origin header", &[]));
    }
    if let Some(origin) = request.header("origin") {
        if !verify::origin_allowed(origin, &shard.config.allowed_origins) {
            return Err(refuse(
                403,
                "origin_not_allowed",
                "this Origin is not allowed",
                &[],
            ));
        }
    }
    match authorize() {
        Ok(mut up) => {
            let mut accept = accept;
            if let Some((agreed, line)) = shard
                .config
                .compression
                .then(|| deflate::negotiate(request))
                .flatten()
            {
                // Before the blank line that ends the 101.
                accept.truncate(accept.len() - 2);
                accept.extend_from_slice(line.as_bytes());
                accept.extend_from_slice(b"\r\n");
                up.deflate = agreed.window_bits;
            }
            Ok((accept, Box::new(up)))
        }
        Err(Refusal::Auth(error)) => {
            tracing::debug!(%error, path = %request.path, "upgrade refused");
            let (status, code) = error.status();
            Err(refuse(status, code, &error.to_string(), &[]))
        }
        Err(Refusal::BadRequest(message)) => Err(refuse(400, "bad_request", &message, &[])),
        Err(Refusal::Full(Full(message))) => Err(refuse(
            503,
            "too_many_connections",
            &message,
            &[("Retry-After", RETRY_AFTER)],
        )),
    }
}

/// Admits a connection under the limits (see [`Admission::admit`]).
fn admit(shard: &Shard, client_type: Option<u16>, user: Option<&str>) -> Result<Admission, Refusal> {
    Admission::admit(&shard.board, &shard.config, client_type, user).map_err(Refusal::Full)
}

/// A verified token whose `sub` can name a user topic.
fn client_claims(shard: &Shard, request: &Request) -> Result<Claims, AuthError> {
    let claims = shard.verifier.from_request(request)?;
    topic::check_name(&claims.sub).map_err(|_| AuthError::InvalidToken)?;
    Ok(claims)
}

/// Who the client is: its connection id is taken now.
fn greeting(shard: &Shard, client_type: Option<&str>, user_id: &str) -> Greeting {
    Greeting {
        connection_id: shard.next_id(),
        client_type: client_type.map(String::from),
        user_id: user_id.to_string(),
    }
}

#[derive(Serialize)]
struct Connected<'a, P, R> {
    connection_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_type: Option<&'a str>,
    user_id: &'a str,
    /// Where each subscribed topic with a history stands.
    positions: P,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery: Option<R>,
}

/// `(topic, value)` pairs written as a JSON object, each value through `F`.
struct Pairs<'a, T, F>(&'a [(String, T)], F);

impl<T, O: Serialize, F: Fn(&T) -> O> Serialize for Pairs<'_, T, F> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, (self.1)(v))))
    }
}
