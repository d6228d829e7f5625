//! Topic streams in memory (the embedded default): each topic's offset
//! counter and epoch, its last `history_size` frames within `history_ttl`,
//! all bounded by `history_max_bytes`; and recovery — which retained
//! frames a reconnecting client missed, or why it cannot be told.
//!
//! Every retained frame is the `Arc` the fan-out sent, never a copy. Each
//! entry remembers the sequence number of the batch that carried it, so a
//! shard can answer "what had this shard delivered when the client
//! joined": entries past that are still on their way through the shard's
//! channel and arrive live, never twice. Entries not yet delivered by every
//! shard are never dropped, so that answer is always exact.
//!
//! A topic that has never had an event has no stream: its position is the
//! process-wide base epoch at offset 0, and its first event opens a stream
//! with that epoch. A stream that is dropped (expired or evicted) is
//! remembered by its hash, so that its next life gets a fresh epoch.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::config::history::{Kinds, Limits};
use crate::fanout::envelope::{Epoch, Position};

/// Bytes a stream costs beyond its frames (key, counters, map slot).
const STREAM_OVERHEAD: usize = 160;
/// Bytes an entry costs beyond its frame (sequence, time, pointer, Arc header).
const ENTRY_OVERHEAD: usize = 56;
/// Dropped streams remembered; past it the base epoch changes and the
/// memory is cleared (topics without a stream then read "epoch changed").
const MAX_FORGOTTEN: usize = 1 << 18;

struct Entry {
    /// The batch that carried it.
    seq: u64,
    at: Instant,
    frame: Arc<[u8]>,
}

struct Stream {
    epoch: Epoch,
    /// Offset of the newest event (0: none yet).
    top: u64,
    /// The newest events, oldest first; the last one has offset `top`.
    entries: VecDeque<Entry>,
    bytes: usize,
    /// When it was last appended to (an index into `Streams::touched`).
    touch: u64,
}

impl Stream {
    fn first_offset(&self) -> u64 {
        self.top + 1 - self.entries.len() as u64
    }

    /// The oldest offset a reader standing at `at` may have of what is
    /// kept: the `size` events up to `at`, even while older entries wait
    /// for a slower shard (they are held for that shard, not for readers).
    fn first_kept(&self, size: usize, at: u64) -> u64 {
        self.first_offset().max((at + 1).saturating_sub(size as u64))
    }

    /// The position a shard that has delivered batches up to `delivered`
    /// stands at: entries past it are still on their way.
    fn position_at(&self, delivered: u64) -> u64 {
        let pending = self
            .entries
            .iter()
            .rev()
            .take_while(|e| e.seq > delivered)
            .count();
        self.top - pending as u64
    }
}

/// What recovery could do for one topic named in `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Every event after the client's offset follows, `missed` of them.
    Recovered { missed: u64 },
    /// Nothing is replayed; the reason says why.
    Lost(&'static str),
}

/// Recovery reasons, as the `connected` event writes them.
pub mod reason {
    pub const EPOCH_CHANGED: &str = "epoch changed";
    pub const TOO_OLD: &str = "too old";
    pub const NO_HISTORY: &str = "no history";
    pub const NOT_SUBSCRIBED: &str = "not subscribed";
    pub const OFFSET_AHEAD: &str = "offset ahead of the stream";
}

/// What [`Streams::range`] returns: the stream's epoch, its newest offset,
/// the oldest offset still kept, and the frames after the asked offset.
pub struct Range {
    pub epoch: Epoch,
    pub top: u64,
    pub first: u64,
    pub frames: Vec<Arc<[u8]>>,
}

/// Every topic's stream; one for the whole process (see `fanout::sequencer`).
pub struct Streams {
    limits: Limits,
    topics: HashMap<Arc<str>, Stream>,
    /// Append order, oldest first: `(touch, topic)`; stale pairs (the
    /// topic was touched again or dropped) are skipped and compacted.
    touched: VecDeque<(u64, Arc<str>)>,
    touches: u64,
    bytes: usize,
    /// The epoch of a topic's first stream in this process.
    base: Epoch,
    /// Hashes of dropped streams' topics.
    forgotten: HashSet<u64>,
    hasher: RandomState,
    next_seq: u64,
    /// Streams dropped for `history_max_bytes` (counted for /metrics).
    evicted: u64,
    /// Fed by a broker (`--broker`): offsets and epochs come from it, and a
    /// stream the node follows keeps its place (epoch, top) when its entries
    /// go, until the broker forgets it.
    remote: bool,
}

impl Streams {
    pub fn new(limits: Limits) -> Streams {
        Streams {
            limits,
            topics: HashMap::new(),
            touched: VecDeque::new(),
            touches: 0,
            bytes: 0,
            base: Epoch::random(),
            forgotten: HashSet::new(),
            hasher: RandomState::new(),
            next_seq: 1,
            evicted: 0,
            remote: false,
        }
    }

    /// Streams a broker feeds (see the `remote` field).
    pub fn fed_by_broker(limits: Limits) -> Streams {
        Streams {
            remote: true,
            ..Streams::new(limits)
        }
    }

    /// Whether `topic` has a stream here (for a broker: whether the node
    /// knows where it stands).
    pub fn tracks(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// Whether a client at `p` can recover from what is kept here.
    pub fn covers(&self, topic: &str, p: &Position) -> bool {
        self.topics.get(topic).is_some_and(|s| {
            s.epoch == p.epoch && (p.offset >= s.top || p.offset + 1 >= s.first_kept(self.limits.size, s.top))
        })
    }

    /// Takes the event a broker placed at `p` (a new epoch, or a gap the
    /// broker could not fill, restarts what is kept); like [`Streams::append`].
    pub fn place(
        &mut self,
        topic: &str,
        p: &Position,
        seq: u64,
        now: Instant,
        delivered: u64,
        frame: impl FnOnce(&Position) -> Arc<[u8]>,
    ) -> Arc<[u8]> {
        let touch = self.touches;
        self.touches += 1;
        self.open_at(topic, p.epoch, p.offset.saturating_sub(1), touch);
        if let Some(stream) = self.topics.get_mut(topic) {
            if stream.epoch != p.epoch || p.offset != stream.top + 1 {
                self.bytes -= restart(stream, p.epoch, p.offset.saturating_sub(1));
            }
        }
        // The stream now stands just before `p`: appending gives it `p`.
        self.append(topic, seq, now, delivered, frame)
    }

    /// Keeps events a broker read back that the node already stood past
    /// (`entries`: offset and frame, oldest first, at most `top`): those
    /// just before what is kept go in front of it. A topic with no stream
    /// here gets one at `epoch`, `top`.
    pub fn remember(
        &mut self,
        topic: &str,
        epoch: Epoch,
        top: u64,
        now: Instant,
        entries: Vec<(u64, Arc<[u8]>)>,
    ) {
        let touch = self.touches;
        self.touches += 1;
        let fresh = !self.topics.contains_key(topic);
        let key = self.open_at(topic, epoch, top, touch);
        if fresh {
            self.touched.push_back((touch, key));
        }
        let Some(stream) = self.topics.get_mut(topic) else {
            return;
        };
        let mut change = 0isize;
        if stream.epoch != epoch {
            change -= restart(stream, epoch, top) as isize;
        }
        let mut first = stream.first_offset();
        for (offset, frame) in entries.into_iter().rev() {
            if offset + 1 != first || stream.entries.len() >= self.limits.size {
                continue;
            }
            let cost = ENTRY_OVERHEAD + frame.len();
            stream.entries.push_front(Entry {
                seq: 0,
                at: now,
                frame,
            });
            stream.bytes += cost;
            change += cost as isize;
            first = offset;
        }
        self.bytes = (self.bytes as isize + change) as usize;
    }

    /// Drops `topic`'s stream entirely (the broker no longer follows it).
    pub fn forget(&mut self, topic: &str) {
        if let Some(s) = self.topics.remove(topic) {
            self.bytes -= s.bytes + STREAM_OVERHEAD + topic.len();
        }
    }

    /// `topic`'s stream, opened empty at `epoch` and `top` if it has none; its key.
    fn open_at(&mut self, topic: &str, epoch: Epoch, top: u64, touch: u64) -> Arc<str> {
        if let Some((k, _)) = self.topics.get_key_value(topic) {
            return k.clone();
        }
        let key: Arc<str> = Arc::from(topic);
        self.bytes += STREAM_OVERHEAD + key.len();
        self.topics.insert(
            key.clone(),
            Stream {
                epoch,
                top,
                entries: VecDeque::new(),
                bytes: 0,
                touch,
            },
        );
        key
    }

    /// Whether `topic` keeps a stream (and its events carry a position).
    pub fn keeps(&self, topic: &str) -> bool {
        self.limits.size > 0 && self.limits.kinds.keeps(topic)
    }

    /// The sequence number of the last batch sealed.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The sequence number of the next batch.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Gives `topic`'s next event its place, has `frame` build it, and
    /// retains the frame. `delivered` is the oldest batch some shard has
    /// not delivered yet minus one: nothing newer may be dropped.
    pub fn append(
        &mut self,
        topic: &str,
        seq: u64,
        now: Instant,
        delivered: u64,
        frame: impl FnOnce(&Position) -> Arc<[u8]>,
    ) -> Arc<[u8]> {
        let touch = self.touches;
        self.touches += 1;
        let key = self.open(topic, touch);
        let limits = self.limits;
        let base = self.base;
        let Some(stream) = self.topics.get_mut(topic) else {
            // Opened above; never taken.
            return frame(&Position {
                offset: 0,
                epoch: base,
            });
        };
        stream.top += 1;
        stream.touch = touch;
        let built = frame(&Position {
            offset: stream.top,
            epoch: stream.epoch,
        });
        let cost = ENTRY_OVERHEAD + built.len();
        stream.entries.push_back(Entry {
            seq,
            at: now,
            frame: built.clone(),
        });
        stream.bytes += cost;
        self.bytes += cost;
        let mut freed = 0;
        while stream.entries.len() > limits.size {
            match stream.entries.front() {
                Some(e) if e.seq <= delivered => freed += pop(stream),
                _ => break,
            }
        }
        freed += expire(stream, now, limits.ttl, delivered);
        self.bytes -= freed;
        self.touched.push_back((touch, key));
        self.evict(delivered);
        self.compact();
        built
    }

    /// `topic`'s stream, opened (empty) if it has none; its key.
    fn open(&mut self, topic: &str, touch: u64) -> Arc<str> {
        if let Some((k, _)) = self.topics.get_key_value(topic) {
            return k.clone();
        }
        let epoch = self.fresh_epoch(topic);
        let key: Arc<str> = Arc::from(topic);
        self.bytes += STREAM_OVERHEAD + key.len();
        self.topics.insert(
            key.clone(),
            Stream {
                epoch,
                top: 0,
                entries: VecDeque::new(),
                bytes: 0,
                touch,
            },
        );
        key
    }

    /// The epoch for `topic`'s new stream: the base one, unless a stream
    /// of it was dropped in this process.
    fn fresh_epoch(&self, topic: &str) -> Epoch {
        if self.forgotten.contains(&self.hasher.hash_one(topic)) {
            Epoch::random()
        } else {
            self.base
        }
    }

    /// Drops the least recently appended streams while over
    /// `history_max_bytes` (their next life gets a new epoch).
    fn evict(&mut self, delivered: u64) {
        while self.bytes > self.limits.max_bytes {
            let Some((touch, key)) = self.touched.front().cloned() else {
                return;
            };
            match self.topics.get(&key) {
                Some(s) if s.touch == touch => {
                    // In-flight entries stay until every shard delivered them.
                    if s.entries.back().is_some_and(|e| e.seq > delivered) {
                        return;
                    }
                    self.touched.pop_front();
                    self.drop_stream(&key);
                    self.evicted += 1;
                }
                _ => {
                    self.touched.pop_front();
                }
            }
        }
    }

    fn drop_stream(&mut self, key: &str) {
        if self.remote {
            // The broker still follows it: keep where it stands.
            if let Some(s) = self.topics.get_mut(key) {
                let (epoch, top) = (s.epoch, s.top);
                self.bytes -= restart(s, epoch, top);
            }
            return;
        }
        if let Some(s) = self.topics.remove(key) {
            self.bytes -= s.bytes + STREAM_OVERHEAD + key.len();
            if self.forgotten.len() >= MAX_FORGOTTEN {
                self.forgotten.clear();
                self.base = Epoch::random();
            }
            self.forgotten.insert(self.hasher.hash_one(key));
        }
    }

    /// Keeps `touched` within twice the live streams.
    fn compact(&mut self) {
        if self.touched.len() > 2 * self.topics.len() + 1024 {
            let topics = &self.topics;
            self.touched
                .retain(|(touch, key)| topics.get(key).is_some_and(|s| s.touch == *touch));
        }
    }

    /// Drops expired entries of the streams appended to longest ago, and
    /// those streams once empty. Called now and then (the sweeper).
    pub fn sweep(&mut self, now: Instant, delivered: u64) {
        let ttl = self.limits.ttl;
        while let Some((touch, key)) = self.touched.front().cloned() {
            let Some(stream) = self.topics.get_mut(&key) else {
                self.touched.pop_front();
                continue;
            };
            if stream.touch != touch {
                self.touched.pop_front();
                continue;
            }
            let freed = expire(stream, now, ttl, delivered);
            self.bytes -= freed;
            if !stream.entries.is_empty() {
                return;
            }
            self.touched.pop_front();
            self.drop_stream(&key);
        }
    }

    /// Where `topic` stands for a shard that has delivered batches up to
    /// `delivered`, and — when `since` is given — what of it can be
    /// recovered: those frames are pushed to `out`, oldest first.
    pub fn join(
        &mut self,
        topic: &str,
        since: Option<&Position>,
        delivered: u64,
        now: Instant,
        out: &mut Vec<Arc<[u8]>>,
    ) -> (Position, Option<Recovery>) {
        let (ttl, size) = (self.limits.ttl, self.limits.size);
        let forgotten = self.forgotten.contains(&self.hasher.hash_one(topic));
        if !self.topics.contains_key(topic) {
            if !forgotten {
                let here = Position {
                    offset: 0,
                    epoch: self.base,
                };
                let recovery = since.map(|s| match s {
                    s if s.epoch != here.epoch => Recovery::Lost(reason::EPOCH_CHANGED),
                    s if s.offset > 0 => Recovery::Lost(reason::OFFSET_AHEAD),
                    _ => Recovery::Recovered { missed: 0 },
                });
                return (here, recovery);
            }
            // Its last stream was dropped: open its next one now, so the
            // epoch given here is the one its events will carry.
            let touch = self.touches;
            self.touches += 1;
            let key = self.open(topic, touch);
            self.touched.push_back((touch, key));
        }
        let Some(stream) = self.topics.get_mut(topic) else {
            // Opened above; never taken.
            return (
                Position {
                    offset: 0,
                    epoch: self.base,
                },
                since.map(|_| Recovery::Lost(reason::EPOCH_CHANGED)),
            );
        };
        let freed = expire(stream, now, ttl, delivered);
        let here = Position {
            offset: stream.position_at(delivered),
            epoch: stream.epoch,
        };
        let recovery = since.map(|s| {
            if s.epoch != stream.epoch {
                return Recovery::Lost(reason::EPOCH_CHANGED);
            }
            if s.offset > stream.top {
                return Recovery::Lost(reason::OFFSET_AHEAD);
            }
            if s.offset + 1 < stream.first_kept(size, here.offset) {
                return Recovery::Lost(reason::TOO_OLD);
            }
            let first = stream.first_offset();
            let mut missed = 0;
            for (i, e) in stream.entries.iter().enumerate() {
                let offset = first + i as u64;
                if offset > s.offset && offset <= here.offset {
                    out.push(e.frame.clone());
                    missed += 1;
                }
            }
            Recovery::Recovered { missed }
        });
        self.bytes -= freed;
        (here, recovery)
    }

    /// The sequence number of the batch that carried `topic`'s event at
    /// `offset` in `epoch`, if it is still kept (a shard joining a client
    /// who saw it elsewhere first waits until it has delivered it too).
    pub fn seq_of(&self, topic: &str, position: &Position) -> Option<u64> {
        let stream = self.topics.get(topic)?;
        if stream.epoch != position.epoch || position.offset > stream.top || position.offset == 0 {
            return None;
        }
        let index = position.offset.checked_sub(stream.first_offset())?;
        stream.entries.get(index as usize).map(|e| e.seq)
    }

    /// Up to `limit` retained events of `topic` after `after`, oldest
    /// first, for the history API; `None` when the topic has no stream.
    pub fn range(
        &mut self,
        topic: &str,
        after: u64,
        limit: usize,
        now: Instant,
        delivered: u64,
    ) -> Option<Range> {
        let ttl = self.limits.ttl;
        let size = self.limits.size;
        let stream = self.topics.get_mut(topic)?;
        let freed = settle(stream, size, now, ttl, delivered);
        let first = stream.first_kept(size, stream.top);
        let skip = after
            .saturating_add(1)
            .max(first)
            .saturating_sub(stream.first_offset())
            .min(stream.entries.len() as u64) as usize;
        let frames = stream
            .entries
            .iter()
            .skip(skip)
            .take(limit)
            .map(|e| e.frame.clone())
            .collect();
        let range = Range {
            epoch: stream.epoch,
            top: stream.top,
            first,
            frames,
        };
        self.bytes -= freed;
        Some(range)
    }

    /// Drops what `topic` keeps past `history_size` or `history_ttl`, of
    /// what every shard has delivered (`everywhere`): trimming at append
    /// alone lags the shards, so readers settle first.
    pub fn settle(&mut self, topic: &str, now: Instant, everywhere: u64) {
        let (size, ttl) = (self.limits.size, self.limits.ttl);
        if let Some(stream) = self.topics.get_mut(topic) {
            let freed = settle(stream, size, now, ttl, everywhere);
            self.bytes -= freed;
        }
    }

    /// The epoch a topic without a stream reads (for the history API).
    pub fn base_epoch(&self) -> Epoch {
        self.base
    }

    /// Bytes held (frames and bookkeeping), streams, and streams evicted
    /// for `history_max_bytes` so far.
    pub fn usage(&self) -> (usize, usize, u64) {
        (self.bytes, self.topics.len(), self.evicted)
    }
}

/// Empties `stream` and sets it at `epoch`, `top`; the bytes freed.
fn restart(stream: &mut Stream, epoch: Epoch, top: u64) -> usize {
    let freed = stream.bytes;
    stream.entries.clear();
    stream.bytes = 0;
    stream.epoch = epoch;
    stream.top = top;
    freed
}

/// Removes the oldest entry; the bytes freed.
fn pop(stream: &mut Stream) -> usize {
    match stream.entries.pop_front() {
        Some(e) => {
            let cost = ENTRY_OVERHEAD + e.frame.len();
            stream.bytes -= cost;
            cost
        }
        None => 0,
    }
}

/// Drops entries past `size` or older than `ttl` that every shard
/// delivered; the bytes freed.
fn settle(stream: &mut Stream, size: usize, now: Instant, ttl: Duration, everywhere: u64) -> usize {
    let mut freed = 0;
    while stream.entries.len() > size && stream.entries.front().is_some_and(|e| e.seq <= everywhere) {
        freed += pop(stream);
    }
    freed + expire(stream, now, ttl, everywhere)
}

/// Drops entries older than `ttl` that every shard delivered; the bytes freed.
fn expire(stream: &mut Stream, now: Instant, ttl: Duration, delivered: u64) -> usize {
    let mut freed = 0;
    while let Some(e) = stream.entries.front() {
        if e.seq > delivered || now.saturating_duration_since(e.at) < ttl {
            break;
        }
        freed += pop(stream);
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(size: usize) -> Limits {
        Limits {
            size,
            ttl: Duration::from_secs(300),
            max_bytes: 64 << 20,
            kinds: Kinds {
                all: true,
                types: true,
                users: true,
                rooms: true,
            },
        }
    }

    fn frame_of(p: &Position) -> Arc<[u8]> {
        Arc::from(format!("{}", p.offset).into_bytes())
    }

    fn publish(s: &mut Streams, topic: &str, delivered: u64) -> u64 {
        let seq = s.next_seq();
        s.append(topic, seq, Instant::now(), delivered, frame_of);
        seq
    }

    fn texts(frames: &[Arc<[u8]>]) -> Vec<String> {
        frames
            .iter()
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn offsets_count_up_and_recovery_returns_what_was_missed() {
        let mut s = Streams::new(limits(100));
        let (start, _) = s.join("all", None, 0, Instant::now(), &mut Vec::new());
        assert_eq!(start.offset, 0);
        let mut last = 0;
        for _ in 0..5 {
            last = publish(&mut s, "all", u64::MAX);
        }
        let mut out = Vec::new();
        let since = Position {
            offset: 2,
            ..start.clone()
        };
        let (here, rec) = s.join("all", Some(&since), last, Instant::now(), &mut out);
        assert_eq!(here, Position { offset: 5, ..start });
        assert_eq!(rec, Some(Recovery::Recovered { missed: 3 }));
        assert_eq!(texts(&out), ["3", "4", "5"]);
    }

    #[test]
    fn events_a_shard_has_not_delivered_yet_come_live_not_replayed() {
        let mut s = Streams::new(limits(100));
        let a = publish(&mut s, "all", 0);
        let _b = publish(&mut s, "all", 0);
        let mut out = Vec::new();
        let (here, _) = s.join("all", None, a, Instant::now(), &mut out);
        assert_eq!(here.offset, 1);
        let since = Position {
            offset: 0,
            epoch: here.epoch,
        };
        let (_, rec) = s.join("all", Some(&since), a, Instant::now(), &mut out);
        assert_eq!(rec, Some(Recovery::Recovered { missed: 1 }));
        assert_eq!(texts(&out), ["1"]);
    }

    #[test]
    fn entries_held_for_a_slower_shard_are_not_history() {
        let mut s = Streams::new(limits(5));
        let mut last = 0;
        for _ in 0..20 {
            // No shard has delivered anything yet: nothing may be dropped.
            last = publish(&mut s, "all", 0);
        }
        let epoch = s.join("all", None, last, Instant::now(), &mut Vec::new()).0.epoch;
        let at = |offset| Position { offset, epoch };
        let mut out = Vec::new();
        let (_, rec) = s.join("all", Some(&at(3)), last, Instant::now(), &mut out);
        assert_eq!(rec, Some(Recovery::Lost(reason::TOO_OLD)));
        assert!(out.is_empty());
        assert!(!s.covers("all", &at(3)));
        assert!(s.covers("all", &at(15)));
        let (_, rec) = s.join("all", Some(&at(15)), last, Instant::now(), &mut out);
        assert_eq!(rec, Some(Recovery::Recovered { missed: 5 }));
        assert_eq!(texts(&out), ["16", "17", "18", "19", "20"]);
        // A shard that has delivered only three stands at 3: the window
        // is the five up to there, and the rest comes live.
        let (here, rec) = s.join("all", Some(&at(0)), 3, Instant::now(), &mut out);
        assert_eq!((here.offset, rec), (3, Some(Recovery::Recovered { missed: 3 })));
        let range = s.range("all", 0, 100, Instant::now(), 0).unwrap();
        assert_eq!(range.first, 16);
        assert_eq!(texts(&range.frames), ["16", "17", "18", "19", "20"]);
    }

    #[test]
    fn lost_history_says_why() {
        let mut s = Streams::new(limits(3));
        for _ in 0..10 {
            publish(&mut s, "room:x", u64::MAX);
        }
        let mut out = Vec::new();
        let (here, _) = s.join("room:x", None, u64::MAX, Instant::now(), &mut out);
        let old = Position {
            offset: 2,
            epoch: here.epoch,
        };
        assert_eq!(
            s.join("room:x", Some(&old), u64::MAX, Instant::now(), &mut out).1,
            Some(Recovery::Lost(reason::TOO_OLD))
        );
        let edge = Position {
            offset: 7,
            epoch: here.epoch,
        };
        assert_eq!(
            s.join("room:x", Some(&edge), u64::MAX, Instant::now(), &mut out)
                .1,
            Some(Recovery::Recovered { missed: 3 })
        );
        let other = Position {
            offset: 7,
            epoch: Epoch::random(),
        };
        assert_eq!(
            s.join("room:x", Some(&other), u64::MAX, Instant::now(), &mut out)
                .1,
            Some(Recovery::Lost(reason::EPOCH_CHANGED))
        );
        let ahead = Position {
            offset: 11,
            epoch: here.epoch,
        };
        assert_eq!(
            s.join("room:x", Some(&ahead), u64::MAX, Instant::now(), &mut out)
                .1,
            Some(Recovery::Lost(reason::OFFSET_AHEAD))
        );
    }

    #[test]
    fn undelivered_entries_outlive_history_size() {
        let mut s = Streams::new(limits(1));
        for _ in 0..4 {
            publish(&mut s, "all", 0);
        }
        let (here, _) = s.join("all", None, 0, Instant::now(), &mut Vec::new());
        assert_eq!(here.offset, 0, "nothing delivered yet: position before all four");
        publish(&mut s, "all", u64::MAX);
        assert_eq!(
            s.range("all", 0, 10, Instant::now(), u64::MAX)
                .unwrap()
                .frames
                .len(),
            1
        );
    }

    #[test]
    fn eviction_changes_the_epoch_of_the_dropped_topic_only() {
        let mut l = limits(100);
        l.max_bytes = 2 * (STREAM_OVERHEAD + 8 + ENTRY_OVERHEAD + 4);
        let mut s = Streams::new(l);
        publish(&mut s, "user:a", u64::MAX);
        let (a_before, _) = s.join("user:a", None, u64::MAX, Instant::now(), &mut Vec::new());
        let (never, _) = s.join("user:zz", None, u64::MAX, Instant::now(), &mut Vec::new());
        assert_eq!(a_before.epoch, never.epoch, "first streams take the base epoch");
        publish(&mut s, "user:b", u64::MAX);
        publish(&mut s, "user:c", u64::MAX);
        assert!(s.usage().2 >= 1);
        publish(&mut s, "user:a", u64::MAX);
        let (a_after, _) = s.join("user:a", None, u64::MAX, Instant::now(), &mut Vec::new());
        assert_ne!(a_after.epoch, a_before.epoch);
        assert_eq!(a_after.offset, 1);
        let (never_again, _) = s.join("user:zz", None, u64::MAX, Instant::now(), &mut Vec::new());
        assert_eq!(never_again, never);
    }

    #[test]
    fn expired_entries_and_streams_go() {
        let mut l = limits(100);
        l.ttl = Duration::from_millis(1);
        let mut s = Streams::new(l);
        let seq = s.next_seq();
        let then = Instant::now() - Duration::from_secs(1);
        s.append("all", seq, then, u64::MAX, frame_of);
        s.sweep(Instant::now(), u64::MAX);
        assert_eq!(s.usage().1, 0);
        assert_eq!(s.usage().0, 0);
    }

    #[test]
    fn a_broker_fed_stream_takes_its_places_and_keeps_its_place_when_emptied() {
        let mut s = Streams::fed_by_broker(limits(3));
        let e = Epoch::random();
        // A first read: where the stream stands, and the events before it.
        let older = (5..=7)
            .map(|o| (o, Arc::from(format!("{o}").into_bytes())))
            .collect();
        s.remember("all", e, 7, Instant::now(), older);
        assert!(s.tracks("all"));
        assert!(s.covers("all", &Position { offset: 4, epoch: e }));
        assert!(!s.covers("all", &Position { offset: 3, epoch: e }));
        let seq = s.next_seq();
        s.place(
            "all",
            &Position { offset: 8, epoch: e },
            seq,
            Instant::now(),
            u64::MAX,
            frame_of,
        );
        let mut out = Vec::new();
        let since = Position { offset: 5, epoch: e };
        let (here, rec) = s.join("all", Some(&since), u64::MAX, Instant::now(), &mut out);
        assert_eq!(here.offset, 8);
        assert_eq!(rec, Some(Recovery::Recovered { missed: 3 }));
        assert_eq!(texts(&out), ["6", "7", "8"]);
        // A gap the broker could not fill restarts what is kept.
        let seq = s.next_seq();
        s.place(
            "all",
            &Position { offset: 12, epoch: e },
            seq,
            Instant::now(),
            u64::MAX,
            frame_of,
        );
        let (_, rec) = s.join("all", Some(&since), u64::MAX, Instant::now(), &mut Vec::new());
        assert_eq!(rec, Some(Recovery::Lost(reason::TOO_OLD)));
        // Expired entries go; the place stays until the broker forgets it.
        s.sweep(Instant::now() + Duration::from_secs(3600), u64::MAX);
        let (here, _) = s.join("all", None, u64::MAX, Instant::now(), &mut Vec::new());
        assert_eq!(here, Position { offset: 12, epoch: e });
        s.forget("all");
        assert!(!s.tracks("all"));
        assert_eq!(s.usage().0, 0);
    }

    #[test]
    fn kinds_parse_and_match() {
        let k = Kinds::parse(&["all".into(), "room:*".into()]).unwrap();
        assert!(k.keeps("all") && k.keeps("room:x"));
        assert!(!k.keeps("user:x") && !k.keeps("devices") && !k.keeps("device:x"));
        assert!(Kinds::parse(&["devices".into()]).is_err());
    }
}
