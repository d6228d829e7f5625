//! WebSocket handshake on tungstenite's primitives: check an upgrade request
//! (RFC 6455 §4.2.1) and build the `101 Switching Protocols` answer.

use tungstenite::handshake::derive_accept_key;

use crate::proto::http::Request;

/// Why an upgrade request is refused (all before any WebSocket byte).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// A plain request to a WebSocket-only endpoint.
    #[error("this endpoint only accepts WebSocket upgrades")]
    NotUpgrade,
    /// Upgrades need HTTP/1.1 or later.
    #[error("WebSocket upgrades need HTTP/1.1")]
    HttpVersion,
    /// `Connection` lacks the `Upgrade` token.
    #[error("missing 'Connection: Upgrade'")]
    ConnectionHeader,
    /// `Sec-WebSocket-Version` is absent or not 13.
    #[error("Sec-WebSocket-Version must be 13")]
    Version,
    /// `Sec-WebSocket-Key` is absent.
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    /// `Sec-WebSocket-Key` is not 16 bytes in base64.
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    BadKey,
    /// A header that must appear once appears again.
    #[error("more than one {0} header")]
    Duplicate(&'static str),
}

impl UpgradeError {
    /// Status, machine-readable code and extra headers for the refusal.
    pub fn status(&self) -> (u16, &'static str, &'static [(&'static str, &'static str)]) {
        match self {
            UpgradeError::NotUpgrade => (426, "upgrade_required", &[("Upgrade", "websocket")]),
            UpgradeError::Version => (400, "bad_handshake", &[("Sec-WebSocket-Version", "13")]),
            _ => (400, "bad_handshake", &[]),
        }
    }
}

/// Checks `request` and returns the `101` response bytes.
pub fn accept(request: &Request) -> Result<Vec<u8>, UpgradeError> {
    if !request.header_has_token("upgrade", "websocket") {
        return Err(UpgradeError::NotUpgrade);
    }
    if request.minor_version < 1 {
        return Err(UpgradeError::HttpVersion);
    }
    if !request.header_has_token("connection", "upgrade") {
        return Err(UpgradeError::ConnectionHeader);
    }
    if request.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(UpgradeError::Version);
    }
    for (name, shown) in [
        ("sec-websocket-key", "Sec-WebSocket-Key"),
        ("sec-websocket-version", "Sec-WebSocket-Version"),
    ] {
        if request.header_count(name) > 1 {
            return Err(UpgradeError::Duplicate(shown));
        }
    }
    let key = request
        .header("sec-websocket-key")
        .ok_or(UpgradeError::MissingKey)?
        .trim();
    if !is_base64_16_bytes(key) {
        return Err(UpgradeError::BadKey);
    }
    Ok(switching_protocols(key).into_bytes())
}

/// The `101 Switching Protocols` answer to a (checked) `Sec-WebSocket-Key`.
pub fn switching_protocols(key: &str) -> String {
    let accept = derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// 16 bytes encode to 22 base64 characters plus `==`.
fn is_base64_16_bytes(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        Request::get("/ws/echo", None, headers)
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn rfc_sample_key_gets_rfc_accept_value() {
        let resp = String::from_utf8(accept(&request(&GOOD)).unwrap()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 "));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn each_missing_part_is_refused() {
        for (drop, want) in [
            ("upgrade", UpgradeError::NotUpgrade),
            ("connection", UpgradeError::ConnectionHeader),
            ("sec-websocket-version", UpgradeError::Version),
            ("sec-websocket-key", UpgradeError::MissingKey),
        ] {
            let headers: Vec<_> = GOOD.iter().copied().filter(|(n, _)| *n != drop).collect();
            assert_eq!(accept(&request(&headers)), Err(want));
        }
    }

    #[test]
    fn wrong_version_and_bad_key_are_refused() {
        let mut h = GOOD;
        h[2] = ("sec-websocket-version", "8");
        assert_eq!(accept(&request(&h)), Err(UpgradeError::Version));
        let mut h = GOOD;
        h[3] = ("sec-websocket-key", "short");
        assert_eq!(accept(&request(&h)), Err(UpgradeError::BadKey));
    }

    #[test]
    fn a_second_key_is_refused() {
        let mut h = GOOD.to_vec();
        h.push(("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA=="));
        assert_eq!(
            accept(&request(&h)),
            Err(UpgradeError::Duplicate("Sec-WebSocket-Key"))
        );
    }
}
