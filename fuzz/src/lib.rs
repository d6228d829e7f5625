//! What each fuzz target feeds its input to: every parser a peer reaches,
//! called as the server calls it. A target passes when nothing panics
//! (AFL++ counts a panic, an abort or a hang as a crash).

use futures_lite::future::block_on;
use shardcast::api::{client_msg, publish, since};
use shardcast::auth::token::Claims;
use shardcast::auth::verify::Verifier;
use shardcast::config::{Config, ServeArgs};
use shardcast::fanout::devices;
use shardcast::proto::decode::Receiver;
use shardcast::proto::deflate::Inflater;
use shardcast::proto::{handshake, http};

const NOW: &str = "2026-12-06T12:00:00.000Z";

/// The dev configuration, built once per process (not per input).
fn config() -> &'static Config {
    static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| Config::from_args(ServeArgs::default()).expect("the dev config"))
}

/// WebSocket frames, one after the other, as a connection's reader parses
/// them (with and without permessage-deflate negotiated).
pub fn frame(data: &[u8]) {
    for deflate in [false, true] {
        let mut input = data.to_vec();
        let mut receiver = Receiver::default();
        let mut at = 0;
        while at < input.len() {
            match receiver.next(&mut input[at..], 1 << 16, deflate) {
                Ok(Some((used, _message))) if used > 0 => at += used,
                _ => break,
            }
        }
    }
}

/// An HTTP request head (and body), then the upgrade checks and the
/// `since` parameter of whatever request it is.
pub fn http_head(data: &[u8]) {
    let config = config();
    let mut buf = Vec::new();
    let mut stream = futures_lite::io::Cursor::new(data.to_vec());
    while let Ok(request) = block_on(http::read_request(&mut stream, &mut buf, config)) {
        let _ = handshake::accept(&request);
        let _ = since::parse(&request);
        let _ = shardcast::auth::verify::token(&request);
        let _ = request.keep_alive();
    }
}

/// A client's text message, as a user connection and as a device.
pub fn client_message(data: &[u8]) {
    let mut claims = Claims::new("fuzz", std::time::Duration::from_secs(60));
    claims.rooms = vec!["*".into()];
    claims.publish = vec!["*".into()];
    for device in [None, Some("pico-1")] {
        let sender = client_msg::Sender {
            now: NOW,
            device,
            claims: Some(&claims),
            max_depth: 32,
            max_status_bytes: 4096,
        };
        let _ = client_msg::handle(&mut data.to_vec(), &sender);
    }
    let _ = client_msg::monitor_reply(&mut data.to_vec(), NOW, 32);
}

/// A publish body and a batch body.
pub fn publish_body(data: &[u8]) {
    let types = ["user".to_string(), "shop".to_string()];
    let rules = publish::Rules {
        max_depth: 32,
        max_events: 100,
        client_types: &types,
    };
    let _ = publish::parse_one(&mut data.to_vec(), NOW, rules);
    let _ = publish::parse_batch(&mut data.to_vec(), NOW, rules);
}

/// A device status body.
pub fn device_status(data: &[u8]) {
    if let Ok(status) = devices::parse(&mut data.to_vec(), 32) {
        let _ = status.status();
    }
}

/// A decoded `since` value.
pub fn since_value(data: &[u8]) {
    let _ = since::positions(&mut data.to_vec());
}

/// Bytes as a bearer token.
pub fn token(data: &[u8]) {
    thread_local! {
        static VERIFIER: Verifier = Verifier::new(config()).expect("HS256 verifier");
    }
    let text = String::from_utf8_lossy(data);
    VERIFIER.with(|v| {
        let _ = v.verify(&text);
    });
}

/// A compressed client message, inflated under a small message limit.
pub fn inflate(data: &[u8]) {
    let mut out = Vec::new();
    let _ = Inflater::default().inflate(data, 1 << 16, &mut out);
}
