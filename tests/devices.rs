//! The device flow: a device connecting publishes `online`, its status
//! reports reach monitors as flat objects, a new monitor first gets the last
//! known status, disconnecting publishes `offline`; and every refusal.
mod common;
use common::*;
use std::io::Write;

fn monitor(server: &Server, path: &str, devices: &[&str]) -> Sub {
    let t = token_with_devices("ops", &[], devices);
    Sub::connect(server, &format!("{path}?token={t}"), None)
}

#[test]
fn online_status_last_known_offline() {
    let server = Server::start(&[]);
    let mut all = monitor(&server, "/ws/devices/all", &["*"]);
    let mut device = Sub::connect(
        &server,
        &format!("/ws/pico?token={}", token("pico-1", &["pico"])),
        None,
    );
    assert!(all.wait(|s| !s.messages.is_empty()), "online reaches the monitor");
    assert!(all.messages[0].starts_with(r#"{"device_id":"pico-1","mac_address":"unknown","serial_number":"unknown","status":"online","time_start":null"#), "{}", all.messages[0]);

    // The device reports a status over its own connection.
    assert!(
        device.wait(|s| !s.messages.is_empty()),
        "device gets its connected event"
    );
    device.stream.set_nonblocking(false).unwrap();
    device
        .stream
        .write_all(&client_frame(
            0x81,
            br#"{"type":"status","status":"success","mac_address":"aa:bb","result":"42 ok"}"#,
        ))
        .unwrap();
    device.stream.set_nonblocking(true).unwrap();
    assert!(device.wait(|s| s.messages.iter().any(|m| m.contains("status_ack"))));
    assert!(all.wait(|s| s.messages.len() == 2));
    assert_eq!(status_of(&all.messages[1]), Some("success"));
    assert!(
        all.messages[1].contains(r#""mac_address":"aa:bb""#)
            && all.messages[1].contains(r#""result":"42 ok""#)
    );

    // A monitor that connects now gets the last known status first.
    let mut one = monitor(&server, "/ws/devices/pico-1", &["pico-1"]);
    assert!(one.wait(|s| !s.messages.is_empty()));
    assert_eq!(status_of(&one.messages[0]), Some("success"));

    // Disconnecting publishes offline to both monitors.
    drop(device);
    assert!(all.wait(|s| s.messages.len() == 3));
    assert_eq!(status_of(&all.messages[2]), Some("offline"));
    assert!(one.wait(|s| s.messages.len() == 2));
    assert_eq!(status_of(&one.messages[1]), Some("offline"));
}

#[test]
fn status_endpoint_validates_and_fans_out() {
    let server = Server::start(&[]);
    let mut one = monitor(&server, "/ws/devices/esp-9", &["esp-9"]);
    let mut p = Publisher::new(&server);
    let (status, body) = p.post("/api/v1/devices/esp-9/status", r#"{"status":"exploded"}"#);
    assert_eq!(status, 400);
    assert!(body.contains("success, fail, error, online, offline"), "{body}");
    let (status, _) = p.post("/api/v1/devices/esp-9/status", r#"{"mac_address":"x"}"#);
    assert_eq!(status, 400);
    let (status, body) = p.post(
        "/api/v1/devices/esp-9/status",
        r#"{"status":"fail","serial_number":"SN-9","time_start":"2026-01-01T00:00:00Z","result":null}"#,
    );
    assert_eq!(status, 202, "{body}");
    assert!(one.wait(|s| !s.messages.is_empty()));
    assert_eq!(one.messages.len(), 1, "the refused reports published nothing");
    let msg = &one.messages[0];
    assert!(msg.contains(r#""serial_number":"SN-9","status":"fail","time_start":"2026-01-01T00:00:00Z","time_end":null,"updated_at":""#), "{msg}");
    let (status, _) =
        Publisher::with_key(&server, "nope").post("/api/v1/devices/esp-9/status", r#"{"status":"ok"}"#);
    assert_eq!(status, 401);
}

#[test]
fn monitors_need_the_devices_claim() {
    let server = Server::start(&[]);
    let upgrade = |path: &str| upgrade(&server, path, "").0;
    assert_eq!(upgrade("/ws/devices/all"), 401);
    let only_d2 = token_with_devices("ops", &[], &["d2"]);
    assert_eq!(upgrade(&format!("/ws/devices/all?token={only_d2}")), 403);
    assert_eq!(upgrade(&format!("/ws/devices/d1?token={only_d2}")), 403);
    assert_eq!(upgrade(&format!("/ws/devices/d2?token={only_d2}")), 101);
}

#[test]
fn non_device_clients_cannot_report_status() {
    let server = Server::start(&[]);
    let mut user = Sub::connect(
        &server,
        &format!("/ws/user?token={}", token("u", &["user"])),
        None,
    );
    assert!(user.wait(|s| !s.messages.is_empty()));
    user.stream.set_nonblocking(false).unwrap();
    user.stream
        .write_all(&client_frame(0x81, br#"{"type":"status","status":"success"}"#))
        .unwrap();
    user.stream.set_nonblocking(true).unwrap();
    assert!(user.wait(|s| s.messages.len() == 2));
    assert!(
        user.messages[1].contains(r#""code":"forbidden""#),
        "{}",
        user.messages[1]
    );
}
