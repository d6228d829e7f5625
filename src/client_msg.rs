//! Messages clients send on `/ws/{client_type}` (JSON text frames, parsed
//! with simd-json) and what the server does about each, including every
//! error reply. The connection always stays open.

use serde::{Deserialize, Serialize};

use crate::broadcast::Event;
use crate::devices::{self, StatusIn};

/// Message types a client may send.
pub const SUPPORTED: &[&str] = &["ping", "connect", "status"];

/// What to do about one client message.
pub enum Action {
    /// Send this text back.
    Reply(String),
    /// Publish these events (and optionally reply).
    Publish {
        events: Vec<Event>,
        reply: Option<String>,
    },
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: Option<String>,
    /// `connect`: the device's name for itself.
    device: Option<String>,
    /// `connect`: the device firmware version.
    version: Option<String>,
    /// `status`: the report itself (every other field).
    #[serde(flatten)]
    status: StatusIn,
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

/// Handles one text message. `device` is the sender's device id when it is
/// a device connection (only devices may report status, for themselves).
pub fn handle(text: &mut [u8], now: &str, device: Option<&str>) -> Action {
    let message: Incoming = match simd_json::serde::from_slice(text) {
        Ok(message) => message,
        Err(_) => return Action::Reply(error("bad_json", "message is not a JSON object", None)),
    };
    let Some(kind) = message.kind.as_deref() else {
        return Action::Reply(error(
            "bad_message",
            "a message needs a string field 'type'",
            None,
        ));
    };
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
        "status" => {
            let Some(device) = device else {
                return Action::Reply(error(
                    "forbidden",
                    "only device connections may report a status",
                    None,
                ));
            };
            match devices::events(device, &message.status, now) {
                Ok(events) => Action::Publish {
                    events,
                    reply: Some(to_json(&Ack {
                        kind: "status_ack",
                        status: message.status_name(),
                    })),
                },
                Err(e) => Action::Reply(error("bad_status", &e.to_string(), None)),
            }
        }
        other => Action::Reply(error(
            "unknown_type",
            &format!(
                "unknown message type '{}'",
                other.chars().take(64).collect::<String>()
            ),
            Some(SUPPORTED),
        )),
    }
}

impl Incoming {
    fn status_name(&self) -> &str {
        self.status.status().unwrap_or("")
    }
}

/// The reply to a binary frame: clients speak JSON text.
pub fn binary_reply() -> String {
    error(
        "bad_json",
        "binary messages are not supported; send JSON text",
        None,
    )
}

fn error(code: &'static str, message: &str, supported: Option<&'static [&'static str]>) -> String {
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

    fn reply(text: &str, device: Option<&str>) -> String {
        match handle(&mut text.as_bytes().to_vec(), "T", device) {
            Action::Reply(r) => r,
            Action::Publish { reply, .. } => format!("PUBLISH {}", reply.unwrap_or_default()),
        }
    }

    #[test]
    fn ping_gets_pong() {
        assert_eq!(
            reply(r#"{"type":"ping"}"#, None),
            r#"{"type":"pong","timestamp":"T"}"#
        );
    }

    #[test]
    fn unknown_type_lists_supported_types() {
        assert_eq!(
            reply(r#"{"type":"dance"}"#, None),
            r#"{"type":"error","code":"unknown_type","message":"unknown message type 'dance'","supported":["ping","connect","status"]}"#
        );
    }

    #[test]
    fn malformed_json_is_bad_json() {
        assert!(reply("{oops", None).contains(r#""code":"bad_json""#));
        assert!(reply("[1,2]", None).contains(r#""code":"bad_json""#));
        assert!(reply(r#"{"x":1}"#, None).contains(r#""code":"bad_message""#));
    }

    #[test]
    fn device_hello_is_acknowledged() {
        let r = reply(
            r#"{"type":"connect","device":"pico-7","version":"1.2"}"#,
            Some("pico-7"),
        );
        assert!(
            r.starts_with(r#"{"type":"connected","server":"shardcast","server_version":""#),
            "{r}"
        );
        assert!(r.contains(r#""device":"pico-7","version":"1.2""#), "{r}");
    }

    #[test]
    fn only_devices_report_status_and_it_is_validated() {
        assert!(reply(r#"{"type":"status","status":"success"}"#, None).contains("forbidden"));
        assert_eq!(
            reply(r#"{"type":"status","status":"success"}"#, Some("d1")),
            r#"PUBLISH {"type":"status_ack","status":"success"}"#
        );
        assert!(reply(r#"{"type":"status","status":"melted"}"#, Some("d1")).contains("bad_status"));
    }
}
