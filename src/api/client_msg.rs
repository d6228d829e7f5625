//! Messages clients send on `/ws/{client_type}` (JSON text frames, parsed
//! with simd-json) and what the server does about each, including every
//! error reply. The connection always stays open.

use serde::{Deserialize, Serialize};
use simd_json::OwnedValue;

use crate::api::publish;
use crate::auth::token::Claims;
use crate::fanout::broadcast::{Content, Draft};
use crate::fanout::devices::{self, StatusIn};
use crate::fanout::envelope::{Envelope, Epoch, Position};
use crate::fanout::history::Recovery;
use crate::fanout::topic;
use crate::proto::json;
use crate::shard::Joined;

/// Message types a client may send.
pub const SUPPORTED: &[&str] = &[
    "ping",
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "refresh",
    "status",
];

/// What to do about one client message.
pub enum Action {
    /// Send this text back.
    Reply(String),
    /// Send this error back (counts against the client; see `conn`).
    Error(String),
    /// Publish these events, then reply.
    Publish { events: Vec<Draft>, reply: String },
    /// Subscribe to `topic` (room `room`), recovering from `since` if
    /// given, then reply with [`subscribed`].
    Subscribe {
        topic: String,
        room: String,
        since: Option<Position>,
    },
    /// Unsubscribe from `topic`, then reply.
    Unsubscribe { topic: String, reply: String },
    /// Verify `token` and, if it is valid for the same `sub`, adopt it.
    Refresh { token: String },
}

/// Who sent the message.
pub struct Sender<'a> {
    /// Current time, RFC 3339.
    pub now: &'a str,
    /// The device id of a device connection (only devices report status).
    pub device: Option<&'a str>,
    /// The connection's token claims (room rights).
    pub claims: Option<&'a Claims>,
    /// `max_json_depth`: deeper messages are refused before parsing.
    pub max_depth: usize,
    /// `max_status_bytes`: the largest encoded device status.
    pub max_status_bytes: usize,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: Option<String>,
    /// `connect`: the device's name for itself.
    device: Option<String>,
    /// `connect`: the device firmware version.
    version: Option<String>,
    /// `subscribe`, `unsubscribe`, `publish`.
    room: Option<String>,
    /// `publish`: the event name.
    event: Option<String>,
    /// `refresh`: the new token.
    token: Option<String>,
    /// `subscribe`: the last position seen in the room, to recover from.
    since: Option<SinceIn>,
    /// `publish`: the event data.
    #[serde(default)]
    data: OwnedValue,
    /// `status`: the report itself (every other field).
    #[serde(flatten)]
    status: StatusIn,
}

#[derive(Deserialize)]
struct SinceIn {
    epoch: String,
    offset: u64,
}

#[derive(Serialize)]
struct Pong<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: &'a str,
}

#[derive(Serialize)]
struct ConnectAck<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    server: &'static str,
    server_version: &'static str,
    device: Option<&'a str>,
    version: Option<&'a str>,
    timestamp: &'a str,
}

#[derive(Serialize)]
struct RoomAck<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
}

#[derive(Serialize)]
struct Ack<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'a str,
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    supported: Option<&'static [&'static str]>,
}

/// Handles one text message from `sender`.
pub fn handle(text: &mut [u8], sender: &Sender<'_>) -> Action {
    // Checked first: `Incoming` flattens, which buffers (recursively)
    // whatever fields it does not name.
    if let Err(e) = json::check_object(text, sender.max_depth) {
        return Action::Error(error("bad_json", &e.to_string(), None));
    }
    let message: Incoming = match simd_json::serde::from_slice(text) {
        Ok(message) => message,
        Err(e) => return Action::Error(error("bad_json", &json::describe(&e).to_string(), None)),
    };
    let Some(kind) = message.kind.as_deref() else {
        return Action::Error(error(
            "bad_message",
            "a message needs a string field 'type'",
            None,
        ));
    };
    let now = sender.now;
    match kind {
        "ping" => Action::Reply(to_json(&Pong {
            kind: "pong",
            timestamp: now,
        })),
        "connect" => Action::Reply(to_json(&ConnectAck {
            kind: "connected",
            server: "shardcast",
            server_version: env!("CARGO_PKG_VERSION"),
            device: message.device.as_deref(),
            version: message.version.as_deref(),
            timestamp: now,
        })),
        "subscribe" | "unsubscribe" | "publish" => room_message(kind, &message, sender),
        "refresh" => match message.token {
            Some(token) if !token.is_empty() => Action::Refresh { token },
            _ => Action::Error(error(
                "bad_message",
                "'refresh' needs a string field 'token'",
                None,
            )),
        },
        "status" => {
            let Some(device) = sender.device else {
                return Action::Error(error(
                    "forbidden",
                    "only device connections may report a status",
                    None,
                ));
            };
            match devices::events(device, &message.status, now, sender.max_status_bytes) {
                Ok(events) => Action::Publish {
                    events,
                    reply: to_json(&Ack {
                        kind: "status_ack",
                        status: message.status.status().unwrap_or(""),
                    }),
                },
                Err(e) => Action::Error(error("bad_status", &e.to_string(), None)),
            }
        }
        other => Action::Error(error(
            "unknown_type",
            &format!(
                "unknown message type '{}'",
                other.chars().take(64).collect::<String>()
            ),
            Some(SUPPORTED),
        )),
    }
}

/// What a device monitor's message gets: a pong for `{"type":"ping"}`
/// (embedded monitors keep their connection alive with it); anything else
/// is ignored, since every message a monitor receives must be a status
/// object or the pong it asked for.
pub fn monitor_reply(text: &mut [u8], now: &str, max_depth: usize) -> Option<String> {
    #[derive(Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    json::check_object(text, max_depth).ok()?;
    let message: Kind = simd_json::serde::from_slice(text).ok()?;
    (message.kind.as_deref() == Some("ping")).then(|| {
        to_json(&Pong {
            kind: "pong",
            timestamp: now,
        })
    })
}

/// `subscribe`/`unsubscribe`/`publish` for `{"room": …}`, checked against
/// the token's `rooms` (join) and `publish` claims.
fn room_message(kind: &str, message: &Incoming, sender: &Sender<'_>) -> Action {
    let Some(room) = message.room.as_deref() else {
        return Action::Error(error(
            "bad_message",
            "this message needs a string field 'room'",
            None,
        ));
    };
    if let Err(e) = topic::check_name(room) {
        return Action::Error(error("bad_room", &e.to_string(), None));
    }
    let topic = format!("room:{room}");
    let reply = |kind| to_json(&RoomAck { kind, room });
    let rights = |list: fn(&Claims) -> &Vec<String>| sender.claims.is_some_and(|c| allows(list(c), room));
    match kind {
        "subscribe" if rights(|c| &c.rooms) => Action::Subscribe {
            topic,
            room: room.to_string(),
            since: message.since.as_ref().map(|s| Position {
                offset: s.offset,
                epoch: Epoch::parse(&s.epoch),
            }),
        },
        "unsubscribe" => Action::Unsubscribe {
            topic,
            reply: reply("unsubscribed"),
        },
        "publish" if rights(|c| &c.publish) => {
            let Some(event) = message
                .event
                .as_deref()
                .filter(|e| !e.is_empty() && e.len() <= publish::MAX_EVENT_NAME)
            else {
                return Action::Error(error(
                    "bad_message",
                    "'publish' needs an 'event' name of 1 to 200 bytes",
                    None,
                ));
            };
            Action::Publish {
                events: vec![Draft {
                    content: Content::Envelope(Envelope::new(event, Some(&topic), sender.now, &message.data)),
                    topic: topic.into(),
                    device: None,
                }],
                reply: reply("published"),
            }
        }
        _ => Action::Error(error(
            "forbidden",
            &format!("token does not allow {kind} to room '{room}'"),
            None,
        )),
    }
}

/// The reply to a `subscribe`: the room, where its stream stands (when it
/// keeps a history) and, for a `since`, what recovery did; the recovered
/// events follow it.
pub fn subscribed(room: &str, joined: &Joined) -> String {
    #[derive(Serialize)]
    struct Subscribed<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        position: Option<&'a Position>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovery: Option<RecoveryOut>,
    }
    to_json(&Subscribed {
        kind: "subscribed",
        room,
        position: joined.positions.first().map(|(_, p)| p),
        recovery: joined.recovery.first().map(|(_, r)| RecoveryOut::of(r)),
    })
}

/// What recovery did for one topic, as JSON.
#[derive(Serialize)]
pub struct RecoveryOut {
    recovered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    missed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

impl RecoveryOut {
    pub fn of(r: &Recovery) -> RecoveryOut {
        match r {
            Recovery::Recovered { missed } => RecoveryOut {
                recovered: true,
                missed: Some(*missed),
                reason: None,
            },
            Recovery::Lost(reason) => RecoveryOut {
                recovered: false,
                missed: None,
                reason: Some(reason),
            },
        }
    }
}

/// Whether a claim list allows `name`: exact, `prefix*`, or `*`.
pub fn allows(list: &[String], name: &str) -> bool {
    list.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

/// The reply to a binary frame: clients speak JSON text.
pub fn binary_reply() -> String {
    error(
        "bad_json",
        "binary messages are not supported; send JSON text",
        None,
    )
}

/// An error reply.
pub fn error(code: &'static str, message: &str, supported: Option<&'static [&'static str]>) -> String {
    to_json(&ErrorReply {
        kind: "error",
        code,
        message,
        supported,
    })
}

fn to_json(value: &impl Serialize) -> String {
    simd_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reply(text: &str, device: Option<&str>, claims: Option<&Claims>) -> String {
        let sender = Sender {
            now: "T",
            device,
            claims,
            max_depth: 16,
            max_status_bytes: 4096,
        };
        match handle(&mut text.as_bytes().to_vec(), &sender) {
            Action::Reply(r) | Action::Error(r) => r,
            Action::Publish { reply, events } => format!("PUBLISH {} {reply}", events[0].topic),
            Action::Subscribe { topic, room, since } => format!("SUB {topic} {room} {since:?}"),
            Action::Unsubscribe { topic, reply } => format!("UNSUB {topic} {reply}"),
            Action::Refresh { token } => format!("REFRESH {token}"),
        }
    }

    fn claims(rooms: &[&str], publish: &[&str]) -> Claims {
        let mut c = Claims::new("u", Duration::from_secs(60));
        c.rooms = rooms.iter().map(|r| r.to_string()).collect();
        c.publish = publish.iter().map(|r| r.to_string()).collect();
        c
    }

    #[test]
    fn ping_gets_pong() {
        assert_eq!(
            reply(r#"{"type":"ping"}"#, None, None),
            r#"{"type":"pong","timestamp":"T"}"#
        );
    }

    #[test]
    fn unknown_type_lists_supported_types() {
        let r = reply(r#"{"type":"dance"}"#, None, None);
        assert!(r.starts_with(r#"{"type":"error","code":"unknown_type","message":"unknown message type 'dance'","supported":["ping","#), "{r}");
    }

    #[test]
    fn malformed_json_is_bad_json() {
        assert!(reply("{oops", None, None).contains(r#""code":"bad_json","message":"invalid JSON syntax"#));
        assert!(reply("[1,2]", None, None).contains(r#""code":"bad_json","message":"not a JSON object""#));
        assert!(reply(r#"{"x":1}"#, None, None).contains(r#""code":"bad_message""#));
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!(
            r#"{{"type":"ping","x":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            reply(&deep, Some("d1"), None),
            r#"{"type":"error","code":"bad_json","message":"nesting deeper than 16"}"#
        );
    }

    #[test]
    fn monitors_get_a_pong_and_nothing_else() {
        let pong = monitor_reply(&mut br#"{"type":"ping"}"#.to_vec(), "T", 8);
        assert_eq!(pong.as_deref(), Some(r#"{"type":"pong","timestamp":"T"}"#));
        assert_eq!(
            monitor_reply(&mut br#"{"type":"subscribe"}"#.to_vec(), "T", 8),
            None
        );
        assert_eq!(monitor_reply(&mut b"{bad".to_vec(), "T", 8), None);
    }

    #[test]
    fn device_hello_is_acknowledged() {
        let r = reply(
            r#"{"type":"connect","device":"pico-7","version":"1.2"}"#,
            Some("pico-7"),
            None,
        );
        assert!(
            r.starts_with(r#"{"type":"connected","server":"shardcast","server_version":""#),
            "{r}"
        );
        assert!(r.contains(r#""device":"pico-7","version":"1.2""#), "{r}");
    }

    #[test]
    fn only_devices_report_status_and_it_is_validated() {
        assert!(reply(r#"{"type":"status","status":"success"}"#, None, None).contains("forbidden"));
        assert_eq!(
            reply(r#"{"type":"status","status":"success"}"#, Some("d1"), None),
            r#"PUBLISH devices {"type":"status_ack","status":"success"}"#
        );
        assert!(reply(r#"{"type":"status","status":"melted"}"#, Some("d1"), None).contains("bad_status"));
    }

    #[test]
    fn rooms_follow_the_token() {
        let c = claims(&["lobby", "team-*"], &["lobby"]);
        assert_eq!(
            reply(r#"{"type":"subscribe","room":"team-7"}"#, None, Some(&c)),
            r#"SUB room:team-7 team-7 None"#
        );
        assert!(reply(r#"{"type":"subscribe","room":"secret"}"#, None, Some(&c))
            .contains(r#""code":"forbidden""#));
        assert!(reply(
            r#"{"type":"publish","room":"team-7","event":"x"}"#,
            None,
            Some(&c)
        )
        .contains("forbidden"));
        assert_eq!(
            reply(
                r#"{"type":"publish","room":"lobby","event":"chat","data":{"t":1}}"#,
                None,
                Some(&c)
            ),
            r#"PUBLISH room:lobby {"type":"published","room":"lobby"}"#
        );
        assert!(reply(r#"{"type":"subscribe"}"#, None, Some(&c)).contains("bad_message"));
        assert_eq!(
            reply(r#"{"type":"refresh","token":"abc"}"#, None, Some(&c)),
            "REFRESH abc"
        );
    }

    #[test]
    fn claim_patterns() {
        let list = vec!["a".to_string(), "b-*".to_string()];
        assert!(allows(&list, "a") && allows(&list, "b-1") && !allows(&list, "ab") && !allows(&list, "c"));
        assert!(allows(&["*".to_string()], "anything"));
    }
}
