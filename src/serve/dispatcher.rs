//! The dispatcher task of each shard: take published batches from the
//! shard's broadcast channel, remember device statuses, deliver to local
//! subscribers, and count the round. A round is delivered a chunk of
//! recipients at a time, yielding to the shard's other tasks (accepts,
//! handshakes, publishes, pings) every [`SLICE`] of writing or when the
//! executor asks; what is published meanwhile queues, and the next round
//! writes it coalesced.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fanout::broadcast::Batch;
use crate::fanout::deliver::{Policy, Round, SendPath};
use crate::proto::frame::{self, Data, OpCode};
use crate::shard::Shard;

/// Most batches taken from the channel per round.
const MAX_DRAIN: usize = 256;

/// How long a round writes before the shard's other tasks get the core
/// back: measured with bench/shared-core, 250 µs halves their p50 during a
/// fan-out against 1 ms, at no cost in deliveries/s.
const SLICE: Duration = Duration::from_micros(250);

/// Recipients written between two looks at the clock: at a few µs of
/// kernel time each, a fraction of [`SLICE`].
const CHUNK: usize = 64;

/// The dispatcher task of one shard.
pub async fn run(shard: Rc<Shard>, rx: flume::Receiver<Arc<Batch>>) {
    let mut pending: Vec<Arc<Batch>> = Vec::with_capacity(MAX_DRAIN);
    let mut path = SendPath::for_config(shard.config.send_path, shard.id);
    while let Ok(first) = rx.recv_async().await {
        pending.push(first);
        while pending.len() < MAX_DRAIN {
            match rx.try_recv() {
                Ok(batch) => pending.push(batch),
                Err(_) => break,
            }
        }
        let policy = Policy {
            max_queue_bytes: shard.config.max_queue_bytes,
            close_deadline: shard.clock() + shard.close_timeout_secs(),
        };
        let forgotten = record_devices(&shard, &pending);
        if forgotten > 0 {
            shard.counters().devices_forgotten(forgotten);
        }
        if shard.compresses() {
            compress(&shard, &pending);
        }
        let mut round = Round::new(&pending);
        shard.round_started();
        let mut slice = Instant::now();
        while !round.step(&shard.registry.borrow(), policy, &mut path, CHUNK) {
            if slice.elapsed() >= SLICE || glommio::executor().need_preempt() {
                shard.counters().dispatch_yielded();
                step_aside().await;
                slice = Instant::now();
            }
        }
        let done = round.done;
        drop(round);
        if let Some(last) = pending.last() {
            shard.mark_delivered(last.seq);
        }
        shard.round_ended().await;
        shard
            .counters()
            .delivered(pending.iter().map(|b| b.events.len() as u64).sum(), done);
        // Publish accepted → written to this shard's last local subscriber:
        // one sample per batch, one lock per round.
        if let Ok(mut h) = shard.board.latencies(shard.id).fanout.lock() {
            for batch in &pending {
                let _ = h.record((batch.accepted.elapsed().as_micros() as u64).clamp(1, 60_000_000));
            }
        }
        pending.clear();
    }
}

/// Lets the shard's other tasks run, and polls its I/O, before the round
/// goes on: by sleeping on a 1 µs timer, not `glommio::yield_if_needed`.
/// A task that yields stays runnable, and glommio 0.9's executor can park
/// with a runnable task: when its preempt timer has fired before it runs
/// any task queue (`run_task_queues` returns "nothing ran" on its first
/// check), it sleeps until the next timer or I/O, here the sweeper's tick,
/// up to 500 ms. That happens when the kernel takes the core away from the
/// shard at that point, which on shared cores it does: unpinned next to the
/// load generator, one round in ten stalled for 100–500 ms, always on a
/// shard that had yielded mid-round. A sleeping task leaves its timer
/// registered, so the executor never sleeps past it; and once the timer
/// has fired, no short preempt timer can open the window again, since the
/// dispatch queue is not latency-sensitive (`serve::runtime`).
async fn step_aside() {
    glommio::timer::sleep(Duration::from_micros(1)).await;
}

/// Builds the compressed frame of each event in `pending` that has none
/// yet (permessage-deflate): once per event, by whichever shard needs it
/// first; the others find it built. Events under `compression_min_bytes`
/// stay plain.
fn compress(shard: &Shard, pending: &[Arc<Batch>]) {
    let Some(codec) = &shard.codec else {
        return;
    };
    let min = shard.config.compression_min_bytes;
    for event in pending.iter().flat_map(|b| b.events.iter()) {
        let payload = frame::payload(&event.frame);
        if payload.len() < min || event.deflated.get().is_some() {
            continue;
        }
        event.deflated.get_or_init(|| {
            let opcode = match event.frame[0] & 0x0f {
                0x2 => OpCode::Data(Data::Binary),
                _ => OpCode::Data(Data::Text),
            };
            let built = codec.borrow_mut().frame(opcode, payload).map(Arc::<[u8]>::from);
            let after = built.as_ref().map_or(payload.len(), |f| frame::payload(f).len());
            shard.counters().compressed(payload.len(), after);
            built
        });
    }
}

/// Remembers the device statuses among `pending` (before they are
/// delivered: a monitor joining after this round gets them first);
/// returns how many devices were forgotten to make room.
fn record_devices(shard: &Shard, pending: &[Arc<Batch>]) -> u64 {
    let mut devices = shard.devices.borrow_mut();
    let mut forgotten = 0;
    for event in pending.iter().flat_map(|b| b.events.iter()) {
        if let Some(device) = &event.device {
            forgotten += devices.record(device, &event.frame);
        }
    }
    forgotten
}
