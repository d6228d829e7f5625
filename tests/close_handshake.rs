//! The close handshake ends with the server dropping TCP (RFC 6455 §7.1.1):
//! once a close frame has gone each way, whether the peer's was valid or
//! not, the client sees EOF at once, not after `close_timeout`.
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads until EOF; the time it took, or `None` if the socket stayed open
/// for `limit`.
fn eof_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(start.elapsed()),
            Err(_) => return None,
        }
    }
}

fn echo_server() -> Server {
    // A close timeout far longer than the test's patience: only an
    // immediate drop passes.
    Server::start(&["--echo", "--close-timeout", "60s"])
}

#[test]
fn a_valid_close_is_echoed_and_tcp_dropped() {
    let server = echo_server();
    let mut s = server.raw_ws("/ws/echo");
    s.write_all(&client_frame(0x88, &1000u16.to_be_bytes())).unwrap();
    assert_eq!(read_close(&mut s), Some((1000, String::new())));
    assert!(eof_within(&mut s, DEADLINE).is_some(), "server kept TCP open");
}

#[test]
fn an_invalid_close_frame_gets_1002_and_tcp_dropped_at_once() {
    let server = echo_server();
    for (what, payload) in [
        ("reserved code 1005", 1005u16.to_be_bytes().to_vec()),
        ("code 999", 999u16.to_be_bytes().to_vec()),
        ("one-byte payload", vec![3]),
        (
            "reason too long",
            [&1000u16.to_be_bytes()[..], &[b'*'; 124]].concat(),
        ),
    ] {
        let mut s = server.raw_ws("/ws/echo");
        s.write_all(&client_frame(0x88, &payload)).unwrap();
        assert_eq!(read_close(&mut s).map(|c| c.0), Some(1002), "{what}");
        assert!(
            eof_within(&mut s, DEADLINE).is_some(),
            "{what}: server waited for a second close"
        );
    }
    let mut s = server.raw_ws("/ws/echo");
    s.write_all(&client_frame(0x88, &[0x03, 0xe8, 0xff])).unwrap();
    assert_eq!(
        read_close(&mut s).map(|c| c.0),
        Some(1007),
        "invalid UTF-8 reason"
    );
    assert!(eof_within(&mut s, DEADLINE).is_some());
}

#[test]
fn a_server_initiated_close_waits_for_the_peer() {
    // Any other violation: our close goes first and we wait for the peer's.
    let server = echo_server();
    let mut s = server.raw_ws("/ws/echo");
    s.write_all(&[0x81, 0x01, b'x']).unwrap(); // unmasked: 1002
    assert_eq!(read_close(&mut s).map(|c| c.0), Some(1002));
    assert!(
        eof_within(&mut s, Duration::from_millis(500)).is_none(),
        "dropped before our close was answered"
    );
    s.write_all(&client_frame(0x88, &1002u16.to_be_bytes())).unwrap();
    assert!(eof_within(&mut s, DEADLINE).is_some());
}
