//! Liveness: protocol pings get pongs, the server pings every heartbeat
//! interval, answering clients stay connected, and a silent peer is closed.
mod common;
use common::*;
use std::io::Write;
use std::time::Instant;

#[test]
fn ping_gets_pong_with_the_same_payload() {
    let server = Server::start(&["--echo"]);
    let mut s = server.raw_ws("/ws/echo");
    s.write_all(&client_frame(0x89, b"are you there")).unwrap();
    assert_eq!(read_frame(&mut s), Some((0x8a, b"are you there".to_vec())));
}

#[test]
fn answering_client_outlives_the_idle_timeout() {
    let server = Server::start(&["--echo", "--heartbeat-interval", "1s", "--idle-timeout", "2s"]);
    let mut ws = server.ws("/ws/echo");
    let start = Instant::now();
    let mut pings = 0;
    // tungstenite answers each ping with a pong while we read.
    while pings < 4 {
        match ws.read().unwrap() {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        start.elapsed() >= std::time::Duration::from_secs(2),
        "4 pings arrived before the idle timeout"
    );
    ws.send(Message::text("alive")).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => break assert_eq!(t.as_str(), "alive"),
            Message::Ping(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn silent_peer_is_pinged_then_closed() {
    let server = Server::start(&["--echo", "--heartbeat-interval", "1s", "--idle-timeout", "2s"]);
    let mut s = server.raw_ws("/ws/echo");
    let (first, _) = read_frame(&mut s).expect("a heartbeat ping");
    assert_eq!(first, 0x89);
    assert_eq!(read_close(&mut s), Some((1001, "idle timeout".to_string())));
}
