//! Benchmark peer: the kernel floor. The least a server can do to deliver
//! an event: frame it once, then `send()` the same bytes to every socket in
//! a loop on one thread. No event loop, no queues, no reading from clients
//! after the handshake; a socket whose send fails is dropped. What any
//! real server costs above this is its own overhead.
//!
//! Run with: peer-floor [PORT]   (prints "floor listening on 127.0.0.1:PORT")

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread;

type Subscribers = Arc<Mutex<Vec<TcpStream>>>;

fn main() -> std::io::Result<()> {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0u16);
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("floor listening on {}", listener.local_addr()?);
    let subscribers: Subscribers = Arc::default();
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(_) => {
                // Out of descriptors: clients of an earlier run are gone
                // but their sockets are only noticed here.
                prune_closed(&subscribers);
                thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        stream.set_nodelay(true).ok();
        let subscribers = subscribers.clone();
        // Handshakes on their own short-lived thread; a publisher keeps its
        // thread for its keep-alive connection.
        thread::spawn(move || serve(stream, &subscribers));
    }
    Ok(())
}

fn serve(mut stream: TcpStream, subscribers: &Subscribers) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut id = 0u64;
    loop {
        while let Some((head, used)) = peers::parse_head(&buf) {
            if let Some(key) = &head.ws_key {
                if stream
                    .write_all(peers::switching_protocols(key).as_bytes())
                    .is_ok()
                {
                    subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(stream);
                }
                return;
            }
            if buf.len() < used + head.content_length {
                break;
            }
            let envelope = peers::envelope(&buf[used..used + head.content_length]);
            buf.drain(..used + head.content_length);
            if let Some(e) = &envelope {
                broadcast(&peers::text_frame(e.as_bytes()), subscribers);
            }
            id += 1;
            if stream
                .write_all(peers::publish_reply(envelope.is_some(), id).as_bytes())
                .is_err()
            {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The floor: one blocking `send()` of the same bytes per socket.
fn broadcast(frame: &[u8], subscribers: &Subscribers) {
    let mut subs = subscribers.lock().unwrap_or_else(|e| e.into_inner());
    subs.retain(|s| {
        let mut sent = 0;
        while sent < frame.len() {
            // SAFETY: send(2) from a live buffer on a socket we own.
            let n = unsafe {
                libc::send(
                    s.as_raw_fd(),
                    frame[sent..].as_ptr().cast(),
                    frame.len() - sent,
                    libc::MSG_NOSIGNAL,
                )
            };
            if n <= 0 {
                return false;
            }
            sent += n as usize;
        }
        true
    });
}

/// Drops the sockets whose peer has closed (a non-blocking peek reads EOF).
fn prune_closed(subscribers: &Subscribers) {
    let mut subs = subscribers.lock().unwrap_or_else(|e| e.into_inner());
    subs.retain(|s| {
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local on a socket we own.
        let n = unsafe {
            libc::recv(
                s.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n != 0 && !(n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN))
    });
}
