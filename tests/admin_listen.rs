//! `--admin-listen` moves the publish API, device status, /metrics and
//! /debug/latency to an internal address; clients stay on the public one.
mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;

fn get(addr: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    split_response(&read_to_close(&mut s)).0
}

fn post(addr: &str, path: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    split_response(&read_to_close(&mut s)).0
}

#[test]
fn internal_endpoints_live_on_the_admin_address_only() {
    let server = Server::start(&["--admin-listen", "127.0.0.1:0"]);
    let stdout = server.stdout.lock().unwrap().clone();
    let admin = stdout
        .lines()
        .find_map(|l| l.strip_prefix("shardcast admin listening on "))
        .expect("admin address line")
        .trim()
        .to_string();
    let public = server.addr.to_string();
    let event = r#"{"topic":"all","event":"x"}"#;
    assert_eq!(post(&public, "/api/v1/publish", event), 404);
    assert_eq!(post(&admin, "/api/v1/publish", event), 202);
    assert_eq!(
        post(&public, "/api/v1/devices/d/status", r#"{"status":"online"}"#),
        404
    );
    assert_eq!(
        post(&admin, "/api/v1/devices/d/status", r#"{"status":"online"}"#),
        202
    );
    assert_eq!(get(&public, "/metrics"), 404);
    assert_eq!(get(&admin, "/metrics"), 200);
    assert_eq!(get(&admin, "/debug/latency"), 200);
    // Stats on both: the console on the admin port shows them.
    assert_eq!(get(&admin, "/ws/stats"), 200);
    assert_eq!(get(&public, "/ws/stats"), 200);
    assert_eq!(get(&public, "/health"), 200);
    assert_eq!(get(&admin, "/health"), 200);
    // Clients connect on the public address only.
    let t = token("c", &["user"]);
    let mut sub = Sub::connect(&server, &format!("/ws/user?token={t}"), None);
    assert!(sub.wait(|s| !s.messages.is_empty()));
}
