//! Slow peers beside the measured clients (`--slowloris N`): N connections
//! that send a WebSocket upgrade's request head one byte at a time, as the
//! slowloris attack does, each opened again as soon as the server cuts it,
//! so that N are open for the whole run. On their own thread, woken by
//! epoll for answers and by a timer for the next bytes. Counts how they
//! were cut (the server's status, or a close without one) and after how long.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::stats;

/// What the slow peers saw.
pub struct Slowed {
    /// Connections opened over the run (the first N and their replacements).
    pub opened: u64,
    pub connect_failures: u64,
    /// How the server ended them: `408` (its status), or what happened
    /// without an answer.
    pub cuts: BTreeMap<String, u64>,
    /// Connect → cut, ns, per cut connection.
    pub cut_after: Histogram<u64>,
    /// The longest any connection still open at the stop had been open, ns.
    pub oldest_open_ns: u64,
}

/// The running slow peers; [`Slowloris::stop`] ends them.
pub struct Slowloris {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Slowed>,
}

/// What to send: a real upgrade's first line and headers, then a header
/// that never ends in time.
fn head(path: &str, target: SocketAddr) -> Vec<u8> {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nX-Slow: "
    )
    .into_bytes();
    head.resize(head.len() + 64 * 1024, b'a');
    head
}

struct Peer {
    stream: TcpStream,
    opened: Instant,
    sent: usize,
    next: Instant,
}

impl Slowloris {
    /// Opens `n` slow connections to `target` (source addresses round
    /// robin) and keeps them sending one byte of `path`'s request head
    /// every `every`, until stopped.
    pub fn start(
        target: SocketAddr,
        path: &str,
        ips: &[Ipv4Addr],
        n: usize,
        every: Duration,
    ) -> Result<Slowloris, String> {
        let head = head(path, target);
        // SAFETY: plain syscall; the fd is owned by `Epoll` below.
        let ep = Epoll(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) });
        if ep.0 < 0 {
            return Err(format!("epoll_create1: {}", std::io::Error::last_os_error()));
        }
        let mut s = State {
            ep,
            peers: Vec::with_capacity(n),
            free: Vec::new(),
            ips: ips.to_vec(),
            next_ip: 0,
            target,
            every,
            out: Slowed {
                opened: 0,
                connect_failures: 0,
                cuts: BTreeMap::new(),
                cut_after: stats::histogram(),
                oldest_open_ns: 0,
            },
        };
        for _ in 0..n {
            s.open();
        }
        if s.out.opened == 0 && n > 0 {
            return Err("--slowloris: no slow connection could be opened".into());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || s.run(&head, &flag));
        Ok(Slowloris { stop, thread })
    }

    pub fn stop(self) -> Slowed {
        self.stop.store(true, Relaxed);
        self.thread.join().unwrap_or_else(|_| Slowed {
            opened: 0,
            connect_failures: 1,
            cuts: BTreeMap::new(),
            cut_after: stats::histogram(),
            oldest_open_ns: 0,
        })
    }
}

struct Epoll(i32);

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(self.0) };
    }
}

struct State {
    ep: Epoll,
    /// Slots (the epoll data is the index); `None` is free.
    peers: Vec<Option<Peer>>,
    free: Vec<usize>,
    ips: Vec<Ipv4Addr>,
    next_ip: usize,
    target: SocketAddr,
    every: Duration,
    out: Slowed,
}

impl State {
    /// Opens one slow connection into a free slot.
    fn open(&mut self) {
        let ip = (!self.ips.is_empty()).then(|| self.ips[self.next_ip % self.ips.len()]);
        self.next_ip += 1;
        let Ok(stream) = connect(self.target, ip) else {
            self.out.connect_failures += 1;
            return;
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.peers.push(None);
            self.peers.len() - 1
        });
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: slot as u64,
        };
        // SAFETY: a valid epoll fd, a valid socket fd and event.
        if unsafe { libc::epoll_ctl(self.ep.0, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut event) } < 0 {
            self.out.connect_failures += 1;
            self.free.push(slot);
            return;
        }
        let now = Instant::now();
        self.peers[slot] = Some(Peer {
            stream,
            opened: now,
            sent: 0,
            next: now,
        });
        self.out.opened += 1;
    }

    /// Ends slot `slot`'s connection as cut (`how`), and opens another.
    fn cut(&mut self, slot: usize, how: String) {
        if let Some(peer) = self.peers[slot].take() {
            let ns = (peer.opened.elapsed().as_nanos() as u64).clamp(1, stats::MAX_LATENCY_NS);
            let _ = self.out.cut_after.record(ns);
            *self.out.cuts.entry(how).or_default() += 1;
            self.free.push(slot);
            self.open();
        }
    }

    fn run(mut self, head: &[u8], stop: &AtomicBool) -> Slowed {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut buf = [0u8; 512];
        while !stop.load(Relaxed) {
            // SAFETY: `events` is a valid buffer of its length.
            let n = unsafe { libc::epoll_wait(self.ep.0, events.as_mut_ptr(), events.len() as i32, 20) };
            for e in &events[..n.max(0) as usize] {
                let slot = e.u64 as usize;
                let Some(peer) = self.peers.get_mut(slot).and_then(Option::as_mut) else {
                    continue;
                };
                let how = match peer.stream.read(&mut buf) {
                    Ok(0) => "closed without an answer".to_string(),
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        text.split_whitespace().nth(1).unwrap_or("an answer").to_string()
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => format!("{:?}", e.kind()),
                };
                self.cut(slot, how);
            }
            let now = Instant::now();
            let mut failed = Vec::new();
            for (slot, peer) in self.peers.iter_mut().enumerate() {
                let Some(peer) = peer else { continue };
                if peer.next > now {
                    continue;
                }
                let byte = head[peer.sent.min(head.len() - 1)];
                match peer.stream.write(&[byte]) {
                    Ok(_) => peer.sent += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => failed.push((slot, format!("{:?}", e.kind()))),
                }
                peer.next += self.every;
            }
            for (slot, how) in failed {
                self.cut(slot, how);
            }
        }
        self.out.oldest_open_ns = self
            .peers
            .iter()
            .flatten()
            .map(|p| p.opened.elapsed().as_nanos() as u64)
            .max()
            .unwrap_or(0);
        self.out
    }
}

/// A non-blocking connection to `target` from `ip`.
fn connect(target: SocketAddr, ip: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if let Some(ip) = ip {
        socket.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    }
    socket.connect_timeout(&target.into(), Duration::from_secs(2))?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}
