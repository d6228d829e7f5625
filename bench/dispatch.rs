//! The per-shard dispatch loop over 100,000 subscribers: ns per delivery.
//!
//! - `queued`: every subscriber already has a frame queued, so delivery
//!   is the user-space path only (state check, queue append, one `Arc`
//!   clone): what shardcast adds on top of the kernel.
//! - `inline`: every subscriber writes to a real Unix socket (100,000
//!   handles over 64 socketpairs, drained by two threads): the fast path
//!   including the kernel's send, one `sendmsg` per subscriber.
//! - `inline, io_uring batched`: the same, with one SQE per subscriber
//!   and one submit per broadcast (`--send-path uring`).
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardcast::conn::handle::{Conn, ConnSpec};
use shardcast::fanout::broadcast::{Batch, Event};
use shardcast::fanout::deliver::{deliver, Policy, SendPath};
use shardcast::fanout::registry::Registry;
use shardcast::fanout::uring_send::UringSender;
use shardcast::proto::frame::{self, Data, OpCode};

const SUBSCRIBERS: usize = 100_000;

fn batch() -> Arc<Batch> {
    Arc::new(Batch {
        events: vec![Event::new(
            "type:user".into(),
            frame::encode_shared(OpCode::Data(Data::Text), &[b'x'; 400]),
            None,
        )],
        accepted: Instant::now(),
        seq: 1,
    })
}

fn registry_on(fds: &[i32]) -> (Registry, Vec<Rc<Conn>>) {
    let mut registry = Registry::default();
    let conns: Vec<Rc<Conn>> = (0..SUBSCRIBERS)
        .map(|i| Rc::new(Conn::new(i as u32, fds[i % fds.len()], 0, ConnSpec::echo(), None)))
        .collect();
    for conn in &conns {
        registry.subscribe("type:user", conn);
    }
    (registry, conns)
}

const POLICY: Policy = Policy {
    max_queue_bytes: usize::MAX,
    close_deadline: u32::MAX,
};

fn dispatch_to_100k_subscribers(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch 100k subscribers");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    g.sample_size(10);
    let event = [batch()];

    // A socket whose buffer is full: every write would block, so every
    // subscriber's first delivery parks in its queue and later ones append.
    let (full, _peer) = UnixStream::pair().unwrap();
    full.set_nonblocking(true).unwrap();
    while (&full).write_some() {}
    g.bench_function("queued (user space only)", |b| {
        b.iter_batched(
            || {
                let (registry, conns) = registry_on(&[full.as_raw_fd()]);
                deliver(&registry, &event, POLICY, &mut SendPath::Direct);
                (registry, conns)
            },
            |(registry, conns)| {
                deliver(&registry, &event, POLICY, &mut SendPath::Direct);
                (registry, conns)
            },
            BatchSize::PerIteration,
        )
    });

    let pairs: Vec<(UnixStream, UnixStream)> = (0..64).map(|_| UnixStream::pair().unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let drainers: Vec<_> = pairs
        .chunks(32)
        .map(|chunk| {
            let readers: Vec<UnixStream> = chunk.iter().map(|(_, r)| r.try_clone().unwrap()).collect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for r in &readers {
                    r.set_nonblocking(true).unwrap();
                }
                let mut buf = vec![0u8; 1 << 16];
                while !stop.load(Ordering::Relaxed) {
                    for mut r in &readers {
                        while let Ok(n) = r.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let fds: Vec<i32> = pairs.iter().map(|(w, _)| w.as_raw_fd()).collect();
    let (registry, _conns) = registry_on(&fds);
    g.bench_function("inline (with the kernel's unix send)", |b| {
        b.iter(|| deliver(&registry, &event, POLICY, &mut SendPath::Direct))
    });
    let mut uring = SendPath::Uring(Box::new(UringSender::new().expect("io_uring available")));
    g.bench_function("inline, io_uring batched", |b| {
        b.iter(|| deliver(&registry, &event, POLICY, &mut uring))
    });
    stop.store(true, Ordering::Relaxed);
    for d in drainers {
        let _ = d.join();
    }
    g.finish();
}

/// Writes into a non-blocking socket until it would block.
trait WriteSome {
    fn write_some(self) -> bool;
}

impl WriteSome for &UnixStream {
    fn write_some(self) -> bool {
        use std::io::Write;
        let mut s = self;
        s.write(&[0u8; 65536]).is_ok()
    }
}

criterion_group!(benches, dispatch_to_100k_subscribers);
criterion_main!(benches);
