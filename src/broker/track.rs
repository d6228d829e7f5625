//! One topic the node follows at the broker: where it stands (epoch and
//! newest offset delivered here), and what to do with each event that
//! arrives live or is read back from the topic's stream, so that every
//! event reaches this node's subscribers once and in offset order, with
//! gaps filled from the stream.

use std::time::Instant;

use crate::fanout::envelope::{Epoch, Position};

/// An event as the broker sent it: its place (`None`: its topic keeps no
/// stream) and its body (`fanout::remote::encode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub position: Option<Position>,
    pub body: Vec<u8>,
}

/// What to do with a live event.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Deliver,
    /// Delivered here already (it came live and in a read).
    Drop,
    /// Wait: the stream is being read (call [`Track::hold`]).
    Hold,
    /// Events are missing before it: hold it and read the stream after `after`.
    Fill {
        after: u64,
    },
}

/// The topic's stream as read back: epoch, newest offset, and the entries
/// after the offset asked (offset, body), oldest first.
#[derive(Debug, Default)]
pub struct Read {
    pub epoch: Option<Epoch>,
    pub top: u64,
    pub entries: Vec<(u64, Vec<u8>)>,
}

/// What a read gives: events to deliver now (new here), and older ones
/// for the history only.
#[derive(Debug, Default)]
pub struct Merged {
    pub deliver: Vec<(u64, Vec<u8>)>,
    pub remember: Vec<(u64, Vec<u8>)>,
    pub epoch: Option<Epoch>,
}

/// A followed topic.
pub struct Track {
    /// Whether the topic keeps a stream.
    pub keep: bool,
    /// `None` until the first read (or a topic that keeps no stream).
    pub epoch: Option<Epoch>,
    pub top: u64,
    /// A read of the stream is under way; live events wait in `held`.
    pub filling: bool,
    held: Vec<Live>,
    /// A read asked for while one was under way (the smallest `after`).
    pub wanted: Option<u64>,
    /// Shards with subscribers of it.
    pub shards: u32,
    /// Since when no shard has had a subscriber.
    pub idle_since: Option<Instant>,
    /// Subscribed on the current broker connection.
    pub subscribed: bool,
    /// Joins waiting for the read under way.
    pub waiters: Vec<flume::Sender<()>>,
}

impl Track {
    pub fn new(keep: bool, now: Instant) -> Track {
        Track {
            keep,
            epoch: None,
            top: 0,
            filling: false,
            held: Vec::new(),
            wanted: None,
            shards: 0,
            idle_since: Some(now),
            subscribed: false,
            waiters: Vec::new(),
        }
    }

    /// What to do with an event that arrived live.
    pub fn on_live(&mut self, position: Option<&Position>) -> Step {
        if self.filling {
            return Step::Hold;
        }
        let Some(p) = position else {
            return Step::Deliver;
        };
        match self.epoch {
            Some(e) if e == p.epoch => {
                if p.offset <= self.top {
                    Step::Drop
                } else if p.offset == self.top + 1 {
                    self.top = p.offset;
                    Step::Deliver
                } else {
                    self.filling = true;
                    Step::Fill { after: self.top }
                }
            }
            Some(_) if p.offset == 1 => {
                // A new life of the stream, from its first event.
                self.epoch = Some(p.epoch);
                self.top = 1;
                Step::Deliver
            }
            Some(_) => {
                self.epoch = Some(p.epoch);
                self.top = 0;
                self.filling = true;
                Step::Fill { after: 0 }
            }
            None => {
                self.filling = true;
                Step::Fill { after: 0 }
            }
        }
    }

    /// Keeps `live` until the read under way is merged.
    pub fn hold(&mut self, live: Live) {
        self.held.push(live);
    }

    /// Merges a read of the stream; the events held meanwhile are given
    /// back to pass through [`Track::on_live`] again, in order.
    pub fn merge(&mut self, read: Read) -> (Merged, Vec<Live>) {
        self.filling = false;
        let mut out = Merged {
            epoch: read.epoch,
            ..Merged::default()
        };
        let Some(epoch) = read.epoch else {
            return (out, std::mem::take(&mut self.held));
        };
        let first_read = self.epoch.is_none();
        if first_read {
            // Nobody here was subscribed: it is all history.
            self.epoch = Some(epoch);
            self.top = read.top;
            out.remember = read.entries;
        } else {
            if self.epoch != Some(epoch) {
                self.epoch = Some(epoch);
                self.top = 0;
            }
            for (offset, body) in read.entries {
                if offset > self.top {
                    self.top = offset;
                    out.deliver.push((offset, body));
                } else {
                    out.remember.push((offset, body));
                }
            }
            // Past what the stream still keeps: those are lost to this node.
            self.top = self.top.max(read.top);
        }
        (out, std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, epoch: Epoch) -> Position {
        Position { offset, epoch }
    }

    #[test]
    fn live_events_pass_once_in_order_and_gaps_are_read() {
        let e = Epoch::random();
        let mut t = Track::new(true, Instant::now());
        assert_eq!(t.on_live(Some(&at(5, e))), Step::Fill { after: 0 });
        t.hold(Live {
            position: Some(at(5, e)),
            body: b"5".to_vec(),
        });
        let (m, held) = t.merge(Read {
            epoch: Some(e),
            top: 5,
            entries: vec![(4, b"4".to_vec()), (5, b"5".to_vec())],
        });
        assert_eq!(m.remember.len(), 2, "a first read is history");
        assert!(m.deliver.is_empty());
        assert_eq!(held.len(), 1);
        assert_eq!(t.on_live(Some(&at(5, e))), Step::Drop);
        assert_eq!(t.on_live(Some(&at(6, e))), Step::Deliver);
        assert_eq!(t.on_live(Some(&at(9, e))), Step::Fill { after: 6 });
        assert_eq!(t.on_live(Some(&at(10, e))), Step::Hold);
        let (m, _) = t.merge(Read {
            epoch: Some(e),
            top: 9,
            entries: vec![(7, b"7".to_vec()), (8, b"8".to_vec()), (9, b"9".to_vec())],
        });
        assert_eq!(m.deliver.iter().map(|d| d.0).collect::<Vec<_>>(), [7, 8, 9]);
        assert_eq!(t.on_live(Some(&at(9, e))), Step::Drop);
        assert_eq!(t.on_live(Some(&at(10, e))), Step::Deliver);
    }

    #[test]
    fn a_new_epoch_starts_over() {
        let (a, b) = (Epoch::random(), Epoch::random());
        let mut t = Track::new(true, Instant::now());
        t.merge(Read {
            epoch: Some(a),
            top: 7,
            entries: vec![],
        });
        assert_eq!(t.on_live(Some(&at(1, b))), Step::Deliver);
        assert_eq!(t.epoch, Some(b));
        assert_eq!(t.on_live(Some(&at(3, a))), Step::Fill { after: 0 });
        let (m, _) = t.merge(Read {
            epoch: Some(a),
            top: 3,
            entries: vec![(1, vec![]), (2, vec![]), (3, vec![])],
        });
        assert_eq!(m.deliver.len(), 3, "a new life's events are all new here");
        assert_eq!(t.on_live(None), Step::Deliver, "topics without a stream pass");
    }
}
