//! The browser console at `GET /`: where it is served and under which
//! policy (plain HTTP), and the page itself in a real headless Chromium
//! (Debian's `chromium`, driven over the DevTools protocol by
//! `tests/py/console.py`): connect, publish from the page and with curl,
//! rooms, a device monitor, the stats and the latency plot, a phone-sized
//! screen, and no request outside the server. Screenshots go to
//! `target/console-shots/`.
mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

/// The browser the tests drive (`.ci/run` installs Debian's package).
fn chromium() {
    let found = Command::new("chromium").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "chromium not found: install Debian's chromium (.ci/run does)"
    );
}

fn shots(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/console-shots")
        .join(name)
}

/// Runs `tests/py/console.py <args>`; asserts it passed all its checks.
fn drive(args: &[&str]) -> String {
    chromium();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/console.py");
    let out = Command::new(python()).arg(script).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && stdout.contains("console: all checks passed"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The head of `GET path` on `addr` (status line and headers) and its body.
fn fetch(addr: &str, method: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    std::io::Write::write_all(
        &mut s,
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let text = read_to_close(&mut s);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

fn admin_addr(server: &Server) -> String {
    server
        .stdout
        .lock()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("shardcast admin listening on "))
        .expect("admin address line")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_dev_console_is_served_with_a_strict_policy_and_a_dev_token() {
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let (head, body) = fetch(&addr, "GET", "/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/html; charset=utf-8"), "{head}");
    assert!(
        head.contains(
            "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; \
             img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
        "{head}"
    );
    assert!(head.contains("Cache-Control: no-store"), "{head}");
    assert!(head.contains("X-Frame-Options: DENY"), "{head}");
    // Pre-filled: a dev token and the dev API key, HTML-escaped JSON.
    assert!(
        body.contains(
            r#"<meta name="shardcast-console" content="{&quot;dev&quot;:true,&quot;token&quot;:&quot;eyJ"#
        ),
        "{body}"
    );
    assert!(
        body.contains(&format!("&quot;api_key&quot;:&quot;{API_KEY}&quot;")),
        "{body}"
    );
    assert!(!body.contains("<!--SETTINGS-->"));
    // Nothing from elsewhere: every src and href is on this server.
    for attr in ["src=\"", "href=\""] {
        for (i, _) in body.match_indices(attr) {
            let url = &body[i + attr.len()..];
            assert!(
                url.starts_with('/') || url.starts_with("data:"),
                "{}",
                &url[..40.min(url.len())]
            );
        }
    }
    let (head, script) = fetch(&addr, "GET", "/console/console.js");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("text/javascript"),
        "{head}"
    );
    assert!(script.contains("import"), "{script}");
    let (head, _) = fetch(&addr, "GET", "/console/plot.js");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, css) = fetch(&addr, "GET", "/console/console.css");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("text/css"),
        "{head}"
    );
    assert!(!css.is_empty());
    let (head, body) = fetch(&addr, "HEAD", "/");
    assert!(head.starts_with("HTTP/1.1 200") && body.is_empty(), "{head}");
    let (head, body) = fetch(&addr, "GET", "/console/nope.js");
    assert!(
        head.starts_with("HTTP/1.1 404") && body.contains("no such console file"),
        "{head}"
    );
    let (head, _) = fetch(&addr, "POST", "/");
    assert!(
        head.starts_with("HTTP/1.1 405") && head.contains("Allow: GET"),
        "{head}"
    );
    // The banner says where it is.
    assert!(server
        .stdout
        .lock()
        .unwrap()
        .contains(&format!("console in a browser:\n  http://{addr}/")));
}

#[test]
fn the_console_is_not_served_when_off_or_on_a_public_production_port() {
    let off = Server::start(&["--console", "off"]);
    let (head, _) = fetch(&off.addr.to_string(), "GET", "/");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = fetch(&off.addr.to_string(), "GET", "/console/console.js");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(!off.stdout.lock().unwrap().contains("console in a browser"));
    let production = Server::start(&[
        "--jwt-secret",
        "console-test-secret",
        "--api-key",
        "console-test-key",
    ]);
    let (head, _) = fetch(&production.addr.to_string(), "GET", "/");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let with_admin = Server::start(&[
        "--jwt-secret",
        "console-test-secret",
        "--api-key",
        "console-test-key",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let (head, _) = fetch(&with_admin.addr.to_string(), "GET", "/");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, body) = fetch(&admin_addr(&with_admin), "GET", "/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Not dev mode: nothing to pre-fill; WebSockets go to the public port.
    assert!(
        !body.contains("eyJ") && !body.contains("console-test-key"),
        "{body}"
    );
    assert!(
        body.contains("&quot;token&quot;:&quot;&quot;,&quot;api_key&quot;:&quot;&quot;"),
        "{body}"
    );
    let port = with_admin.addr.port();
    assert!(body.contains(&format!("&quot;ws_port&quot;:{port}")), "{body}");
    assert!(head.contains("connect-src 'self' ws: wss:;"), "{head}");
}

#[test]
fn the_dev_console_works_in_a_real_browser() {
    let server = Server::start(&[]);
    let dir = shots("dev");
    let out = drive(&["dev", &server.addr.to_string(), dir.to_str().unwrap()]);
    for step in [
        "connected as user",
        "published from the page, received",
        "published with curl, received",
        "stats and latency plot",
        "device monitor got the status",
        "closed with code 1000",
        "fits a 390 px screen",
        "all to the server; no browser error",
    ] {
        assert!(out.contains(step), "{step}: {out}");
    }
    for shot in ["events", "server", "phone"] {
        let png = std::fs::read(dir.join(format!("{shot}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{shot}.png");
    }
    // The page's own connection came through the real server and was
    // counted, and the large event reached it compressed.
    assert!(out.contains("permessage-deflate negotiated"), "{out}");
    let metrics = server.get("/metrics").1;
    assert!(
        metric_sum(&metrics, "shardcast_deliveries_total", "") >= 5.0,
        "{metrics}"
    );
    assert!(
        metric_sum(&metrics, "shardcast_compressed_frames_total", "") >= 1.0,
        "{metrics}"
    );
}

#[test]
fn a_production_console_on_the_admin_port_connects_to_the_public_port() {
    let secret = "console-admin-secret";
    let key = "console-admin-key";
    let server = Server::start(&[
        "--jwt-secret",
        secret,
        "--api-key",
        key,
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let mut claims = shardcast::auth::token::Claims::new("ops", std::time::Duration::from_secs(600));
    claims.types = vec!["user".into()];
    let token = shardcast::auth::token::mint_hs256(&claims, secret).unwrap();
    let dir = shots("admin");
    let out = drive(&[
        "admin",
        &admin_addr(&server),
        &server.addr.to_string(),
        dir.to_str().unwrap(),
        &token,
        key,
    ]);
    assert!(out.contains("published through the admin port"), "{out}");
    assert!(std::fs::read(dir.join("admin.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
}
