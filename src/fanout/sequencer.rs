//! One order for every publish, whichever shard accepted it: a turn that
//! one publisher holds at a time across all shards while its batch takes
//! its places in the topic streams and enters every shard's channel, so
//! every shard receives every topic's events in offset order. Also how far
//! each shard's dispatcher has delivered (history keeps what is still on
//! its way).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::fanout::history::{Limits, Streams};

/// The process's publish order and topic streams.
pub struct Sequencer {
    /// One token: whoever received it holds the turn.
    turn_tx: flume::Sender<()>,
    turn_rx: flume::Receiver<()>,
    streams: Mutex<Streams>,
    /// The last batch each shard's dispatcher delivered in full.
    delivered: Box<[AtomicU64]>,
}

/// The publish turn; given back when dropped, however the publisher ends.
pub struct Turn<'a> {
    sequencer: &'a Sequencer,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // The channel holds one token and this turn took it: room is certain.
        let _ = self.sequencer.turn_tx.try_send(());
    }
}

impl Sequencer {
    /// `brokered`: the streams are fed by a broker (`Streams::fed_by_broker`).
    pub fn new(shards: usize, limits: Limits, brokered: bool) -> Sequencer {
        let (turn_tx, turn_rx) = flume::bounded(1);
        let _ = turn_tx.try_send(());
        Sequencer {
            turn_tx,
            turn_rx,
            streams: Mutex::new(if brokered {
                Streams::fed_by_broker(limits)
            } else {
                Streams::new(limits)
            }),
            delivered: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Waits for the publish turn.
    pub async fn turn(&self) -> Turn<'_> {
        // The sender lives in `self`: the channel cannot close.
        let _ = self.turn_rx.recv_async().await;
        Turn { sequencer: self }
    }

    /// The topic streams (held briefly: a publish's places, a join's
    /// recovery, a history read).
    pub fn streams(&self) -> MutexGuard<'_, Streams> {
        // A panic while holding it cannot leave the streams half-changed
        // in a way later readers could trip on; carry on with them.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shard `shard` has delivered every batch up to `seq`.
    pub fn set_delivered(&self, shard: usize, seq: u64) {
        if let Some(d) = self.delivered.get(shard) {
            d.store(seq, Ordering::Release);
        }
    }

    /// The last batch shard `shard` delivered in full.
    pub fn delivered(&self, shard: usize) -> u64 {
        self.delivered.get(shard).map_or(0, |d| d.load(Ordering::Acquire))
    }

    /// The last batch every shard has delivered.
    pub fn delivered_everywhere(&self) -> u64 {
        self.delivered
            .iter()
            .map(|d| d.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }
}
