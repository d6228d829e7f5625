//! Bad client messages get error replies and the connection stays open; a
//! client that keeps sending them is closed with 1008.
mod common;
use common::*;
use std::io::Write;

fn client(server: &Server) -> Sub {
    let mut s = Sub::connect(server, &format!("/ws/user?token={}", token("m", &["user"])), None);
    assert!(s.wait(|s| !s.messages.is_empty()));
    s
}

#[test]
fn a_few_mistakes_are_answered_and_forgiven() {
    let server = Server::start(&[]);
    let mut s = client(&server);
    for bad in ["{oops", r#"{"type":"dance"}"#, r#"{"no_type":1}"#] {
        s.say(bad);
    }
    s.say(r#"{"type":"ping"}"#);
    s.expect(r#""type":"pong""#);
    assert_eq!(
        s.messages
            .iter()
            .filter(|m| m.contains(r#""type":"error""#))
            .count(),
        3
    );
    assert_eq!(s.close, None);
}

#[test]
fn a_flood_of_bad_messages_closes_with_1008() {
    let server = Server::start(&[]);
    let mut s = client(&server);
    s.stream.set_nonblocking(false).unwrap();
    let mut burst = Vec::new();
    for _ in 0..30 {
        burst.extend(client_frame(0x81, b"not json"));
    }
    s.stream.write_all(&burst).unwrap();
    s.stream.set_nonblocking(true).unwrap();
    assert!(s.wait(|s| s.close.is_some()), "never closed");
    assert_eq!(s.close, Some((1008, "too many bad messages".to_string())));
}
