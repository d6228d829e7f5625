//! Many nodes through a real Redis (`--broker`): a publish on any node
//! reaches the clients of every node in one order per topic; a client that
//! moves to another node (its node killed) recovers from the Redis stream;
//! a Redis restart makes publishes 503 while it is down and loses nothing;
//! a node started before Redis runs degraded and recovers on its own.
mod common;
use common::redis::{free_port, Redis};
use common::*;

use simd_json::prelude::*;
use simd_json::OwnedValue;

fn json(text: &str) -> OwnedValue {
    simd_json::to_owned_value(&mut text.as_bytes().to_vec()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn node(redis: &Redis) -> Server {
    Server::start(&["--broker", &redis.url()])
}

/// A `user` client `sub` on `server`, from `since` if given; waits for `connected`.
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

/// (offset, epoch) of `topic` in the connected event.
fn position(c: &Sub, topic: &str) -> (u64, String) {
    let v = json(&c.messages[0]);
    assert_eq!(v.get_str("event"), Some("connected"), "{}", c.messages[0]);
    let p = &v["data"]["positions"][topic];
    (
        p.get_u64("offset")
            .unwrap_or_else(|| panic!("no position for {topic}: {v:?}")),
        p.get_str("epoch").unwrap().to_string(),
    )
}

/// (offset, epoch, data.n) of every `tick` event received so far.
fn ticks(c: &Sub) -> Vec<(u64, String, u64)> {
    c.messages
        .iter()
        .map(|m| json(m))
        .filter(|v| v.get_str("event") == Some("tick"))
        .map(|v| {
            (
                v.get_u64("offset").unwrap(),
                v.get_str("epoch").unwrap().to_string(),
                v["data"].get_u64("n").unwrap(),
            )
        })
        .collect()
}

fn wait_ticks(c: &mut Sub, n: usize) -> Vec<(u64, String, u64)> {
    assert!(
        c.wait(|s| ticks(s).len() >= n),
        "got {} of {n} ticks: {:?}",
        ticks(c).len(),
        c.messages.last()
    );
    ticks(c)
}

/// Offsets are `from`, `from + 1`, … in one epoch: nothing lost, nothing twice.
fn assert_contiguous(t: &[(u64, String, u64)], from: u64) {
    for (i, (offset, epoch, _)) in t.iter().enumerate() {
        assert_eq!(*offset, from + i as u64, "gap or duplicate at {i}: {t:?}");
        assert_eq!(epoch, &t[0].1, "one epoch");
    }
}

fn tick(p: &mut Publisher, n: u64) {
    p.publish("type:user", "tick", &format!(r#"{{"n":{n}}}"#));
}

#[test]
fn a_publish_on_any_node_reaches_every_node_in_one_order() {
    let redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let mut on_a = user(&a, "alice", None);
    let mut on_b = user(&b, "bob", None);
    let (start, epoch) = position(&on_a, "type:user");
    assert_eq!(
        position(&on_b, "type:user"),
        (start, epoch.clone()),
        "one stream for both nodes"
    );
    let (mut pa, mut pb) = (Publisher::new(&a), Publisher::new(&b));
    for n in 0..200 {
        // Alternate the node that takes the publish.
        if n % 2 == 0 {
            tick(&mut pa, n);
        } else {
            tick(&mut pb, n);
        }
    }
    let ta = wait_ticks(&mut on_a, 200);
    let tb = wait_ticks(&mut on_b, 200);
    assert_eq!(ta, tb, "both nodes deliver the same events in the same order");
    assert_contiguous(&ta, start + 1);
    assert_eq!(
        ta.iter().map(|t| t.2).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    // Each node delivered each event once: no more arrive.
    tick(&mut pa, 200);
    assert_eq!(wait_ticks(&mut on_a, 201).len(), 201);
    assert_eq!(wait_ticks(&mut on_b, 201).len(), 201);
    let (status, body) = a.get("/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""broker":"connected""#), "{body}");
}

#[test]
fn a_client_whose_node_dies_recovers_on_another_node_from_redis() {
    let redis = Redis::start();
    let mut a = node(&redis);
    let b = node(&redis);
    let mut pb = Publisher::new(&b);
    let mut c = user(&a, "carol", None);
    let (start, _) = position(&c, "user:carol");
    for n in 0..30 {
        pb.publish("user:carol", "tick", &format!(r#"{{"n":{n}}}"#));
    }
    let seen = wait_ticks(&mut c, 30);
    assert_contiguous(&seen, start + 1);
    let (last, epoch) = (seen[29].0, seen[29].1.clone());
    // kill -9 the client's node; more is published while it is away.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    for n in 30..50 {
        pb.publish("user:carol", "tick", &format!(r#"{{"n":{n}}}"#));
    }
    // Node B never had a subscriber of user:carol: it reads the stream from Redis.
    let since = format!(r#"{{"user:carol":{{"epoch":"{epoch}","offset":{last}}}}}"#);
    let mut again = user(&b, "carol", Some(&since));
    let v = json(&again.messages[0]);
    assert_eq!(
        v["data"]["recovery"]["user:carol"]["recovered"].as_bool(),
        Some(true),
        "{v:?}"
    );
    assert_eq!(
        v["data"]["recovery"]["user:carol"]["missed"].as_u64(),
        Some(20),
        "{v:?}"
    );
    let got = wait_ticks(&mut again, 20);
    assert_contiguous(&got, last + 1);
    assert_eq!(
        got.iter().map(|t| t.2).collect::<Vec<_>>(),
        (30..50).collect::<Vec<_>>()
    );
    pb.publish("user:carol", "tick", r#"{"n":50}"#);
    let live = wait_ticks(&mut again, 21);
    assert_contiguous(&live, last + 1);
    // The history API of a node with no subscriber of the topic reads Redis.
    let c_node = node(&redis);
    let request = format!(
        "GET /api/v1/history?topic=user:carol&since={last} HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = split_response(&c_node.raw(request.as_bytes()));
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v.get_str("epoch"), Some(epoch.as_str()), "{body}");
    assert_eq!(v["events"].as_array().map(|e| e.len()), Some(21), "{body}");
}

#[test]
fn a_redis_restart_refuses_publishes_while_down_and_loses_nothing() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let mut on_a = user(&a, "dave", None);
    let mut on_b = user(&b, "erin", None);
    let (start, _) = position(&on_a, "type:user");
    let mut pa = Publisher::new(&a);
    for n in 0..50 {
        tick(&mut pa, n);
    }
    wait_ticks(&mut on_a, 50);
    let mut accepted: Vec<u64> = (0..50).collect();
    redis.kill();
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut probe = 1000;
    let refused = poll_until(deadline, || {
        probe += 1;
        let (status, body) = pa.publish_reply("type:user", "tick", &format!(r#"{{"n":{probe}}}"#));
        assert!(status == 503 || status == 202, "{status} {body}");
        if status == 202 {
            accepted.push(probe);
        }
        (status == 503).then_some(body)
    })
    .expect("publishes are refused while Redis is down");
    assert!(refused.contains("broker_unavailable"), "{refused}");
    // Node B notices on its own (its subscription closes).
    let deadline = std::time::Instant::now() + DEADLINE;
    let health = poll_until(deadline, || {
        let (status, health) = b.get("/health");
        (status == 503).then_some(health)
    })
    .expect("node B reports the broker gone");
    assert!(
        health.contains(r#""status":"degraded""#) && health.contains("unreachable"),
        "{health}"
    );
    // Every connection stays open meanwhile.
    on_a.pump();
    on_b.pump();
    assert!(!on_a.eof && !on_b.eof && on_a.close.is_none() && on_b.close.is_none());
    redis.restart();
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut n = 2000;
    poll_until(deadline, || {
        n += 1;
        let (status, _) = pa.publish_reply("type:user", "tick", &format!(r#"{{"n":{n}}}"#));
        (status == 202).then(|| accepted.push(n))
    })
    .expect("publishes go through again once Redis is back");
    for k in 3000..3050 {
        tick(&mut pa, k);
        accepted.push(k);
    }
    // Nothing answered 202 is missing, and no offset comes twice.
    for c in [&mut on_a, &mut on_b] {
        assert!(
            c.wait(|s| ticks(s).iter().any(|t| t.2 == 3049)),
            "the last event arrives"
        );
        let t = ticks(c);
        assert_contiguous(&t, start + 1);
        let numbers: Vec<u64> = t.iter().map(|t| t.2).collect();
        for k in &accepted {
            assert!(
                numbers.contains(k),
                "event {k} lost across the restart: {numbers:?}"
            );
        }
    }
    assert_eq!(b.get("/health").0, 200);
}

#[test]
fn a_node_started_before_redis_runs_degraded_then_recovers() {
    let port = free_port();
    let server = Server::start(&["--broker", &format!("redis://127.0.0.1:{port}")]);
    let (status, health) = server.get("/health");
    assert_eq!(status, 503, "{health}");
    assert!(health.contains(r#""broker":"unreachable""#), "{health}");
    let mut p = Publisher::new(&server);
    let (status, body) = p.publish_reply("all", "x", "1");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("broker_unavailable"), "{body}");
    let _redis = Redis::on(port);
    let deadline = std::time::Instant::now() + DEADLINE;
    poll_until(deadline, || (server.get("/health").0 == 200).then_some(()))
        .expect("the node connects once Redis is there");
    let mut c = user(&server, "frank", None);
    tick(&mut p, 7);
    assert_eq!(wait_ticks(&mut c, 1)[0].2, 7);
}

#[test]
fn a_broker_url_with_a_password_is_never_logged() {
    let redis = Redis::start();
    let url = format!("redis://:hunter2-secret@127.0.0.1:{}", redis.port);
    let server = Server::start(&["--broker", &url]);
    // Redis has no password set: AUTH fails, and the node says so without it.
    let deadline = std::time::Instant::now() + DEADLINE;
    poll_until(deadline, || {
        server.logs().contains("broker unreachable").then_some(())
    })
    .expect("the node says it cannot log in to the broker");
    let logs = server.logs();
    assert!(!logs.contains("hunter2"), "{logs}");
    let bad = Server::start_raw(&["serve", "--listen", "127.0.0.1:0", "--broker", "http://x:pw@h:1"]);
    let out = bad
        .err()
        .expect("a URL that is not redis:// or rediss:// is refused");
    assert!(out.contains("redis://") && !out.contains("pw@"), "{out}");
}

fn monitor(server: &Server, path: &str, devices: &[&str]) -> Sub {
    let t = token_with_devices("ops", &[], devices);
    Sub::connect(server, &format!("{path}?token={t}"), None)
}

#[test]
fn a_device_on_one_node_is_seen_by_monitors_on_the_others() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    let mut all_b = monitor(&b, "/ws/devices/all", &["*"]);
    // The monitor's first follow of `devices` on B is done once it is connected:
    // a device connecting to A now reaches it.
    let stats = poll_until(std::time::Instant::now() + DEADLINE, || {
        let (_, body) = b.get("/ws/stats");
        body.contains(r#""connections":1"#).then_some(body)
    });
    assert!(stats.is_some(), "B counts its monitor");
    let mut device = Sub::connect(
        &a,
        &format!("/ws/pico?token={}", token("pico-1", &["pico"])),
        None,
    );
    assert!(
        all_b.wait(|s| !s.messages.is_empty()),
        "online reaches B's monitor"
    );
    assert_eq!(
        status_of(&all_b.messages[0]),
        Some("online"),
        "{}",
        all_b.messages[0]
    );
    device.say(r#"{"type":"status","status":"success","mac_address":"aa:bb"}"#);
    device.expect("status_ack");
    assert!(all_b.wait(|s| s.messages.len() == 2));
    assert_eq!(status_of(&all_b.messages[1]), Some("success"));
    // Monitors that arrive later, on nodes that never followed the device,
    // get its last known status first (from Redis).
    let mut one_b = monitor(&b, "/ws/devices/pico-1", &["pico-1"]);
    assert!(one_b.wait(|s| !s.messages.is_empty()));
    assert_eq!(
        status_of(&one_b.messages[0]),
        Some("success"),
        "{}",
        one_b.messages[0]
    );
    let mut all_c = monitor(&c, "/ws/devices/all", &["*"]);
    assert!(all_c.wait(|s| !s.messages.is_empty()));
    assert_eq!(
        status_of(&all_c.messages[0]),
        Some("success"),
        "{}",
        all_c.messages[0]
    );
    drop(device);
    for m in [&mut all_b, &mut all_c] {
        assert!(m.wait(|s| s.messages.iter().any(|x| status_of(x) == Some("offline"))));
    }
    // /ws/stats names every node with its connections.
    let cluster = poll_until(std::time::Instant::now() + DEADLINE, || {
        let (_, body) = a.get("/ws/stats");
        let v = json(&body);
        let nodes = v["cluster"]["nodes"].as_array()?;
        (nodes.len() == 3
            && nodes
                .iter()
                .map(|n| n.get_u64("connections").unwrap_or(0))
                .sum::<u64>()
                == 3)
            .then_some(body)
    })
    .expect("every node and its connections in /ws/stats");
    assert!(cluster.contains(r#""node":""#), "{cluster}");
}

#[test]
fn the_devices_of_a_node_that_dies_turn_offline_once() {
    let redis = Redis::start();
    let mut a = node(&redis);
    let (b, c) = (node(&redis), node(&redis));
    let mut on_b = monitor(&b, "/ws/devices/all", &["*"]);
    let mut on_c = monitor(&c, "/ws/devices/all", &["*"]);
    let mut device = Sub::connect(
        &a,
        &format!("/ws/pico?token={}", token("pico-7", &["pico"])),
        None,
    );
    device.say(r#"{"type":"status","status":"success","mac_address":"aa:07"}"#);
    device.expect("status_ack");
    for m in [&mut on_b, &mut on_c] {
        assert!(m.wait(|s| s.messages.iter().any(|x| status_of(x) == Some("success"))));
    }
    // kill -9: node A cannot say offline itself; a survivor does, after
    // A's report expires (5 s), once for the whole cluster.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    for m in [&mut on_b, &mut on_c] {
        assert!(
            m.wait(|s| s.messages.iter().any(|x| status_of(x) == Some("offline"))),
            "offline after node A died: {:?}",
            m.messages
        );
        let last = m.messages.last().unwrap();
        assert!(
            last.contains(r#""mac_address":"aa:07""#),
            "keeps its identity: {last}"
        );
    }
    // Once: a later status (of another device, same topic, so it arrives
    // after anything published before it) finds one offline on each monitor.
    let (status, body) = Publisher::new(&b).post("/api/v1/devices/marker/status", r#"{"status":"success"}"#);
    assert_eq!(status, 202, "{body}");
    for m in [&mut on_b, &mut on_c] {
        assert!(m.wait(|s| s.messages.iter().any(|x| x.contains(r#""device_id":"marker""#))));
        let offline = m
            .messages
            .iter()
            .filter(|x| status_of(x) == Some("offline"))
            .count();
        assert_eq!(offline, 1, "{:?}", m.messages);
    }
    drop(device);
}

#[test]
fn a_cut_subscription_is_resumed_with_no_gap() {
    // What Redis does to a subscriber over `client-output-buffer-limit
    // pubsub`: it closes the connection. Publishing goes on meanwhile.
    let redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let mut on_b = user(&b, "gina", None);
    let (start, _) = position(&on_b, "type:user");
    let mut pa = Publisher::new(&a);
    for n in 0..300 {
        if n == 100 || n == 200 {
            let killed = redis.command("CLIENT KILL TYPE pubsub").unwrap_or_default();
            assert!(killed.starts_with(':'), "{killed}");
        }
        // Node A's own connection is cut too: while it reconnects (about
        // 100 ms) its publishes are 503, and the publisher retries.
        let deadline = std::time::Instant::now() + DEADLINE;
        poll_until(deadline, || {
            let (status, body) = pa.publish_reply("type:user", "tick", &format!(r#"{{"n":{n}}}"#));
            assert!(
                status == 202 || body.contains("broker_unavailable"),
                "{status} {body}"
            );
            (status == 202).then_some(())
        })
        .expect("publishes go through again");
    }
    let got = wait_ticks(&mut on_b, 300);
    assert_contiguous(&got, start + 1);
    assert_eq!(
        got.iter().map(|t| t.2).collect::<Vec<_>>(),
        (0..300).collect::<Vec<_>>()
    );
    assert!(
        b.logs().contains("broker connection lost"),
        "the cut was seen: {}",
        b.logs()
    );
}

#[test]
fn a_rediss_broker_is_checked_against_its_ca() {
    let redis = Redis::start_tls();
    let ca = redis.dir.join("ca.crt");
    let server = Server::start(&["--broker", &redis.url(), "--broker-ca", ca.to_str().unwrap()]);
    let deadline = std::time::Instant::now() + DEADLINE;
    poll_until(deadline, || (server.get("/health").0 == 200).then_some(()))
        .unwrap_or_else(|| panic!("the node connects over TLS: {}", server.logs()));
    let mut c = user(&server, "hana", None);
    let mut p = Publisher::new(&server);
    tick(&mut p, 1);
    assert_eq!(wait_ticks(&mut c, 1)[0].2, 1);
    // Without the CA the certificate is not trusted: the node stays degraded.
    let untrusting = Server::start(&["--broker", &redis.url()]);
    let deadline = std::time::Instant::now() + DEADLINE;
    poll_until(deadline, || {
        untrusting.logs().contains("broker unreachable").then_some(())
    })
    .expect("the TLS failure is logged");
    assert_eq!(untrusting.get("/health").0, 503);
    assert_eq!(Publisher::new(&untrusting).publish_reply("all", "x", "1").0, 503);
}
