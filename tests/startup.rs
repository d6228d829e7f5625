//! Start-up: dev mode prints a working token; unsafe or invalid settings
//! refuse to start with one line naming the key and exit code 2.
mod common;
use common::*;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dev_mode_prints_a_token_signed_with_the_dev_secret() {
    let server = Server::start(&[]);
    let stdout = server.stdout.clone();
    let deadline = std::time::Instant::now() + DEADLINE;
    let text = poll_until(deadline, || {
        let t = stdout.lock().unwrap().clone();
        t.contains("curl").then_some(t)
    })
    .expect("dev banner");
    assert!(text.contains("DEV MODE"), "{text}");
    let token = text
        .lines()
        .skip_while(|l| !l.starts_with("dev token"))
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<serde_json_free::Claims>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(shardcast::config::DEV_JWT_SECRET.as_bytes()),
        &validation,
    )
    .expect("dev token verifies with the dev secret");
    assert_eq!(data.claims.sub, "dev-user");
    assert!(
        text.contains(&format!("ws://{}/ws/user?token=", server.addr)),
        "{text}"
    );
}

mod serde_json_free {
    #[derive(serde::Deserialize)]
    pub struct Claims {
        pub sub: String,
    }
}

#[test]
fn non_loopback_without_secret_refuses_to_start() {
    let (code, stderr) = run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid config: listen: refusing dev mode"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn non_loopback_with_secret_and_key_starts() {
    let server = Server::start_raw(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--shards",
        "1",
        "--jwt-secret",
        "s3cret",
        "--api-key",
        "k3y",
    ])
    .expect("starts");
    assert!(!server.stdout.lock().unwrap().contains("DEV MODE"));
    assert!(!server.logs().contains("s3cret"));
}

#[test]
fn invalid_values_name_their_key_and_exit_2() {
    for (args, key) in [
        (vec!["serve", "--shards", "0"], "shards"),
        (vec!["serve", "--handshake-timeout", "soon"], "handshake_timeout"),
        (vec!["serve", "--max-message-bytes", "3"], "max_message_bytes"),
        (vec!["serve", "--listen", "nowhere"], "listen"),
        (vec!["serve", "--jwt-secret", "x"], "api_key"),
    ] {
        let (code, stderr) = run(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid config: {key}:")),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn environment_variables_configure_and_flags_win() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .args(["serve", "--shards", "0"])
        .env("SHARDCAST_SHARDS", "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "the flag (0) must win over the env var (1)"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .args(["serve"])
        .env("SHARDCAST_HANDSHAKE_TIMEOUT", "never")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("handshake_timeout"));
}

#[test]
fn config_file_errors_name_the_file() {
    let path = std::env::temp_dir().join(format!("shardcast-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "no_such_setting = 1\n").unwrap();
    let (code, stderr) = run(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("config file"), "{stderr}");
    assert!(stderr.contains("no_such_setting"), "{stderr}");
}
