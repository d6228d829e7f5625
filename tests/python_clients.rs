//! Real Python clients (`websockets`, tokens minted with PyJWT) against the
//! real binary: accepted tokens, delivery, and every token rejection.
//! The test makes its own venv under `target/py-venv` on first use.
mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".ready");
    if !ready.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3");
        assert!(made.success(), "python3 -m venv failed");
        let pip = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "websockets==15.0.1",
                "PyJWT==2.10.1",
            ])
            .status()
            .expect("pip");
        assert!(pip.success(), "pip install websockets PyJWT failed");
        std::fs::write(&ready, b"").unwrap();
    }
    python
}

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
