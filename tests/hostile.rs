//! Replays the hostile-input probe (issue "One message must never kill the
//! server") against the real binary: each numbered finding gets the clear
//! refusal it now has, and the server keeps serving everyone else.
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `[`×n … `]`×n: nesting a recursive parser would follow n levels deep.
fn nested(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

/// A raw request on a fresh connection; the whole answer, until close.
fn raw(server: &Server, request: &str) -> String {
    server.raw(request.as_bytes())
}

fn post_raw(server: &Server, path: &str, body: &str) -> (u16, String) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    split_response(&raw(server, &req))
}

/// The sum of a per-shard metric over its shards.
fn metric_total(server: &Server, name: &str) -> u64 {
    metric_sum(&server.get("/metrics").1, name, "") as u64
}

fn device_token(sub: &str) -> String {
    token(sub, &["pico"])
}

/// The server still answers: `/health` is 200 and a client gets its pong.
fn still_serving(server: &Server) {
    assert_eq!(server.get("/health").0, 200, "{}", server.logs());
    let mut c = Sub::connect(
        server,
        &format!("/ws/user?token={}", token("alive", &["user"])),
        None,
    );
    c.say(r#"{"type":"ping"}"#);
    c.expect(r#""type":"pong""#);
}

// 1. Deep nesting is refused at every entry point, at 100,000 levels.
#[test]
fn nesting_100000_deep_is_refused_at_every_entry_point() {
    let server = Server::start(&["--max-message-bytes", "1000000"]);
    let deep = nested(100_000);
    let t = token_rooms("nester", &["lobby"], &["lobby"], Duration::from_secs(600));
    let mut client = Sub::connect(&server, &format!("/ws/user?token={t}"), None);
    client.say(&format!(r#"{{"x":{deep}}}"#));
    client.expect(r#"{"type":"error","code":"bad_json","message":"nesting deeper than 128"}"#);
    client.messages.clear();
    client.say(&format!(
        r#"{{"type":"publish","room":"lobby","event":"e","data":{deep}}}"#
    ));
    client.expect(r#""message":"nesting deeper than 128""#);

    let mut device = Sub::connect(
        &server,
        &format!("/ws/pico?token={}", device_token("dev-1")),
        None,
    );
    device.say(&format!(
        r#"{{"type":"status","status":"success","result":{deep}}}"#
    ));
    device.expect(r#""message":"nesting deeper than 128""#);

    let body = format!(r#"{{"topic":"all","event":"e","data":{deep}}}"#);
    let (status, reply) = post_raw(&server, "/api/v1/publish", &body);
    assert_eq!(status, 400, "{reply}");
    assert_eq!(
        reply,
        r#"{"error":"bad_json","message":"invalid JSON body: nesting deeper than 128"}"#
    );
    let (status, reply) = post_raw(
        &server,
        "/api/v1/publish/batch",
        &format!(r#"{{"events":{deep}}}"#),
    );
    assert_eq!(
        (status, reply.contains("nesting deeper than 128")),
        (400, true),
        "{reply}"
    );
    let body = format!(r#"{{"status":"fail","result":{deep}}}"#);
    let (status, reply) = post_raw(&server, "/api/v1/devices/dev-1/status", &body);
    assert_eq!(
        (status, reply.contains("nesting deeper than 128")),
        (400, true),
        "{reply}"
    );
    still_serving(&server);
}

#[test]
fn nesting_limit_is_a_setting() {
    let server = Server::start(&["--max-json-depth", "4"]);
    let (status, _) = post_raw(
        &server,
        "/api/v1/publish",
        r#"{"topic":"all","event":"e","data":[[1]]}"#,
    );
    assert_eq!(status, 202);
    let (status, reply) = post_raw(
        &server,
        "/api/v1/publish",
        r#"{"topic":"all","event":"e","data":[[[[1]]]]}"#,
    );
    assert_eq!(status, 400);
    assert!(reply.contains("nesting deeper than 4"), "{reply}");
}

// 2. Every accepted socket is admitted: past `max_sockets` a 503 at once,
// idle keep-alive connections make room under pressure, the admin port
// still answers.
#[test]
fn plain_http_sockets_are_admitted_and_refused_with_an_answer() {
    let server = Server::start(&[
        "--max-sockets",
        "20",
        "--handshake-timeout",
        "60s",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = server
        .stdout
        .lock()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("shardcast admin listening on "))
        .expect("admin address")
        .trim()
        .to_string();
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = server.tcp();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (head, _) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(s);
    }
    // The 21st socket is answered, not left hanging.
    let asked = Instant::now();
    let (status, body) = server.get("/health");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("too_many_connections") && body.contains("socket limit (20)"),
        "{body}"
    );
    assert!(asked.elapsed() < Duration::from_secs(5));
    // The admin port answers meanwhile.
    let mut a = TcpStream::connect(&admin).unwrap();
    a.set_read_timeout(Some(DEADLINE)).unwrap();
    a.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(split_response(&read_to_close(&mut a)).0, 200);
    // Under pressure idle keep-alive sockets are closed (until fewer than
    // three quarters of the limit are open) long before the 60 s keep-alive
    // time, and new requests get in again.
    let ok = poll_until(Instant::now() + DEADLINE, || {
        (server.get("/health").0 == 200).then_some(())
    });
    assert!(ok.is_some(), "room was never made");
    let closed = held
        .iter_mut()
        .map(|s| {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            matches!(s.read(&mut [0u8; 1]), Ok(0))
        })
        .filter(|&eof| eof)
        .count();
    assert!((1..20).contains(&closed), "{closed} of 20 idle sockets closed");
}

// 3. Conflicting framing is refused and the connection closed.
#[test]
fn conflicting_content_length_is_400_and_closes() {
    let server = Server::start(&[]);
    let body = r#"{"topic":"all","event":"e"}"#;
    for lengths in [
        format!("Content-Length: {0}\r\nContent-Length: {0}", body.len()),
        format!("Content-Length: 0, {}", body.len()),
        format!("Content-Length: +{}", body.len()),
    ] {
        // Keep-alive asked for; the answer must still close.
        let req = format!(
            "POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n{lengths}\r\n\r\n{body}"
        );
        let resp = raw(&server, &req);
        assert!(resp.starts_with("HTTP/1.1 400 "), "{lengths}: {resp}");
        assert!(resp.contains("Content-Length"), "{resp}");
        assert!(resp.contains("Connection: close"), "{resp}");
    }
}

// 4. HEAD gets the head only.
#[test]
fn head_has_no_body() {
    let server = Server::start(&[]);
    let resp = raw(
        &server,
        "HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
    assert!(resp.ends_with("\r\n\r\n"), "a body followed: {resp:?}");
    assert!(resp.contains("Content-Length: "), "{resp}");
}

/// A HS256 token from a hand-written JOSE header and claims body.
fn forge(header: &str, claims: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let input = format!("{}.{}", b64(header), b64(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(shardcast::config::DEV_JWT_SECRET.as_bytes());
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    format!("{input}.{sig}")
}

// 5. `nbf` in the future and unknown `crit` headers are refused.
#[test]
fn future_nbf_and_crit_tokens_are_refused() {
    let server = Server::start(&[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |nbf: u64| {
        format!(
            r#"{{"sub":"n","exp":{},"nbf":{nbf},"types":["user"]}}"#,
            now + 600
        )
    };
    let plain = r#"{"alg":"HS256","typ":"JWT"}"#;
    let (status, head, _) = upgrade(
        &server,
        &format!("/ws/user?token={}", forge(plain, &claims(now + 300))),
        "",
    );
    assert_eq!(status, 401, "{head}");
    let (status, _, _) = upgrade(
        &server,
        &format!("/ws/user?token={}", forge(plain, &claims(now - 5))),
        "",
    );
    assert_eq!(status, 101, "a past nbf is fine");
    let crit = r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#;
    let (status, _, _) = upgrade(
        &server,
        &format!("/ws/user?token={}", forge(crit, &claims(now - 5))),
        "",
    );
    assert_eq!(status, 401);
}

// 6. Lone surrogates and out-of-range numbers are refused clearly, the same
// way on the WebSocket and the publish API.
#[test]
fn lone_surrogates_and_huge_numbers_are_refused_by_name() {
    let server = Server::start(&[]);
    for (data, words) in [
        (r#""\ud800""#, "lone surrogate escape \\\\ud800"),
        (r#""\udc00""#, "lone surrogate escape \\\\udc00"),
        ("1e400", "number 1e400"),
        ("18446744073709551616", "number 18446744073709551616"),
    ] {
        let (status, reply) = post_raw(
            &server,
            "/api/v1/publish",
            &format!(r#"{{"topic":"all","event":"e","data":{data}}}"#),
        );
        assert_eq!(status, 400, "{data}: {reply}");
        assert!(
            reply.contains(r#""error":"bad_json""#) && reply.contains(words),
            "{data}: {reply}"
        );
    }
    let t = token_rooms("s", &["lobby"], &["lobby"], Duration::from_secs(600));
    let mut c = Sub::connect(&server, &format!("/ws/user?token={t}"), None);
    c.say(r#"{"type":"publish","room":"lobby","event":"e","data":"\ud800"}"#);
    c.expect(r#""code":"bad_json","message":"lone surrogate escape \\ud800"#);
    c.say(r#"{"type":"publish","room":"lobby","event":"e","data":1e400}"#);
    c.expect("out of range");
    // A valid pair passes through unchanged.
    let (status, _) = post_raw(
        &server,
        "/api/v1/publish",
        r#"{"topic":"all","event":"e","data":"\ud83d\ude00"}"#,
    );
    assert_eq!(status, 202);
}

// 7. Device statuses are bounded in size and in number.
#[test]
fn device_statuses_are_bounded() {
    let server = Server::start(&["--max-devices", "3", "--max-status-bytes", "1024"]);
    let big = format!(r#"{{"status":"fail","result":"{}"}}"#, "x".repeat(2000));
    let (status, reply) = post_raw(&server, "/api/v1/devices/d-big/status", &big);
    assert_eq!(status, 413, "{reply}");
    assert!(
        reply.contains("status_too_large") && reply.contains("limit of 1024"),
        "{reply}"
    );
    for i in 1..=5 {
        let (status, reply) = post_raw(
            &server,
            &format!("/api/v1/devices/d-{i}/status"),
            r#"{"status":"success"}"#,
        );
        assert_eq!(status, 202, "{reply}");
    }
    // Every shard forgets the two least recently updated devices.
    let forgotten = poll_until(Instant::now() + DEADLINE, || {
        let total = metric_total(&server, "shardcast_devices_forgotten_total");
        (total == 4).then_some(total)
    });
    assert_eq!(forgotten, Some(4), "2 per shard on 2 shards");
    let t = token_with_devices("mon", &[], &["*"]);
    let mut all = Sub::connect(&server, &format!("/ws/devices/all?token={t}"), None);
    assert!(all.wait(|s| s.messages.len() >= 3));
    let ids: Vec<String> = all
        .messages
        .iter()
        .map(|m| {
            m.split("\"device_id\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["d-3", "d-4", "d-5"]);
    // Monitor ids obey the same 200-byte limit as the status API.
    let long = "d".repeat(7000);
    let (status, head, _) = upgrade(&server, &format!("/ws/devices/{long}?token={t}"), "");
    assert_eq!(status, 400, "{head}");
}

// 8. An idle connection that never started a request is closed silently.
#[test]
fn idle_connections_are_closed_without_a_408() {
    let server = Server::start(&["--handshake-timeout", "1s"]);
    let mut idle = server.tcp();
    assert_eq!(read_to_close(&mut idle), "");
    let mut started = server.tcp();
    started.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();
    assert!(read_to_close(&mut started).starts_with("HTTP/1.1 408 "));
}

// 9. Handshake headers that must appear once are refused when repeated.
#[test]
fn duplicate_handshake_headers_are_refused() {
    let server = Server::start(&["--allowed-origins", "https://good.example"]);
    let t = token("dup", &["user"]);
    let path = format!("/ws/user?token={t}");
    let (status, head, _) = upgrade(&server, &path, "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n");
    assert_eq!(status, 400, "{head}");
    for origins in [
        "Origin: https://good.example\r\nOrigin: https://evil.example\r\n",
        "Origin: https://evil.example\r\nOrigin: https://good.example\r\n",
    ] {
        let (status, head, _) = upgrade(&server, &path, origins);
        assert_eq!(status, 400, "{origins}: {head}");
    }
    let (status, _, _) = upgrade(&server, &path, "Origin: https://good.example\r\n");
    assert_eq!(status, 101);
}

// 10. Client publishes are rate limited per connection.
#[test]
fn client_publishes_are_rate_limited() {
    let server = Server::start(&["--client-publish-rate", "1", "--client-publish-burst", "5"]);
    let t = token_rooms("flood", &["lobby"], &["lobby"], Duration::from_secs(600));
    let mut member = Sub::connect(
        &server,
        &format!(
            "/ws/user?token={}",
            token_rooms("m", &["lobby"], &[], Duration::from_secs(600))
        ),
        None,
    );
    member.say(r#"{"type":"subscribe","room":"lobby"}"#);
    member.expect(r#""subscribed""#);
    let mut flooder = Sub::connect(&server, &format!("/ws/user?token={t}"), None);
    flooder.say(r#"{"type":"subscribe","room":"lobby"}"#);
    flooder.expect(r#""subscribed""#);
    for i in 0..8 {
        flooder.say(&format!(r#"{{"type":"publish","room":"lobby","event":"m{i}"}}"#));
    }
    assert!(flooder.wait(|s| s.messages.iter().filter(|m| m.contains("rate_limited")).count() == 3));
    let published = flooder
        .messages
        .iter()
        .filter(|m| m.contains(r#""type":"published""#))
        .count();
    assert_eq!(published, 5);
    assert!(member.wait(|s| s.messages.iter().filter(|m| m.contains(r#""event":"m"#)).count() == 5));
    assert_eq!(
        metric_total(&server, "shardcast_client_publishes_rate_limited_total"),
        3
    );
    assert_eq!(flooder.close, None, "a few refusals do not close the connection");
}

// 11. The smaller findings.
#[test]
fn host_header_must_appear_exactly_once() {
    let server = Server::start(&[]);
    let resp = raw(&server, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(
        resp.starts_with("HTTP/1.1 400 ") && resp.contains("missing Host"),
        "{resp}"
    );
    let resp = raw(
        &server,
        "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    );
    assert!(
        resp.starts_with("HTTP/1.1 400 ") && resp.contains("more than one Host"),
        "{resp}"
    );
    let resp = raw(&server, "GET /health HTTP/1.0\r\n\r\n");
    assert!(
        resp.starts_with("HTTP/1.1 200 "),
        "HTTP/1.0 needs no Host: {resp}"
    );
}

#[test]
fn a_64_bit_length_with_the_high_bit_set_is_1002() {
    let server = Server::start(&[]);
    let mut s = Sub::connect(
        &server,
        &format!("/ws/user?token={}", token("len", &["user"])),
        None,
    );
    assert!(s.wait(|s| !s.messages.is_empty()));
    s.stream.set_nonblocking(false).unwrap();
    s.stream
        .write_all(&[0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4])
        .unwrap();
    s.stream.set_nonblocking(true).unwrap();
    assert!(s.wait(|s| s.close.is_some()));
    assert_eq!(s.close.as_ref().map(|c| c.0), Some(1002));
}

#[test]
fn invisible_characters_are_refused_in_names() {
    let server = Server::start(&[]);
    let t = token_rooms("v", &["*"], &["*"], Duration::from_secs(600));
    let mut c = Sub::connect(&server, &format!("/ws/user?token={t}"), None);
    c.say("{\"type\":\"subscribe\",\"room\":\"lob\u{202E}by\"}");
    c.expect(r#""code":"bad_room""#);
    c.messages.clear();
    c.say("{\"type\":\"subscribe\",\"room\":\"lobby\u{200B}\"}");
    c.expect(r#""code":"bad_room""#);
    let (status, reply) = post_raw(
        &server,
        "/api/v1/publish",
        "{\"topic\":\"room:a\u{2066}b\",\"event\":\"e\"}",
    );
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = post_raw(
        &server,
        "/api/v1/devices/d\u{FEFF}1/status",
        r#"{"status":"success"}"#,
    );
    assert_eq!(status, 400, "{reply}");
}

// What held in the probe stays held.
#[test]
fn what_held_stays_held() {
    let server = Server::start(&[]);
    let resp = raw(
        &server,
        "POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 411 "), "{resp}");
    for bad in [
        "GET /health HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
        "GET /health HTTP/1.1\rHost: x\r\n\r\n",
    ] {
        let resp = raw(&server, bad);
        assert!(resp.starts_with("HTTP/1.1 400 "), "{bad:?}: {resp}");
    }
    let alg_none =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5LCJ0eXBlcyI6WyJ1c2VyIl19.";
    let (status, _, _) = upgrade(&server, &format!("/ws/user?token={alg_none}"), "");
    assert_eq!(status, 401);
    still_serving(&server);
}
