//! A large fan-out shares its core: the dispatcher yields part-way through
//! a round, and what happens meanwhile stays exact. Clients that connect
//! while events are being fanned out to thousands of subscribers are told
//! a position and then receive every later event exactly once, in order;
//! the subscribers already there miss nothing.
mod common;
use common::*;

use simd_json::prelude::*;
use std::time::{Duration, Instant};

const SUBSCRIBERS: usize = 2000;
const EVENTS: u64 = 300;

fn user_path() -> String {
    format!("/ws/user?token={}", token("crowd", &["user"]))
}

/// The `type:user` offset in a `connected` event, or of an event message.
fn offset_of(message: &str, connected: bool) -> u64 {
    let v = simd_json::to_owned_value(&mut message.as_bytes().to_vec()).unwrap();
    if connected {
        assert_eq!(v.get_str("event"), Some("connected"), "{message}");
        v["data"]["positions"]["type:user"].get_u64("offset").unwrap()
    } else {
        v.get_u64("offset")
            .unwrap_or_else(|| panic!("no offset: {message}"))
    }
}

/// Every message after `connected` carries the next offset, up to `last`.
fn assert_exact(sub: &Sub, last: u64, who: &str) {
    let start = offset_of(&sub.messages[0], true);
    let got: Vec<u64> = sub.messages[1..].iter().map(|m| offset_of(m, false)).collect();
    let want: Vec<u64> = (start + 1..=last).collect();
    assert_eq!(got, want, "{who}: joined at {start}");
}

/// `SUBSCRIBERS` clients on `type:user`, each past its connected event.
fn connected_crowd(server: &Server) -> Subscribers {
    let path = user_path();
    let mut crowd = Subscribers {
        conns: (0..SUBSCRIBERS)
            .map(|_| Sub::connect(server, &path, None))
            .collect(),
    };
    assert!(
        crowd.wait_for(1, DEADLINE),
        "every subscriber gets its connected event"
    );
    crowd
}

#[test]
fn clients_joining_during_a_large_fanout_get_every_later_event_exactly_once() {
    raise_nofile();
    let server = Server::start(&[]);
    let path = user_path();
    let mut crowd = connected_crowd(&server);

    // One event at a time, each POSTed after the previous 202, as a backend
    // publishes: every round is a fan-out to the whole crowd.
    let mut publisher = Publisher::new(&server);
    let publishing = std::thread::spawn(move || {
        for seq in 1..=EVENTS {
            publisher.publish("type:user", "product.approved", &format!(r#"{{"seq":{seq}}}"#));
        }
    });
    // Meanwhile clients leave and others join: a joiner may take a leaver's
    // place in the shard's subscriber table, before or after the point a
    // round in progress has reached.
    let mut joiners = Vec::new();
    let mut left = 0;
    while !publishing.is_finished() {
        if left < SUBSCRIBERS / 2 {
            drop(crowd.conns.remove(left % 7));
            left += 1;
        }
        joiners.push(Sub::connect(&server, &path, None));
        // Keep the crowd reading so the rounds keep going through the kernel.
        for sub in &mut crowd.conns {
            sub.pump();
        }
    }
    publishing.join().unwrap();
    assert!(!joiners.is_empty());

    // The crowd joined before the first event: the last one is EVENTS on.
    let last = offset_of(&crowd.conns[0].messages[0], true) + EVENTS;

    let stayed = crowd.conns.len();
    let mut everyone = Subscribers {
        conns: crowd.conns.into_iter().chain(joiners).collect(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = |s: &Sub| {
        s.messages
            .last()
            .is_some_and(|m| s.messages.len() > 1 && offset_of(m, false) == last)
    };
    while !everyone.conns.iter().all(|s| s.messages.len() > 1 && done(s)) && Instant::now() < deadline {
        let mut idle = true;
        for sub in &mut everyone.conns {
            if !done(sub) && sub.pump() {
                idle = false;
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let joined = everyone.conns.len() - stayed;
    for (i, sub) in everyone.conns.iter().enumerate() {
        let who = if i < stayed {
            format!("subscriber {i}")
        } else {
            format!("joiner {}", i - stayed)
        };
        assert!(
            sub.close.is_none() && !sub.eof,
            "{who} was closed: {:?}",
            sub.close
        );
        assert_exact(sub, last, &who);
    }

    // The path under test was taken: the dispatchers yielded part-way
    // through rounds, and joins waited for a round's end.
    let (_, metrics) = server.get("/metrics");
    let yields = metric_sum(&metrics, "shardcast_dispatch_yields_total", "");
    let deferred = metric_sum(&metrics, "shardcast_joins_deferred_total", "");
    assert!(yields > 0.0, "no dispatcher yielded:\n{metrics}");
    assert!(
        deferred > 0.0,
        "no join of {joined} waited for a round:\n{metrics}"
    );
}

/// Every shard hands its core back during a long round: the shard that
/// accepted the publishes as much as the one their events reached through
/// its channel. (Before, the accepting shard's rounds ran unbroken: its
/// preempt timer was still the HTTP task's 100 ms when the round began.)
#[test]
fn every_shard_yields_during_a_long_round_the_publishing_one_too() {
    raise_nofile();
    let server = Server::start(&[]);
    let mut crowd = connected_crowd(&server);
    let (_, metrics) = server.get("/metrics");
    let shards = ["0", "1"];
    for shard in shards {
        let held = metric_sum(
            &metrics,
            "shardcast_connections",
            &format!("shard=\"{shard}\",client_type=\"any\""),
        );
        // A round of this many sends takes milliseconds: many slices.
        assert!(
            held >= 200.0,
            "shard {shard} holds {held} subscribers:\n{metrics}"
        );
    }

    // One keep-alive connection: every publish is accepted by one shard.
    let mut publisher = Publisher::new(&server);
    let events = 20;
    for seq in 1..=events {
        publisher.publish("type:user", "product.approved", &format!(r#"{{"seq":{seq}}}"#));
    }
    assert!(
        crowd.wait_for(1 + events, DEADLINE),
        "every subscriber gets every event"
    );
    for (i, sub) in crowd.conns.iter().enumerate() {
        let last = offset_of(&sub.messages[0], true) + events as u64;
        assert_exact(sub, last, &format!("subscriber {i}"));
    }

    let (_, metrics) = server.get("/metrics");
    for shard in shards {
        let yields = metric_sum(
            &metrics,
            "shardcast_dispatch_yields_total",
            &format!("shard=\"{shard}\""),
        );
        assert!(yields > 0.0, "shard {shard} never yielded:\n{metrics}");
    }
}
