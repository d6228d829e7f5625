//! Publish → every shard: one bounded flume channel per shard. An event is
//! encoded once into an immutable frame; the publishing shard clones one
//! `Arc` per shard, never per subscriber.

use std::sync::Arc;
use std::time::Instant;

use crate::conn::handle::Published;

/// One published event: its topic and its finished WebSocket frame.
#[derive(Debug)]
pub struct Event {
    pub topic: Box<str>,
    /// Header + payload, unmasked: written as is to every subscriber.
    pub frame: Arc<[u8]>,
    /// Set on device-status events: every shard records the frame as that
    /// device's last known status (new monitors receive it first), and a
    /// monitor's queue may replace it with a newer status of that device.
    pub device: Option<Arc<str>>,
}

impl Published for Event {
    fn frame(&self) -> &Arc<[u8]> {
        &self.frame
    }

    fn device(&self) -> Option<&Arc<str>> {
        self.device.as_ref()
    }
}

/// Events accepted together (one publish request), in order.
pub struct Batch {
    pub events: Vec<Event>,
    /// When the publishing shard accepted them.
    pub accepted: Instant,
}

/// Senders to every shard's dispatcher.
#[derive(Clone)]
pub struct Broadcaster {
    senders: Arc<[flume::Sender<Arc<Batch>>]>,
}

impl Broadcaster {
    /// One channel per shard, each holding at most `capacity` batches.
    pub fn new(shards: usize, capacity: usize) -> (Broadcaster, Vec<flume::Receiver<Arc<Batch>>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| flume::bounded(capacity)).unzip();
        (
            Broadcaster {
                senders: senders.into(),
            },
            receivers,
        )
    }

    /// Hands `batch` to every shard in turn. A full channel makes the
    /// publisher wait (back-pressure on the HTTP request), never drops.
    /// Every shard receives batches in the order one publisher sent them.
    pub async fn publish(&self, batch: Batch) {
        let batch = Arc::new(batch);
        for tx in self.senders.iter() {
            // Err only when that shard has stopped (shutdown): nothing to deliver.
            let _ = tx.send_async(batch.clone()).await;
        }
    }
}
