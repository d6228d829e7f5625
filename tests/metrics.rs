//! `/metrics` (Prometheus text) and `/debug/latency` (hgrm) report real
//! traffic: connections, events, deliveries, rejections, histograms; labels
//! stay bounded (no user, room or device ids).
mod common;
use std::io::Write;
use std::time::Instant;

use common::*;

/// Sum of every sample of `name` whose labels contain `filter`.
#[test]
fn metrics_count_real_traffic_with_bounded_labels() {
    let server = Server::start(&[]);
    let t = token("alice-7f3a", &["user"]);
    let mut a = Sub::connect(&server, &format!("/ws/user?token={t}"), None);
    let mut b = Sub::connect(&server, &format!("/ws/user?token={t}"), None);
    let mut p = Publisher::new(&server);
    for i in 0..5 {
        p.publish("type:user", "e", &i.to_string());
    }
    assert!(a.wait(|s| s.messages.len() == 6) && b.wait(|s| s.messages.len() == 6));
    assert_eq!(server.get("/nope").0, 404);
    assert_eq!(server.get("/ws/user").0, 426);
    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE shardcast_connections gauge"), "{text}");
    assert_eq!(
        metric_sum(&text, "shardcast_connections", r#"client_type="user""#),
        2.0
    );
    assert_eq!(
        metric_sum(&text, "shardcast_events_total", ""),
        10.0,
        "5 events reach each of 2 shards"
    );
    assert_eq!(metric_sum(&text, "shardcast_deliveries_total", ""), 10.0);
    assert_eq!(
        metric_sum(&text, "shardcast_slow_consumer_disconnects_total", ""),
        0.0
    );
    assert!(
        metric_sum(
            &text,
            "shardcast_requests_rejected_total",
            r#"reason="not_found""#
        ) >= 1.0
    );
    assert!(
        metric_sum(
            &text,
            "shardcast_requests_rejected_total",
            r#"reason="bad_handshake""#
        ) >= 1.0
    );
    assert_eq!(
        metric_sum(&text, "shardcast_fanout_latency_seconds_count", ""),
        10.0,
        "one sample per batch per shard"
    );
    assert_eq!(
        metric_sum(&text, "shardcast_fanout_latency_seconds_bucket", r#"le="+Inf""#),
        10.0
    );
    assert_eq!(
        metric_sum(&text, "shardcast_handshake_duration_seconds_count", ""),
        2.0
    );
    assert!(!text.contains("alice"), "user ids must never be labels");

    let (status, hgrm) = server.get("/debug/latency");
    assert_eq!(status, 200);
    assert!(
        hgrm.starts_with("       Value     Percentile TotalCount"),
        "{hgrm}"
    );
    assert!(hgrm.contains("Total count    =           10"), "{hgrm}");
    let counts: Vec<u64> = hgrm
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "TotalCount is cumulative: {hgrm}"
    );
    assert_eq!(counts.last(), Some(&10));
}

#[test]
fn closes_are_counted_by_reason_and_queued_bytes_are_reported() {
    // A large queue limit: the stalled reader below is queued for, not closed.
    let server = Server::start(&["--max-queue-bytes", "67108864"]);
    let path = format!("/ws/user?token={}", token("closer", &["user"]));
    let metric = |name: &str, filter: &str| metric_sum(&server.get("/metrics").1, name, filter);
    let closed = "shardcast_connections_closed_total";

    // The client closes properly.
    let mut ws = server.ws(&path);
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    // The client vanishes without a close frame.
    drop(server.raw_ws(&path));
    // The client breaks the protocol (an unmasked frame): close 1002.
    let mut bad = server.raw_ws(&path);
    bad.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(read_close(&mut bad).map(|c| c.0), Some(1002));
    drop(bad);

    let counted = poll_until(Instant::now() + DEADLINE, || {
        let text = server.get("/metrics").1;
        let by = |reason: &str| metric_sum(&text, closed, &format!(r#"reason="{reason}""#));
        (by("client_close") == 1.0 && by("disconnect") == 1.0 && by("protocol_error") == 1.0).then_some(text)
    });
    let text = counted.expect("each close counted under its reason");
    assert_eq!(metric_sum(&text, closed, ""), 3.0, "nothing else was closed");
    assert_eq!(metric_sum(&text, "shardcast_connections_opened_total", ""), 3.0);

    // A reader that stopped reading: its backlog shows as queued bytes.
    let mut stalled = Sub::connect(&server, &path, Some(4096));
    assert!(stalled.wait(|s| s.messages.len() == 1));
    let mut publisher = Publisher::new(&server);
    let blob = "x".repeat(16_000);
    for seq in 0..400 {
        publisher.publish("type:user", "big", &format!(r#"{{"seq":{seq},"blob":"{blob}"}}"#));
    }
    let queued = poll_until(Instant::now() + DEADLINE, || {
        let q = metric("shardcast_queue_backlog_bytes", "");
        (q > 0.0).then_some(q)
    });
    let queued = queued.expect("queued bytes reported within a sweep");
    assert!(queued <= 400.0 * 16_100.0, "{queued}");
    assert_eq!(
        metric("shardcast_dropped_frames_total", ""),
        0.0,
        "nothing dropped"
    );
}
