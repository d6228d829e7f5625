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
        (vec!["serve", "--history-topics", "all,devices"], "history_topics"),
        (vec!["serve", "--history-ttl", "0s"], "history_ttl"),
        (vec!["serve", "--history-max-bytes", "10"], "history_max_bytes"),
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
    // Type errors name the key and the line.
    std::fs::write(&path, "shards = 1\nmax_message_bytes = \"64k\"\n").unwrap();
    let (code, stderr) = run(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("line 2: max_message_bytes: invalid type: string \"64k\""),
        "{stderr}"
    );
    std::fs::write(&path, "listen = 127.0.0.1:8090\n").unwrap();
    let (_, stderr) = run(&["serve", "--config", path.to_str().unwrap()]);
    assert!(stderr.contains("line 1: listen: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn a_port_held_by_another_shardcast_stops_start_up() {
    let first = Server::start(&[]);
    let port = first.addr.to_string();
    let (code, err) = run(&["serve", "--listen", &port, "--shards", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("cannot listen on {port}")) && err.contains("Address already in use"),
        "{err}"
    );
    assert_eq!(err.matches("cannot listen").count(), 1, "said once: {err}");
    // The first server still answers alone.
    assert_eq!(first.get("/health").0, 200);
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let server = Server::start(&["--log", "debug"]);
    assert_eq!(server.get("/health").0, 200);
    let logs = poll_until(std::time::Instant::now() + DEADLINE, || {
        let l = server.logs();
        l.contains("listening").then_some(l)
    })
    .expect("a log line");
    assert!(!logs.contains('\u{1b}'), "ANSI escape in piped logs: {logs:?}");
}

#[test]
fn tuning_check_and_the_server_give_one_capacity_figure() {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/check"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let figure: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("WebSocket connections per shardcast process: "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no capacity line: {text}"));
    let server = Server::start(&[]);
    let logs = poll_until(std::time::Instant::now() + DEADLINE, || {
        let l = server.logs();
        l.contains("max_connections=").then_some(l)
    })
    .expect("the listening line");
    let from_server: u64 = logs
        .split("max_connections=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert_eq!(figure, from_server, "{text}\n{logs}");
}
