//! The device side of the `device-status` scenario: D device connections
//! (`/ws/pico`, one token each) that report status changes on a schedule.
//! Status `i` is sent by device `i % D` at `start + i / rate` and carries
//! that scheduled time, so monitors time every delivery against it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use crate::client::masked;
use crate::payload;

/// What the devices do.
pub struct DevicePlan {
    pub target: SocketAddr,
    /// `/ws/pico?token=…` of each device, in device order.
    pub paths: Vec<String>,
    pub source_ips: Vec<Ipv4Addr>,
    pub events: u64,
    /// Status changes per second over all devices; `None`: back to back.
    pub rate: Option<f64>,
    pub payload_bytes: usize,
}

/// How sending went.
pub struct Sent {
    pub sent: u64,
    pub error: Option<String>,
    /// Wall-clock ns when the first status was scheduled.
    pub start_ns: u64,
}

/// Connects every device (each publishes `online` to the monitors).
pub fn connect(plan: &DevicePlan) -> Result<Vec<TcpStream>, String> {
    plan.paths
        .iter()
        .enumerate()
        .map(|(d, path)| {
            let ip = plan.source_ips.get(d % plan.source_ips.len().max(1)).copied();
            handshake(plan.target, ip, path).map_err(|e| format!("device {d} could not connect: {e}"))
        })
        .collect()
}

fn handshake(target: SocketAddr, ip: Option<Ipv4Addr>, path: &str) -> Result<TcpStream, String> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    if let Some(ip) = ip {
        socket
            .bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    socket
        .connect_timeout(&target.into(), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut stream: TcpStream = socket.into();
    stream.set_nodelay(true).ok();
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).map_err(|e| e.to_string())? == 0 || head.len() > 8192 {
            return Err("closed during the handshake".into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        let status = String::from_utf8_lossy(&head);
        return Err(status.lines().next().unwrap_or("").to_string());
    }
    Ok(stream)
}

/// Sends every status change on its schedule, discarding what the server
/// sends the devices (acks, pings) as it goes.
pub fn run(devices: &mut [TcpStream], plan: &DevicePlan) -> Sent {
    let start = Instant::now();
    let start_ns = payload::now_ns();
    let mut sent = 0;
    let mut error = None;
    for seq in 0..plan.events {
        let offset = plan
            .rate
            .map_or(Duration::ZERO, |r| Duration::from_secs_f64(seq as f64 / r));
        if let Some(wait) = (start + offset).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let ts = start_ns + offset.as_nanos() as u64;
        let device = &mut devices[(seq % plan.paths.len() as u64) as usize];
        let message = payload::device_status(seq, ts, plan.payload_bytes);
        if let Err(e) = device.write_all(&masked(0x1, message.as_bytes())) {
            error.get_or_insert_with(|| format!("device {}: {e}", seq % plan.paths.len() as u64));
            continue;
        }
        sent += 1;
        discard_input(device);
    }
    Sent {
        sent,
        error,
        start_ns,
    }
}

/// Reads whatever is waiting on `stream` without blocking.
fn discard_input(stream: &TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: recv into a local buffer on a socket we own; MSG_DONTWAIT
        // keeps the descriptor itself blocking.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return;
        }
    }
}
