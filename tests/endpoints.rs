//! `/health` and `/ws/stats` answer JSON and count live connections.
mod common;
use common::*;
use std::time::Instant;

#[test]
fn health_reports_status_shards_connections_uptime() {
    let server = Server::start(&[]);
    let (status, body) = server.get("/health");
    assert_eq!(status, 200);
    assert!(
        body.starts_with(r#"{"status":"ok","shards":2,"connections":0,"uptime_secs":"#),
        "{body}"
    );
}

#[test]
fn stats_are_zero_without_clients() {
    let server = Server::start(&[]);
    let (status, body) = server.get("/ws/stats");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"total":0,"by_type":{"admin":0,"esp32cam":0,"pico":0,"shop":0,"user":0},"rooms":0,"shards":[{"shard":0,"connections":0,"events":0,"deliveries":0,"slow_consumers":0,"rooms":0},{"shard":1,"connections":0,"events":0,"deliveries":0,"slow_consumers":0,"rooms":0}]}"#
    );
}

#[test]
fn stats_count_open_connections_and_forget_closed_ones() {
    let server = Server::start(&["--echo"]);
    let total = |s: &Server| {
        let (_, body) = s.get("/ws/stats");
        body.split("\"total\":")
            .nth(1)
            .and_then(|t| t.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let clients: Vec<_> = (0..4).map(|_| server.ws("/ws/echo")).collect();
    let deadline = Instant::now() + DEADLINE;
    assert_eq!(
        poll_until(deadline, || (total(&server) == Some(4)).then_some(())),
        Some(())
    );
    drop(clients);
    let deadline = Instant::now() + DEADLINE;
    assert_eq!(
        poll_until(deadline, || (total(&server) == Some(0)).then_some(())),
        Some(())
    );
}
