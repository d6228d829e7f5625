//! Shared parts of the Rust benchmark peers (`peer-tokio`, `peer-floor`):
//! the publish request and the client envelope, byte for byte what
//! shardcast sends (its own frame, time and handshake functions), so every
//! peer moves the same bytes.

use shardcast::proto::frame::{Data, OpCode};

/// The envelope clients receive for a publish body
/// `{"topic":…,"event":…,"data":…}`, or `None` for a bad body.
pub fn envelope(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let event = v.get("event")?.as_str()?;
    let data = v.get("data")?;
    Some(format!(
        r#"{{"event":{},"timestamp":"{}","data":{}}}"#,
        serde_json::Value::from(event),
        shardcast::time::now_rfc3339(),
        data
    ))
}

/// An unmasked server text frame carrying `payload`.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    shardcast::proto::frame::encode(OpCode::Data(Data::Text), payload)
}

/// One parsed HTTP request head: method, path, `Content-Length` and the
/// WebSocket key, if any.
#[derive(Debug, Default)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub content_length: usize,
    pub ws_key: Option<String>,
}

/// Parses the head in `buf` if it is complete: (head, bytes it used).
pub fn parse_head(buf: &[u8]) -> Option<(Head, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let mut head = Head {
        method: first.next()?.to_string(),
        path: first.next()?.to_string(),
        ..Head::default()
    };
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                head.content_length = v.parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("sec-websocket-key") {
                head.ws_key = Some(v.to_string());
            }
        }
    }
    Some((head, end))
}

/// The `101 Switching Protocols` answer to a WebSocket key.
pub fn switching_protocols(key: &str) -> String {
    shardcast::proto::handshake::switching_protocols(key)
}

/// The answer to a publish: 202 with an id, or 400.
pub fn publish_reply(ok: bool, id: u64) -> String {
    let (status, body) = if ok {
        ("202 Accepted", format!(r#"{{"id":"{id}"}}"#))
    } else {
        ("400 Bad Request", r#"{"error":"bad_json"}"#.to_string())
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_matches_shardcasts_shape() {
        let e = envelope(br#"{"topic":"type:user","event":"product.approved","data":{"a":1}}"#).unwrap();
        assert!(
            e.starts_with(r#"{"event":"product.approved","timestamp":""#),
            "{e}"
        );
        assert!(e.ends_with(r#"","data":{"a":1}}"#), "{e}");
        assert!(envelope(b"nope").is_none());
    }

    #[test]
    fn heads_parse_and_frames_encode() {
        let (h, used) =
            parse_head(b"POST /api/v1/publish HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!((h.method.as_str(), h.content_length, used), ("POST", 5, 52));
        assert!(parse_head(b"GET / HTTP/1.1\r\n").is_none());
        assert_eq!(&text_frame(&[0; 300])[..4], &[0x81, 126, 1, 44]);
    }
}
