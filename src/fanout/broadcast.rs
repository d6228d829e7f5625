//! Publish → every shard: one bounded flume channel per shard. An event is
//! framed once, with its place in its topic's stream, into an immutable
//! frame; the publishing shard clones one `Arc` per shard, never per
//! subscriber. Publishes from all shards pass one at a time
//! (`fanout::sequencer`), so every shard sees one order per topic.

use std::sync::Arc;
use std::time::Instant;

use crate::conn::handle::Published;
use crate::fanout::envelope::Envelope;
use crate::fanout::sequencer::Sequencer;

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

/// An accepted event before it has its place in its topic's stream.
#[derive(Debug)]
pub struct Draft {
    pub topic: Box<str>,
    pub content: Content,
    pub device: Option<Arc<str>>,
}

/// What a draft becomes a frame from.
#[derive(Debug)]
pub enum Content {
    /// A client envelope: gets `offset` and `epoch` where the topic keeps a stream.
    Envelope(Envelope),
    /// A finished frame carried as is (device statuses: flat objects).
    Frame(Arc<[u8]>),
}

/// Events accepted together (one publish request), in order.
pub struct Batch {
    pub events: Vec<Event>,
    /// When the publishing shard accepted them.
    pub accepted: Instant,
    /// Its place in the one order of all batches (from 1).
    pub seq: u64,
}

/// Senders to every shard's dispatcher, and the order they share.
#[derive(Clone)]
pub struct Broadcaster {
    senders: Arc<[flume::Sender<Arc<Batch>>]>,
    sequencer: Arc<Sequencer>,
}

impl Broadcaster {
    /// One channel per shard, each holding at most `capacity` batches.
    pub fn new(
        sequencer: Arc<Sequencer>,
        shards: usize,
        capacity: usize,
    ) -> (Broadcaster, Vec<flume::Receiver<Arc<Batch>>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| flume::bounded(capacity)).unzip();
        (
            Broadcaster {
                senders: senders.into(),
                sequencer,
            },
            receivers,
        )
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// Gives each draft its place, frames it once, and hands the batch to
    /// every shard in turn. A full channel makes the publisher wait
    /// (back-pressure on the HTTP request), never drops. Returns when every
    /// shard's channel holds the batch.
    pub async fn publish(&self, drafts: Vec<Draft>, accepted: Instant) {
        let turn = self.sequencer.turn().await;
        let batch = Arc::new(self.seal(drafts, accepted));
        for tx in self.senders.iter() {
            // Err only when that shard has stopped (shutdown): nothing to deliver.
            let _ = tx.send_async(batch.clone()).await;
        }
        drop(turn);
    }

    /// The batch of `drafts`, each framed with its place (under the turn).
    fn seal(&self, drafts: Vec<Draft>, accepted: Instant) -> Batch {
        let delivered = self.sequencer.delivered_everywhere();
        let mut streams = self.sequencer.streams();
        let seq = streams.next_seq();
        let events = drafts
            .into_iter()
            .map(|d| {
                let frame = match d.content {
                    Content::Frame(frame) => frame,
                    Content::Envelope(e) if streams.keeps(&d.topic) => {
                        streams.append(&d.topic, seq, accepted, delivered, |p| e.frame(Some(p)))
                    }
                    Content::Envelope(e) => e.frame(None),
                };
                Event {
                    topic: d.topic,
                    frame,
                    device: d.device,
                }
            })
            .collect();
        Batch {
            events,
            accepted,
            seq,
        }
    }
}
