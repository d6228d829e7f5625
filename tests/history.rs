//! History and recovery against the real binary: offsets and epochs in
//! the envelope, one order per topic across shards, recovery on reconnect
//! with `?since=` (exactly what was missed, then live; or why not), a
//! publisher running through many reconnects, and the history API.
mod common;
use common::*;

use simd_json::prelude::*;
use simd_json::OwnedValue;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn json(text: &str) -> OwnedValue {
    simd_json::to_owned_value(&mut text.as_bytes().to_vec()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A `user` client `sub`, reconnecting from `since` (a JSON object) if given.
fn user(server: &Server, sub: &str, since: Option<&str>) -> Sub {
    let mut path = format!("/ws/user?token={}", token(sub, &["user"]));
    if let Some(since) = since {
        path.push_str("&since=");
        path.push_str(&percent_encode(since));
    }
    let mut c = Sub::connect(server, &path, None);
    assert!(c.wait(|s| !s.messages.is_empty()), "no connected event");
    c
}

/// The `connected` event's data.
fn connected(c: &Sub) -> OwnedValue {
    let v = json(&c.messages[0]);
    assert_eq!(v.get_str("event"), Some("connected"), "{}", c.messages[0]);
    v["data"].clone()
}

/// (offset, epoch) of `topic` in a connected event's positions.
fn position(data: &OwnedValue, topic: &str) -> (u64, String) {
    let p = &data["positions"][topic];
    (
        p.get_u64("offset").unwrap(),
        p.get_str("epoch").unwrap().to_string(),
    )
}

fn since_of(topic: &str, offset: u64, epoch: &str) -> String {
    format!(r#"{{"{topic}":{{"epoch":"{epoch}","offset":{offset}}}}}"#)
}

/// (topic, offset, epoch, data.seq) of an event message.
fn place(message: &str) -> (String, u64, String, Option<u64>) {
    let v = json(message);
    (
        v.get_str("topic").unwrap_or("").to_string(),
        v.get_u64("offset")
            .unwrap_or_else(|| panic!("no offset: {message}")),
        v.get_str("epoch").unwrap_or("").to_string(),
        v["data"].get_u64("seq"),
    )
}

#[test]
fn a_reconnecting_client_gets_exactly_what_it_missed_then_live() {
    let server = Server::start(&[]);
    let mut p = Publisher::new(&server);
    let first = user(&server, "alice", None);
    let data = connected(&first);
    let (start, epoch) = position(&data, "type:user");
    assert_eq!(start, 0);
    assert!(data["positions"]["user:alice"].is_object() && data["positions"]["all"].is_object());
    assert!(data.get("recovery").is_none(), "no since, no recovery: {data:?}");
    p.publish("type:user", "before", r#"{"seq":0}"#);
    drop(first);
    for seq in 1..=20 {
        p.publish("type:user", "missed", &format!(r#"{{"seq":{seq}}}"#));
    }
    let since = since_of("type:user", 1, &epoch);
    let mut back = user(&server, "alice", Some(&since));
    let data = connected(&back);
    let recovery = &data["recovery"]["type:user"];
    assert_eq!(recovery.get_bool("recovered"), Some(true), "{data:?}");
    // Replayed, or (when this shard had not yet delivered the newest)
    // arriving live right after: 2..=21 either way.
    let missed = recovery.get_u64("missed").unwrap();
    assert!((1..=20).contains(&missed), "{data:?}");
    assert_eq!(position(&data, "type:user"), (1 + missed, epoch.clone()));
    assert!(back.wait(|s| s.messages.len() == 21));
    for (i, m) in back.messages[1..].iter().enumerate() {
        let (topic, offset, e, seq) = place(m);
        assert_eq!(
            (topic.as_str(), offset, e.as_str(), seq),
            ("type:user", i as u64 + 2, epoch.as_str(), Some(i as u64 + 1))
        );
    }
    p.publish("type:user", "live", r#"{"seq":21}"#);
    assert!(back.wait(|s| s.messages.len() == 22));
    assert_eq!(place(&back.messages[21]).1, 22);
    // Nothing else arrives: no duplicate of any recovered event.
    p.publish("user:alice", "marker", "null");
    assert!(back.wait(|s| s.messages.len() == 23));
    assert_eq!(place(&back.messages[22]).0, "user:alice");
}

#[test]
fn lost_history_is_reported_not_replayed() {
    let server = Server::start(&["--history-size", "5"]);
    let mut p = Publisher::new(&server);
    let c = user(&server, "bob", None);
    let (_, epoch) = position(&connected(&c), "type:user");
    drop(c);
    for seq in 1..=20 {
        p.publish("type:user", "e", &format!(r#"{{"seq":{seq}}}"#));
    }
    // A 202 means queued to every shard; wait until both have dispatched
    // all 20, so the reconnect's position is 20 whichever shard takes it.
    let dispatched = || metric_sum(&server.get("/metrics").1, "shardcast_events_total", "");
    assert!(
        poll_until(Instant::now() + DEADLINE, || (dispatched() == 40.0).then_some(())).is_some(),
        "events dispatched: {}",
        dispatched()
    );
    let since = format!(
        r#"{{"type:user":{{"epoch":"{epoch}","offset":3}},"user:bob":{{"epoch":"XXXXXXXX","offset":1}},"room:none":{{"epoch":"{epoch}","offset":0}},"all":{{"epoch":"{epoch}","offset":99}}}}"#
    );
    let mut c = user(&server, "bob", Some(&since));
    let data = connected(&c);
    let r = &data["recovery"];
    let reason = |t: &str| {
        (
            r[t].get_bool("recovered"),
            r[t].get_str("reason").map(String::from),
        )
    };
    assert_eq!(
        reason("type:user"),
        (Some(false), Some("too old".into())),
        "{data:?}"
    );
    assert_eq!(reason("user:bob"), (Some(false), Some("epoch changed".into())));
    assert_eq!(reason("room:none"), (Some(false), Some("not subscribed".into())));
    assert_eq!(
        reason("all"),
        (Some(false), Some("offset ahead of the stream".into()))
    );
    assert_eq!(position(&data, "type:user").0, 20);
    // Live events follow; nothing was replayed.
    p.publish("type:user", "e", r#"{"seq":21}"#);
    assert!(c.wait(|s| s.messages.len() == 2));
    assert_eq!(place(&c.messages[1]).1, 21);
    // The edge of what is kept still recovers: offsets 17..=21 are held.
    let since = since_of("type:user", 16, &epoch);
    let mut edge = user(&server, "bob", Some(&since));
    let r = &connected(&edge)["recovery"]["type:user"];
    assert_eq!(r.get_bool("recovered"), Some(true), "{r:?}");
    assert!(edge.wait(|s| s.messages.len() == 6));
    let offsets: Vec<u64> = edge.messages[1..].iter().map(|m| place(m).1).collect();
    assert_eq!(offsets, [17, 18, 19, 20, 21]);
}

#[test]
fn a_restart_changes_the_epoch() {
    let server = Server::start(&[]);
    let c = user(&server, "carol", None);
    let (_, epoch) = position(&connected(&c), "type:user");
    Publisher::new(&server).publish("type:user", "e", "1");
    drop(c);
    drop(server);
    let server = Server::start(&[]);
    let c = user(&server, "carol", Some(&since_of("type:user", 1, &epoch)));
    let data = connected(&c);
    assert_eq!(
        data["recovery"]["type:user"].get_str("reason"),
        Some("epoch changed"),
        "{data:?}"
    );
    assert_ne!(position(&data, "type:user").1, epoch);
}

#[test]
fn a_malformed_since_is_a_400_naming_the_problem() {
    let server = Server::start(&[]);
    let t = token("dave", &["user"]);
    for (since, needle) in [
        ("notjson", "invalid 'since'"),
        (r#"{"all":{"offset":1}}"#, "'all' needs"),
        ("[1]", "expected a JSON object"),
        (r#"{"all":{"epoch":"a","offset":-3}}"#, "'all' needs"),
    ] {
        let (status, _, mut s) = upgrade(
            &server,
            &format!("/ws/user?token={t}&since={}", percent_encode(since)),
            "",
        );
        let body = read_to_close(&mut s);
        assert_eq!(status, 400, "{since}: {body}");
        assert!(
            body.contains(r#""error":"bad_request""#) && body.contains(needle),
            "{since}: {body}"
        );
    }
    let (status, _, mut s) = upgrade(&server, &format!("/ws/user?token={t}&since=%zz"), "");
    let body = read_to_close(&mut s);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("two hex digits"), "{body}");
}

/// Two shards (as every test server has), publishers on several connections (so on both shards):
/// every subscriber, on either shard, sees each topic's offsets 1, 2, 3, …
/// and the same events at the same offsets.
#[test]
fn every_shard_sees_one_order_per_topic() {
    let server = Server::start(&[]);
    let mut subs: Vec<Sub> = (0..6).map(|i| user(&server, &format!("u{i}"), None)).collect();
    let per = 150;
    let publishers: Vec<_> = (0..4)
        .map(|k| {
            let mut p = Publisher::new(&server);
            std::thread::spawn(move || {
                for i in 0..per {
                    p.publish("type:user", "e", &format!(r#"{{"seq":{}}}"#, k * 1000 + i));
                }
            })
        })
        .collect();
    for t in publishers {
        t.join().unwrap();
    }
    let total = 4 * per as usize;
    let mut reference: Option<Vec<Option<u64>>> = None;
    for s in &mut subs {
        assert!(
            s.wait(|s| s.messages.len() == total + 1),
            "got {}",
            s.messages.len()
        );
        let seen: Vec<(u64, Option<u64>)> =
            s.messages[1..].iter().map(|m| (place(m).1, place(m).3)).collect();
        let offsets: Vec<u64> = seen.iter().map(|x| x.0).collect();
        assert_eq!(offsets, (1..=total as u64).collect::<Vec<_>>());
        let order: Vec<Option<u64>> = seen.iter().map(|x| x.1).collect();
        match &reference {
            None => reference = Some(order),
            Some(r) => assert_eq!(&order, r, "another shard saw another order"),
        }
    }
}

/// A client that drops and reconnects 200 times from its last position
/// while a publisher runs: every offset exactly once, in order.
#[test]
fn a_publisher_running_through_200_reconnects_loses_nothing_and_repeats_nothing() {
    let server = Server::start(&["--history-size", "100000"]);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        let mut p = Publisher::new(&server);
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                p.publish("type:user", "tick", &format!(r#"{{"seq":{seq}}}"#));
            }
            seq
        })
    };
    let mut c = user(&server, "erin", None);
    let (mut last, epoch) = position(&connected(&c), "type:user");
    // The publisher may already be past offset 0 when the client first joins.
    let start = last;
    let mut seen = 0u64;
    let mut recovered = 0u64;
    for round in 0..201 {
        if round == 200 {
            stop.store(true, Ordering::Relaxed);
        }
        // Read a few events (or none), then drop the connection.
        let want = 1 + round % 4;
        c.wait(|s| s.messages.len() > want);
        for m in &c.messages[1..] {
            let (topic, offset, e, _) = place(m);
            assert_eq!((topic.as_str(), e.as_str()), ("type:user", epoch.as_str()));
            assert_eq!(
                offset,
                last + 1,
                "round {round}: gap or duplicate after {last}: {m}"
            );
            last = offset;
            seen += 1;
        }
        drop(c);
        c = user(&server, "erin", Some(&since_of("type:user", last, &epoch)));
        let data = connected(&c);
        let r = &data["recovery"]["type:user"];
        assert_eq!(r.get_bool("recovered"), Some(true), "round {round}: {data:?}");
        recovered += r.get_u64("missed").unwrap();
    }
    let published = publisher.join().unwrap();
    assert!(c.wait(|s| { s.messages[1..].last().map_or(last, |m| place(m).1) == published }));
    for m in &c.messages[1..] {
        let offset = place(m).1;
        assert_eq!(offset, last + 1);
        last = offset;
        seen += 1;
    }
    assert_eq!(last, published);
    assert_eq!(
        seen,
        published - start,
        "each event after the first join seen once"
    );
    assert!(recovered > 0, "no reconnect ever had anything to recover");
}

fn history(server: &Server, query: &str, key: Option<&str>) -> (u16, String) {
    let auth = key.map(|k| format!("X-API-Key: {k}\r\n")).unwrap_or_default();
    let request =
        format!("GET /api/v1/history?{query} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    split_response(&server.raw(request.as_bytes()))
}

#[test]
fn the_history_api_needs_the_key_and_returns_the_envelopes() {
    let server = Server::start(&["--history-size", "10"]);
    let mut p = Publisher::new(&server);
    for seq in 1..=12 {
        p.publish("room:lobby", "chat", &format!(r#"{{"seq":{seq}}}"#));
    }
    let key = "shardcast-dev-api-key";
    let (status, body) = history(&server, "topic=room:lobby", None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = history(&server, "topic=room%3Alobby&since=8&limit=2", Some(key));
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v.get_u64("top"), Some(12));
    assert_eq!(v.get_bool("complete"), Some(true));
    let events = v["events"].as_array().unwrap();
    let offsets: Vec<u64> = events.iter().map(|e| e.get_u64("offset").unwrap()).collect();
    assert_eq!(offsets, [9, 10]);
    assert_eq!(events[0]["data"].get_u64("seq"), Some(9));
    assert_eq!(events[0].get_str("epoch"), v.get_str("epoch"));
    let (_, body) = history(&server, "topic=room:lobby", Some(key));
    let v = json(&body);
    assert_eq!(
        v.get_bool("complete"),
        Some(false),
        "offsets 1-2 are gone: {body}"
    );
    assert_eq!(v["events"].as_array().unwrap().len(), 10);
    let (_, body) = history(&server, "topic=room:empty", Some(key));
    let v = json(&body);
    assert_eq!(
        (v.get_u64("top"), v["events"].as_array().map(|a| a.len())),
        (Some(0), Some(0))
    );
    for (query, code) in [
        ("topic=devices", "no_history"),
        ("topic=bogus", "bad_request"),
        ("since=1", "bad_request"),
        ("topic=all&limit=0", "bad_request"),
        ("topic=all&since=x", "bad_request"),
    ] {
        let (status, body) = history(&server, query, Some(key));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(&format!(r#""error":"{code}""#)), "{query}: {body}");
    }
}

#[test]
fn history_off_means_no_offsets() {
    let server = Server::start(&["--history-topics", "room:*"]);
    let mut c = user(&server, "fay", None);
    let data = connected(&c);
    assert!(data["positions"].as_object().unwrap().is_empty(), "{data:?}");
    Publisher::new(&server).publish("type:user", "e", "1");
    assert!(c.wait(|s| s.messages.len() == 2));
    let v = json(&c.messages[1]);
    assert!(
        v.get("offset").is_none() && v.get("epoch").is_none(),
        "{}",
        c.messages[1]
    );
    assert_eq!(v.get_str("topic"), Some("type:user"));
    let since = since_of("type:user", 0, "AAAAAAAA");
    let c = user(&server, "fay", Some(&since));
    assert_eq!(
        connected(&c)["recovery"]["type:user"].get_str("reason"),
        Some("no history")
    );
}

/// Rooms are joined by message: `subscribe` gives the room's position,
/// and `subscribe` with `since` replays what was missed, then live.
#[test]
fn a_room_rejoined_with_since_replays_what_was_missed() {
    let server = Server::start(&[]);
    let t = token_rooms("gus", &["lobby"], &[], std::time::Duration::from_secs(600));
    let path = format!("/ws/user?token={t}");
    let mut p = Publisher::new(&server);
    let mut c = Sub::connect(&server, &path, None);
    c.say(r#"{"type":"subscribe","room":"lobby"}"#);
    let reply = json(&c.expect(r#""subscribed""#));
    let epoch = reply["position"].get_str("epoch").unwrap().to_string();
    assert_eq!(reply["position"].get_u64("offset"), Some(0), "{reply:?}");
    p.publish("room:lobby", "chat", r#"{"seq":1}"#);
    c.expect(r#""seq":1"#);
    drop(c);
    for seq in 2..=6 {
        p.publish("room:lobby", "chat", &format!(r#"{{"seq":{seq}}}"#));
    }
    let mut c = Sub::connect(&server, &path, None);
    c.say(&format!(
        r#"{{"type":"subscribe","room":"lobby","since":{{"epoch":"{epoch}","offset":1}}}}"#
    ));
    let reply = json(&c.expect(r#""subscribed""#));
    assert_eq!(reply["recovery"].get_bool("recovered"), Some(true), "{reply:?}");
    p.publish("room:lobby", "chat", r#"{"seq":7}"#);
    assert!(c.wait(|s| s
        .messages
        .iter()
        .filter(|m| m.contains(r#""topic":"room:lobby""#))
        .count()
        == 6));
    let offsets: Vec<u64> = c
        .messages
        .iter()
        .filter(|m| m.contains(r#""topic":"room:lobby""#))
        .map(|m| place(m).1)
        .collect();
    assert_eq!(offsets, [2, 3, 4, 5, 6, 7]);
    c.say(r#"{"type":"subscribe","room":"lobby","since":{"epoch":"nope","offset":1}}"#);
    c.expect(r#""reason":"epoch changed""#);
    c.say(r#"{"type":"subscribe","room":"lobby","since":{"offset":1}}"#);
    c.expect(r#""code":"bad_json""#);
}
