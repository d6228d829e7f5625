//! The publish API refuses what it cannot publish: no or wrong key → 401,
//! malformed bodies → 400 naming the problem, a bad batch publishes nothing.
mod common;
use common::*;

#[test]
fn publish_without_or_with_a_wrong_key_is_401() {
    let server = Server::start(&[]);
    for key in ["", "wrong-key"] {
        let (status, body) =
            Publisher::with_key(&server, key).post("/api/v1/publish", r#"{"topic":"all","event":"x"}"#);
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("API key"), "{body}");
    }
}

#[test]
fn x_api_key_header_is_accepted() {
    let server = Server::start(&[]);
    let body = r#"{"topic":"all","event":"x"}"#;
    let resp = server.raw(
        format!(
            "POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 202 "), "{resp}");
}

#[test]
fn malformed_bodies_are_400_naming_the_problem() {
    let server = Server::start(&[]);
    let mut p = Publisher::new(&server);
    for (body, code, needle) in [
        ("{not json", "bad_json", "invalid JSON"),
        (r#"{"event":"x"}"#, "bad_json", "topic"),
        (r#"{"topic":"all"}"#, "bad_json", "event"),
        (r#"{"topic":"nope","event":"x"}"#, "bad_event", "invalid topic"),
        (r#"{"topic":"user:","event":"x"}"#, "bad_event", "empty"),
        (r#"{"topic":"all","event":""}"#, "bad_event", "'event'"),
        ("", "bad_json", "invalid JSON"),
    ] {
        let (status, reply) = p.post("/api/v1/publish", body);
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(reply.contains(&format!(r#""error":"{code}""#)), "{body}: {reply}");
        assert!(reply.contains(needle), "{body}: {reply}");
    }
}

#[test]
fn a_batch_with_a_bad_event_publishes_nothing() {
    let server = Server::start(&[]);
    let mut sub = Sub::connect(
        &server,
        &format!("/ws/user?token={}", token("x", &["user"])),
        None,
    );
    assert!(sub.wait(|s| !s.messages.is_empty()));
    let mut p = Publisher::new(&server);
    let (status, reply) = p.post(
        "/api/v1/publish/batch",
        r#"{"events":[{"topic":"all","event":"first"},{"topic":"bogus","event":"second"}]}"#,
    );
    assert_eq!(status, 400);
    assert!(reply.contains("events[1]"), "{reply}");
    p.publish("all", "marker", "null");
    assert!(sub.wait(|s| s.messages.len() == 2));
    assert_eq!(event_of(&sub.messages[1]), Some("marker"));
}

#[test]
fn batch_count_and_body_size_limits_are_413() {
    let server = Server::start(&["--max-batch-events", "2", "--max-body-bytes", "2000"]);
    let mut p = Publisher::new(&server);
    let three =
        r#"{"events":[{"topic":"all","event":"a"},{"topic":"all","event":"b"},{"topic":"all","event":"c"}]}"#;
    let (status, reply) = p.post("/api/v1/publish/batch", three);
    assert_eq!(status, 413, "{reply}");
    assert!(reply.contains("too_many_events"), "{reply}");
    let big = format!(r#"{{"topic":"all","event":"a","data":"{}"}}"#, "x".repeat(3000));
    let (status, _) = Publisher::new(&server).post("/api/v1/publish", &big);
    assert_eq!(status, 413);
}
