//! Connection counts across shards: each shard writes only its own padded
//! counters; `/ws/stats` and `/health` sum them when asked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use serde::Serialize;

/// One shard's counters, on their own cache lines so shards never share one.
#[repr(align(128))]
pub struct ShardCounters {
    connections: AtomicU64,
    /// Connections ever opened.
    opened: AtomicU64,
    /// Connections closed, by `CloseReason` index.
    closed_by: Box<[AtomicU64]>,
    /// Frames not delivered, by `labels::DROP_REASONS` index.
    dropped: [AtomicU64; 3],
    /// Bytes in outbound queues (set by the shard's sweeper).
    queued_bytes: AtomicU64,
    by_type: Box<[AtomicU64]>,
    /// Events this shard's dispatcher received.
    events: AtomicU64,
    /// Frames handed to local connections (written or queued).
    deliveries: AtomicU64,
    /// Connections closed with 1008 "slow consumer".
    slow_consumers: AtomicU64,
    /// Rooms with a subscriber on this shard (set by the shard's sweeper).
    rooms: AtomicU64,
    /// Requests refused, by `labels::REJECT_REASONS` index.
    rejected: Box<[AtomicU64]>,
    /// Devices whose last status was forgotten (`max_devices`).
    devices_forgotten: AtomicU64,
    /// Client publishes refused by the per-connection rate limit.
    rate_limited: AtomicU64,
    /// Times the dispatcher gave the core back part-way through a round.
    dispatch_yields: AtomicU64,
    /// Joins that waited for the dispatcher's round to end.
    joins_deferred: AtomicU64,
    /// permessage-deflate: frames handed to connections compressed, and
    /// the payload bytes of the events compressed before and after.
    compressed_frames: AtomicU64,
    deflate_in: AtomicU64,
    deflate_out: AtomicU64,
    /// Latency histograms.
    latencies: crate::ops::latency::Latencies,
}

impl ShardCounters {
    /// A WebSocket connection opened (`client_type` indexes `Board::client_types`).
    pub fn opened(&self, client_type: Option<u16>) {
        self.connections.fetch_add(1, Relaxed);
        self.opened.fetch_add(1, Relaxed);
        if let Some(c) = client_type.and_then(|i| self.by_type.get(i as usize)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// A WebSocket connection closed, for `reason` (a `CloseReason` index).
    pub fn closed(&self, client_type: Option<u16>, reason: u8) {
        self.connections.fetch_sub(1, Relaxed);
        if let Some(c) = self.closed_by.get(reason as usize) {
            c.fetch_add(1, Relaxed);
        }
        if let Some(c) = client_type.and_then(|i| self.by_type.get(i as usize)) {
            c.fetch_sub(1, Relaxed);
        }
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Relaxed)
    }

    pub fn opened_total(&self) -> u64 {
        self.opened.load(Relaxed)
    }

    /// Connections closed for `CloseReason::ALL[reason]`.
    pub fn closed_by(&self, reason: usize) -> u64 {
        self.closed_by.get(reason).map_or(0, |c| c.load(Relaxed))
    }

    /// Frames dropped for `labels::DROP_REASONS[reason]`.
    pub fn dropped(&self, reason: usize) -> u64 {
        self.dropped.get(reason).map_or(0, |c| c.load(Relaxed))
    }

    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Relaxed)
    }

    /// Sets this shard's queued byte count.
    pub fn set_queued_bytes(&self, bytes: u64) {
        self.queued_bytes.store(bytes, Relaxed);
    }

    /// Connections of client type `i` on this shard.
    pub fn of_type(&self, i: usize) -> u64 {
        self.by_type.get(i).map_or(0, |c| c.load(Relaxed))
    }

    /// (events, deliveries, slow consumers).
    pub fn delivery_counts(&self) -> (u64, u64, u64) {
        (
            self.events.load(Relaxed),
            self.deliveries.load(Relaxed),
            self.slow_consumers.load(Relaxed),
        )
    }

    /// Counts a refused request with code `code`.
    pub fn reject(&self, code: &str) {
        self.rejected[crate::ops::labels::reject_reason(code)].fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, reason: usize) -> u64 {
        self.rejected[reason].load(Relaxed)
    }

    /// `n` devices forgotten to stay within `max_devices`.
    pub fn devices_forgotten(&self, n: u64) {
        self.devices_forgotten.fetch_add(n, Relaxed);
    }

    pub fn devices_forgotten_total(&self) -> u64 {
        self.devices_forgotten.load(Relaxed)
    }

    /// A client publish refused by the rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    pub fn rate_limited_total(&self) -> u64 {
        self.rate_limited.load(Relaxed)
    }

    /// The dispatcher yielded part-way through a round.
    pub fn dispatch_yielded(&self) {
        self.dispatch_yields.fetch_add(1, Relaxed);
    }

    pub fn dispatch_yields_total(&self) -> u64 {
        self.dispatch_yields.load(Relaxed)
    }

    /// A join waited for the end of a dispatcher round.
    pub fn join_deferred(&self) {
        self.joins_deferred.fetch_add(1, Relaxed);
    }

    pub fn joins_deferred_total(&self) -> u64 {
        self.joins_deferred.load(Relaxed)
    }

    /// One event compressed by this shard: payload bytes before and after.
    pub fn compressed(&self, before: usize, after: usize) {
        self.deflate_in.fetch_add(before as u64, Relaxed);
        self.deflate_out.fetch_add(after as u64, Relaxed);
    }

    pub fn compressed_frames_total(&self) -> u64 {
        self.compressed_frames.load(Relaxed)
    }

    pub fn deflate_in_total(&self) -> u64 {
        self.deflate_in.load(Relaxed)
    }

    pub fn deflate_out_total(&self) -> u64 {
        self.deflate_out.load(Relaxed)
    }

    /// Sets this shard's live room count.
    pub fn set_rooms(&self, rooms: usize) {
        self.rooms.store(rooms as u64, Relaxed);
    }

    /// One dispatch round: once per round, never per delivery.
    pub fn delivered(&self, events: u64, done: Delivered) {
        self.events.fetch_add(events, Relaxed);
        self.deliveries.fetch_add(done.frames, Relaxed);
        if done.compressed > 0 {
            self.compressed_frames.fetch_add(done.compressed, Relaxed);
        }
        if done.slow_consumers > 0 {
            self.slow_consumers.fetch_add(done.slow_consumers, Relaxed);
        }
        for (counter, n) in self.dropped.iter().zip(done.dropped) {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }
}

/// What one round of delivery did, for the shard's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Frames handed to connections (written or queued).
    pub frames: u64,
    /// Of those, frames sent compressed (permessage-deflate).
    pub compressed: u64,
    /// Connections closed as slow consumers.
    pub slow_consumers: u64,
    /// Frames not delivered, by `metrics::DROP_REASONS` index: superseded
    /// statuses (conflated), a slow consumer's backlog, closing connections.
    pub dropped: [u64; 3],
}

/// Every shard's counters plus what is needed to describe them.
pub struct Board {
    shards: Box<[ShardCounters]>,
    /// Connections per user (token `sub`), kept only when a per-user limit is
    /// configured. Touched once per connect and close, never per delivery.
    users: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// WebSocket connections admitted (from the limit check to the close),
    /// so concurrent handshakes on every shard cannot overshoot
    /// `max_connections`. Touched once per connect and close.
    admitted: AtomicU64,
    /// Accepted sockets on the public port (HTTP and WebSocket), from
    /// accept to close, against `max_sockets`.
    sockets: AtomicU64,
    client_types: Vec<String>,
    started: Instant,
    /// Topic histories: bytes held, streams, streams evicted (set by the
    /// history sweep every tick).
    history: [AtomicU64; 3],
    /// With a broker: this node's id and every live node of the cluster
    /// (set by the broker thread each tick).
    cluster: std::sync::Mutex<Option<Cluster>>,
    /// The TLS port, when one is configured.
    pub tls: TlsBoard,
}

/// The TLS port's facts for /metrics: how records are made (set once at
/// start-up), reloads by outcome, the certificate's `notAfter`.
#[derive(Default)]
pub struct TlsBoard {
    pub mode: std::sync::OnceLock<&'static str>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    pub not_after: AtomicU64,
}

/// The cluster as the broker last read it.
#[derive(Serialize, Clone)]
pub struct Cluster {
    pub node: String,
    pub nodes: Vec<NodeSeen>,
}

/// One node of the cluster: its id, its connections, and how long ago it
/// last reported (milliseconds).
#[derive(Serialize, Clone)]
pub struct NodeSeen {
    pub id: String,
    pub connections: u64,
    pub last_seen_ms: u64,
}

#[derive(Serialize)]
struct ShardStats {
    shard: usize,
    connections: u64,
    events: u64,
    deliveries: u64,
    slow_consumers: u64,
    rooms: u64,
}

#[derive(Serialize)]
struct Stats<'a> {
    total: u64,
    by_type: BTreeMap<&'a str, u64>,
    rooms: u64,
    shards: Vec<ShardStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<Cluster>,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    shards: usize,
    connections: u64,
    uptime_secs: u64,
    /// With a broker: `connected` or `unreachable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<&'static str>,
}

impl Board {
    pub fn new(shards: usize, client_types: Vec<String>) -> Board {
        let shards = (0..shards)
            .map(|_| ShardCounters {
                connections: AtomicU64::new(0),
                opened: AtomicU64::new(0),
                closed_by: crate::proto::close::CloseReason::ALL
                    .iter()
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                dropped: Default::default(),
                queued_bytes: AtomicU64::new(0),
                by_type: client_types.iter().map(|_| AtomicU64::new(0)).collect(),
                events: AtomicU64::new(0),
                deliveries: AtomicU64::new(0),
                slow_consumers: AtomicU64::new(0),
                rooms: AtomicU64::new(0),
                rejected: crate::ops::labels::REJECT_REASONS
                    .iter()
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                devices_forgotten: AtomicU64::new(0),
                rate_limited: AtomicU64::new(0),
                dispatch_yields: AtomicU64::new(0),
                joins_deferred: AtomicU64::new(0),
                compressed_frames: AtomicU64::new(0),
                deflate_in: AtomicU64::new(0),
                deflate_out: AtomicU64::new(0),
                latencies: crate::ops::latency::Latencies::default(),
            })
            .collect();
        Board {
            shards,
            admitted: AtomicU64::new(0),
            sockets: AtomicU64::new(0),
            users: std::sync::Mutex::new(std::collections::HashMap::new()),
            client_types,
            started: Instant::now(),
            history: Default::default(),
            cluster: std::sync::Mutex::new(None),
            tls: TlsBoard::default(),
        }
    }

    /// Records the cluster as the broker read it.
    pub fn set_cluster(&self, cluster: Cluster) {
        *self.cluster.lock().unwrap_or_else(|e| e.into_inner()) = Some(cluster);
    }

    /// Records the topic histories' usage: bytes, streams, evictions so far.
    pub fn set_history(&self, bytes: u64, streams: u64, evicted: u64) {
        for (slot, v) in self.history.iter().zip([bytes, streams, evicted]) {
            slot.store(v, Relaxed);
        }
    }

    /// Bytes, streams and evictions of the topic histories (last sweep).
    pub fn history(&self) -> [u64; 3] {
        self.history.each_ref().map(|a| a.load(Relaxed))
    }

    pub fn shard(&self, id: usize) -> &ShardCounters {
        &self.shards[id]
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub fn client_types(&self) -> &[String] {
        &self.client_types
    }

    pub fn latencies(&self, shard: usize) -> &crate::ops::latency::Latencies {
        &self.shards[shard].latencies
    }

    /// Index of `name` among the configured client types.
    pub fn client_type_index(&self, name: &str) -> Option<u16> {
        self.client_types.iter().position(|t| t == name).map(|i| i as u16)
    }

    /// Connections of client type `index` across shards.
    pub fn of_type(&self, index: u16) -> u64 {
        self.shards
            .iter()
            .map(|s| s.by_type.get(index as usize).map_or(0, |c| c.load(Relaxed)))
            .sum()
    }

    /// Admits one more connection unless `max` (0: no limit) are admitted.
    pub fn try_admit(&self, max: u64) -> bool {
        take_one(&self.admitted, max)
    }

    /// Gives back an admission taken with [`Board::try_admit`].
    pub fn leave(&self) {
        give_back(&self.admitted);
    }

    /// Counts one more accepted socket unless `max` (0: no limit) are open.
    pub fn try_open_socket(&self, max: u64) -> bool {
        take_one(&self.sockets, max)
    }

    /// A socket counted by [`Board::try_open_socket`] closed.
    pub fn close_socket(&self) {
        give_back(&self.sockets);
    }

    pub fn open_sockets(&self) -> u64 {
        self.sockets.load(Relaxed)
    }

    /// Takes one of `user`'s `max` connection slots; false when all are taken.
    pub fn take_user_slot(&self, user: &str, max: u32) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let n = users.entry(user.to_string()).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back a slot taken with [`Board::take_user_slot`].
    pub fn release_user_slot(&self, user: &str) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                users.remove(user);
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.shards.iter().map(ShardCounters::connections).sum()
    }

    /// `/ws/stats` body.
    pub fn stats_json(&self) -> String {
        let by_type = self
            .client_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    t.as_str(),
                    self.shards.iter().map(|s| s.by_type[i].load(Relaxed)).sum(),
                )
            })
            .collect();
        let stats = Stats {
            total: self.total(),
            by_type,
            // A room with members on two shards counts once per shard.
            rooms: self.shards.iter().map(|s| s.rooms.load(Relaxed)).sum(),
            shards: self
                .shards
                .iter()
                .enumerate()
                .map(|(shard, s)| ShardStats {
                    shard,
                    connections: s.connections(),
                    events: s.events.load(Relaxed),
                    deliveries: s.deliveries.load(Relaxed),
                    slow_consumers: s.slow_consumers.load(Relaxed),
                    rooms: s.rooms.load(Relaxed),
                })
                .collect(),
            cluster: self.cluster.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        };
        simd_json::to_string(&stats).unwrap_or_default()
    }

    /// `/health` body; `draining` while shutting down.
    /// `broker`: whether the broker is reachable, when there is one
    /// (unreachable: `degraded`).
    pub fn health_json(&self, draining: bool, broker: Option<bool>) -> String {
        let health = Health {
            status: match (draining, broker) {
                (true, _) => "draining",
                (false, Some(false)) => "degraded",
                _ => "ok",
            },
            shards: self.shards.len(),
            connections: self.total(),
            uptime_secs: self.started.elapsed().as_secs(),
            broker: broker.map(|up| if up { "connected" } else { "unreachable" }),
        };
        simd_json::to_string(&health).unwrap_or_default()
    }
}

/// Adds one to `counter` unless `max` (0: no limit) is reached: exact
/// across shards, with no lock.
fn take_one(counter: &AtomicU64, max: u64) -> bool {
    counter
        .fetch_update(Relaxed, Relaxed, |n| (max == 0 || n < max).then_some(n + 1))
        .is_ok()
}

/// Takes one back from `counter`, never below zero.
fn give_back(counter: &AtomicU64) {
    let _ = counter.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_sum_shards_and_types() {
        let board = Board::new(2, vec!["user".into(), "shop".into()]);
        board.shard(0).opened(Some(0));
        board.shard(1).opened(Some(0));
        board.shard(1).opened(None);
        board.shard(1).closed(None, 0);
        assert_eq!(
            board.stats_json(),
            r#"{"total":2,"by_type":{"shop":0,"user":2},"rooms":0,"shards":[{"shard":0,"connections":1,"events":0,"deliveries":0,"slow_consumers":0,"rooms":0},{"shard":1,"connections":1,"events":0,"deliveries":0,"slow_consumers":0,"rooms":0}]}"#
        );
    }
}
