//! Subscriber connections: one glommio executor per worker thread, one task
//! per connection (handshake, then read frames and time every delivery).

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::payload;
use crate::stats::{SeqTracker, WorkerStats};

/// What every subscriber of a run connects to and expects.
pub struct Plan {
    pub target: SocketAddr,
    /// Request path with query (token), e.g. `/ws/user?token=…`.
    pub path: String,
    pub source_ips: Vec<Ipv4Addr>,
    /// Events each connection should receive.
    pub events: u64,
    /// Handshakes in flight per worker.
    pub connect_concurrency: usize,
}

/// Counters the main thread watches while workers run.
#[derive(Default)]
pub struct Progress {
    pub connected: AtomicUsize,
    pub finished: AtomicUsize,
    pub failed: AtomicUsize,
    pub stop: AtomicBool,
}

/// Runs `conns` subscribers (global indices from `first`) to completion or
/// until `progress.stop`; returns what they saw.
pub async fn run_worker(first: usize, conns: usize, plan: Arc<Plan>, progress: Arc<Progress>) -> WorkerStats {
    let stats = Rc::new(RefCell::new(WorkerStats::new(plan.events as usize)));
    let gate = Rc::new(glommio::sync::Semaphore::new(plan.connect_concurrency as u64));
    let mut tasks = Vec::with_capacity(conns);
    for i in first..first + conns {
        let (plan, progress, stats, gate) = (plan.clone(), progress.clone(), stats.clone(), gate.clone());
        tasks.push(glommio::spawn_local(async move {
            let ok = subscriber(i, &plan, &progress, &stats, &gate).await;
            if !ok {
                stats.borrow_mut().connect_errors += 1;
                progress.failed.fetch_add(1, Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await;
    }
    Rc::try_unwrap(stats)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| rc.borrow().clone())
}

/// One subscriber. Returns false if it never got connected.
async fn subscriber(
    index: usize,
    plan: &Plan,
    progress: &Progress,
    stats: &RefCell<WorkerStats>,
    gate: &glommio::sync::Semaphore,
) -> bool {
    let permit = gate.acquire_permit(1).await;
    let stream = match connect(index, plan).await {
        Ok(s) => s,
        Err(_) => return false,
    };
    drop(permit);
    progress.connected.fetch_add(1, Relaxed);
    let mut reader = Reader {
        stream,
        buf: Vec::with_capacity(4096),
        seqs: SeqTracker::default(),
        received: 0,
    };
    let complete = reader.read_all(plan, progress, stats).await;
    if !complete && !progress.stop.load(Relaxed) {
        stats.borrow_mut().unexpected_closes += 1;
    }
    let missing = reader.seqs.missing(plan.events);
    stats.borrow_mut().gaps += missing.min(plan.events);
    progress.finished.fetch_add(1, Relaxed);
    true
}

/// Connects from the next source address and completes the handshake.
async fn connect(index: usize, plan: &Plan) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if !plan.source_ips.is_empty() {
        let ip = plan.source_ips[index % plan.source_ips.len()];
        socket.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    }
    // A blocking connect on loopback completes in microseconds; the stream
    // is non-blocking from here on.
    socket.connect(&plan.target.into())?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    // SAFETY: a connected socket we own, handed to glommio once.
    let mut stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        plan.path, plan.target
    );
    stream.write_all(request.as_bytes()).await?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 || head.len() > 8192 {
            return Err(io::Error::other("handshake failed"));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(io::Error::other(
            String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ));
    }
    stream.set_read_timeout(Some(Duration::from_millis(200))).ok();
    Ok(stream)
}

struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    seqs: SeqTracker,
    received: u64,
}

impl Reader {
    /// Reads until every expected event arrived (true), or close/stop (false).
    async fn read_all(&mut self, plan: &Plan, progress: &Progress, stats: &RefCell<WorkerStats>) -> bool {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            if self.received >= plan.events {
                return true;
            }
            if progress.stop.load(Relaxed) {
                return false;
            }
            match self.stream.read(&mut chunk).await {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if !self.parse(stats) {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
    }

    /// Handles whole frames in `buf`; false on a close frame.
    fn parse(&mut self, stats: &RefCell<WorkerStats>) -> bool {
        let now = payload::now_ns();
        let mut pos = 0;
        let mut open = true;
        while let Some((opcode, start, end)) = frame_at(&self.buf[pos..]) {
            let payload = &self.buf[pos + start..pos + end];
            match opcode {
                0x1 => {
                    if let Some((seq, ts)) = payload::decode(payload) {
                        let mut s = stats.borrow_mut();
                        let (gaps, dups) = self.seqs.see(seq);
                        s.gaps += gaps;
                        s.duplicates += dups;
                        s.record(seq, ts, now);
                        self.received += 1;
                    }
                }
                0x8 => open = false,
                _ => {}
            }
            pos += end;
        }
        self.buf.drain(..pos);
        open
    }
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
