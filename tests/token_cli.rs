//! `shardcast token` mints tokens offline that the server accepts: with the
//! dev secret, with a configured secret, and never for the wrong server.
mod common;
use common::*;
use std::process::Command;

fn mint(args: &[&str], env_secret: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardcast"));
    cmd.arg("token").args(args).env_remove("SHARDCAST_JWT_SECRET");
    if let Some(secret) = env_secret {
        cmd.env("SHARDCAST_JWT_SECRET", secret);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dev_token_opens_its_client_type_only() {
    let (code, token, stderr) = mint(&["--sub", "dev-1", "--types", "user"], None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("DEV secret"), "{stderr}");
    let server = Server::start(&[]);
    let mut sub = Sub::connect(&server, &format!("/ws/user?token={token}"), None);
    assert!(sub.wait(|s| !s.messages.is_empty()));
    assert!(
        sub.messages[0].contains(r#""user_id":"dev-1""#),
        "{}",
        sub.messages[0]
    );
    let (status, _) = split_response(
        &server.raw(
            format!(
            "GET /ws/shop?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
            .as_bytes(),
        ),
    );
    assert_eq!(status, 403);
}

#[test]
fn secret_from_the_environment_matches_the_server() {
    let (code, token, _) = mint(
        &["--sub", "d1", "--types", "pico", "--ttl", "1h"],
        Some("prod-secret"),
    );
    assert_eq!(code, 0);
    let server = Server::start(&["--jwt-secret", "prod-secret", "--api-key", "k"]);
    let mut sub = Sub::connect(&server, &format!("/ws/pico?token={token}"), None);
    assert!(sub.wait(|s| !s.messages.is_empty()));
    // The same token is refused by a server with another secret.
    let other = Server::start(&["--jwt-secret", "other-secret", "--api-key", "k"]);
    let (status, body) = split_response(&other.raw(
        format!(
            "GET /ws/pico HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    ));
    assert_eq!(status, 401, "{body}");
}

#[test]
fn bad_ttl_is_refused() {
    let (code, _, stderr) = mint(&["--sub", "x", "--ttl", "forever"], None);
    assert_eq!(code, 2);
    assert!(stderr.contains("--ttl"), "{stderr}");
}

#[test]
fn a_zero_ttl_mints_an_expired_token_the_server_refuses() {
    let (code, token, stderr) = mint(&["--sub", "late", "--types", "user", "--ttl", "0s"], None);
    assert_eq!(code, 0, "{stderr}");
    let server = Server::start(&[]);
    let (status, head, mut socket) = upgrade(&server, &format!("/ws/user?token={token}"), "");
    assert_eq!(status, 401, "{head}");
    let body = read_to_close(&mut socket);
    assert!(body.contains(r#""error":"token_expired""#), "{body}");
}
