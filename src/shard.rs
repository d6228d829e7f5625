//! The state one core owns and every task of that shard receives: its
//! registry, connections, device table, clock and drain flag, plus handles
//! to what all shards share. Nothing here spawns a task or touches a
//! socket; the tasks that run a shard are in `serve`.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use slab::Slab;

use crate::auth::verify::Verifier;
use crate::config::Config;
use crate::conn::handle::{Conn, ConnSpec};
use crate::fanout::broadcast::{Broadcaster, Draft};
use crate::fanout::device_table::DeviceTable;
use crate::fanout::envelope::Position;
use crate::fanout::history::{reason, Recovery};
use crate::fanout::registry::Registry;
use crate::ops::refusal_log::RefusalLog;
use crate::ops::stats::{Board, ShardCounters};
use crate::proto::deflate::Codec;
use crate::tls::keys::Keys;
use crate::tls::session::Session;

/// Bytes one socket read may return; shared by every connection of the
/// shard, so an idle connection holds no read buffer of its own.
const SCRATCH_BYTES: usize = 64 * 1024;

/// Batches published from this shard's own tasks (client publishes, device
/// presence) waiting for room in the broadcast channels. Past it a client
/// publish is refused (`busy`) instead of growing without bound.
const LOCAL_PUBLISH_QUEUE: usize = 4096;

/// A batch published from a shard's own tasks, and when it was accepted.
pub type Queued = (Vec<Draft>, Instant);

/// What every shard shares (read-only, or `Send` handles).
pub struct Shared {
    pub config: Arc<Config>,
    pub board: Arc<Board>,
    pub broadcaster: Broadcaster,
    pub verifier: Arc<Verifier>,
    /// The certificate and key of the TLS ports, if any.
    pub tls: Option<Arc<Keys>>,
}

/// State owned by one shard (one executor thread).
pub struct Shard {
    pub id: usize,
    pub config: Arc<Config>,
    pub board: Arc<Board>,
    pub broadcaster: Broadcaster,
    pub verifier: Arc<Verifier>,
    pub tls: Option<Arc<Keys>>,
    /// Topic → this shard's subscribers.
    pub registry: RefCell<Registry>,
    /// Last known status frame of each device, kept by this shard's dispatcher.
    pub devices: RefCell<DeviceTable>,
    /// Ids handed out to connections and publish requests.
    next_id: Cell<u64>,
    /// Upgraded connections, by key.
    conns: RefCell<Slab<Rc<Conn>>>,
    /// Read buffer lent to whichever connection is reading.
    pub scratch: Rc<RefCell<Vec<u8>>>,
    /// Plaintext decrypted from one read of a TLS connection (reused).
    pub plain: Rc<RefCell<Vec<u8>>>,
    /// permessage-deflate's compressor and decompressor (`compression = on`).
    pub codec: Option<RefCell<Codec>>,
    /// Connections of this shard that negotiated permessage-deflate: while
    /// there are none, no event is compressed.
    deflate_conns: Cell<u32>,
    started: Instant,
    /// Whole seconds since the shard started, updated each tick.
    clock: Cell<u32>,
    draining: Cell<bool>,
    /// Publishes from this shard's tasks, drained by one task (`serve::runtime`).
    publishes: LocalSender<Queued>,
    /// When each refusal reason was last logged.
    refusals: RefCell<RefusalLog>,
    /// Refused sockets being drained before they close (see `serve::http`).
    lingering: Cell<u32>,
    /// Tasks waiting for this shard's dispatcher to deliver a batch.
    delivery_waiters: RefCell<Vec<Waker>>,
    /// Set while the dispatcher is part-way through a round.
    mid_round: Cell<bool>,
    /// Joins waiting for the round to end (see [`Shard::between_rounds`]).
    gap_waiters: RefCell<Vec<Waker>>,
    /// How many of those have yet to take their turn, and the dispatcher
    /// waiting for them to.
    gap_pending: Cell<usize>,
    gap_done: Cell<Option<Waker>>,
}

/// A client's last positions, from its `since` (topic, position).
pub type Since = [(String, Position)];

/// What joining its topics gave a new connection: where each topic with a
/// stream stands, what recovery did for each topic of `since`, and the
/// recovered frames, oldest first per topic.
#[derive(Default)]
pub struct Joined {
    pub positions: Vec<(String, Position)>,
    pub recovery: Vec<(String, Recovery)>,
    pub frames: Vec<Arc<[u8]>>,
}

impl Shard {
    /// Shard `id`'s state, and the receiving end of its local publish queue.
    pub fn new(id: usize, shared: Shared) -> (Shard, LocalReceiver<Queued>) {
        let (publishes, queued) = local_channel::new_bounded(LOCAL_PUBLISH_QUEUE);
        let codec = shared
            .config
            .compression
            .then(|| RefCell::new(Codec::new(shared.config.compression_level)));
        let shard = Shard {
            id,
            devices: RefCell::new(DeviceTable::new(shared.config.max_devices)),
            config: shared.config,
            board: shared.board,
            broadcaster: shared.broadcaster,
            verifier: shared.verifier,
            tls: shared.tls,
            registry: RefCell::new(Registry::default()),
            next_id: Cell::new(0),
            conns: RefCell::new(Slab::new()),
            scratch: Rc::new(RefCell::new(vec![0; SCRATCH_BYTES])),
            plain: Rc::new(RefCell::new(Vec::new())),
            codec,
            deflate_conns: Cell::new(0),
            started: Instant::now(),
            clock: Cell::new(0),
            draining: Cell::new(false),
            publishes,
            refusals: RefCell::new(RefusalLog::default()),
            lingering: Cell::new(0),
            delivery_waiters: RefCell::new(Vec::new()),
            mid_round: Cell::new(false),
            gap_waiters: RefCell::new(Vec::new()),
            gap_pending: Cell::new(0),
            gap_done: Cell::new(None),
        };
        (shard, queued)
    }

    pub fn clock(&self) -> u32 {
        self.clock.get()
    }

    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    pub fn close_timeout_secs(&self) -> u32 {
        secs(self.config.close_timeout)
    }

    pub fn counters(&self) -> &ShardCounters {
        self.board.shard(self.id)
    }

    /// Counts a refused request (`code`, answered `status`) and logs it at
    /// `info`, rate-limited per reason. `message` describes the request,
    /// never a token.
    pub fn refused(&self, status: u16, code: &str, message: &str) {
        self.counters().reject(code);
        let reason = crate::ops::labels::reject_reason(code);
        if let Some(count) = self.refusals.borrow_mut().note(reason, Instant::now()) {
            tracing::info!(
                shard = self.id,
                status,
                code,
                count,
                last = message,
                "requests refused"
            );
        }
    }

    /// A process-unique id: `<shard>-<n>`.
    pub fn next_id(&self) -> String {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        format!("{}-{n}", self.id)
    }

    /// Queues `events` for publishing from this shard (callers may be
    /// sync); false when the local queue is full (nothing queued).
    pub fn publish_later(&self, events: Vec<Draft>) -> bool {
        self.publishes.try_send((events, Instant::now())).is_ok()
    }

    /// Publishes a device's presence (`online` at upgrade, `offline` at
    /// close), the one place both are built; the device keeps the identity
    /// (MAC, serial) it last reported.
    pub fn announce_presence(&self, device: &str, status: &str) {
        if let Some(remote) = self.broadcaster.remote() {
            remote.presence(device, status == "online");
        }
        let now = crate::time::now_rfc3339();
        let bare =
            crate::fanout::devices::presence(status, self.devices.borrow().get(device).map(|f| &f[..]));
        if let Ok(events) = crate::fanout::devices::events(device, &bare, &now, usize::MAX) {
            if !self.publish_later(events) {
                tracing::warn!(
                    shard = self.id,
                    status,
                    "local publish queue full: presence not published"
                );
            }
        }
    }

    /// Unsubscribes `conn` from `topic`; false if it was not subscribed.
    pub fn unsubscribe(&self, conn: &Conn, topic: &str) -> bool {
        let mut registry = self.registry.borrow_mut();
        let Some(id) = registry.id(topic) else {
            return false;
        };
        let mut subs = conn.subscriptions.borrow_mut();
        let Some(pos) = subs.iter().position(|s| s.topic == id) else {
            return false;
        };
        let mut list = std::mem::take(&mut *subs).into_vec();
        if let Some(gone) = registry.unsubscribe(list.swap_remove(pos)) {
            self.broadcaster.interest(&gone, false);
        }
        *subs = list.into_boxed_slice();
        true
    }

    /// The last batch this shard's dispatcher delivered in full.
    pub fn delivered(&self) -> u64 {
        self.broadcaster.sequencer().delivered(self.id)
    }

    /// Called by the dispatcher after each round: every batch up to `seq`
    /// is delivered; wakes whoever waited for it.
    pub fn mark_delivered(&self, seq: u64) {
        self.broadcaster.sequencer().set_delivered(self.id, seq);
        for waker in self.delivery_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Whether the dispatcher is part-way through a round.
    pub fn mid_round(&self) -> bool {
        self.mid_round.get()
    }

    /// Called by the dispatcher before it delivers a round in steps.
    pub fn round_started(&self) {
        self.mid_round.set(true);
    }

    /// Called by the dispatcher after a round: lets every join that waited
    /// for it take its turn before the next round starts.
    pub async fn round_ended(&self) {
        self.mid_round.set(false);
        let waiters = std::mem::take(&mut *self.gap_waiters.borrow_mut());
        if waiters.is_empty() {
            return;
        }
        for waker in waiters {
            waker.wake();
        }
        std::future::poll_fn(|cx| {
            if self.gap_pending.get() == 0 {
                return Poll::Ready(());
            }
            self.gap_done.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Resolves when the dispatcher is between rounds (at once, unless it
    /// is part-way through one): a join must happen there, or the joiner
    /// would be told positions before events the round gives only to some
    /// subscribers. The caller joins in the same turn, with no await in
    /// between.
    pub fn between_rounds(&self) -> Gap<'_> {
        Gap {
            shard: self,
            waiting: false,
        }
    }

    /// One fewer join waits for the gap between rounds.
    fn gap_taken(&self) {
        let left = self.gap_pending.get().saturating_sub(1);
        self.gap_pending.set(left);
        if left == 0 {
            if let Some(waker) = self.gap_done.take() {
                waker.wake();
            }
        }
    }

    /// The batch that carried the newest event of `since` still kept.
    fn needed_for(&self, since: &Since) -> u64 {
        let streams = self.broadcaster.sequencer().streams();
        since
            .iter()
            .filter_map(|(topic, p)| streams.seq_of(topic, p))
            .max()
            .unwrap_or(0)
    }

    /// Whether this shard has yet to deliver an event the client saw at
    /// its `since` positions (see [`Shard::catch_up`]).
    pub fn behind(&self, since: &Since) -> bool {
        !since.is_empty() && self.needed_for(since) > self.delivered()
    }

    /// What a client joining `topics` from `since` needs from the broker
    /// first (nothing without one): topics the node does not follow yet,
    /// and topics whose `since` is older than what the node keeps, each
    /// with the offset to read its stream after.
    pub fn to_warm(&self, topics: &[String], since: &Since) -> Vec<(String, Option<u64>)> {
        let Some(remote) = self.broadcaster.remote() else {
            return Vec::new();
        };
        let streams = self.broadcaster.sequencer().streams();
        topics
            .iter()
            .filter_map(|topic| {
                let asked = since.iter().find(|(t, _)| t == topic).map(|(_, p)| p);
                let keeps = streams.keeps(topic);
                let known = remote.follows(topic) && (!keeps || streams.tracks(topic));
                let covered = asked.is_none_or(|p| !keeps || streams.covers(topic, p));
                (!known || !covered).then(|| (topic.clone(), asked.filter(|_| keeps).map(|p| p.offset)))
            })
            .collect()
    }

    /// Everything a join of `topics` from `since` waits for: the broker's
    /// streams ([`Shard::to_warm`]), then this shard's delivery
    /// ([`Shard::catch_up`]).
    pub async fn prepare(&self, topics: &[String], since: &Since) {
        let warm = self.to_warm(topics, since);
        if let (Some(remote), false) = (self.broadcaster.remote(), warm.is_empty()) {
            remote.warm(warm).await;
            // What the broker handed the shards for it (a gap filled, the
            // devices' last statuses) is here before the join.
            let sealed = self.broadcaster.sequencer().streams().last_seq();
            self.delivered_up_to(sealed).await;
        }
        if !since.is_empty() {
            self.catch_up(since).await;
        }
    }

    /// Whether a join of `topics` from `since` must wait ([`Shard::prepare`]).
    pub fn must_prepare(&self, topics: &[String], since: &Since) -> bool {
        self.behind(since) || !self.to_warm(topics, since).is_empty()
    }

    /// Waits until this shard has delivered every event a client saw at
    /// its `since` positions (it may have seen them first on another
    /// shard): joining before that would deliver them to it twice.
    pub async fn catch_up(&self, since: &Since) {
        self.delivered_up_to(self.needed_for(since)).await
    }

    /// Waits until this shard has delivered every batch up to `needed`.
    async fn delivered_up_to(&self, needed: u64) {
        std::future::poll_fn(|cx| {
            if self.delivered() >= needed {
                return Poll::Ready(());
            }
            self.delivery_waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Subscribes a new connection to `topics` and tells it where each
    /// stands and, for `since`, what it missed. One synchronous step
    /// between dispatcher rounds: every event up to the positions given is
    /// in the returned frames or was before `since`, every later one
    /// arrives live; none twice, none lost.
    pub fn join(&self, conn: &Rc<Conn>, topics: &[String], since: &Since) -> Joined {
        let mut joined = Joined::default();
        let delivered = self.delivered();
        let now = Instant::now();
        let everywhere = self.broadcaster.sequencer().delivered_everywhere();
        let mut streams = self.broadcaster.sequencer().streams();
        for topic in topics {
            self.subscribe(conn, topic);
            streams.settle(topic, now, everywhere);
            let asked = since.iter().find(|(t, _)| t == topic).map(|(_, p)| p);
            if streams.keeps(topic) {
                let (here, recovery) = streams.join(topic, asked, delivered, now, &mut joined.frames);
                joined.positions.push((topic.clone(), here));
                if let Some(r) = recovery {
                    joined.recovery.push((topic.clone(), r));
                }
            } else if asked.is_some() {
                joined
                    .recovery
                    .push((topic.clone(), Recovery::Lost(reason::NO_HISTORY)));
            }
        }
        for (topic, _) in since.iter().filter(|(t, _)| !topics.contains(t)) {
            joined
                .recovery
                .push((topic.clone(), Recovery::Lost(reason::NOT_SUBSCRIBED)));
        }
        joined
    }

    /// Subscribes `conn` to `topic` (once).
    fn subscribe(&self, conn: &Rc<Conn>, topic: &str) {
        let mut registry = self.registry.borrow_mut();
        let mut subs = conn.subscriptions.borrow_mut();
        if let Some(id) = registry.id(topic) {
            if subs.iter().any(|s| s.topic == id) {
                return;
            }
        }
        let mut list = std::mem::take(&mut *subs).into_vec();
        list.push(registry.subscribe(topic, conn));
        *subs = list.into_boxed_slice();
        if registry.subscribers(topic).is_some_and(|s| s.len() == 1) {
            self.broadcaster.interest(topic, true);
        }
    }

    /// Adds an upgraded connection, made whole from `spec`; returns it with
    /// its key set.
    pub fn register(&self, fd: RawFd, spec: ConnSpec, tls: Option<Session>) -> Rc<Conn> {
        let mut conns = self.conns.borrow_mut();
        let entry = conns.vacant_entry();
        let conn = Rc::new(Conn::new(entry.key() as u32, fd, self.clock(), spec, tls));
        entry.insert(conn.clone());
        if conn.deflate() != 0 {
            self.deflate_conns.set(self.deflate_conns.get() + 1);
        }
        self.board.shard(self.id).opened(conn.client_type());
        tracing::debug!(shard = self.id, conn = conn.key, "connection opened");
        conn
    }

    /// Removes a connection whose driver has ended.
    pub fn unregister(&self, conn: &Conn) {
        let subs = std::mem::take(&mut *conn.subscriptions.borrow_mut());
        let mut registry = self.registry.borrow_mut();
        for &sub in subs.iter() {
            if let Some(gone) = registry.unsubscribe(sub) {
                self.broadcaster.interest(&gone, false);
            }
        }
        drop(registry);
        if self.conns.borrow_mut().try_remove(conn.key as usize).is_some() {
            if conn.deflate() != 0 {
                self.deflate_conns.set(self.deflate_conns.get() - 1);
            }
            self.board
                .shard(self.id)
                .closed(conn.client_type(), conn.close_reason() as u8);
            tracing::debug!(shard = self.id, conn = conn.key, "connection closed");
        }
    }

    /// Whether any connection of this shard negotiated permessage-deflate.
    pub fn compresses(&self) -> bool {
        self.deflate_conns.get() > 0
    }

    pub fn connection_count(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Calls `f` with every connection (it must not register or unregister).
    pub fn for_each_conn(&self, mut f: impl FnMut(&Conn)) {
        for (_, conn) in self.conns.borrow().iter() {
            f(conn);
        }
    }

    /// Advances the shard clock to the whole seconds since start; returns it.
    pub fn tick_clock(&self) -> u32 {
        let now = self.started.elapsed().as_secs() as u32;
        self.clock.set(now);
        now
    }

    /// Takes one of `max` places for a refused socket to linger in; false
    /// when all are taken (the socket is then closed at once).
    pub fn try_linger(&self, max: u32) -> bool {
        let n = self.lingering.get();
        (n < max).then(|| self.lingering.set(n + 1)).is_some()
    }

    /// Gives back a place taken with [`Shard::try_linger`].
    pub fn end_linger(&self) {
        self.lingering.set(self.lingering.get().saturating_sub(1));
    }

    /// From now on, refuse new work (the drain has begun).
    pub fn start_draining(&self) {
        self.draining.set(true);
    }
}

/// A join waiting for the gap between two dispatcher rounds
/// ([`Shard::between_rounds`]). The dispatcher does not start the next
/// round until every waiter it woke has taken its turn or was dropped.
pub struct Gap<'a> {
    shard: &'a Shard,
    /// Counted in `gap_pending`.
    waiting: bool,
}

impl std::future::Future for Gap<'_> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let shard = self.shard;
        if !shard.mid_round.get() {
            if std::mem::take(&mut self.waiting) {
                shard.gap_taken();
            }
            return Poll::Ready(());
        }
        if !self.waiting {
            self.waiting = true;
            shard.gap_pending.set(shard.gap_pending.get() + 1);
            shard.counters().join_deferred();
        }
        shard.gap_waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Gap<'_> {
    fn drop(&mut self) {
        if self.waiting {
            self.shard.gap_taken();
        }
    }
}

/// `d` in whole seconds of the shard clock, at least 1.
pub fn secs(d: Duration) -> u32 {
    d.as_secs_f64().ceil().clamp(1.0, u32::MAX as f64) as u32
}
