//! Messages clients send on `/ws/{client_type}` (JSON text frames, parsed
//! with simd-json) and the server's replies, including every error reply.

use serde::{Deserialize, Serialize};

/// Message types a client may send.
pub const SUPPORTED: &[&str] = &["ping"];

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
}

#[derive(Serialize)]
struct Pong<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: &'a str,
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

/// The reply to one client text message (always one; the connection stays open).
pub fn reply(text: &mut [u8], now: &str) -> String {
    let kind = match simd_json::serde::from_slice::<Incoming>(text) {
        Ok(Incoming { kind: Some(kind) }) => kind.to_string(),
        Ok(Incoming { kind: None }) => {
            return error("bad_message", "a message needs a string field 'type'", None);
        }
        Err(_) => return error("bad_json", "message is not a JSON object", None),
    };
    match kind.as_str() {
        "ping" => to_json(&Pong {
            kind: "pong",
            timestamp: now,
        }),
        other => error(
            "unknown_type",
            &format!(
                "unknown message type '{}'",
                other.chars().take(64).collect::<String>()
            ),
            Some(SUPPORTED),
        ),
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

    #[test]
    fn ping_gets_pong() {
        let r = reply(&mut br#"{"type":"ping"}"#.to_vec(), "T");
        assert_eq!(r, r#"{"type":"pong","timestamp":"T"}"#);
    }

    #[test]
    fn unknown_type_lists_supported_types() {
        let r = reply(&mut br#"{"type":"dance"}"#.to_vec(), "T");
        assert_eq!(
            r,
            r#"{"type":"error","code":"unknown_type","message":"unknown message type 'dance'","supported":["ping"]}"#
        );
    }

    #[test]
    fn malformed_json_is_bad_json() {
        assert!(reply(&mut b"{oops".to_vec(), "T").contains(r#""code":"bad_json""#));
        assert!(reply(&mut b"[1,2]".to_vec(), "T").contains(r#""code":"bad_json""#));
        assert!(reply(&mut br#"{"x":1}"#.to_vec(), "T").contains(r#""code":"bad_message""#));
    }
}
