//! Real Python clients (`websockets`, tokens minted with PyJWT) against the
//! real binary: accepted tokens, delivery, and every token rejection.
//! The test makes its own venv under `target/py-venv` on first use.
mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

#[test]
fn python_websockets_and_pyjwt_clients() {
    let python = python();
    // Debug logging: refused upgrades are logged, and must not carry tokens.
    let server = Server::start(&["--log", "debug"]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/clients.py");
    let out = Command::new(python)
        .arg(script)
        .arg(server.addr.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("python clients: all checks passed"), "{stdout}");
    // No token ever reaches the logs.
    assert!(!server.logs().contains("eyJ"), "a token appeared in the logs");
}
