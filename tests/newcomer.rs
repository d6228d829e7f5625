//! Rough edges a new user hit (issue "A newcomer's first hour"), each now
//! behaving as a user of a production server would expect.
mod common;
use common::*;
use std::time::Instant;

fn monitor(server: &Server, path: &str) -> Sub {
    let t = token_with_devices("mon", &[], &["*"]);
    Sub::connect(server, &format!("{path}?token={t}"), None)
}

#[test]
fn a_topic_for_an_unknown_client_type_is_refused() {
    let server = Server::start(&[]);
    let (status, body) =
        Publisher::new(&server).post("/api/v1/publish", r#"{"topic":"type:nosuch","event":"e"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("no client type 'nosuch' (configured: user, shop, admin, pico, esp32cam)"),
        "{body}"
    );
}

#[test]
fn one_device_status_is_one_event() {
    let server = Server::start(&[]);
    let (status, body) = Publisher::new(&server).post("/api/v1/devices/d1/status", r#"{"status":"success"}"#);
    assert_eq!(status, 202);
    assert!(body.contains(r#""events":1"#), "{body}");
}

#[test]
fn offline_keeps_the_last_reported_identity() {
    let server = Server::start(&[]);
    let mut all = monitor(&server, "/ws/devices/all");
    let mut device = Sub::connect(
        &server,
        &format!("/ws/pico?token={}", token("pico-9", &["pico"])),
        None,
    );
    assert!(all.wait(|s| s.messages.iter().any(|m| m.contains(r#""status":"online""#))));
    device.say(r#"{"type":"status","status":"success","mac_address":"aa:bb:cc","serial_number":"SN-9"}"#);
    device.expect("status_ack");
    assert!(all.wait(|s| s.messages.iter().any(|m| m.contains(r#""status":"success""#))));
    drop(device);
    assert!(all.wait(|s| s.messages.iter().any(|m| m.contains(r#""status":"offline""#))));
    let offline = all
        .messages
        .iter()
        .find(|m| m.contains(r#""status":"offline""#))
        .unwrap();
    assert!(
        offline.contains(r#""mac_address":"aa:bb:cc","serial_number":"SN-9""#),
        "{offline}"
    );
}

#[test]
fn only_flat_statuses_are_accepted() {
    let server = Server::start(&[]);
    let mut p = Publisher::new(&server);
    let (status, body) = p.post("/api/v1/devices/d1/status", r#"{"status":"fail","extra":"x"}"#);
    assert_eq!(status, 400);
    assert!(body.contains("unknown field 'extra'"), "{body}");
    let (status, body) = p.post(
        "/api/v1/devices/d1/status",
        r#"{"status":"fail","result":{"a":1}}"#,
    );
    assert_eq!(status, 400);
    assert!(body.contains("'result' must be a string or null"), "{body}");
    let (status, _) = p.post(
        "/api/v1/devices/d1/status",
        r#"{"status":"fail","result":"3 of 4 passed"}"#,
    );
    assert_eq!(status, 202);
}

#[test]
fn a_monitor_ping_gets_a_pong() {
    let server = Server::start(&[]);
    let mut m = monitor(&server, "/ws/devices/all");
    m.say(r#"{"type":"ping"}"#);
    m.expect(r#"{"type":"pong","timestamp":"#);
}

#[test]
fn refusals_are_logged_at_info_without_the_token() {
    // One shard: the limit is one line per reason per interval per shard.
    let server = Server::start_raw(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--log",
        "info",
    ])
    .unwrap();
    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.c2lnbmF0dXJl";
    for _ in 0..3 {
        let (status, _, _) = upgrade(&server, &format!("/ws/user?token={forged}"), "");
        assert_eq!(status, 401);
    }
    let logs = poll_until(Instant::now() + DEADLINE, || {
        let l = server.logs();
        l.contains("requests refused").then_some(l)
    })
    .expect("a refusal line at info");
    assert!(
        logs.contains("code=\"unauthorized\"") || logs.contains("code=unauthorized"),
        "{logs}"
    );
    assert_eq!(
        logs.matches("requests refused").count(),
        1,
        "rate-limited: {logs}"
    );
    assert!(!logs.contains(forged), "a token in the logs");
}

#[test]
fn a_low_open_file_limit_refuses_before_accept_fails() {
    raise_nofile();
    let bin = env!("CARGO_BIN_EXE_shardcast");
    let mut child = std::process::Command::new("bash")
        .args([
            "-c",
            &format!("ulimit -n 256 && exec {bin} serve --listen 127.0.0.1:0 --shards 2 --log warn"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "no listening line"
        );
        if let Some(a) = line.strip_prefix("shardcast listening on ") {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let mut err = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let t = token("many", &["user"]);
    let (mut upgraded, mut refused) = (Vec::new(), 0);
    for _ in 0..300 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        use std::io::Write;
        write!(
            s,
            "GET /ws/user?token={t} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .unwrap();
        let head = read_head(&mut s);
        match split_response(&head).0 {
            101 => upgraded.push(s),
            503 => refused += 1,
            other => panic!("neither 101 nor 503 but {other}: {head:?}"),
        }
    }
    assert!(
        !upgraded.is_empty() && refused > 0,
        "{} upgraded, {refused} refused",
        upgraded.len()
    );
    drop(upgraded);
    let _ = child.kill();
    let _ = child.wait();
    let logs = logs.join().unwrap();
    assert!(!logs.contains("Too many open files"), "{logs}");
}

#[test]
fn the_readme_samples_are_real_output() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let server = Server::start(&[]);
    let mut c = Sub::connect(
        &server,
        &format!("/ws/user?token={}", token("r", &["user"])),
        None,
    );
    c.say(r#"{"type":"dance"}"#);
    let reply = c.expect("unknown_type");
    assert!(
        readme.contains(&format!("`{reply}`")),
        "README lacks the real reply {reply}"
    );
}

/// The keys of a JSON object, in order, with nested objects flattened as
/// `outer.inner` (values are run-specific: times, ids).
fn shape(json: &str) -> Vec<String> {
    use simd_json::prelude::*;
    fn walk(prefix: &str, v: &simd_json::OwnedValue, out: &mut Vec<String>) {
        if let Some(o) = v.as_object() {
            for (k, v) in o.iter() {
                let key = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(key.clone());
                walk(&key, v, out);
            }
        }
    }
    let v: simd_json::OwnedValue = simd_json::from_slice(&mut json.as_bytes().to_vec()).unwrap();
    let mut out = Vec::new();
    walk("", &v, &mut out);
    out.sort();
    out
}

/// The first JSON object in the README line containing `marker`.
fn readme_json(readme: &str, marker: &str) -> String {
    let line = readme
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker} in README"));
    let start = line.find('{').unwrap();
    let mut depth = 0;
    for (i, c) in line[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return line[start..start + i + 1].to_string();
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced sample: {line}")
}

#[test]
fn the_readme_sample_shapes_are_real_output() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let server = Server::start(&[]);
    assert_eq!(
        shape(&server.get("/health").1),
        shape(&readme_json(&readme, "\"uptime_secs\""))
    );
    let (_, reply) = Publisher::new(&server).publish_reply("all", "e", "null");
    assert_eq!(shape(&reply), shape(&readme_json(&readme, "{\"id\":\"0-2\"")));
    let mut c = Sub::connect(
        &server,
        &format!("/ws/user?token={}", token("dev-user", &["user"])),
        None,
    );
    let connected = c.expect("\"connected\"");
    assert_eq!(
        shape(&connected),
        shape(&readme_json(&readme, "< {\"event\":\"connected\""))
    );
}

#[test]
fn publish_errors_say_what_is_wrong_in_plain_words() {
    let server = Server::start(&[]);
    let mut p = Publisher::new(&server);
    let (status, body) = p.post("/api/v1/publish", r#"{"topic":"all"}"#);
    assert_eq!(status, 400);
    assert_eq!(
        body,
        r#"{"error":"bad_json","message":"invalid JSON body: missing field \"event\""}"#
    );
    let (_, body) = p.post("/api/v1/publish", "");
    assert_eq!(
        body,
        r#"{"error":"bad_json","message":"invalid JSON body: empty body"}"#
    );
    let mut c = Sub::connect(
        &server,
        &format!("/ws/user?token={}", token("w", &["user"])),
        None,
    );
    c.say("{bad");
    c.expect(r#""message":"invalid JSON syntax at byte 1""#);
    c.say("[1,2]");
    c.expect(r#""message":"not a JSON object""#);
}
