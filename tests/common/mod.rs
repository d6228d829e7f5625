//! Shared test helpers: start the real `shardcast` binary on port 0, wait
//! for its "listening" line, talk to it with real clients (tungstenite, or raw
//! bytes for malformed input), and poll with deadlines instead of sleeping.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use tungstenite::{Message, WebSocket};

/// Longest any single wait in a test may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A running server process, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything printed on stdout so far.
    pub stdout: Arc<Mutex<String>>,
    /// Everything printed on stderr (logs) so far.
    pub stderr: Arc<Mutex<String>>,
}

impl Server {
    /// `shardcast serve --listen 127.0.0.1:0 --shards 2 <args>`.
    pub fn start(args: &[&str]) -> Server {
        let mut full = vec!["serve", "--listen", "127.0.0.1:0", "--shards", "2"];
        full.extend_from_slice(args);
        Server::start_raw(&full).unwrap_or_else(|out| panic!("server did not start:\n{out}"))
    }

    /// Runs `shardcast <args>` and waits for its "listening" line; on failure
    /// returns everything it printed.
    pub fn start_raw(args: &[&str]) -> Result<Server, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardcast"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn shardcast");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        pump(child.stdout.take().unwrap(), stdout.clone(), Some(tx));
        pump(child.stderr.take().unwrap(), stderr.clone(), None);
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("shardcast listening on ") {
                        let addr = addr.trim().parse().expect("listening address");
                        return Ok(Server {
                            child,
                            addr,
                            stdout,
                            stderr,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let err = stderr.lock().unwrap().clone();
                    return Err(format!("stdout:\n{}\nstderr:\n{err}", stdout.lock().unwrap()));
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        poll_until(deadline, || self.child.try_wait().ok().flatten())
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// GET `path` on a fresh connection; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let resp =
            self.raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
        split_response(&resp)
    }

    /// Writes `request` on a fresh connection and reads until the server closes.
    pub fn raw(&self, request: &[u8]) -> String {
        let mut s = self.tcp();
        s.write_all(request).unwrap();
        read_to_close(&mut s)
    }

    /// A TCP connection with read/write timeouts.
    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_write_timeout(Some(DEADLINE)).unwrap();
        s
    }

    /// A tungstenite WebSocket client on `path`.
    pub fn ws(&self, path: &str) -> WebSocket<TcpStream> {
        let (ws, resp) = tungstenite::client(self.url(path), self.tcp()).expect("websocket handshake");
        assert_eq!(resp.status().as_u16(), 101);
        ws
    }

    /// A raw upgraded socket on `path`, for sending bytes no client library would.
    pub fn raw_ws(&self, path: &str) -> TcpStream {
        let mut s = self.tcp();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(src: impl Read + Send + 'static, sink: Arc<Mutex<String>>, lines: Option<mpsc::Sender<String>>) {
    thread::spawn(move || {
        for line in BufReader::new(src).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    });
}

/// Calls `f` until it returns `Some`, or `None` once `deadline` passes.
pub fn poll_until<T>(deadline: Instant, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reads until EOF (or an error such as a reset) and returns what arrived.
pub fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one HTTP response head (up to the blank line).
pub fn read_head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => out.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (status, body) of a response text.
pub fn split_response(resp: &str) -> (u16, String) {
    let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A masked client frame with the given first byte (FIN/RSV/opcode).
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one unmasked server frame: (first byte, payload). `None` on EOF.
pub fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    Some((head[0], payload))
}

/// Reads frames until a close frame; returns its code and reason.
pub fn read_close(s: &mut TcpStream) -> Option<(u16, String)> {
    while let Some((first, payload)) = read_frame(s) {
        if first & 0x0f == 0x8 {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
        }
    }
    None
}

/// Reads tungstenite messages until a close; returns its code.
pub fn ws_close_code(ws: &mut WebSocket<TcpStream>) -> Option<u16> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}
