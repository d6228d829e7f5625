//! permessage-deflate (RFC 7692) on the real binary: the 101 answers an
//! offer without context takeover, a broadcast goes out compressed (once,
//! shared) when it is large enough and plain otherwise, a client's window
//! limit is respected, compressed client messages are inflated, a
//! decompression bomb is closed with 1009, and `--compression off` leaves
//! the extension out. Python `websockets`, which offers it by default,
//! gets every event intact.
mod common;
use common::*;
use shardcast::proto::deflate::{Deflater, Inflater};
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// A `user` client of `sub` with `extra` headers; its 101 head, and the
/// socket after the `connected` event.
fn client(server: &Server, sub: &str, extra: &str) -> (String, TcpStream) {
    let (status, head, mut s) = upgrade(
        server,
        &format!("/ws/user?token={}", token(sub, &["user"])),
        extra,
    );
    assert_eq!(status, 101, "{head}");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let (first, payload) = read_frame(&mut s).expect("connected event");
    assert_eq!(first, 0x81, "the connected event goes plain");
    assert!(String::from_utf8_lossy(&payload).contains(r#""event":"connected""#));
    (head, s)
}

/// An event's payload: inflated when the frame has RSV1.
fn event_text(first: u8, payload: &[u8]) -> String {
    if first & 0x40 == 0 {
        return String::from_utf8(payload.to_vec()).unwrap();
    }
    let mut out = Vec::new();
    Inflater::default().inflate(payload, 1 << 20, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn data_of(bytes: usize) -> String {
    format!(r#"{{"product_name":"{}"}}"#, "Lamp ".repeat(bytes / 5))
}

#[test]
fn a_large_event_goes_compressed_and_a_small_one_plain() {
    let server = Server::start(&[]);
    let (head, mut s) = client(&server, "dz", OFFER);
    assert!(
        head.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        ),
        "{head}"
    );
    let mut publisher = Publisher::new(&server);
    publisher.publish("user:dz", "product.approved", &data_of(2000));
    publisher.publish("user:dz", "product.approved", r#"{"id":1}"#);
    let (first, payload) = read_frame(&mut s).unwrap();
    assert_eq!(first, 0xc1, "RSV1 + text");
    assert!(payload.len() < 500, "compressed to {} bytes", payload.len());
    let text = event_text(first, &payload);
    assert!(text.contains(&"Lamp ".repeat(400)), "{text}");
    let (first, payload) = read_frame(&mut s).unwrap();
    assert_eq!(first, 0x81, "under compression_min_bytes: plain");
    assert!(event_text(first, &payload).contains(r#""data":{"id":1}"#));
    // Counted once the dispatcher's round is done: poll.
    let metrics = poll_until(std::time::Instant::now() + DEADLINE, || {
        let m = server.get("/metrics").1;
        (metric_sum(&m, "shardcast_compressed_frames_total", "") >= 1.0).then_some(m)
    })
    .expect("a compressed frame counted");
    assert!(
        metric_sum(&metrics, "shardcast_compression_bytes_out_total", "")
            < metric_sum(&metrics, "shardcast_compression_bytes_in_total", ""),
        "{metrics}"
    );
}

#[test]
fn one_compressed_frame_serves_every_subscriber_and_plain_ones_coexist() {
    let server = Server::start(&[]);
    let (_, mut a) = client(&server, "sa", OFFER);
    let (_, mut b) = client(&server, "sb", OFFER);
    let (head, mut plain) = client(&server, "sp", "");
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    Publisher::new(&server).publish("type:user", "product.approved", &data_of(1000));
    let (fa, pa) = read_frame(&mut a).unwrap();
    let (fb, pb) = read_frame(&mut b).unwrap();
    assert_eq!((fa, fb), (0xc1, 0xc1));
    assert_eq!(pa, pb, "the same compressed frame for both");
    let (fp, pp) = read_frame(&mut plain).unwrap();
    assert_eq!(fp, 0x81);
    assert_eq!(event_text(fa, &pa), event_text(fp, &pp));
}

#[test]
fn a_small_client_window_gets_only_events_that_fit_it_compressed() {
    let server = Server::start(&[]);
    let (head, mut s) = client(
        &server,
        "w9",
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n",
    );
    assert!(head.contains("; server_max_window_bits=9\r\n"), "{head}");
    let mut publisher = Publisher::new(&server);
    publisher.publish("user:w9", "product.approved", &data_of(300)); // frame < 512 B
    publisher.publish("user:w9", "product.approved", &data_of(3000)); // frame > 512 B
    let (first, payload) = read_frame(&mut s).unwrap();
    assert_eq!(first, 0xc1, "fits a 512-byte window: compressed");
    assert!(event_text(first, &payload).contains("Lamp "));
    let (first, _) = read_frame(&mut s).unwrap();
    assert_eq!(first, 0x81, "larger than the client's window: plain");
}

#[test]
fn compressed_client_messages_are_inflated_and_a_bomb_is_refused() {
    let server = Server::start(&["--max-message-bytes", "65536"]);
    let (_, mut s) = client(&server, "cm", OFFER);
    let mut packed = Vec::new();
    Deflater::new(1).compress(br#"{"type":"ping"}"#, &mut packed);
    s.write_all(&client_frame(0xc1, &packed)).unwrap();
    let (first, payload) = read_frame(&mut s).unwrap();
    assert!(event_text(first, &payload).contains(r#""type":"pong""#));
    // 10 MiB of spaces in a few KiB: refused before it is inflated past the limit.
    let mut bomb = Vec::new();
    Deflater::new(9).compress(&vec![b' '; 10 << 20], &mut bomb);
    assert!(bomb.len() < 65536);
    s.write_all(&client_frame(0xc1, &bomb)).unwrap();
    assert_eq!(read_close(&mut s).map(|c| c.0), Some(1009));
    // Not deflate data at all: 1007.
    let (_, mut s) = client(&server, "cm2", OFFER);
    s.write_all(&client_frame(0xc1, &[0xff, 0xff, 0xff, 0xff]))
        .unwrap();
    assert_eq!(read_close(&mut s).map(|c| c.0), Some(1007));
    // RSV1 on a connection that did not negotiate the extension: 1002.
    let (_, mut s) = client(&server, "cm3", "");
    s.write_all(&client_frame(0xc1, &packed)).unwrap();
    assert_eq!(read_close(&mut s).map(|c| c.0), Some(1002));
}

#[test]
fn compression_off_leaves_the_extension_out() {
    let server = Server::start(&["--compression", "off"]);
    let (head, mut s) = client(&server, "off", OFFER);
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    Publisher::new(&server).publish("user:off", "product.approved", &data_of(2000));
    assert_eq!(read_frame(&mut s).unwrap().0, 0x81);
}

#[test]
fn python_websockets_with_its_default_compression() {
    let python = python();
    let server = Server::start(&[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/compression.py");
    let out = Command::new(python)
        .arg(script)
        .arg(server.addr.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("compression: all checks passed"), "{stdout}");
}
