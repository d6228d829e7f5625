//! A real `redis-server` (Debian's package; `.ci/run` installs it) for the
//! cluster tests: started on a free loopback port in a temp dir with AOF on
//! (fsync always, so a kill loses nothing Redis acknowledged), killed on
//! drop, restartable on the same port and data.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::DEADLINE;

pub struct Redis {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    /// Serve TLS only (certificates in `dir`, made with the openssl CLI).
    tls: bool,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    /// Starts a fresh Redis on a free port.
    pub fn start() -> Redis {
        Redis::on(free_port())
    }

    /// A Redis that will listen on `port` once [`Redis::restart`] is called.
    pub fn on(port: u16) -> Redis {
        let dir = std::env::temp_dir().join(format!("shardcast-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            port,
            dir,
            child: None,
            tls: false,
        };
        r.restart();
        r
    }

    /// A Redis that speaks TLS only, with a certificate for 127.0.0.1
    /// signed by a fresh CA (`ca.crt` in [`Redis::dir`]).
    pub fn start_tls() -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("shardcast-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl CLI");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let days = ["-days", "1"];
        openssl(
            &[
                &[
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                ][..],
                &days,
                &["-subj", "/CN=shardcast-test-ca"],
            ]
            .concat(),
        );
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        openssl(
            &[
                &[
                    "x509",
                    "-req",
                    "-in",
                    "redis.csr",
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "redis.crt",
                ][..],
                &days,
                &["-extfile", "ext"],
            ]
            .concat(),
        );
        let mut r = Redis {
            port,
            dir,
            child: None,
            tls: true,
        };
        r.restart();
        r
    }

    /// A Redis URL for `--broker`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on its port and data directory; returns when it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        if self.tls {
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-cert-file", "redis.crt", "--tls-key-file", "redis.key"])
                .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"])
                .current_dir(&self.dir);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: install Debian's redis-server (.ci/run does)");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            let ready = if self.tls {
                // A TLS port: ready once it accepts connections.
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                self.command("PING").is_some_and(|r| r.starts_with("+PONG"))
            };
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    /// Sends one inline command; its raw reply.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
