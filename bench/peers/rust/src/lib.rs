//! Shared parts of the Rust benchmark peers (`peer-tokio`, `peer-floor`):
//! the publish request and the client envelope, byte for byte what
//! shardcast sends, so every peer moves the same bytes.

use std::time::{SystemTime, UNIX_EPOCH};

/// The envelope clients receive for a publish body
/// `{"topic":…,"event":…,"data":…}`, or `None` for a bad body.
pub fn envelope(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let event = v.get("event")?.as_str()?;
    let data = v.get("data")?;
    Some(format!(
        r#"{{"event":{},"timestamp":"{}","data":{}}}"#,
        serde_json::Value::from(event),
        rfc3339_now(),
        data
    ))
}

/// An unmasked server text frame carrying `payload`.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
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
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        tungstenite::handshake::derive_accept_key(key.as_bytes())
    )
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

/// Now as RFC 3339 UTC with milliseconds, e.g. `2026-11-22T07:18:14.123Z`.
pub fn rfc3339_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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
    fn dates_convert() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
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
