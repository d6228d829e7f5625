//! Token expiry: a client is told before its token expires, is closed with
//! 4001 at `exp`, and stays connected if it refreshes in time with a valid
//! token for the same subject.
mod common;
use common::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn unrefreshed_client_is_warned_then_closed_4001() {
    let server = Server::start(&["--token-expiry-notice", "2s"]);
    let t = token_rooms("eve", &[], &[], Duration::from_secs(3));
    let mut s = Sub::connect(&server, &format!("/ws/user?token={t}"), None);
    s.expect(r#"{"type":"token_expiring","expires_at":""#);
    assert!(s.wait(|s| s.close.is_some()), "closed at exp");
    assert_eq!(s.close, Some((4001, "token expired".to_string())));
}

#[test]
fn refreshed_client_outlives_its_first_token() {
    let server = Server::start(&["--token-expiry-notice", "2s"]);
    let first_exp = now_secs() + 3;
    let t = token_rooms("frank", &[], &[], Duration::from_secs(3));
    let mut s = Sub::connect(&server, &format!("/ws/user?token={t}"), None);
    s.expect("token_expiring");
    // Refusals first: another subject, then garbage.
    s.say(&format!(
        r#"{{"type":"refresh","token":"{}"}}"#,
        token_rooms("mallory", &[], &[], Duration::from_secs(600))
    ));
    s.expect(r#""code":"forbidden""#);
    s.say(r#"{"type":"refresh","token":"not-a-jwt"}"#);
    s.expect(r#""code":"invalid_token""#);
    s.say(&format!(
        r#"{{"type":"refresh","token":"{}"}}"#,
        token_rooms("frank", &[], &[], Duration::from_secs(600))
    ));
    s.expect(r#"{"type":"refreshed","expires_at":""#);
    // Keep publishing until well past the first token's exp: every event
    // must still arrive, and no close may come.
    let mut p = Publisher::new(&server);
    let mut seq = 0;
    while now_secs() <= first_exp + 2 {
        p.publish("user:frank", "tick", &format!(r#"{{"seq":{seq}}}"#));
        assert!(
            s.wait(|s| s
                .messages
                .iter()
                .any(|m| m.contains(&format!(r#""seq":{seq}}}"#)))),
            "event {seq} lost"
        );
        assert_eq!(s.close, None);
        seq += 1;
    }
}
