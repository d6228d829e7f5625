//! Targeting: a publish to `user:{id}` reaches every connection of that
//! user (on any shard, on either endpoint) and nobody else; `type:` topics
//! reach only that client type.
mod common;
use common::*;

#[test]
fn user_topic_reaches_all_of_alices_connections_and_nobody_else() {
    let server = Server::start(&[]);
    let alice = token("alice", &["user", "shop"]);
    let mut alice_conns = vec![
        Sub::connect(&server, &format!("/ws/user?token={alice}"), None),
        Sub::connect(&server, &format!("/ws/shop?token={alice}"), None),
        Sub::connect(
            &server,
            &format!("/api/v1/websocket/ws/alice?token={alice}"),
            None,
        ),
    ];
    let mut bob = Sub::connect(
        &server,
        &format!("/ws/user?token={}", token("bob", &["user"])),
        None,
    );
    let mut publisher = Publisher::new(&server);
    publisher.publish("user:alice", "message.new", r#"{"text":"for alice"}"#);
    publisher.publish("all", "marker", "null");
    for conn in &mut alice_conns {
        assert!(conn.wait(|s| s.messages.len() == 3));
        assert_eq!(event_of(&conn.messages[1]), Some("message.new"));
        assert_eq!(event_of(&conn.messages[2]), Some("marker"));
    }
    assert!(bob.wait(|s| s.messages.len() == 2));
    assert_eq!(
        event_of(&bob.messages[1]),
        Some("marker"),
        "bob must not see alice's message"
    );
}

#[test]
fn type_topic_reaches_only_that_type() {
    let server = Server::start(&[]);
    let t = token("u", &["user", "admin"]);
    let mut user = Sub::connect(&server, &format!("/ws/user?token={t}"), None);
    let mut admin = Sub::connect(&server, &format!("/ws/admin?token={t}"), None);
    let mut publisher = Publisher::new(&server);
    publisher.publish("type:admin", "moderation.queued", "{}");
    publisher.publish("all", "marker", "null");
    assert!(admin.wait(|s| s.messages.len() == 3));
    assert_eq!(event_of(&admin.messages[1]), Some("moderation.queued"));
    assert!(user.wait(|s| s.messages.len() == 2));
    assert_eq!(event_of(&user.messages[1]), Some("marker"));
}

#[test]
fn connected_event_names_the_connection() {
    let server = Server::start(&[]);
    let mut sub = Sub::connect(
        &server,
        &format!("/ws/user?token={}", token("carol", &["user"])),
        None,
    );
    assert!(sub.wait(|s| !s.messages.is_empty()));
    let hello = &sub.messages[0];
    assert!(
        hello.starts_with(r#"{"event":"connected","timestamp":""#),
        "{hello}"
    );
    assert!(
        hello.contains(r#""client_type":"user","user_id":"carol","positions":{"#),
        "{hello}"
    );
    assert!(hello.contains(r#""connection_id":""#), "{hello}");
}
