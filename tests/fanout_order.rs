//! Fan-out: every subscriber on every shard receives every event, once, in
//! the order the publishing shard accepted them.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn thousand_subscribers_receive_thousand_events_in_order() {
    thousand_subscribers_receive_thousand_events_in_order_with(&[]);
}

/// The same with one sendmsg per recipient (`--send-path direct`).
#[test]
fn thousand_subscribers_receive_thousand_events_in_order_direct() {
    thousand_subscribers_receive_thousand_events_in_order_with(&["--send-path", "direct"]);
}

fn thousand_subscribers_receive_thousand_events_in_order_with(extra: &[&str]) {
    raise_nofile();
    let server = Server::start(&[&[], extra].concat());
    let token = token("fan", &["user"]);
    let mut subs = Subscribers {
        conns: (0..1000)
            .map(|_| Sub::connect(&server, &format!("/ws/user?token={token}"), None))
            .collect(),
    };
    assert!(
        subs.wait_for(1, DEADLINE),
        "every subscriber gets its connected event"
    );
    // Both shards hold subscribers.
    let (_, stats) = server.get("/ws/stats");
    assert!(!stats.contains(r#""connections":0"#), "{stats}");

    let mut publisher = Publisher::new(&server);
    for seq in 0..1000 {
        publisher.publish(
            "type:user",
            "product.approved",
            &format!(r#"{{"seq":{seq},"name":"p"}}"#),
        );
    }
    assert!(
        subs.wait_for(1001, Duration::from_secs(60)),
        "all deliveries arrive"
    );
    for (i, sub) in subs.conns.iter().enumerate() {
        assert_eq!(event_of(&sub.messages[0]), Some("connected"));
        let seqs: Vec<u64> = sub.messages[1..].iter().map(|m| seq_of(m).unwrap()).collect();
        assert!(
            seqs.iter().copied().eq(0..1000),
            "subscriber {i} got {} events out of order",
            seqs.len()
        );
    }
}

#[test]
fn a_batch_of_100_events_arrives_in_order() {
    a_batch_of_100_events_arrives_in_order_with(&[]);
}

/// The same with one sendmsg per recipient (`--send-path direct`).
#[test]
fn a_batch_of_100_events_arrives_in_order_direct() {
    a_batch_of_100_events_arrives_in_order_with(&["--send-path", "direct"]);
}

fn a_batch_of_100_events_arrives_in_order_with(extra: &[&str]) {
    let server = Server::start(&[&[], extra].concat());
    let mut sub = Sub::connect(
        &server,
        &format!("/ws/user?token={}", token("b", &["user"])),
        None,
    );
    assert!(sub.wait(|s| !s.messages.is_empty()));
    let events: Vec<String> = (0..100)
        .map(|seq| format!(r#"{{"topic":"all","event":"bulk.approved","data":{{"seq":{seq}}}}}"#))
        .collect();
    let (status, reply) = Publisher::new(&server).post(
        "/api/v1/publish/batch",
        &format!(r#"{{"events":[{}]}}"#, events.join(",")),
    );
    assert_eq!(status, 202, "{reply}");
    assert!(reply.contains(r#""events":100"#), "{reply}");
    assert!(sub.wait(|s| s.messages.len() == 101));
    let seqs: Vec<u64> = sub.messages[1..].iter().map(|m| seq_of(m).unwrap()).collect();
    assert!(seqs.iter().copied().eq(0..100), "{seqs:?}");
}

#[test]
fn envelope_carries_event_topic_position_timestamp_and_data() {
    let server = Server::start(&[]);
    let mut sub = Sub::connect(
        &server,
        &format!("/ws/shop?token={}", token("s1", &["shop"])),
        None,
    );
    assert!(sub.wait(|s| !s.messages.is_empty()));
    Publisher::new(&server).publish(
        "type:shop",
        "product.approved",
        r#"{"product_id":123,"shop_id":10}"#,
    );
    assert!(sub.wait(|s| s.messages.len() == 2));
    let msg = &sub.messages[1];
    assert!(
        msg.starts_with(r#"{"event":"product.approved","topic":"type:shop","offset":1,"epoch":""#),
        "{msg}"
    );
    assert!(msg.contains(r#"","timestamp":""#), "{msg}");
    assert!(
        msg.ends_with(r#"Z","data":{"product_id":123,"shop_id":10}}"#),
        "{msg}"
    );
}
