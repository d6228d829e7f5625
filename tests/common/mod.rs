//! Shared test helpers: start the real `shardcast` binary on port 0, wait
//! for its "listening" line, talk to it with real clients (tungstenite, or raw
//! bytes for malformed input), and poll with deadlines instead of sleeping.
#![allow(dead_code)]

pub mod redis;
pub mod tls;

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
        let out_pump = pump(child.stdout.take().unwrap(), stdout.clone(), Some(tx));
        let err_pump = pump(child.stderr.take().unwrap(), stderr.clone(), None);
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("shardcast listening on ") {
                        // "ADDR", or "ADDR (TLS: https, wss)".
                        let addr = addr
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .parse()
                            .expect("listening address");
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
                    // The process is gone: its pipes reach EOF, so both
                    // pumps end; wait for what they still hold.
                    let _ = out_pump.join();
                    let _ = err_pump.join();
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

/// Copies `src` into `sink` line by line (and to `lines`) until EOF; the
/// thread's handle, to wait for everything a dead process printed.
fn pump(
    src: impl Read + Send + 'static,
    sink: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(src).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    })
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

/// Reads one whole response (head, then its `Content-Length` body) from a
/// connection that stays open; returns (head, body).
pub fn read_response(s: &mut TcpStream) -> (String, String) {
    let head = read_head(s);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

/// The sum over shards of metric `name`'s series whose labels contain
/// `filter`, from Prometheus text.
pub fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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

/// The dev-mode API key (tests run the server in dev mode).
pub const API_KEY: &str = shardcast::config::DEV_API_KEY;

/// A token for `sub` allowed to open `types`, signed with the dev secret.
pub fn token(sub: &str, types: &[&str]) -> String {
    let mut claims = shardcast::auth::token::Claims::new(sub, Duration::from_secs(600));
    claims.types = types.iter().map(|t| t.to_string()).collect();
    shardcast::auth::token::mint_hs256(&claims, shardcast::config::DEV_JWT_SECRET).unwrap()
}

/// Raises this process's soft open-file limit to the hard one.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain get/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// The server's resident set size in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A keep-alive HTTP client for the publish API.
pub struct Publisher {
    stream: TcpStream,
    key: String,
}

impl Publisher {
    pub fn new(server: &Server) -> Publisher {
        Publisher::with_key(server, API_KEY)
    }

    /// A publisher on another of the server's ports (admin, plain).
    pub fn at(addr: SocketAddr) -> Publisher {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Publisher {
            stream,
            key: API_KEY.to_string(),
        }
    }

    pub fn with_key(server: &Server, key: &str) -> Publisher {
        Publisher {
            stream: server.tcp(),
            key: key.to_string(),
        }
    }

    /// POSTs `body` to `path`; returns (status, body).
    pub fn post(&mut self, path: &str, body: &str) -> (u16, String) {
        let auth = if self.key.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {}\r\n", self.key)
        };
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(req.as_bytes()).unwrap();
        let (head, body) = read_response(&mut self.stream);
        (split_response(&head).0, body)
    }

    /// Publishes one event; returns (status, reply).
    pub fn publish_reply(&mut self, topic: &str, event: &str, data: &str) -> (u16, String) {
        let body = format!(r#"{{"topic":"{topic}","event":"{event}","data":{data}}}"#);
        self.post("/api/v1/publish", &body)
    }

    /// Publishes one event; asserts 202.
    pub fn publish(&mut self, topic: &str, event: &str, data: &str) {
        let body = format!(r#"{{"topic":"{topic}","event":"{event}","data":{data}}}"#);
        let (status, reply) = self.post("/api/v1/publish", &body);
        assert_eq!(status, 202, "{reply}");
    }
}

/// Many subscribers read without blocking from one thread.
pub struct Subscribers {
    pub conns: Vec<Sub>,
}

/// One raw subscriber: its socket, unparsed bytes, text messages so far,
/// and the close frame if one came.
pub struct Sub {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pub messages: Vec<String>,
    pub close: Option<(u16, String)>,
    pub eof: bool,
}

impl Sub {
    /// Opens `path` (a WebSocket endpoint with its query) raw; non-blocking
    /// afterwards. `rcvbuf` shrinks the socket's receive buffer first.
    pub fn connect(server: &Server, path: &str, rcvbuf: Option<usize>) -> Sub {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).unwrap();
        }
        socket.connect(&server.addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 101"), "{path}: {head}");
        stream.set_nonblocking(true).unwrap();
        Sub {
            stream,
            buf: Vec::new(),
            messages: Vec::new(),
            close: None,
            eof: false,
        }
    }

    /// Reads what is available and parses whole frames. Returns true if
    /// anything arrived.
    pub fn pump(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        let mut got = false;
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    got = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.eof = true;
                    break;
                }
            }
        }
        while let Some((first, payload, used)) = parse_server_frame(&self.buf) {
            self.buf.drain(..used);
            match first & 0x0f {
                0x1 => self
                    .messages
                    .push(String::from_utf8(payload).expect("server text is UTF-8")),
                0x8 => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    self.close = Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
                }
                _ => {}
            }
        }
        got
    }

    /// Pumps until `done(self)` or the deadline; returns whether it was done.
    pub fn wait(&mut self, mut done: impl FnMut(&Sub) -> bool) -> bool {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.pump();
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline || self.eof {
                return done(self);
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Subscribers {
    /// Pumps every subscriber until each has `count` messages or the deadline.
    pub fn wait_for(&mut self, count: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let mut idle = true;
            for sub in &mut self.conns {
                if sub.messages.len() < count && sub.pump() {
                    idle = false;
                }
            }
            if self.conns.iter().all(|s| s.messages.len() >= count) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            if idle {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// (first byte, payload, bytes used) of one unmasked frame at the start of `buf`.
fn parse_server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < start + len {
        return None;
    }
    Some((buf[0], buf[start..start + len].to_vec(), start + len))
}

/// The integer after `"seq":` in a message.
pub fn seq_of(message: &str) -> Option<u64> {
    let rest = message.split("\"seq\":").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The `event` name of an envelope.
pub fn event_of(message: &str) -> Option<&str> {
    message.split("\"event\":\"").nth(1)?.split('"').next()
}

/// A token for `sub` with client `types` and watchable `devices`.
pub fn token_with_devices(sub: &str, types: &[&str], devices: &[&str]) -> String {
    let mut claims = shardcast::auth::token::Claims::new(sub, Duration::from_secs(600));
    claims.types = types.iter().map(|t| t.to_string()).collect();
    claims.devices = devices.iter().map(|t| t.to_string()).collect();
    shardcast::auth::token::mint_hs256(&claims, shardcast::config::DEV_JWT_SECRET).unwrap()
}

/// The `status` field of a device-status object.
pub fn status_of(message: &str) -> Option<&str> {
    message.split("\"status\":\"").nth(1)?.split('"').next()
}

/// A token with room rights and a lifetime.
pub fn token_rooms(sub: &str, rooms: &[&str], publish: &[&str], ttl: Duration) -> String {
    let mut claims = shardcast::auth::token::Claims::new(sub, ttl);
    claims.types = vec!["user".to_string()];
    claims.rooms = rooms.iter().map(|t| t.to_string()).collect();
    claims.publish = publish.iter().map(|t| t.to_string()).collect();
    shardcast::auth::token::mint_hs256(&claims, shardcast::config::DEV_JWT_SECRET).unwrap()
}

impl Sub {
    /// Sends one text message (masked, as a client must).
    pub fn say(&mut self, text: &str) {
        self.stream.set_nonblocking(false).unwrap();
        self.stream
            .write_all(&client_frame(0x81, text.as_bytes()))
            .unwrap();
        self.stream.set_nonblocking(true).unwrap();
    }

    /// Waits for a message containing `needle`; returns it.
    pub fn expect(&mut self, needle: &str) -> String {
        assert!(
            self.wait(|s| s.messages.iter().any(|m| m.contains(needle))),
            "no message with {needle}: {:?}",
            self.messages
        );
        self.messages.iter().find(|m| m.contains(needle)).unwrap().clone()
    }
}

/// Sends an upgrade request for `path` (with `extra` header lines) and reads
/// the response head; returns (status, head, the socket, still open).
pub fn upgrade(server: &Server, path: &str, extra: &str) -> (u16, String, TcpStream) {
    let mut s = server.tcp();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut s);
    (split_response(&head).0, head, s)
}

/// Percent-encodes everything but unreserved characters.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The Python of `target/py-venv` (made on first use) with `websockets`
/// and PyJWT installed.
pub fn python() -> std::path::PathBuf {
    let venv = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".ready");
    if !ready.exists() {
        let made = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3");
        assert!(made.success(), "python3 -m venv failed");
        let pip = std::process::Command::new(&python)
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
