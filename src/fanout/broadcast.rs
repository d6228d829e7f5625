//! Publish → every shard: one bounded flume channel per shard. An event is
//! framed once, with its place in its topic's stream, into an immutable
//! frame; the publishing shard clones one `Arc` per shard, never per
//! subscriber. Publishes from all shards pass one at a time
//! (`fanout::sequencer`), so every shard sees one order per topic.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::conn::handle::Published;
use crate::fanout::envelope::{Envelope, Position};
use crate::fanout::gate::Gate;
use crate::fanout::remote::{Outgoing, Remote, Unavailable};
use crate::fanout::sequencer::Sequencer;
use crate::proto::deflate::Agreed;

/// One published event: its topic and its finished WebSocket frame.
#[derive(Debug)]
pub struct Event {
    pub topic: Box<str>,
    /// Header + payload, unmasked: written as is to every subscriber.
    pub frame: Arc<[u8]>,
    /// The same message compressed on its own (permessage-deflate, RSV1),
    /// built once by the first shard with a subscriber that negotiated it;
    /// `None` inside when compressing did not pay.
    pub deflated: OnceLock<Option<Arc<[u8]>>>,
    /// Set on device-status events: every shard records the frame as that
    /// device's last known status (new monitors receive it first), and a
    /// monitor's queue may replace it with a newer status of that device.
    pub device: Option<Arc<str>>,
}

impl Event {
    pub fn new(topic: Box<str>, frame: Arc<[u8]>, device: Option<Arc<str>>) -> Event {
        Event {
            topic,
            frame,
            deflated: OnceLock::new(),
            device,
        }
    }
}

impl Published for Event {
    fn frame_for(&self, window: u8) -> &Arc<[u8]> {
        if window != 0 {
            if let Some(Some(deflated)) = self.deflated.get() {
                if Agreed::fits(window, self.frame.len()) {
                    return deflated;
                }
            }
        }
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

/// An event that came back from the broker, with the place it gave it
/// (`None`: its topic keeps no stream).
#[derive(Debug)]
pub struct Arrived {
    pub draft: Draft,
    pub position: Option<Position>,
}

/// Where a sealed event goes in its topic's stream.
enum Place {
    /// The topic's next offset, if it keeps a stream (in memory).
    Next,
    /// The place the broker gave it.
    At(Position),
    /// None: its topic keeps no stream.
    None,
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
    /// Set when the node publishes through a broker (`--broker`).
    remote: Option<Arc<Remote>>,
    /// Publish requests pass it; shutdown closes it.
    gate: Arc<Gate>,
}

impl Broadcaster {
    /// One channel per shard, each holding at most `capacity` batches.
    pub fn new(
        sequencer: Arc<Sequencer>,
        remote: Option<Arc<Remote>>,
        shards: usize,
        capacity: usize,
    ) -> (Broadcaster, Vec<flume::Receiver<Arc<Batch>>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| flume::bounded(capacity)).unzip();
        (
            Broadcaster {
                senders: senders.into(),
                sequencer,
                remote,
                gate: Arc::new(Gate::default()),
            },
            receivers,
        )
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// The gate every publish request passes (closed at shutdown).
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The broker this node publishes through, if any.
    pub fn remote(&self) -> Option<&Arc<Remote>> {
        self.remote.as_ref()
    }

    /// Publishes `drafts`. In memory: gives each its place, frames it once,
    /// and hands the batch to every shard in turn; a full channel makes the
    /// publisher wait (back-pressure on the HTTP request), never drops;
    /// returns when every shard's channel holds the batch. Through a broker:
    /// returns once the broker took them (every node then delivers what
    /// comes back), or `Err` when it did not (nothing was published).
    pub async fn publish(&self, drafts: Vec<Draft>, accepted: Instant) -> Result<(), Unavailable> {
        if let Some(remote) = &self.remote {
            let events = {
                let streams = self.sequencer.streams();
                drafts
                    .into_iter()
                    .map(|d| Outgoing {
                        keep: matches!(d.content, Content::Envelope(_)) && streams.keeps(&d.topic),
                        body: encode(&d),
                        topic: d.topic,
                        device: d.device,
                    })
                    .collect()
            };
            return remote.publish(events).await;
        }
        let turn = self.sequencer.turn().await;
        let batch = Arc::new(self.seal(drafts.into_iter().map(|d| (d, Place::Next)), accepted));
        self.send(batch).await;
        drop(turn);
        Ok(())
    }

    /// Hands events the broker delivered to every shard, each framed once
    /// at the place the broker gave it (which its topic's stream takes).
    pub async fn deliver(&self, arrived: Vec<Arrived>, accepted: Instant) {
        let turn = self.sequencer.turn().await;
        let drafts = arrived
            .into_iter()
            .map(|a| (a.draft, a.position.map_or(Place::None, Place::At)));
        let batch = Arc::new(self.seal(drafts, accepted));
        self.send(batch).await;
        drop(turn);
    }

    async fn send(&self, batch: Arc<Batch>) {
        for tx in self.senders.iter() {
            // Err only when that shard has stopped (shutdown): nothing to deliver.
            let _ = tx.send_async(batch.clone()).await;
        }
    }

    /// A shard's interest in `topic` began or ended (the broker follows
    /// the topics some shard has subscribers of).
    pub fn interest(&self, topic: &str, up: bool) {
        if let Some(remote) = &self.remote {
            remote.interest(topic, up);
        }
    }

    /// The batch of `drafts`, each framed once with its place (under the
    /// turn): the topic's next one in memory, or the one the broker gave.
    fn seal(&self, drafts: impl Iterator<Item = (Draft, Place)>, accepted: Instant) -> Batch {
        let delivered = self.sequencer.delivered_everywhere();
        let mut streams = self.sequencer.streams();
        let seq = streams.next_seq();
        let events = drafts
            .map(|(d, place)| {
                let frame = match (d.content, place) {
                    (Content::Frame(frame), _) => frame,
                    (Content::Envelope(e), Place::Next) if streams.keeps(&d.topic) => {
                        streams.append(&d.topic, seq, accepted, delivered, |p| e.frame(Some(p)))
                    }
                    (Content::Envelope(e), Place::At(p)) => {
                        streams.place(&d.topic, &p, seq, accepted, delivered, |p| e.frame(Some(p)))
                    }
                    (Content::Envelope(e), _) => e.frame(None),
                };
                Event::new(d.topic, frame, d.device)
            })
            .collect();
        Batch {
            events,
            accepted,
            seq,
        }
    }
}

/// `d`'s content as one body: `E<split>:<json>` for an envelope,
/// `F<device length>:<device><frame>` for a finished frame.
pub fn encode(d: &Draft) -> Vec<u8> {
    match &d.content {
        Content::Envelope(e) => {
            let (json, split) = e.parts();
            let mut out = format!("E{split}:").into_bytes();
            out.extend_from_slice(json);
            out
        }
        Content::Frame(frame) => {
            let device = d.device.as_deref().unwrap_or("");
            let mut out = format!("F{}:", device.len()).into_bytes();
            out.extend_from_slice(device.as_bytes());
            out.extend_from_slice(frame);
            out
        }
    }
}

/// A body written by [`encode`] (on any node) back into content and device.
pub fn decode(body: &[u8]) -> Option<(Content, Option<Arc<str>>)> {
    let (&kind, rest) = body.split_first()?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let n: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    let rest = &rest[colon + 1..];
    match kind {
        b'E' => Some((Content::Envelope(Envelope::from_parts(rest.to_vec(), n)?), None)),
        b'F' if n <= rest.len() => {
            let device = std::str::from_utf8(&rest[..n]).ok()?;
            let device = (!device.is_empty()).then(|| Arc::from(device));
            Some((Content::Frame(Arc::from(&rest[n..])), device))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::envelope::Epoch;

    #[test]
    fn bodies_come_back_as_the_same_frames() {
        let e = Envelope::new("x", Some("all"), "T", &1);
        let p = Position {
            offset: 3,
            epoch: Epoch::random(),
        };
        let d = Draft {
            topic: "all".into(),
            content: Content::Envelope(e.clone()),
            device: None,
        };
        match decode(&encode(&d)) {
            Some((Content::Envelope(back), None)) => assert_eq!(back.frame(Some(&p)), e.frame(Some(&p))),
            _ => panic!("not an envelope"),
        }
        let f = Draft {
            topic: "devices".into(),
            content: Content::Frame(Arc::from(&b"\x81\x02{}"[..])),
            device: Some("d1".into()),
        };
        match decode(&encode(&f)) {
            Some((Content::Frame(frame), Some(dev))) => {
                assert_eq!(&frame[..], b"\x81\x02{}");
                assert_eq!(&*dev, "d1");
            }
            _ => panic!("not a frame"),
        }
        for bad in [&b""[..], b"E", b"E9:{}", b"Fx:", b"F9:ab", b"Q1:a"] {
            assert!(decode(bad).is_none(), "{bad:?}");
        }
    }
}
