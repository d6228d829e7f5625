//! Conflation: a device monitor that falls behind is not disconnected; its
//! queue keeps only the newest status per device, in order, and it ends up
//! with every device's latest status.
mod common;
use common::*;
use std::collections::HashMap;

#[test]
fn slow_monitor_gets_the_newest_status_of_every_device() {
    slow_monitor_gets_the_newest_status_of_every_device_with(&[]);
}

/// The same with one sendmsg per recipient (`--send-path direct`).
#[test]
fn slow_monitor_gets_the_newest_status_of_every_device_direct() {
    slow_monitor_gets_the_newest_status_of_every_device_with(&["--send-path", "direct"]);
}

fn slow_monitor_gets_the_newest_status_of_every_device_with(extra: &[&str]) {
    let server = Server::start(&[&["--max-queue-bytes", "65536"], extra].concat());
    let t = token_with_devices("ops", &[], &["*"]);
    let mut monitor = Sub::connect(&server, &format!("/ws/devices/all?token={t}"), Some(4096));
    let mut publisher = Publisher::new(&server);
    let blob = "y".repeat(8000);
    // 900 reports of ~8 KB for 3 devices while the monitor reads nothing:
    // far more than its socket buffers and queue limit hold.
    for seq in 0..300 {
        for device in ["d0", "d1", "d2"] {
            let body = format!(r#"{{"status":"success","result":"{seq}:{blob}"}}"#);
            let (status, reply) = publisher.post(&format!("/api/v1/devices/{device}/status"), &body);
            assert_eq!(status, 202, "{reply}");
        }
    }
    let done = |s: &Sub| {
        ["d0", "d1", "d2"].iter().all(|d| {
            s.messages
                .iter()
                .any(|m| m.contains(&format!(r#""device_id":"{d}""#)) && m.contains(r#""result":"299:"#))
        })
    };
    assert!(monitor.wait(done), "every device's newest status arrives");
    assert_eq!(monitor.close, None, "a monitor is conflated, not disconnected");
    let mut last: HashMap<String, u64> = HashMap::new();
    for m in &monitor.messages {
        let device = m
            .split(r#""device_id":""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        let seq: u64 = m
            .split(r#""result":""#)
            .nth(1)
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        if let Some(prev) = last.insert(device.clone(), seq) {
            assert!(seq > prev, "{device}: {seq} after {prev}");
        }
    }
    assert!(
        monitor.messages.len() < 900,
        "conflation dropped superseded statuses"
    );
    let (_, stats) = server.get("/ws/stats");
    assert!(!stats.contains(r#""slow_consumers":1"#), "{stats}");
}
