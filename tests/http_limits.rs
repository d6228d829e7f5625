//! Bounded HTTP: oversized heads, too many headers, unknown paths, wrong
//! methods and stalled requests each get a clear status; keep-alive works.
mod common;
use common::*;
use std::io::Write;

#[test]
fn oversized_header_is_431() {
    let server = Server::start(&[]);
    let req = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let (status, body) = split_response(&server.raw(req.as_bytes()));
    assert_eq!(status, 431);
    assert!(body.contains("header_too_large"), "{body}");
}

#[test]
fn header_limit_is_a_setting() {
    let server = Server::start(&["--max-header-bytes", "20000"]);
    let req = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(9000)
    );
    let (status, _) = split_response(&server.raw(req.as_bytes()));
    assert_eq!(status, 200);
}

#[test]
fn too_many_header_lines_is_431() {
    let server = Server::start(&[]);
    let mut req = String::from("GET /health HTTP/1.1\r\n");
    for i in 0..100 {
        req.push_str(&format!("X-{i}: y\r\n"));
    }
    req.push_str("\r\n");
    let (status, _) = split_response(&server.raw(req.as_bytes()));
    assert_eq!(status, 431);
}

#[test]
fn unknown_path_is_404_json() {
    let server = Server::start(&[]);
    let (status, body) = server.get("/no/such/thing");
    assert_eq!(status, 404);
    assert_eq!(body, r#"{"error":"not_found","message":"no such endpoint"}"#);
}

#[test]
fn wrong_method_is_405_with_allow() {
    let server = Server::start(&[]);
    let resp = server.raw(b"DELETE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 405 "), "{resp}");
    assert!(resp.contains("Allow: GET\r\n"), "{resp}");
    assert!(resp.contains("method_not_allowed"), "{resp}");
}

#[test]
fn oversized_body_is_413() {
    let server = Server::start(&["--max-body-bytes", "100"]);
    let (status, _) =
        split_response(&server.raw(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"));
    assert_eq!(status, 413);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Server::start(&[]);
    let mut s = server.tcp();
    for _ in 0..3 {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (head, body) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(body.contains("\"status\":\"ok\""));
    }
}

#[test]
fn stalled_request_gets_408_and_is_closed() {
    let server = Server::start(&["--handshake-timeout", "1s"]);
    let mut s = server.tcp();
    s.write_all(b"GET /health HTTP/1.1\r\nHost:").unwrap();
    let resp = read_to_close(&mut s);
    assert!(resp.starts_with("HTTP/1.1 408 "), "{resp}");
}
