//! Faults at small scale (the large ones are benchmarks): a drain under
//! load closes every connection with 1001 and never acknowledges an event
//! it then loses; slowloris connections are cut at `handshake_timeout`
//! while healthy clients keep getting their events.
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// One publish on a fresh connection: the status, or 0 when the server
/// could not be reached or answered nothing (it is going away).
fn publish_once(addr: std::net::SocketAddr, seq: u64) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let body = format!(r#"{{"topic":"type:user","event":"drain","data":{{"seq":{seq}}}}}"#);
    let request = format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    split_response(&String::from_utf8_lossy(&reply)).0
}

#[test]
fn a_drain_under_load_closes_every_connection_and_loses_no_acknowledged_event() {
    raise_nofile();
    let mut server = Server::start(&["--drain-timeout", "3s"]);
    let token = token("drain", &["user"]);
    let mut subs = Subscribers {
        conns: (0..500)
            .map(|_| Sub::connect(&server, &format!("/ws/user?token={token}"), None))
            .collect(),
    };
    assert!(
        subs.wait_for(1, DEADLINE),
        "every subscriber gets its connected event"
    );
    // A backend keeps publishing, one event after the other's answer,
    // through the SIGTERM and until the server stops taking events.
    let addr = server.addr;
    let answers = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (answers, accepted) = (answers.clone(), accepted.clone());
        thread::spawn(move || {
            for seq in 0..100_000u64 {
                let status = publish_once(addr, seq);
                answers.lock().unwrap().push((seq, status));
                if status == 202 {
                    accepted.fetch_add(1, Relaxed);
                } else {
                    return;
                }
            }
        })
    };
    assert!(
        poll_until(Instant::now() + DEADLINE, || (accepted.load(Relaxed) >= 20)
            .then_some(()))
        .is_some(),
        "the publisher got going"
    );
    server.terminate();
    let deadline = Instant::now() + Duration::from_secs(10);
    while subs.conns.iter().any(|s| s.close.is_none() && !s.eof) && Instant::now() < deadline {
        for sub in &mut subs.conns {
            sub.pump();
        }
        thread::sleep(Duration::from_millis(1));
    }
    publisher.join().unwrap();
    let answers = answers.lock().unwrap().clone();
    let acknowledged: Vec<u64> = answers
        .iter()
        .filter(|(_, s)| *s == 202)
        .map(|(q, _)| *q)
        .collect();
    let (_, last) = *answers.last().unwrap();
    // The publish that ended it was refused (503 while draining) or found no server.
    assert!(matches!(last, 503 | 0), "the last answer was {last}: {answers:?}");
    for (i, sub) in subs.conns.iter().enumerate() {
        assert_eq!(
            sub.close.as_ref().map(|(code, _)| *code),
            Some(1001),
            "subscriber {i}: {:?}",
            sub.close
        );
        let seen: std::collections::HashSet<u64> = sub.messages.iter().filter_map(|m| seq_of(m)).collect();
        let lost: Vec<u64> = acknowledged
            .iter()
            .copied()
            .filter(|q| !seen.contains(q))
            .collect();
        assert!(
            lost.is_empty(),
            "subscriber {i} lost acknowledged events {lost:?}"
        );
    }
    drop(subs);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exited within the drain time");
    assert!(status.success(), "{status:?}");
}

#[test]
fn slowloris_connections_are_cut_at_the_handshake_timeout_while_clients_are_served() {
    raise_nofile();
    let server = Server::start(&["--handshake-timeout", "1s"]);
    let token = token("healthy", &["user"]);
    let mut healthy = Sub::connect(&server, &format!("/ws/user?token={token}"), None);
    assert!(healthy.wait(|s| !s.messages.is_empty()));
    // 200 peers that send a request head one byte at a time, 5 bytes/s each.
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let s = server.tcp();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let head =
        b"GET /ws/user HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut publisher = Publisher::new(&server);
    let mut answers: Vec<Option<(Duration, String)>> = vec![None; slow.len()];
    let mut sent = 0usize;
    let mut published = 0u64;
    let deadline = started + Duration::from_secs(10);
    while answers.iter().any(Option::is_none) && Instant::now() < deadline {
        if sent < head.len() && started.elapsed() >= Duration::from_millis(200 * sent as u64) {
            for s in &mut slow {
                let _ = s.write(&head[sent..sent + 1]);
            }
            sent += 1;
        }
        for (s, answer) in slow.iter_mut().zip(answers.iter_mut()) {
            if answer.is_some() {
                continue;
            }
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(n) => *answer = Some((started.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => *answer = Some((started.elapsed(), format!("error {e}"))),
            }
        }
        // The healthy client keeps getting events meanwhile.
        if published < 20 {
            publisher.publish("type:user", "healthy", &format!(r#"{{"seq":{published}}}"#));
            published += 1;
        }
        healthy.pump();
        thread::sleep(Duration::from_millis(5));
    }
    for (i, answer) in answers.iter().enumerate() {
        let (when, text) = answer
            .as_ref()
            .unwrap_or_else(|| panic!("slow peer {i} was never cut"));
        assert!(text.starts_with("HTTP/1.1 408"), "slow peer {i}: {text}");
        // Cut at the timeout (1 s), not before; well before the head was done.
        assert!(
            *when >= Duration::from_millis(900) && *when < Duration::from_secs(4),
            "slow peer {i} cut after {when:?}"
        );
    }
    assert!(
        healthy.wait(|s| s.messages.len() > published as usize),
        "the healthy client got {} of {published} events",
        healthy.messages.len() - 1
    );
    let seqs: Vec<u64> = healthy.messages[1..].iter().filter_map(|m| seq_of(m)).collect();
    assert!(seqs.iter().copied().eq(0..published), "{seqs:?}");
    let (status, _) = server.get("/health");
    assert_eq!(status, 200);
}

/// Malformed upgrade requests: each with the status and message the server
/// answers, and the `shardcast_requests_rejected_total` reason it counts.
const MALFORMED: [(&[u8], &str, &str, &str); 6] = [
    (
        b"GET /ws/user HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "HTTP/1.1 400",
        "missing Sec-WebSocket-Key",
        "bad_handshake",
    ),
    (
        b"GET /ws/user HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        "HTTP/1.1 400",
        "Sec-WebSocket-Version must be 13",
        "bad_handshake",
    ),
    (
        b"GET /ws/user HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abc\r\n\r\n",
        "HTTP/1.1 400",
        "Sec-WebSocket-Key must be 16 bytes in base64",
        "bad_handshake",
    ),
    (
        b"GET /ws/user HTTP/1.1\r\nHost: x\r\n\r\n",
        "HTTP/1.1 426",
        "only accepts WebSocket upgrades",
        "bad_handshake",
    ),
    (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 a TLS hello on the plain port\r\n\r\n",
        "HTTP/1.1 400",
        "malformed request",
        "bad_request",
    ),
    (b"\x00\xff GARBAGE\r\n\r\n", "HTTP/1.1 400", "malformed request", "bad_request"),
];

#[test]
fn a_flood_of_malformed_handshakes_and_oversize_frames_is_counted_and_closed() {
    raise_nofile();
    let server = Server::start(&["--max-message-bytes", "1000"]);
    let token = token("flood", &["user"]);
    let mut healthy = Sub::connect(&server, &format!("/ws/user?token={token}"), None);
    assert!(healthy.wait(|s| !s.messages.is_empty()));
    const THREADS: usize = 4;
    const ROUNDS: usize = 50;
    thread::scope(|scope| {
        // Each thread: ROUNDS of every malformed request, and ROUNDS upgraded
        // connections that each send one frame over the message limit.
        for _ in 0..THREADS {
            scope.spawn(|| {
                for _ in 0..ROUNDS {
                    for (request, status, message, _) in MALFORMED {
                        let mut s = server.tcp();
                        s.write_all(request).unwrap();
                        let answer = read_to_close(&mut s);
                        assert!(answer.starts_with(status) && answer.contains(message), "{answer}");
                    }
                    let mut s = server.raw_ws(&format!("/ws/user?token={token}"));
                    s.write_all(&client_frame(0x82, &[7u8; 1001])).unwrap();
                    assert_eq!(read_close(&mut s).map(|c| c.0), Some(1009));
                }
            });
        }
        // The healthy client keeps getting events while the flood goes on.
        let mut publisher = Publisher::new(&server);
        for seq in 0..20u64 {
            publisher.publish("type:user", "healthy", &format!(r#"{{"seq":{seq}}}"#));
            healthy.pump();
        }
    });
    assert!(
        healthy.wait(|s| s.messages.len() > 20),
        "the healthy client got {} of 20 events",
        healthy.messages.len() - 1
    );
    let seqs: Vec<u64> = healthy.messages[1..].iter().filter_map(|m| seq_of(m)).collect();
    assert!(seqs.iter().copied().eq(0..20), "{seqs:?}");
    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200);
    let n = (THREADS * ROUNDS) as f64;
    for reason in ["bad_handshake", "bad_request"] {
        let kinds = MALFORMED.iter().filter(|m| m.3 == reason).count() as f64;
        assert_eq!(
            metric_sum(
                &text,
                "shardcast_requests_rejected_total",
                &format!(r#"reason="{reason}""#),
            ),
            kinds * n,
            "{reason}: {text}"
        );
    }
    assert_eq!(
        metric_sum(
            &text,
            "shardcast_connections_closed_total",
            r#"reason="message_too_big""#
        ),
        n,
        "{text}"
    );
    assert_eq!(server.get("/health").0, 200);
}
