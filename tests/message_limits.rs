//! Peer frames the server must refuse: each closes the connection with the
//! right code, and the server keeps serving others.
mod common;
use common::*;
use std::io::Write;

#[test]
fn oversized_message_closes_with_1009() {
    let server = Server::start(&["--echo", "--max-message-bytes", "1000"]);
    let mut ws = server.ws("/ws/echo");
    ws.send(Message::binary(vec![7u8; 1001])).unwrap();
    assert_eq!(ws_close_code(&mut ws), Some(1009));
}

#[test]
fn default_limit_is_64_kib() {
    let server = Server::start(&["--echo"]);
    let mut ws = server.ws("/ws/echo");
    ws.send(Message::binary(vec![1u8; 64 * 1024])).unwrap();
    assert_eq!(ws.read().unwrap().len(), 64 * 1024);
    ws.send(Message::binary(vec![1u8; 64 * 1024 + 1])).unwrap();
    assert_eq!(ws_close_code(&mut ws), Some(1009));
}

#[test]
fn oversized_fragmented_message_closes_with_1009() {
    let server = Server::start(&["--echo", "--max-message-bytes", "1000"]);
    let mut s = server.raw_ws("/ws/echo");
    s.write_all(&client_frame(0x02, &[0u8; 600])).unwrap();
    s.write_all(&client_frame(0x80, &[0u8; 600])).unwrap();
    assert_eq!(read_close(&mut s).map(|c| c.0), Some(1009));
}

#[test]
fn invalid_utf8_text_closes_with_1007() {
    let server = Server::start(&["--echo"]);
    let mut s = server.raw_ws("/ws/echo");
    s.write_all(&client_frame(
        0x81,
        &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xff],
    ))
    .unwrap();
    assert_eq!(read_close(&mut s), Some((1007, "invalid utf-8".to_string())));
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    let server = Server::start(&["--echo"]);
    let mut s = server.raw_ws("/ws/echo");
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(read_close(&mut s).map(|c| c.0), Some(1002));
}

#[test]
fn abrupt_disconnects_leave_the_server_serving() {
    let server = Server::start(&["--echo"]);
    for _ in 0..20 {
        let mut s = server.raw_ws("/ws/echo");
        // Half a frame, then gone.
        s.write_all(&client_frame(0x81, b"hello world")[..5]).unwrap();
        drop(s);
    }
    let mut ws = server.ws("/ws/echo");
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("still here"));
}
