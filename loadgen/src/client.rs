//! One measured WebSocket connection: connect from the next source address,
//! upgrade, then read frames and time every delivery (or, in a connect
//! storm, only the handshake). Runs as a glommio task in a worker process.

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use serde::{Deserialize, Serialize};

use crate::offsets::{self, Offsets};
use crate::payload;
use crate::stats::{SeqTracker, WorkerStats};
use crate::tls::Stream;
use shardcast::proto::deflate::Inflater;

/// What `--compression` offers: no context takeover either way, so every
/// message inflates on its own.
const DEFLATE_OFFER: &str =
    "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n";

/// The largest message an inflated event may be.
const MAX_INFLATED: usize = 16 << 20;

/// What a worker process's connections connect to and expect.
#[derive(Clone, Serialize, Deserialize)]
pub struct Plan {
    pub target: SocketAddr,
    /// Path and query of connections below `single_from`, e.g. `/ws/user?token=…`.
    pub path: String,
    /// Path of connections from `single_from` on; `{device}` is replaced by
    /// the device index `i % sources`.
    pub single_path: String,
    pub single_from: usize,
    pub source_ips: Vec<Ipv4Addr>,
    /// Events published in total.
    pub events: u64,
    /// Senders the events are spread over (event `i` comes from `i % sources`).
    pub sources: u64,
    /// Events below this sequence number are the warm-up (not timed).
    pub warmup: u64,
    /// Only connect (a connect storm): no deliveries expected.
    pub storm: bool,
    /// reconnect-storm: drop the connection on `drop`, come back with
    /// `since` on `reconnect`, and time until every missed event is in.
    pub reconnect: bool,
    /// Handshakes in flight per worker.
    pub connect_concurrency: usize,
    /// New connections per second for this worker, if bounded.
    pub connect_rate: Option<f64>,
    pub handshake_timeout_ms: u64,
    /// Messages timed before this (ns since the epoch) are from an earlier
    /// run (a device's last known status) and are ignored.
    pub not_before_ns: u64,
    /// Global index of this worker's first connection, and how many it holds.
    pub first: usize,
    pub count: usize,
    /// wss://: the CA file the server's certificate is checked against.
    #[serde(default)]
    pub tls_ca: Option<String>,
    /// Offer permessage-deflate and inflate compressed frames.
    #[serde(default)]
    pub deflate: bool,
    /// `--reconnect`: a connection the server (or the network) ends comes
    /// back by itself, as mobile SDKs do, with `since` from what it saw.
    #[serde(default)]
    pub resilient: Option<Backoff>,
    /// Share of connections that drop themselves per minute and come back
    /// (`--churn`; needs `--reconnect`).
    #[serde(default)]
    pub churn_per_min: f64,
    /// crash-restart: events from this sequence number on are published
    /// after the restart; their loss is counted apart (`late_gaps`).
    #[serde(default)]
    pub late_from: Option<u64>,
    /// `--timeline`: report the latency of each window this long (ms,
    /// aligned to the wall clock, so every worker's windows line up); 0 is off.
    #[serde(default)]
    pub window_ms: u64,
}

/// Exponential backoff with full jitter: attempt `n` waits a uniform time
/// in `[0, min(max, min * 2^n)]`, so a fleet that lost its server together
/// does not come back in lockstep.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct Backoff {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// The wait before attempt `attempt` (0-based), given a random `roll`.
    pub fn wait_ms(&self, attempt: u32, roll: u64) -> u64 {
        let ceiling = self
            .min_ms
            .saturating_mul(1u64 << attempt.min(30))
            .min(self.max_ms)
            .max(1);
        roll % (ceiling + 1)
    }
}

/// A small xorshift generator: jitter and churn need no more.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

impl Plan {
    fn path_of(&self, index: usize) -> String {
        if index < self.single_from {
            self.path.clone()
        } else {
            self.single_path
                .replace("{device}", &(index as u64 % self.sources.max(1)).to_string())
        }
    }

    /// Events connection `index` should receive.
    pub fn expected(&self, index: usize) -> u64 {
        if self.storm {
            0
        } else if index < self.single_from {
            self.events
        } else {
            let (d, n) = (index as u64 % self.sources.max(1), self.sources.max(1));
            self.events / n + u64::from(d < self.events % n)
        }
    }
}

/// What the coordinator told a worker (on its stdin).
#[derive(Default)]
pub struct Commands {
    pub stop: AtomicBool,
    /// reconnect-storm: close every connection now.
    pub drop: AtomicBool,
    /// reconnect-storm: reconnect every dropped connection now.
    pub reconnect: AtomicBool,
}

/// Live counters of one worker, read by its progress task.
#[derive(Default)]
pub struct Live {
    pub connected: std::cell::Cell<u64>,
    pub failed: std::cell::Cell<u64>,
    pub finished: std::cell::Cell<u64>,
}

/// One connection, from connect to stop. Records everything into `stats`.
pub async fn run(
    index: usize,
    plan: &Plan,
    commands: &Commands,
    live: &Live,
    stats: &RefCell<WorkerStats>,
    gate: &glommio::sync::Semaphore,
) {
    let permit = gate.acquire_permit(1).await;
    let start = payload::now_ns();
    let stop = &commands.stop;
    let (stream, leftover) = match connect(index, plan, "").await {
        Ok(s) => s,
        Err(reason) => {
            stats.borrow_mut().failed(reason);
            live.failed.set(live.failed.get() + 1);
            return;
        }
    };
    drop(permit);
    stats.borrow_mut().connected(start, payload::now_ns());
    live.connected.set(live.connected.get() + 1);
    let expected = plan.expected(index);
    stats.borrow_mut().expected += expected;
    let mut reader = Reader {
        stream,
        buf: leftover,
        seqs: SeqTracker::default(),
        offsets: Offsets::default(),
        reconnected_at: None,
        closed: None,
        finished: expected == 0,
        inflater: plan.deflate.then(Inflater::default),
        inflated: Vec::new(),
        late_seen: 0,
        rng: Rng::new(index as u64 ^ start),
        drop_at: None,
    };
    reader.schedule_churn(plan);
    if reader.finished {
        live.finished.set(live.finished.get() + 1);
    }
    if plan.reconnect {
        // Read the connected event (positions), then wait for the drop.
        reader
            .read_until_stop(plan, u64::MAX, &commands.drop, live, stats)
            .await;
        if !reconnect(index, plan, commands, live, stats, &mut reader).await {
            return;
        }
    }
    loop {
        reader.read_until_stop(plan, expected, stop, live, stats).await;
        let Some(backoff) = plan.resilient.filter(|_| !stop.load(Relaxed)) else {
            break;
        };
        let Some(reason) = reader.closed.take() else {
            break;
        };
        if !come_back(index, plan, backoff, commands, live, stats, &mut reader, reason).await {
            break;
        }
    }
    let mut s = stats.borrow_mut();
    s.gaps += expected.saturating_sub(reader.seqs.seen());
    if let Some(late) = plan.late_from {
        s.late_gaps += expected.saturating_sub(late).saturating_sub(reader.late_seen);
    }
    if let Some(reason) = reader.closed {
        s.closed_early(reason);
    }
}

/// reconnect-storm: drops the connection, waits for the word, reconnects
/// with `since` from what this connection saw, and records the recovery.
/// False when the run stopped first or the reconnect failed.
async fn reconnect(
    index: usize,
    plan: &Plan,
    commands: &Commands,
    live: &Live,
    stats: &RefCell<WorkerStats>,
    reader: &mut Reader,
) -> bool {
    reader.hang_up(live).await;
    while !commands.reconnect.load(Relaxed) {
        if commands.stop.load(Relaxed) {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    match reader.rejoin(index, plan, payload::now_ns(), live, stats).await {
        Ok(()) => true,
        Err(reason) => {
            stats.borrow_mut().failed(reason);
            live.failed.set(live.failed.get() + 1);
            false
        }
    }
}

/// `--reconnect`: the connection ended (`reason`); come back with backoff
/// and jitter, resuming from `since`, until connected or the run stops.
/// Records why it dropped, the failed attempts and the time it was away.
#[allow(clippy::too_many_arguments)]
async fn come_back(
    index: usize,
    plan: &Plan,
    backoff: Backoff,
    commands: &Commands,
    live: &Live,
    stats: &RefCell<WorkerStats>,
    reader: &mut Reader,
    reason: String,
) -> bool {
    let dropped = payload::now_ns();
    *stats.borrow_mut().drops.entry(reason).or_default() += 1;
    reader.hang_up(live).await;
    for attempt in 0u32.. {
        let wait = Duration::from_millis(backoff.wait_ms(attempt, reader.rng.next()));
        let until = std::time::Instant::now() + wait;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            if commands.stop.load(Relaxed) {
                return false;
            }
            glommio::timer::sleep(left.min(Duration::from_millis(20))).await;
        }
        if commands.stop.load(Relaxed) {
            return false;
        }
        match reader.rejoin(index, plan, dropped, live, stats).await {
            Ok(()) => {
                reader.schedule_churn(plan);
                let away = (payload::now_ns() - dropped).clamp(1, crate::stats::MAX_LATENCY_NS);
                let _ = stats.borrow_mut().downtime.record(away);
                return true;
            }
            Err(_) => stats.borrow_mut().retries += 1,
        }
    }
    false
}

/// Connects from the next source address and completes the handshake.
/// Returns the stream and any bytes read past the response head; the
/// error is a one-line reason for the report.
async fn connect(index: usize, plan: &Plan, query: &str) -> Result<(Stream, Vec<u8>), String> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| format!("socket: {e}"))?;
    let source = plan.source_ips.get(index % plan.source_ips.len().max(1)).copied();
    if let Some(ip) = source {
        socket
            .bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())
            .map_err(|e| format!("bind {ip}: {e} (out of ports on this source address? add --source-ips)"))?;
    }
    socket.set_nonblocking(true).map_err(|e| format!("socket: {e}"))?;
    match socket.connect(&plan.target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(connect_error(&e)),
    }
    socket.set_tcp_nodelay(true).ok();
    // SAFETY: a socket we own, handed to glommio once; its first write
    // waits for the connect to complete.
    let tcp = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
    let timeout = Duration::from_millis(plan.handshake_timeout_ms);
    tcp.set_write_timeout(Some(timeout)).ok();
    tcp.set_read_timeout(Some(timeout)).ok();
    let mut stream = Stream::open(tcp, plan.tls_ca.as_deref()).await?;
    let request = format!(
        "GET {}{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{}\r\n",
        plan.path_of(index),
        plan.target,
        if plan.deflate { DEFLATE_OFFER } else { "" }
    );
    let timed_out = |e: &io::Error| {
        if e.kind() == io::ErrorKind::TimedOut {
            format!(
                "no answer within {} ms (server backlog full or out of file descriptors?)",
                plan.handshake_timeout_ms
            )
        } else {
            connect_error(e)
        }
    };
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| timed_out(&e))?;
    let mut buf = vec![0u8; 2048];
    let mut len = 0;
    let head_end = loop {
        if let Some(at) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if len == buf.len() {
            return Err("response head over 2 KiB".into());
        }
        match stream.read(&mut buf[len..]).await {
            Ok(0) => return Err("closed during the handshake".into()),
            Ok(n) => len += n,
            Err(e) => return Err(timed_out(&e)),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.lines().next().unwrap_or("").trim().to_string();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(refusal(&mut stream, &status, &head, buf[head_end..len].to_vec()).await);
    }
    let leftover = buf[head_end..len].to_vec();
    stream
        .tcp()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok();
    Ok((stream, leftover))
}

/// "HTTP 503 Service Unavailable, Retry-After 5: {body}" for a refused
/// upgrade (the Retry-After part only when the server sent one).
async fn refusal(
    stream: &mut (impl AsyncRead + Unpin),
    status: &str,
    head: &str,
    mut body: Vec<u8>,
) -> String {
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let length = header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(1024);
    let mut chunk = [0u8; 1024];
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let status = status.trim_start_matches("HTTP/1.1 ");
    let body = String::from_utf8_lossy(&body);
    match header("retry-after") {
        Some(after) => format!("HTTP {status}, Retry-After {after}: {}", body.trim()),
        None => format!("HTTP {status}: {}", body.trim()),
    }
}

fn connect_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "connection refused (nothing listening on the target?)".into(),
        Some(libc::EADDRNOTAVAIL) => "connect: no free port on this source address (add --source-ips)".into(),
        Some(libc::ECONNRESET) => "connection reset during the handshake".into(),
        _ => format!("connect: {e}"),
    }
}

struct Reader {
    stream: Stream,
    buf: Vec<u8>,
    seqs: SeqTracker,
    offsets: Offsets,
    /// reconnect-storm: when the reconnect began (ns), until caught up.
    reconnected_at: Option<u64>,
    /// Why the server ended the connection, if it did before the stop.
    closed: Option<String>,
    finished: bool,
    /// `--compression`: inflates frames with RSV1 set, into `inflated`.
    inflater: Option<Inflater>,
    inflated: Vec<u8>,
    /// crash-restart: distinct events from `late_from` on received.
    late_seen: u64,
    rng: Rng,
    /// `--churn`: when this connection drops itself next (ns).
    drop_at: Option<u64>,
}

impl Reader {
    /// Closes the connection (the server sees the client vanish) and
    /// counts it as no longer connected.
    async fn hang_up(&mut self, live: &Live) {
        let _ = self.stream.close().await;
        self.buf.clear();
        live.connected.set(live.connected.get().saturating_sub(1));
    }

    /// Connects again with `since` from what this connection saw; `left`
    /// (ns) is when it went away, for the time to caught up.
    async fn rejoin(
        &mut self,
        index: usize,
        plan: &Plan,
        left: u64,
        live: &Live,
        stats: &RefCell<WorkerStats>,
    ) -> Result<(), String> {
        let query = format!("&since={}", offsets::url_encode(&self.offsets.since()));
        let (stream, leftover) = connect(index, plan, &query).await?;
        self.stream = stream;
        self.buf = leftover;
        self.closed = None;
        self.reconnected_at = Some(left);
        stats.borrow_mut().reconnected += 1;
        live.connected.set(live.connected.get() + 1);
        Ok(())
    }

    /// `--churn`: the next self-inflicted drop, exponentially distributed
    /// so that `churn_per_min` of the connections drop each minute.
    fn schedule_churn(&mut self, plan: &Plan) {
        self.drop_at = (plan.churn_per_min > 0.0).then(|| {
            let mean_ns = 60e9 / plan.churn_per_min;
            payload::now_ns() + (-self.rng.unit().ln() * mean_ns) as u64
        });
    }

    /// Reads, answering pings, until the stop flag, a close or an error.
    async fn read_until_stop(
        &mut self,
        plan: &Plan,
        expected: u64,
        stop: &AtomicBool,
        live: &Live,
        stats: &RefCell<WorkerStats>,
    ) {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            if !self.buf.is_empty() {
                let pongs = self.parse(plan, stats);
                let late_done = plan
                    .late_from
                    .is_some_and(|late| self.late_seen >= expected.saturating_sub(late));
                if !self.finished && (self.seqs.seen() >= expected || late_done) {
                    self.finished = true;
                    live.finished.set(live.finished.get() + 1);
                    if let Some(start) = self.reconnected_at.take() {
                        let took = payload::now_ns().saturating_sub(start);
                        let _ = stats
                            .borrow_mut()
                            .caught_up
                            .record(took.clamp(1, crate::stats::MAX_LATENCY_NS));
                    }
                }
                for pong in pongs {
                    if self.stream.write_all(&pong).await.is_err() {
                        self.closed.get_or_insert_with(|| "write failed".into());
                    }
                }
                if self.closed.is_some() {
                    return;
                }
            }
            if stop.load(Relaxed) {
                return;
            }
            if self.drop_at.is_some_and(|at| payload::now_ns() >= at) {
                self.closed = Some("churn (the client dropped itself)".into());
                return;
            }
            match self.stream.read(&mut chunk).await {
                Ok(0) => {
                    self.closed = Some("connection closed without a close frame".into());
                    return;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.closed = Some(format!("read: {e}"));
                    return;
                }
            }
        }
    }

    /// Handles whole frames in `buf`; returns the pongs to send.
    fn parse(&mut self, plan: &Plan, stats: &RefCell<WorkerStats>) -> Vec<Vec<u8>> {
        let now = payload::now_ns();
        let mut pos = 0;
        let mut pongs = Vec::new();
        let sources = plan.sources.max(1);
        while let Some((opcode, start, end)) = frame_at(&self.buf[pos..]) {
            let mut body = &self.buf[pos + start..pos + end];
            if opcode == 0x1 {
                let mut s = stats.borrow_mut();
                s.text_frames += 1;
                s.wire_bytes += end as u64;
                if self.buf[pos] & 0x40 != 0 {
                    let Some(inflater) = self.inflater.as_mut() else {
                        self.closed = Some("a compressed frame without permessage-deflate".into());
                        break;
                    };
                    if inflater.inflate(body, MAX_INFLATED, &mut self.inflated).is_err() {
                        self.closed = Some("a compressed frame that does not inflate".into());
                        break;
                    }
                    s.compressed_frames += 1;
                    body = &self.inflated;
                }
            }
            match opcode {
                0x1 => {
                    if let Some(hello) = self.offsets.connected(body) {
                        let mut s = stats.borrow_mut();
                        if self.reconnected_at.is_some() {
                            s.recovered += hello.missed;
                            for (_, reason) in hello.lost {
                                *s.not_recovered.entry(reason).or_default() += 1;
                            }
                        }
                    } else {
                        let (skipped, again) = self.offsets.see(body);
                        let mut s = stats.borrow_mut();
                        s.offset_gaps += skipped;
                        s.offset_duplicates += again;
                    }
                    if let Some((seq, ts)) = payload::decode(body).filter(|(_, ts)| *ts >= plan.not_before_ns)
                    {
                        let mut s = stats.borrow_mut();
                        let (_, dups) = self.seqs.see((seq % sources) as usize, seq / sources);
                        s.duplicates += dups;
                        if dups == 0 {
                            s.record(seq, ts, now, seq < plan.warmup);
                            if plan.late_from.is_some_and(|late| seq >= late) {
                                self.late_seen += 1;
                            }
                        }
                    }
                }
                0x8 => {
                    let code = (body.len() >= 2).then(|| u16::from_be_bytes([body[0], body[1]]));
                    let reason = String::from_utf8_lossy(body.get(2..).unwrap_or_default());
                    self.closed = Some(match code {
                        Some(code) => format!("close {code} {reason}").trim_end().to_string(),
                        None => "close without a code".into(),
                    });
                }
                0x9 => pongs.push(masked(0xA, body)),
                _ => {}
            }
            pos += end;
        }
        self.buf.drain(..pos);
        pongs
    }
}

/// A client frame (FIN, `opcode`) with a zero mask key: masked as RFC 6455
/// requires, with the payload unchanged.
pub fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
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
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// (opcode, payload start, payload end) of an unmasked frame at the start of `buf`.
pub fn frame_at(buf: &[u8]) -> Option<(u8, usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    (buf.len() >= start + len).then_some((buf[0] & 0x0f, start, start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_frames_have_the_mask_bit_and_a_zero_key() {
        let f = masked(0x1, b"hi");
        assert_eq!(f, vec![0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
        let long = masked(0xA, &[7u8; 300]);
        assert_eq!(&long[..4], &[0x8A, 0x80 | 126, 1, 44]);
        assert_eq!(long.len(), 4 + 4 + 300);
    }

    #[test]
    fn single_device_monitors_expect_their_device_share() {
        let plan = Plan {
            target: "127.0.0.1:1".parse().unwrap(),
            path: "/all".into(),
            single_path: "/ws/devices/d{device}".into(),
            single_from: 2,
            source_ips: vec![],
            events: 10,
            sources: 4,
            warmup: 0,
            storm: false,
            reconnect: false,
            connect_concurrency: 1,
            connect_rate: None,
            handshake_timeout_ms: 1000,
            not_before_ns: 0,
            first: 0,
            count: 8,
            tls_ca: None,
            deflate: false,
            resilient: None,
            churn_per_min: 0.0,
            late_from: None,
            window_ms: 0,
        };
        assert_eq!(plan.expected(0), 10);
        assert_eq!(plan.path_of(1), "/all");
        // Events 0..10 from 4 devices: devices 0 and 1 send 3, 2 and 3 send 2.
        assert_eq!(plan.path_of(5), "/ws/devices/d1");
        assert_eq!(plan.expected(5), 3);
        assert_eq!(plan.expected(6), 2);
        let total: u64 = (0..4).map(|d| plan.expected(4 + d)).sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn backoff_grows_to_its_ceiling_with_full_jitter() {
        let b = Backoff {
            min_ms: 100,
            max_ms: 1000,
        };
        assert_eq!(b.wait_ms(0, 100), 100);
        assert_eq!(b.wait_ms(0, 101), 0, "attempt 0 waits at most min");
        assert_eq!(b.wait_ms(3, 800), 800);
        assert_eq!(b.wait_ms(3, 801), 0, "attempt 3 waits at most 800 ms");
        assert!(b.wait_ms(40, u64::MAX - 1) <= 1000);
        let mut rng = Rng::new(7);
        let waits: Vec<u64> = (0..1000).map(|_| b.wait_ms(10, rng.next())).collect();
        assert!(waits.iter().all(|&w| w <= 1000));
        let mean = waits.iter().sum::<u64>() / 1000;
        assert!((400..600).contains(&mean), "uniform over [0, 1000]: mean {mean}");
    }
}
