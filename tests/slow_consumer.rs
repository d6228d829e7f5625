//! Slow consumers: a subscriber that stops reading is closed with 1008
//! "slow consumer" and counted, while a healthy subscriber receives every
//! event in order and the server's memory stays bounded.
mod common;
use common::*;

#[test]
fn stalled_reader_is_disconnected_while_healthy_reader_gets_everything() {
    stalled_reader_is_disconnected_while_healthy_reader_gets_everything_with(&[]);
}

/// The same with one sendmsg per recipient (`--send-path direct`).
#[test]
fn stalled_reader_is_disconnected_while_healthy_reader_gets_everything_direct() {
    stalled_reader_is_disconnected_while_healthy_reader_gets_everything_with(&["--send-path", "direct"]);
}

fn stalled_reader_is_disconnected_while_healthy_reader_gets_everything_with(extra: &[&str]) {
    let server = Server::start(&[&["--max-queue-bytes", "262144"], extra].concat());
    let t = token("reader", &["user"]);
    let mut healthy = Sub::connect(&server, &format!("/ws/user?token={t}"), None);
    let mut stalled = Sub::connect(&server, &format!("/ws/user?token={t}"), Some(4096));
    assert!(healthy.wait(|s| s.messages.len() == 1));
    let rss_before = rss_kib(server.child.id());

    // 2,000 events of ~16 KB: 32 MB to each subscriber. The stalled one can
    // absorb a few MB in socket buffers, then 256 KiB of queue.
    let blob = "x".repeat(16_000);
    let mut publisher = Publisher::new(&server);
    for seq in 0..2000 {
        publisher.publish("type:user", "big", &format!(r#"{{"seq":{seq},"blob":"{blob}"}}"#));
        // Keep the healthy reader current so it never falls behind.
        assert!(
            healthy.wait(|s| s.messages.len() == seq + 2),
            "healthy reader stalled at {seq}"
        );
    }
    let seqs: Vec<u64> = healthy.messages[1..].iter().map(|m| seq_of(m).unwrap()).collect();
    assert!(seqs.iter().copied().eq(0..2000));

    let grown_kib = rss_kib(server.child.id()).saturating_sub(rss_before);
    assert!(
        grown_kib < 16 * 1024,
        "server RSS grew by {grown_kib} KiB for 32 MB published"
    );

    // The stalled reader now drains: an in-order prefix, then close 1008.
    assert!(
        stalled.wait(|s| s.close.is_some()),
        "stalled reader never saw a close frame"
    );
    assert_eq!(stalled.close, Some((1008, "slow consumer".to_string())));
    let got: Vec<u64> = stalled.messages[1..].iter().map(|m| seq_of(m).unwrap()).collect();
    assert!(
        got.len() < 2000,
        "the stalled reader cannot have received everything"
    );
    assert!(got.iter().copied().eq(0..got.len() as u64), "prefix out of order");

    let (_, stats) = server.get("/ws/stats");
    assert!(stats.contains(r#""slow_consumers":1"#), "{stats}");
    drop(stalled);
    let metric = |text: &str, name: &str, label: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let text = poll_until(std::time::Instant::now() + DEADLINE, || {
        let text = server.get("/metrics").1;
        let closed = metric(
            &text,
            "shardcast_connections_closed_total",
            r#"reason="slow_consumer""#,
        );
        (closed == 1.0).then_some(text)
    })
    .expect("the slow consumer's close is counted under its reason");
    assert!(
        metric(
            &text,
            "shardcast_dropped_frames_total",
            r#"reason="slow_consumer""#
        ) > 0.0,
        "its discarded backlog is counted"
    );
}
