//! The close handshake ends with the server dropping TCP (RFC 6455 §7.1.1):
//! once a close frame has gone each way, whether the peer's was valid or
//! not, or once the server failed the connection for a protocol violation,
//! the client sees EOF at once, not after `close_timeout`.
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
fn a_protocol_violation_fails_the_connection_at_once() {
    // RFC 6455 §7.1.7: after failing the connection the server processes
    // no more data (a reply close included) and drops TCP once its close
    // is out. Bytes that follow the violation, as in Autobahn 4.2.5, must
    // not hold the connection open until the close deadline.
    let server = echo_server();
    for (what, first) in [
        ("unmasked frame", vec![0x81, 0x05, b'H', b'e', b'l', b'l', b'o']),
        ("reserved opcode 15", client_frame(0x8f, b"Hello, world!")),
        ("reserved bit", client_frame(0xc1, b"x")),
    ] {
        let mut s = server.raw_ws("/ws/echo");
        s.write_all(&client_frame(0x81, b"before")).unwrap();
        assert_eq!(read_frame(&mut s), Some((0x81, b"before".to_vec())), "{what}");
        // The violation, then a ping one byte per write.
        s.write_all(&first).unwrap();
        for byte in client_frame(0x89, b"") {
            let _ = s.write_all(&[byte]);
        }
        assert_eq!(read_close(&mut s).map(|c| c.0), Some(1002), "{what}");
        assert!(
            eof_within(&mut s, DEADLINE).is_some(),
            "{what}: server waited for a close it must not process"
        );
    }
}

#[test]
fn a_server_initiated_close_waits_for_the_peer() {
    // A close that is not a failure (here: too many bad messages, 1008)
    // waits for the peer's close frame, then drops TCP.
    let server = Server::start(&["--close-timeout", "60s"]);
    let mut s = server.raw_ws(&format!("/ws/user?token={}", token("u1", &["user"])));
    let mut code = None;
    for _ in 0..100 {
        s.write_all(&client_frame(0x81, b"not json")).unwrap();
        match read_frame(&mut s) {
            Some((0x88, payload)) => {
                code = Some(u16::from_be_bytes([payload[0], payload[1]]));
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    assert_eq!(code, Some(1008));
    assert!(
        eof_within(&mut s, Duration::from_millis(500)).is_none(),
        "dropped before our close was answered"
    );
    s.write_all(&client_frame(0x88, &1008u16.to_be_bytes())).unwrap();
    assert!(eof_within(&mut s, DEADLINE).is_some());
}
