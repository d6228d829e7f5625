//! Graceful shutdown: SIGTERM sends close 1001 to every connection and the
//! process exits 0 within the drain time.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn sigterm_closes_clients_with_1001_and_exits_zero() {
    let mut server = Server::start(&["--echo"]);
    let mut clients: Vec<_> = (0..5).map(|_| server.ws("/ws/echo")).collect();
    for ws in &mut clients {
        ws.send(Message::text("x")).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text("x"));
    }
    server.terminate();
    for ws in &mut clients {
        assert_eq!(ws_close_code(ws), Some(1001));
    }
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exited within the drain time");
    assert!(status.success(), "{status:?}");
}

#[test]
fn silent_clients_do_not_hold_shutdown_past_the_drain_timeout() {
    let mut server = Server::start(&["--echo", "--drain-timeout", "2s", "--close-timeout", "10s"]);
    // Raw clients that never answer the close frame.
    let _clients: Vec<_> = (0..3).map(|_| server.raw_ws("/ws/echo")).collect();
    server.terminate();
    let status = server
        .wait_exit(Duration::from_secs(8))
        .expect("exited after the drain timeout");
    assert!(status.success(), "{status:?}");
}
