//! Connection limits: past the total, per-type or per-user limit an upgrade
//! gets 503 with Retry-After; a closed connection frees its slot.
mod common;
use common::*;
use std::time::Instant;

/// Attempts an upgrade; returns (status, head) and the open socket.
fn attempt(server: &Server, path: &str) -> (u16, String, std::net::TcpStream) {
    upgrade(server, path, "")
}

#[test]
fn per_user_limit_and_slot_release() {
    let server = Server::start(&["--max-connections-per-user", "2"]);
    let alice = format!("/ws/user?token={}", token("alice", &["user"]));
    let (a, _, first) = attempt(&server, &alice);
    let (b, _, _second) = attempt(&server, &alice);
    assert_eq!((a, b), (101, 101));
    let (c, head, _) = attempt(&server, &alice);
    assert_eq!(c, 503, "{head}");
    assert!(head.contains("Retry-After: 5\r\n"), "{head}");
    // Another user is not affected.
    assert_eq!(
        attempt(&server, &format!("/ws/user?token={}", token("bob", &["user"]))).0,
        101
    );
    // Closing one of alice's connections frees a slot.
    drop(first);
    let deadline = Instant::now() + DEADLINE;
    let reopened = poll_until(deadline, || {
        let (status, _, s) = attempt(&server, &alice);
        (status == 101).then_some(s)
    });
    assert!(reopened.is_some(), "the slot was never released");
}

#[test]
fn per_type_and_total_limits() {
    let server = Server::start(&["--max-connections-per-type", "1", "--max-connections", "2"]);
    let t = token("u", &["user", "shop", "admin"]);
    let (a, _, _a) = attempt(&server, &format!("/ws/user?token={t}"));
    assert_eq!(a, 101);
    let deadline = Instant::now() + DEADLINE;
    // Counts are updated once the first connection is registered.
    let user_full = poll_until(deadline, || {
        let (status, head, _) = attempt(&server, &format!("/ws/user?token={t}"));
        (status == 503).then_some(head)
    })
    .expect("second user connection refused");
    assert!(user_full.contains("Retry-After"), "{user_full}");
    let (b, _, _b) = attempt(&server, &format!("/ws/shop?token={t}"));
    assert_eq!(b, 101);
    let total_full = poll_until(deadline, || {
        let (status, head, _) = attempt(&server, &format!("/ws/admin?token={t}"));
        (status == 503).then_some(head)
    })
    .expect("third connection refused by the total limit");
    assert!(total_full.starts_with("HTTP/1.1 503 "), "{total_full}");
}
