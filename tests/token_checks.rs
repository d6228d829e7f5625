//! Token and origin checks before the upgrade: RS256/ES256 public keys
//! (tokens minted offline by `shardcast token --key`), algorithm confusion,
//! `iss`/`aud`, and the browser-origin allowlist.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn status(server: &Server, path: &str, extra: &str) -> u16 {
    upgrade(server, path, extra).0
}

/// A fresh key pair (`rsa` or `ec`) in its own temp dir: (private, public).
fn keypair(kind: &str, tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("shardcast-keys-{}-{kind}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = (dir.join("private.pem"), dir.join("public.pem"));
    let gen: &[&str] = if kind == "rsa" {
        &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    } else {
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ]
    };
    let out = Command::new("openssl")
        .args(gen)
        .arg("-out")
        .arg(&private)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap();
    assert!(out.status.success());
    (private, public)
}

fn mint_with_key(key: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .args(["token", "--sub", "k1", "--types", "user", "--key"])
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn rs256_and_es256_tokens_verify_with_the_public_key_only() {
    for kind in ["rsa", "ec"] {
        let (private, public) = keypair(kind, "server");
        let server = Server::start(&["--jwt-public-key", public.to_str().unwrap(), "--api-key", "k"]);
        let good = mint_with_key(&private);
        assert_eq!(
            status(&server, &format!("/ws/user?token={good}"), ""),
            101,
            "{kind}"
        );
        // Another key pair's token fails.
        let (other, _) = keypair(kind, "other");
        let foreign = mint_with_key(&other);
        assert_eq!(
            status(&server, &format!("/ws/user?token={foreign}"), ""),
            401,
            "{kind}"
        );
        // Algorithm confusion: HS256 signed with the public key's PEM as the secret.
        let pem = std::fs::read_to_string(&public).unwrap();
        let confused = Command::new(env!("CARGO_BIN_EXE_shardcast"))
            .args(["token", "--sub", "k1", "--types", "user", "--secret", &pem])
            .output()
            .unwrap();
        let confused = String::from_utf8(confused.stdout).unwrap().trim().to_string();
        assert_eq!(
            status(&server, &format!("/ws/user?token={confused}"), ""),
            401,
            "{kind}"
        );
    }
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    #[derive(serde::Serialize)]
    struct C<'a> {
        sub: &'a str,
        exp: u64,
        types: [&'a str; 1],
        iss: &'a str,
        aud: &'a str,
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mint = |iss, aud| {
        let claims = C {
            sub: "u",
            exp,
            types: ["user"],
            iss,
            aud,
        };
        jsonwebtoken::encode(
            &Default::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"s"),
        )
        .unwrap()
    };
    let server = Server::start(&[
        "--jwt-secret",
        "s",
        "--api-key",
        "k",
        "--jwt-issuer",
        "shop",
        "--jwt-audience",
        "app",
    ]);
    assert_eq!(
        status(&server, &format!("/ws/user?token={}", mint("shop", "app")), ""),
        101
    );
    assert_eq!(
        status(&server, &format!("/ws/user?token={}", mint("other", "app")), ""),
        401
    );
    assert_eq!(
        status(&server, &format!("/ws/user?token={}", mint("shop", "web")), ""),
        401
    );
}

#[test]
fn disallowed_browser_origins_are_403_and_non_browsers_pass() {
    let server = Server::start(&["--allowed-origins", "https://app.example.com,https://*.shop.io"]);
    let t = token("o", &["user"]);
    let path = format!("/ws/user?token={t}");
    assert_eq!(status(&server, &path, "Origin: https://evil.com\r\n"), 403);
    assert_eq!(status(&server, &path, "Origin: https://shop.io\r\n"), 403);
    assert_eq!(status(&server, &path, "Origin: https://eu.shop.io\r\n"), 101);
    assert_eq!(status(&server, &path, "Origin: https://app.example.com\r\n"), 101);
    assert_eq!(status(&server, &path, ""), 101);
}

#[test]
fn per_user_socket_requires_the_tokens_own_user_id() {
    let server = Server::start(&[]);
    let alice = token("alice", &[]);
    assert_eq!(
        status(&server, &format!("/api/v1/websocket/ws/alice?token={alice}"), ""),
        101
    );
    assert_eq!(
        status(&server, &format!("/api/v1/websocket/ws/bob?token={alice}"), ""),
        403
    );
    assert_eq!(status(&server, "/api/v1/websocket/ws/alice", ""), 401);
}

#[test]
fn leeway_accepts_a_token_just_past_exp() {
    #[derive(serde::Serialize)]
    struct C {
        sub: &'static str,
        exp: u64,
        types: [&'static str; 1],
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 20;
    let late = jsonwebtoken::encode(
        &Default::default(),
        &C {
            sub: "u",
            exp,
            types: ["user"],
        },
        &jsonwebtoken::EncodingKey::from_secret(b"s"),
    )
    .unwrap();
    let strict = Server::start(&["--jwt-secret", "s", "--api-key", "k"]);
    assert_eq!(status(&strict, &format!("/ws/user?token={late}"), ""), 401);
    let lenient = Server::start(&["--jwt-secret", "s", "--api-key", "k", "--jwt-leeway", "60s"]);
    assert_eq!(status(&lenient, &format!("/ws/user?token={late}"), ""), 101);
}
