//! `/metrics` (Prometheus text) and `/debug/latency` (hgrm) report real
//! traffic: connections, events, deliveries, rejections, histograms; labels
//! stay bounded (no user, room or device ids).
mod common;
use common::*;

/// Sum of every sample of `name` whose labels contain `filter`.
fn sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

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
    assert_eq!(sum(&text, "shardcast_connections", r#"client_type="user""#), 2.0);
    assert_eq!(
        sum(&text, "shardcast_events_total", ""),
        10.0,
        "5 events reach each of 2 shards"
    );
    assert_eq!(sum(&text, "shardcast_deliveries_total", ""), 10.0);
    assert_eq!(sum(&text, "shardcast_slow_consumer_disconnects_total", ""), 0.0);
    assert!(
        sum(
            &text,
            "shardcast_requests_rejected_total",
            r#"reason="not_found""#
        ) >= 1.0
    );
    assert!(
        sum(
            &text,
            "shardcast_requests_rejected_total",
            r#"reason="bad_handshake""#
        ) >= 1.0
    );
    assert_eq!(
        sum(&text, "shardcast_fanout_latency_seconds_count", ""),
        10.0,
        "one sample per batch per shard"
    );
    assert_eq!(
        sum(&text, "shardcast_fanout_latency_seconds_bucket", r#"le="+Inf""#),
        10.0
    );
    assert_eq!(sum(&text, "shardcast_handshake_duration_seconds_count", ""), 2.0);
    assert!(!text.contains("alice"), "user ids must never be labels");

    let (status, hgrm) = server.get("/debug/latency");
    assert_eq!(status, 200);
    assert!(
        hgrm.starts_with("       Value     Percentile TotalCount"),
        "{hgrm}"
    );
    assert!(hgrm.contains("Total count    =           10"), "{hgrm}");
}
