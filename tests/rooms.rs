//! Rooms: clients join, leave and publish to rooms as their token allows
//! (`rooms`, `publish`, `prefix*`); the publish API reaches room members only.
mod common;
use common::*;
use std::time::Duration;

fn client(server: &Server, sub: &str, rooms: &[&str], publish: &[&str]) -> Sub {
    let t = token_rooms(sub, rooms, publish, Duration::from_secs(600));
    let mut s = Sub::connect(server, &format!("/ws/user?token={t}"), None);
    assert!(s.wait(|s| !s.messages.is_empty()));
    s
}

#[test]
fn members_hear_the_room_and_rights_are_enforced() {
    let server = Server::start(&[]);
    let mut alice = client(&server, "alice", &["lobby", "team-*"], &["lobby"]);
    let mut bob = client(&server, "bob", &["lobby"], &[]);
    let mut carol = client(&server, "carol", &[], &[]);
    alice.say(r#"{"type":"subscribe","room":"lobby"}"#);
    alice.expect(r#"{"type":"subscribed","room":"lobby","position":{"offset":0,"epoch":""#);
    alice.say(r#"{"type":"subscribe","room":"team-7"}"#);
    alice.expect(r#"{"type":"subscribed","room":"team-7","position":{"offset":0,"epoch":""#);
    bob.say(r#"{"type":"subscribe","room":"lobby"}"#);
    bob.expect(r#""subscribed""#);
    carol.say(r#"{"type":"subscribe","room":"lobby"}"#);
    carol.expect(r#""code":"forbidden""#);

    alice.say(r#"{"type":"publish","room":"lobby","event":"chat","data":{"text":"hi"}}"#);
    alice.expect(r#"{"type":"published","room":"lobby"}"#);
    let heard = bob.expect(r#""event":"chat""#);
    assert!(heard.ends_with(r#""data":{"text":"hi"}}"#), "{heard}");
    bob.say(r#"{"type":"publish","room":"lobby","event":"chat"}"#);
    bob.expect(r#""code":"forbidden""#);

    // The publish API reaches members only.
    let mut p = Publisher::new(&server);
    p.publish("room:team-7", "team.news", "1");
    p.publish("all", "marker", "null");
    alice.expect(r#""event":"team.news""#);
    bob.expect(r#""event":"marker""#);
    assert!(!bob.messages.iter().any(|m| m.contains("team.news")));
    carol.expect(r#""event":"marker""#);
    assert!(!carol
        .messages
        .iter()
        .any(|m| m.contains("chat") || m.contains("team.news")));
}

#[test]
fn unsubscribed_clients_stop_hearing_the_room() {
    let server = Server::start(&[]);
    let mut alice = client(&server, "alice", &["lobby"], &[]);
    alice.say(r#"{"type":"subscribe","room":"lobby"}"#);
    alice.expect(r#""subscribed""#);
    alice.say(r#"{"type":"unsubscribe","room":"lobby"}"#);
    alice.expect(r#"{"type":"unsubscribed","room":"lobby"}"#);
    let mut p = Publisher::new(&server);
    p.publish("room:lobby", "after.leaving", "null");
    p.publish("all", "marker", "null");
    alice.expect(r#""event":"marker""#);
    assert!(!alice.messages.iter().any(|m| m.contains("after.leaving")));
}

#[test]
fn rooms_per_connection_are_capped_and_counted() {
    let server = Server::start(&["--max-rooms-per-connection", "2"]);
    let mut c = client(&server, "greedy", &["*"], &[]);
    for room in ["r1", "r2"] {
        c.say(&format!(r#"{{"type":"subscribe","room":"{room}"}}"#));
        c.expect(&format!(r#"{{"type":"subscribed","room":"{room}","position""#));
    }
    c.say(r#"{"type":"subscribe","room":"r3"}"#);
    c.expect(r#""code":"too_many_rooms""#);
    // Leaving one makes room again.
    c.say(r#"{"type":"unsubscribe","room":"r1"}"#);
    c.expect(r#""unsubscribed""#);
    c.say(r#"{"type":"subscribe","room":"r3"}"#);
    c.expect(r#"{"type":"subscribed","room":"r3","position":{"offset":0,"epoch":""#);
    // /ws/stats counts live rooms (updated by each shard's sweeper).
    let deadline = std::time::Instant::now() + DEADLINE;
    let seen = poll_until(deadline, || {
        server.get("/ws/stats").1.contains(r#""rooms":2,"#).then_some(())
    });
    assert!(seen.is_some(), "{}", server.get("/ws/stats").1);
}
