//! The WebSocket upgrade: a valid handshake echoes messages; every malformed
//! handshake is refused with a status and a JSON body, never a hang.
mod common;
use common::*;

#[test]
fn valid_upgrade_echoes_text_and_binary() {
    let server = Server::start(&["--echo"]);
    let mut ws = server.ws("/ws/echo");
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    ws.close(None).unwrap();
}

#[test]
fn frames_sent_with_the_upgrade_request_are_not_lost() {
    let server = Server::start(&["--echo"]);
    let mut s = server.tcp();
    let mut bytes = b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .to_vec();
    bytes.extend(client_frame(0x81, b"early"));
    use std::io::Write;
    s.write_all(&bytes).unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 101"));
    assert_eq!(read_frame(&mut s), Some((0x81, b"early".to_vec())));
}

fn handshake(server: &Server, headers: &str) -> (u16, String) {
    let req = format!("GET /ws/echo HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    split_response(&server.raw(req.as_bytes()))
}

#[test]
fn missing_key_is_400() {
    let server = Server::start(&["--echo"]);
    let (status, body) = handshake(
        &server,
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
    );
    assert_eq!(status, 400);
    assert!(body.contains("\"error\":\"bad_handshake\""), "{body}");
    assert!(body.contains("Sec-WebSocket-Key"), "{body}");
}

#[test]
fn wrong_version_is_400_naming_version_13() {
    let server = Server::start(&["--echo"]);
    let resp = server.raw(
        b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"), "{resp}");
}

#[test]
fn malformed_key_is_400() {
    let server = Server::start(&["--echo"]);
    let (status, _) = handshake(
        &server,
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: nope\r\n",
    );
    assert_eq!(status, 400);
}

#[test]
fn plain_get_on_a_websocket_endpoint_is_426() {
    let server = Server::start(&["--echo"]);
    let (status, body) = server.get("/ws/echo");
    assert_eq!(status, 426);
    assert!(body.contains("upgrade_required"), "{body}");
}

#[test]
fn garbage_instead_of_http_is_400() {
    let server = Server::start(&["--echo"]);
    let (status, body) = split_response(&server.raw(b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n"));
    assert_eq!(status, 400);
    assert!(body.contains("bad_request"), "{body}");
}

#[test]
fn echo_endpoint_is_absent_without_the_flag() {
    let server = Server::start(&[]);
    let (status, _) = server.get("/ws/echo");
    assert_eq!(status, 404);
}
