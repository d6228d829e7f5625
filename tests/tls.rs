//! The TLS port (`--tls-cert`/`--tls-key`) against real clients: rustls
//! and Python `websockets` over wss://, curl over https://, with
//! certificates the test makes with the openssl CLI. Start-up refusals,
//! SIGHUP reloads, hostile bytes on the TLS port, and fan-out to TLS and
//! plain subscribers side by side.
mod common;
use common::tls::{self as t, Pki};
use common::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

fn start(cert: &str, key: &str, extra: &[&str]) -> Server {
    Server::start(&[&["--tls-cert", cert, "--tls-key", key][..], extra].concat())
}

/// Reads until `message` contains `needle` (skipping others); the message.
fn next_with<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>, needle: &str) -> String {
    loop {
        let message = ws.read().expect("a message");
        if let Ok(text) = message.to_text() {
            if text.contains(needle) {
                return text.to_string();
            }
        }
    }
}

/// True once the server closed `s` (EOF or reset); false if it stayed open
/// for the whole read timeout.
fn closed_by_server(s: &mut std::net::TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_file(pem).unwrap().to_vec()
}

#[test]
fn https_and_wss_serve_everything_with_rsa_and_ecdsa_certificates() {
    let pki = Pki::new("serve");
    let client = pki.client("ca.pem");
    for kind in ["rsa", "ec"] {
        let (cert, key) = pki.server(kind, kind, None);
        let server = start(&cert, &key, &["--echo", "--max-message-bytes", "2000000"]);
        let line = format!("shardcast listening on {} (TLS: https, wss)", server.addr);
        assert!(
            server.stdout.lock().unwrap().contains(&line),
            "startup line says TLS"
        );
        let (status, body) = t::request(server.addr, &client, "GET", "/health", "");
        assert_eq!(status, 200, "{kind}: {body}");

        let token = token("alice", &["user"]);
        let mut sub = t::ws(server.addr, &client, &format!("/ws/user?token={token}"));
        next_with(&mut sub, "\"connected\"");
        let publish = r#"{"topic":"all","event":"product.approved","data":{"id":7}}"#;
        let (status, reply) = t::request(server.addr, &client, "POST", "/api/v1/publish", publish);
        assert_eq!(status, 202, "{reply}");
        let event = next_with(&mut sub, "product.approved");
        assert!(event.contains(r#""data":{"id":7}"#), "{event}");

        // Echo: from one byte to 1 MiB, more than a socket buffer of
        // ciphertext, so the driver's flush of what waits is exercised.
        let mut echo = t::ws(server.addr, &client, "/ws/echo");
        for n in [1usize, 125, 70_000, 1 << 20] {
            let text = "x".repeat(n);
            echo.send(Message::text(text.clone())).unwrap();
            assert_eq!(
                echo.read().unwrap().into_text().unwrap().as_str(),
                text,
                "{kind}: {n} bytes"
            );
        }
        let normal = tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "".into(),
        };
        echo.close(Some(normal)).unwrap();
        loop {
            match echo.read() {
                Ok(Message::Close(frame)) => {
                    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("close handshake over TLS: {e}"),
            }
        }

        // A client that trusts another CA refuses the server.
        match t::connect(server.addr, &pki.client("other-ca.pem")) {
            Err(rustls::Error::InvalidCertificate(_)) => {}
            other => panic!(
                "{kind}: expected an untrusted certificate, got {:?}",
                other.map(|_| ())
            ),
        }
    }
}

#[test]
fn curl_reaches_health_and_publish_over_https() {
    let pki = Pki::new("curl");
    let (cert, key) = pki.server("srv", "ec", None);
    let server = start(&cert, &key, &[]);
    let base = format!("https://localhost:{}", server.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", server.addr.port());
    let ca = pki.path("ca.pem");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "-w",
                "\n%{http_code}",
            ])
            .args(args)
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let health = curl(&[&format!("{base}/health")]);
    assert!(
        health.ends_with("\n200") && health.contains(r#""status":"ok""#),
        "{health}"
    );
    let auth = format!("Authorization: Bearer {API_KEY}");
    let body = r#"{"topic":"all","event":"hello","data":{}}"#;
    let url = format!("{base}/api/v1/publish");
    let published = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
        &url,
    ]);
    assert!(published.ends_with("\n202"), "{published}");
}

#[test]
fn python_websockets_over_wss_trusts_the_ca_and_refuses_another() {
    let python = python();
    let pki = Pki::new("python");
    let (cert, key) = pki.server("srv", "rsa", None);
    let server = start(&cert, &key, &[]);
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/tls.py");
    let out = Command::new(python)
        .arg(script)
        .arg(server.addr.to_string())
        .arg(pki.path("ca.pem"))
        .arg(pki.path("other-ca.pem"))
        .arg(token("py", &["user"]))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("python tls: all checks passed"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_certificates_stop_startup_with_one_line_naming_the_file() {
    let pki = Pki::new("refuse");
    let (expired, expired_key) = pki.server("expired", "rsa", Some(("20200101000000Z", "20200102000000Z")));
    let (good, good_key) = pki.server("good", "ec", None);
    let (_, other_key) = pki.server("other", "ec", None);
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = pki.path("missing.pem");
    let cases = [
        (
            &expired,
            &expired_key,
            "the certificate expired at 2020-01-02",
            &expired,
        ),
        (&good, &other_key, "KeyMismatch", &other_key),
        (&missing, &good_key, "No such file", &missing),
        (&garbage, &good_key, "no CERTIFICATE block", &garbage),
        (&good, &garbage, "no PEM private key", &garbage),
    ];
    for (cert, key, says, named) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_shardcast"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(says) && stderr.contains(named.as_str()),
            "{says}: {stderr}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert", &good])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls_key: required with tls_cert"));
}

#[test]
fn sighup_swaps_the_certificate_and_keeps_connections() {
    let pki = Pki::new("reload");
    let (a, a_key) = pki.server("a", "ec", None);
    let (b, b_key) = pki.server("b", "rsa", None);
    let (live, live_key) = (pki.path("live.pem"), pki.path("live.key"));
    std::fs::copy(&a, &live).unwrap();
    std::fs::copy(&a_key, &live_key).unwrap();
    let server = start(&live, &live_key, &[]);
    let client = pki.client("ca.pem");
    let presented = || t::peer_cert(&t::connect(server.addr, &client).unwrap());
    assert_eq!(presented(), der(&a));
    let token = token("stays", &["user"]);
    let mut sub = t::ws(server.addr, &client, &format!("/ws/user?token={token}"));
    next_with(&mut sub, "\"connected\"");
    let hup = || unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) };

    std::fs::copy(&b, &live).unwrap();
    std::fs::copy(&b_key, &live_key).unwrap();
    hup();
    let swapped = poll_until(Instant::now() + DEADLINE, || {
        (presented() == der(&b)).then_some(())
    });
    assert!(swapped.is_some(), "new handshakes get the new certificate");

    // A reload that fails keeps the pair in use, is counted and logged once.
    std::fs::write(&live, "garbage").unwrap();
    hup();
    let failed = poll_until(Instant::now() + DEADLINE, || {
        let (_, metrics) = t::request(server.addr, &client, "GET", "/metrics", "");
        (metric_sum(&metrics, "shardcast_tls_reloads_total", "result=\"failed\"") == 1.0).then_some(metrics)
    })
    .expect("the failed reload is counted");
    assert_eq!(
        metric_sum(&failed, "shardcast_tls_reloads_total", "result=\"ok\""),
        1.0
    );
    assert_eq!(
        server.logs().matches("TLS reload failed").count(),
        1,
        "{}",
        server.logs()
    );
    assert_eq!(presented(), der(&b), "the old pair stays in use");

    // The connection from before both reloads still gets events.
    let publish = r#"{"topic":"all","event":"after.reload","data":{}}"#;
    assert_eq!(
        t::request(server.addr, &client, "POST", "/api/v1/publish", publish).0,
        202
    );
    next_with(&mut sub, "after.reload");
}

#[test]
fn garbage_and_plain_http_on_the_tls_port_are_refused_and_counted() {
    let pki = Pki::new("hostile");
    let (cert, key) = pki.server("srv", "ec", None);
    let server = start(&cert, &key, &["--handshake-timeout", "1s"]);
    // Plain HTTP: a plain 400 that says why.
    let reply = server.raw(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        reply.starts_with("HTTP/1.1 400") && reply.contains("TLS port"),
        "{reply}"
    );
    // Bytes that are no TLS record at all, and a handshake record that is
    // no ClientHello: closed.
    for bytes in [
        &[0u8, 1, 2, 3, 0xff, 0x17, 3, 3, 0, 5][..],
        &[0x16, 3, 1, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0],
    ] {
        let mut s = server.tcp();
        s.write_all(bytes).unwrap();
        assert!(closed_by_server(&mut s), "{bytes:?} closed");
    }
    // Silence, and half a ClientHello: closed at handshake_timeout (1 s,
    // well inside the client's 10 s read timeout).
    for bytes in [&[][..], &[0x16, 3, 1, 0, 200, 1]] {
        let mut s = server.tcp();
        s.write_all(bytes).unwrap();
        assert!(closed_by_server(&mut s), "{bytes:?} closed at handshake_timeout");
    }
    let client = pki.client("ca.pem");
    let (_, metrics) = t::request(server.addr, &client, "GET", "/metrics", "");
    let rejected = metric_sum(&metrics, "shardcast_requests_rejected_total", "reason=\"tls\"");
    assert_eq!(rejected, 3.0, "plain HTTP, garbage, bad ClientHello");
    assert_eq!(
        t::request(server.addr, &client, "GET", "/health", "").0,
        200,
        "still serving"
    );
    assert_eq!(
        metric_sum(&metrics, "shardcast_tls_mode", "mode=\"userspace\""),
        2.0
    );
}

#[test]
fn fanout_reaches_wss_and_plain_subscribers_in_order() {
    fanout_to_wss_and_plain_with("fanout", &[]);
}

/// The same with one sendmsg per recipient (`--send-path direct`) instead
/// of io_uring batches (TLS runs then go out inline, not sealed per slot).
#[test]
fn fanout_reaches_wss_and_plain_subscribers_in_order_direct() {
    fanout_to_wss_and_plain_with("fanout-direct", &["--send-path", "direct"]);
}

fn fanout_to_wss_and_plain_with(name: &str, extra: &[&str]) {
    let pki = Pki::new(name);
    let (cert, key) = pki.server("srv", "ec", None);
    let server = start(
        &cert,
        &key,
        &[&["--plain-listen", "127.0.0.1:0"][..], extra].concat(),
    );
    let plain: SocketAddr = poll_until(Instant::now() + DEADLINE, || {
        let out = server.stdout.lock().unwrap().clone();
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("shardcast plain listening on "))?;
        line.split_whitespace().next()?.parse().ok()
    })
    .expect("the plain port's line");
    let client = pki.client("ca.pem");
    let token = token("fan", &["user"]);
    let path = format!("/ws/user?token={token}");
    let events = 300;
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let mut ws = t::ws(server.addr, &client, &path);
            next_with(&mut ws, "\"connected\"");
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                while seqs.len() < events {
                    let text = next_with(&mut ws, "product.approved");
                    seqs.push(seq_of(&text).unwrap());
                }
                seqs
            })
        })
        .collect();
    // Plain subscribers on the opt-in plain port, beside them.
    let plain_subs: Vec<_> = (0..20)
        .map(|_| {
            let tcp = std::net::TcpStream::connect(plain).unwrap();
            tcp.set_read_timeout(Some(DEADLINE)).unwrap();
            let (mut ws, _) = tungstenite::client(format!("ws://{plain}{path}"), tcp).unwrap();
            next_with(&mut ws, "\"connected\"");
            std::thread::spawn(move || {
                (0..events)
                    .map(|_| seq_of(&next_with(&mut ws, "product.approved")).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut publisher = Publisher::at(plain);
    for chunk in (0..events as u64).collect::<Vec<_>>().chunks(50) {
        let items: Vec<String> = chunk
            .iter()
            .map(|seq| {
                format!(
                    r#"{{"topic":"type:user","event":"product.approved","data":{{"seq":{seq},"pad":"{}"}}}}"#,
                    "p".repeat(300)
                )
            })
            .collect();
        let (status, reply) = publisher.post(
            "/api/v1/publish/batch",
            &format!(r#"{{"events":[{}]}}"#, items.join(",")),
        );
        assert_eq!(status, 202, "{reply}");
    }
    for (i, reader) in readers.into_iter().chain(plain_subs).enumerate() {
        let seqs = reader.join().expect("subscriber thread");
        assert!(
            seqs.iter().copied().eq(0..events as u64),
            "subscriber {i}: {seqs:?}"
        );
    }
}

#[test]
fn a_tls_reader_that_never_reads_is_cut_as_a_slow_consumer() {
    slow_tls_reader_with("slow", &[]);
}

#[test]
fn a_tls_reader_that_never_reads_is_cut_as_a_slow_consumer_direct() {
    slow_tls_reader_with("slow-direct", &["--send-path", "direct"]);
}

fn slow_tls_reader_with(name: &str, extra: &[&str]) {
    let pki = Pki::new(name);
    let (cert, key) = pki.server("srv", "ec", None);
    let server = start(
        &cert,
        &key,
        &[&["--max-queue-bytes", "65536"][..], extra].concat(),
    );
    let client = pki.client("ca.pem");
    let path = format!("/ws/user?token={}", token("slow", &["user"]));
    let mut stuck = t::ws(server.addr, &client, &path);
    next_with(&mut stuck, "\"connected\"");
    let mut healthy = t::ws(server.addr, &client, &path);
    next_with(&mut healthy, "\"connected\"");
    let (batches, per_batch) = (100u64, 50u64);
    let reader = std::thread::spawn(move || {
        (0..batches * per_batch)
            .map(|_| seq_of(&next_with(&mut healthy, "bulk.approved")).unwrap())
            .collect::<Vec<_>>()
    });
    let pad = "p".repeat(4000);
    for b in 0..batches {
        let items: Vec<String> = (b * per_batch..(b + 1) * per_batch)
            .map(|seq| {
                format!(r#"{{"topic":"all","event":"bulk.approved","data":{{"seq":{seq},"pad":"{pad}"}}}}"#)
            })
            .collect();
        let body = format!(r#"{{"events":[{}]}}"#, items.join(","));
        let (status, reply) = t::request(server.addr, &client, "POST", "/api/v1/publish/batch", &body);
        assert_eq!(status, 202, "{reply}");
    }
    let seqs = reader.join().expect("the healthy reader");
    assert!(
        seqs.iter().copied().eq(0..batches * per_batch),
        "the healthy TLS reader gets every event in order"
    );
    let cut = poll_until(Instant::now() + DEADLINE, || {
        let (_, metrics) = t::request(server.addr, &client, "GET", "/metrics", "");
        (metric_sum(&metrics, "shardcast_slow_consumer_disconnects_total", "") >= 1.0).then_some(())
    });
    assert!(
        cut.is_some(),
        "the reader that never reads is cut (20 MB sent, 64 KiB allowed)"
    );
    drop(stuck);
}

#[test]
fn a_self_signed_dev_certificate_is_announced_and_the_admin_port_can_speak_tls() {
    let server = Server::start(&[
        "--tls-self-signed",
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-tls",
    ]);
    let out = server.stdout.lock().unwrap().clone();
    let pem = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("PEM: "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the PEM path is printed")
        .to_string();
    let fingerprint = out
        .lines()
        .find_map(|l| l.split("SHA-256 ").nth(1))
        .expect("the fingerprint is printed")
        .trim()
        .to_string();
    let client = t::client_trusting(std::path::Path::new(&pem));
    let tls = t::connect(server.addr, &client).expect("the printed certificate is the one served");
    let digest = ring::digest::digest(&ring::digest::SHA256, &t::peer_cert(&tls));
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(hex.join(":"), fingerprint);
    assert_eq!(t::request(server.addr, &client, "GET", "/health", "").0, 200);
    // --admin-tls: the admin port says so and serves the publish API over TLS.
    let admin: SocketAddr = out
        .lines()
        .find_map(|l| l.strip_prefix("shardcast admin listening on "))
        .filter(|rest| rest.contains("(TLS: https)"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("the admin line says TLS");
    let publish = r#"{"topic":"all","event":"x","data":{}}"#;
    assert_eq!(
        t::request(admin, &client, "POST", "/api/v1/publish", publish).0,
        202
    );
    let _ = std::fs::remove_file(&pem);
}
