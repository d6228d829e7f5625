//! The Redis broker thread: one current-thread tokio runtime running
//! redis-rs, joined to the shards by flume both ways. It publishes each
//! batch in one Lua step, follows the topics this node's shards have
//! subscribers of (batched SUBSCRIBE/UNSUBSCRIBE), hands what arrives to
//! every shard once, fills gaps from each topic's stream, probes its own
//! subscription, and reconnects with backoff when Redis goes away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, Script, Value};

use crate::broker::script::{self, Names, META_TTL_SECS};
use crate::broker::track::{Live, Read, Step, Track};
use crate::fanout::broadcast::{self, Arrived, Broadcaster, Content, Draft};
use crate::fanout::devices;
use crate::fanout::envelope::{Epoch, Position};
use crate::fanout::remote::{Command, Outgoing, Remote, Unavailable};
use crate::ops::stats::{Board, Cluster, NodeSeen};

/// How long one Redis request may take before the publish is refused.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect backoff, first and longest.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A probe goes through the node's own subscription this often; one that
/// has not come back after `PROBE_DEADLINE` means the subscription is wedged.
const TICK: Duration = Duration::from_millis(500);
const PROBE_DEADLINE: Duration = Duration::from_secs(5);
/// A topic no shard has subscribers of is unfollowed after this long.
const IDLE_GRACE: Duration = Duration::from_secs(2);
/// Channel messages handled (and delivered as one batch) per round.
const MAX_ROUND: usize = 1024;
/// A node that has not reported for this long is gone from the cluster.
const NODE_TTL: Duration = Duration::from_secs(5);
/// Channels per SUBSCRIBE / UNSUBSCRIBE.
const CHANNELS_PER_CALL: usize = 1000;

/// What the thread needs.
pub struct Setup {
    pub client: Client,
    pub prefix: String,
    pub broadcaster: Broadcaster,
    pub remote: Arc<Remote>,
    pub commands: flume::Receiver<Command>,
    /// `history_size` and `history_ttl`.
    pub size: usize,
    pub ttl: Duration,
    /// This node's counters (reported to the cluster) and the cluster (read back).
    pub board: Arc<Board>,
}

/// A read of a topic's stream, or of device statuses, came back.
struct Filled {
    topic: Box<str>,
    read: Option<Read>,
    /// Last known statuses (bodies) for a device topic's first follow.
    statuses: Option<Vec<Vec<u8>>>,
}

struct Broker {
    names: Names,
    broadcaster: Broadcaster,
    remote: Arc<Remote>,
    size: usize,
    ttl_secs: u64,
    node: String,
    tracks: HashMap<Box<str>, Track>,
    publisher: Publisher,
    read: Arc<Script>,
    release: Arc<Script>,
    filled_tx: flume::Sender<Filled>,
    board: Arc<Board>,
}

/// Why a session with Redis ended.
enum Lost {
    Closed,
    Error(redis::RedisError),
    Wedged,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Closed => f.write_str("connection closed"),
            Lost::Error(e) => write!(f, "{e}"),
            Lost::Wedged => f.write_str("the subscription stopped delivering (probe lost)"),
        }
    }
}

/// Runs the broker until the process ends.
pub async fn run(setup: Setup) {
    let (filled_tx, filled_rx) = flume::unbounded();
    let mut broker = Broker {
        names: Names::new(&setup.prefix),
        broadcaster: setup.broadcaster,
        remote: setup.remote,
        size: setup.size.max(1),
        ttl_secs: setup.ttl.as_secs().max(1),
        node: Epoch::random().as_str().to_string(),
        tracks: HashMap::new(),
        publisher: Publisher {
            script: Arc::new(Script::new(script::PUBLISH)),
            names: Names::new(&setup.prefix),
            size: setup.size.max(1),
            ttl_secs: setup.ttl.as_secs().max(1),
        },
        read: Arc::new(Script::new(script::READ)),
        release: Arc::new(Script::new(script::RELEASE)),
        filled_tx,
        board: setup.board,
    };
    let commands = setup.commands;
    let mut backoff = BACKOFF_MIN;
    let mut was_up = false;
    loop {
        match connect(&setup.client).await {
            Ok((cmd, sink, stream)) => {
                backoff = BACKOFF_MIN;
                let lost = broker.session(cmd, sink, stream, &commands, &filled_rx).await;
                tracing::warn!(reason = %lost, "broker connection lost; reconnecting");
                was_up = true;
            }
            Err(error) => {
                if was_up || backoff == BACKOFF_MIN {
                    tracing::warn!(%error, "broker unreachable; retrying");
                }
                was_up = false;
            }
        }
        broker.remote.set_up(false);
        broker.lost();
        // Down: refuse publishes, let joins go on, count interest.
        let until = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                c = commands.recv_async() => match c {
                    Ok(c) => broker.while_down(c),
                    Err(_) => return,
                },
                f = filled_rx.recv_async() => if let Ok(f) = f {
                    broker.answer_waiters(&f.topic);
                },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn connect(client: &Client) -> redis::RedisResult<(MultiplexedConnection, PubSubSink, PubSubStream)> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REQUEST_TIMEOUT))
        .set_response_timeout(Some(REQUEST_TIMEOUT));
    let cmd = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let pubsub = tokio::time::timeout(REQUEST_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
    let (sink, stream) = pubsub.split();
    Ok((cmd, sink, stream))
}

impl Broker {
    /// One connection's life: resubscribe and refill every followed topic,
    /// then serve until the connection is lost.
    async fn session(
        &mut self,
        cmd: MultiplexedConnection,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        commands: &flume::Receiver<Command>,
        filled: &flume::Receiver<Filled>,
    ) -> Lost {
        let probe = self.names.probe(&self.node);
        if let Err(e) = sink.subscribe(&probe).await {
            return Lost::Error(e);
        }
        let topics: Vec<Box<str>> = self.tracks.keys().cloned().collect();
        if let Err(e) = self.subscribe(&mut sink, &topics).await {
            return Lost::Error(e);
        }
        for topic in &topics {
            if let Some(t) = self.tracks.get_mut(topic) {
                if t.keep {
                    // Whatever was published while the node was away.
                    let after = t.top;
                    let first = t.epoch.is_none();
                    t.filling = true;
                    self.fill(&cmd, topic, after, if first { 0 } else { self.size });
                }
            }
        }
        self.remote.set_up(true);
        tracing::info!(topics = topics.len(), "broker connected");
        let mut last_probe = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(first) = msg else { return Lost::Closed };
                    let mut round = vec![first];
                    while round.len() < MAX_ROUND {
                        match futures_lite::future::poll_once(stream.next()).await {
                            Some(Some(m)) => round.push(m),
                            Some(None) => return Lost::Closed,
                            None => break,
                        }
                    }
                    // Anything arriving shows the subscription is alive
                    // (under load the probe may queue behind events).
                    last_probe = Instant::now();
                    let mut arrivals = Vec::new();
                    for m in &round {
                        if m.get_channel_name() != probe {
                            self.live(&cmd, m.get_channel_name(), m.get_payload_bytes(), &mut arrivals);
                        }
                    }
                    self.deliver(arrivals).await;
                }
                c = commands.recv_async() => {
                    let Ok(first) = c else { return Lost::Closed };
                    let mut batch = vec![first];
                    while let Ok(c) = commands.try_recv() {
                        batch.push(c);
                        if batch.len() >= MAX_ROUND {
                            break;
                        }
                    }
                    if let Err(e) = self.commands(&cmd, &mut sink, batch).await {
                        return Lost::Error(e);
                    }
                }
                f = filled.recv_async() => {
                    if let Ok(f) = f {
                        self.merge(&cmd, f).await;
                    }
                }
                _ = tick.tick() => {
                    if last_probe.elapsed() > PROBE_DEADLINE {
                        return Lost::Wedged;
                    }
                    let mut c = cmd.clone();
                    let channel = probe.clone();
                    tokio::spawn(async move {
                        let _: redis::RedisResult<Value> = redis::cmd("PUBLISH").arg(channel).arg(1).query_async(&mut c).await;
                    });
                    self.report(&cmd);
                    if let Err(e) = self.unfollow_idle(&mut sink).await {
                        return Lost::Error(e);
                    }
                }
            }
        }
    }

    /// SUBSCRIBE to `topics`' channels, in batches.
    async fn subscribe(&mut self, sink: &mut PubSubSink, topics: &[Box<str>]) -> redis::RedisResult<()> {
        for chunk in topics.chunks(CHANNELS_PER_CALL) {
            let channels: Vec<String> = chunk.iter().map(|t| self.names.channel(t)).collect();
            sink.subscribe(&channels).await?;
            for topic in chunk {
                if let Some(t) = self.tracks.get_mut(topic) {
                    t.subscribed = true;
                }
                self.remote.set_followed(topic, true);
            }
        }
        Ok(())
    }

    /// Handles one round of the shards' commands.
    async fn commands(
        &mut self,
        cmd: &MultiplexedConnection,
        sink: &mut PubSubSink,
        batch: Vec<Command>,
    ) -> redis::RedisResult<()> {
        let now = Instant::now();
        let mut new = Vec::new();
        let mut replies = Vec::new();
        for c in batch {
            match c {
                Command::Publish { events, reply } => self.publish(cmd, events, reply),
                Command::Presence { device, online } => self.presence(cmd, &device, online),
                Command::Interest { topic, up } => {
                    if self.count_interest(&topic, up, now) {
                        new.push(topic);
                    }
                }
                Command::Warm { topics, reply } => {
                    for (topic, after) in topics {
                        let keep = self.keeps(&topic);
                        let topic: Box<str> = topic.into();
                        let t = self.tracks.entry(topic.clone()).or_insert_with(|| {
                            new.push(topic.clone());
                            Track::new(keep, now)
                        });
                        if t.shards == 0 {
                            // Held a while for the subscriber about to join.
                            t.idle_since = Some(now);
                        }
                        replies.push((topic, after, reply.clone()));
                    }
                }
            }
        }
        new.retain(|t| self.tracks.get(t).is_some_and(|t| !t.subscribed));
        self.subscribe(sink, &new).await?;
        for topic in new.iter().filter(|t| !replies.iter().any(|r| &r.0 == *t)) {
            // Interest without a join first: learn where it stands.
            self.start_read(cmd, topic, None);
        }
        for (topic, after, reply) in replies {
            match self.tracks.get_mut(&topic) {
                Some(t) if t.keep => {
                    t.waiters.push(reply);
                    self.start_read(cmd, &topic, after);
                }
                Some(t) if is_device_topic(&topic) && new.contains(&topic) => {
                    // A first monitor here: the statuses devices on other
                    // nodes reported before it.
                    t.waiters.push(reply);
                    t.filling = true;
                    self.statuses(cmd, &topic);
                }
                _ => {
                    let _ = reply.send(());
                }
            }
        }
        Ok(())
    }

    /// Reads the last known statuses for device topic `topic` (`devices`:
    /// all of them; `device:<id>`: that one); they come back as a `Filled`.
    fn statuses(&self, cmd: &MultiplexedConnection, topic: &str) {
        let mut c = cmd.clone();
        let hash = self.names.devices();
        let tx = self.filled_tx.clone();
        let topic: Box<str> = topic.into();
        tokio::spawn(async move {
            let query = match topic.strip_prefix("device:") {
                Some(id) => redis::cmd("HMGET").arg(hash).arg(id).clone(),
                None => redis::cmd("HVALS").arg(hash).clone(),
            };
            let got =
                tokio::time::timeout(REQUEST_TIMEOUT, query.query_async::<Vec<Option<Vec<u8>>>>(&mut c))
                    .await;
            let statuses = match got {
                Ok(Ok(v)) => v.into_iter().flatten().collect(),
                _ => Vec::new(),
            };
            let _ = tx.send(Filled {
                topic,
                read: None,
                statuses: Some(statuses),
            });
        });
    }

    /// Records that `device` is on this node (or no longer).
    fn presence(&self, cmd: &MultiplexedConnection, device: &str, online: bool) {
        let mut c = cmd.clone();
        let owners = self.names.owners();
        let node = self.node.clone();
        let device = device.to_string();
        let release = self.release.clone();
        tokio::spawn(async move {
            let done: redis::RedisResult<Value> = if online {
                redis::cmd("HSET")
                    .arg(owners)
                    .arg(device)
                    .arg(node)
                    .query_async(&mut c)
                    .await
            } else {
                release
                    .key(owners)
                    .arg(device)
                    .arg(node)
                    .invoke_async(&mut c)
                    .await
            };
            if let Err(error) = done {
                tracing::debug!(%error, "device presence not recorded");
            }
        });
    }

    /// Reports this node (connections, now) and reads every node's report,
    /// dropping those silent for `NODE_TTL`.
    fn report(&self, cmd: &MultiplexedConnection) {
        let mut c = cmd.clone();
        let hash = self.names.nodes();
        let node = self.node.clone();
        let board = self.board.clone();
        let publisher = self.publisher.clone();
        tokio::spawn(async move {
            let now = unix_ms();
            let mine = format!("{}:{now}", board.total());
            let mut pipe = redis::pipe();
            pipe.cmd("HSET").arg(&hash).arg(&node).arg(mine).ignore();
            pipe.cmd("HGETALL").arg(&hash);
            let Ok(Ok((all,))) = tokio::time::timeout(
                REQUEST_TIMEOUT,
                pipe.query_async::<(HashMap<String, String>,)>(&mut c),
            )
            .await
            else {
                return;
            };
            let mut nodes = Vec::new();
            let mut stale = Vec::new();
            for (id, report) in all {
                let (conns, at) = report.split_once(':').unwrap_or(("0", "0"));
                let ago = now.saturating_sub(at.parse().unwrap_or(0));
                if ago > NODE_TTL.as_millis() as u64 {
                    stale.push(id);
                } else {
                    nodes.push(NodeSeen {
                        id,
                        connections: conns.parse().unwrap_or(0),
                        last_seen_ms: ago,
                    });
                }
            }
            nodes.sort_by(|a, b| a.id.cmp(&b.id));
            board.set_cluster(Cluster { node, nodes });
            for id in stale {
                // Whoever removes a dead node says offline for its devices: once.
                let removed: redis::RedisResult<u64> =
                    redis::cmd("HDEL").arg(&hash).arg(&id).query_async(&mut c).await;
                if removed == Ok(1) {
                    tracing::warn!(node = %id, "a node stopped reporting: taking over its devices");
                    take_over(&mut c, &publisher, &id).await;
                }
            }
        });
    }

    /// Reads `topic`'s stream (after `after`; `None`: only where it
    /// stands) unless a read is under way, which then reads again after it.
    fn start_read(&mut self, cmd: &MultiplexedConnection, topic: &str, after: Option<u64>) {
        let size = self.size;
        let Some(t) = self.tracks.get_mut(topic) else {
            return;
        };
        if !t.keep {
            return;
        }
        if t.filling {
            if let Some(a) = after {
                t.wanted = Some(t.wanted.map_or(a, |w| w.min(a)));
            }
            return;
        }
        t.filling = true;
        let (after, count) = match after {
            Some(a) => (a, size),
            None => (t.top, if t.epoch.is_none() { 0 } else { size }),
        };
        self.fill(cmd, topic, after, count);
    }

    /// Starts a read of `topic`'s stream after `after` (at most `count`
    /// entries); its result comes back as a `Filled`.
    fn fill(&self, cmd: &MultiplexedConnection, topic: &str, after: u64, count: usize) {
        let mut c = cmd.clone();
        let script = self.read.clone();
        let (stream, meta) = (self.names.stream(topic), self.names.meta(topic));
        let meta_ttl = META_TTL_SECS.max(self.ttl_secs);
        let tx = self.filled_tx.clone();
        let topic: Box<str> = topic.into();
        tokio::spawn(async move {
            let mut invocation = script.prepare_invoke();
            invocation
                .key(stream)
                .key(meta)
                .arg(after)
                .arg(count)
                .arg(Epoch::random().as_str())
                .arg(meta_ttl);
            let invocation = invocation.invoke_async::<Value>(&mut c);
            let read = match tokio::time::timeout(REQUEST_TIMEOUT, invocation).await {
                Ok(Ok(v)) => script::parse_read(v),
                _ => None,
            };
            let _ = tx.send(Filled {
                topic,
                read,
                statuses: None,
            });
        });
    }

    /// Publishes one batch in one script call; answers when Redis took it.
    fn publish(
        &self,
        cmd: &MultiplexedConnection,
        events: Vec<Outgoing>,
        reply: flume::Sender<Result<(), Unavailable>>,
    ) {
        let mut c = cmd.clone();
        let publisher = self.publisher.clone();
        tokio::spawn(async move {
            let _ = reply.send(publisher.run(&mut c, &events).await);
        });
    }

    /// One channel message: deliver, drop, hold, or fill first.
    fn live(
        &mut self,
        cmd: &MultiplexedConnection,
        channel: &str,
        payload: &[u8],
        arrivals: &mut Vec<Arrived>,
    ) {
        let Some(topic) = self.names.topic_of(channel) else {
            return;
        };
        let Some((position, body)) = script::parse_message(payload) else {
            tracing::debug!(topic, "broker message not understood: dropped");
            return;
        };
        if self.tracks.contains_key(topic) {
            let live = Live {
                position,
                body: body.to_vec(),
            };
            self.replay(cmd, topic, live, arrivals);
        }
    }

    /// Merges a read: older events into the history, newer ones delivered,
    /// then what was held meanwhile; answers the joins waiting for it.
    async fn merge(&mut self, cmd: &MultiplexedConnection, filled: Filled) {
        let topic = filled.topic;
        let Some(t) = self.tracks.get_mut(&topic) else {
            return;
        };
        if let Some(statuses) = filled.statuses {
            t.filling = false;
            // Recorded by every shard's dispatcher as the devices' last
            // known statuses; delivered to nobody (no topic has no name).
            let held = t.merge(Read::default()).1;
            let mut arrivals: Vec<Arrived> = statuses
                .iter()
                .filter_map(|body| arrived("", None, body))
                .filter(|a| a.draft.device.is_some())
                .collect();
            for live in held {
                self.replay(cmd, &topic, live, &mut arrivals);
            }
            self.deliver(arrivals).await;
            self.answer_waiters(&topic);
            return;
        }
        let Some(read) = filled.read else {
            // Redis is going away (the session ends) or misbehaved: the
            // held events pass on (a gap is read again).
            t.filling = false;
            let held = t.merge(Read::default()).1;
            let mut arrivals = Vec::new();
            for live in held {
                self.replay(cmd, &topic, live, &mut arrivals);
            }
            self.answer_waiters(&topic);
            self.deliver(arrivals).await;
            return;
        };
        let (merged, held) = t.merge(read);
        let top = t.top;
        if let Some(epoch) = merged.epoch {
            let now = Instant::now();
            let frames = merged
                .remember
                .into_iter()
                .filter_map(|(offset, body)| {
                    let p = Position { offset, epoch };
                    let a = arrived(&topic, Some(p.clone()), &body)?;
                    match a.draft.content {
                        crate::fanout::broadcast::Content::Envelope(e) => Some((offset, e.frame(Some(&p)))),
                        crate::fanout::broadcast::Content::Frame(f) => Some((offset, f)),
                    }
                })
                .collect();
            self.broadcaster
                .sequencer()
                .streams()
                .remember(&topic, epoch, top, now, frames);
        }
        let mut arrivals: Vec<Arrived> = merged
            .deliver
            .into_iter()
            .filter_map(|(offset, body)| {
                let p = merged.epoch.map(|epoch| Position { offset, epoch });
                arrived(&topic, p, &body)
            })
            .collect();
        for live in held {
            self.replay(cmd, &topic, live, &mut arrivals);
        }
        let again = self
            .tracks
            .get_mut(&topic)
            .and_then(|t| if t.filling { None } else { t.wanted.take() });
        match again {
            Some(after) => self.start_read(cmd, &topic, Some(after)),
            None => {
                if self.tracks.get(&topic).is_some_and(|t| !t.filling) {
                    self.answer_waiters(&topic);
                }
            }
        }
        self.deliver(arrivals).await;
    }

    /// An event (live, or held and given back) passes through its track:
    /// delivered, dropped, held, or held while the gap before it is read.
    fn replay(&mut self, cmd: &MultiplexedConnection, topic: &str, live: Live, arrivals: &mut Vec<Arrived>) {
        let Some(t) = self.tracks.get_mut(topic) else {
            return;
        };
        match t.on_live(live.position.as_ref()) {
            Step::Deliver => arrivals.extend(arrived(topic, live.position, &live.body)),
            Step::Drop => {}
            Step::Hold => t.hold(live),
            Step::Fill { after } => {
                t.hold(live);
                let size = self.size;
                self.fill(cmd, topic, after, size);
            }
        }
    }

    async fn deliver(&self, arrivals: Vec<Arrived>) {
        if !arrivals.is_empty() {
            self.broadcaster.deliver(arrivals, Instant::now()).await;
        }
    }

    fn answer_waiters(&mut self, topic: &str) {
        if let Some(t) = self.tracks.get_mut(topic) {
            for w in t.waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Unfollows the topics no shard has wanted for `IDLE_GRACE`.
    async fn unfollow_idle(&mut self, sink: &mut PubSubSink) -> redis::RedisResult<()> {
        let idle: Vec<Box<str>> = self
            .tracks
            .iter()
            .filter(|(_, t)| {
                t.shards == 0
                    && !t.filling
                    && t.waiters.is_empty()
                    && t.idle_since.is_some_and(|i| i.elapsed() >= IDLE_GRACE)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for chunk in idle.chunks(CHANNELS_PER_CALL) {
            let channels: Vec<String> = chunk.iter().map(|t| self.names.channel(t)).collect();
            sink.unsubscribe(&channels).await?;
            let mut streams = self.broadcaster.sequencer().streams();
            for topic in chunk {
                self.tracks.remove(topic);
                self.remote.set_followed(topic, false);
                streams.forget(topic);
            }
        }
        Ok(())
    }

    /// The connection is gone: every topic is read again on the next one.
    fn lost(&mut self) {
        let topics: Vec<Box<str>> = self.tracks.keys().cloned().collect();
        for topic in topics {
            if let Some(t) = self.tracks.get_mut(&topic) {
                t.subscribed = false;
                t.wanted = None;
                // Held events are read back from the stream on reconnect.
                let _ = t.merge(Read::default());
            }
            self.answer_waiters(&topic);
        }
    }

    /// A command while Redis is unreachable.
    fn while_down(&mut self, c: Command) {
        match c {
            Command::Publish { reply, .. } => {
                let _ = reply.send(Err(Unavailable));
            }
            Command::Warm { reply, topics } => {
                for _ in topics {
                    let _ = reply.send(());
                }
            }
            // Lost while down: a survivor may later say offline for it.
            Command::Presence { .. } => {}
            Command::Interest { topic, up } => {
                self.count_interest(&topic, up, Instant::now());
            }
        }
    }

    /// A shard's interest in `topic` began (`up`) or ended; true when the
    /// topic was not followed yet (a track is opened for it).
    fn count_interest(&mut self, topic: &str, up: bool, now: Instant) -> bool {
        let keep = self.keeps(topic);
        let new = !self.tracks.contains_key(topic);
        let t = self
            .tracks
            .entry(topic.into())
            .or_insert_with(|| Track::new(keep, now));
        if up {
            t.shards += 1;
            t.idle_since = None;
        } else {
            t.shards = t.shards.saturating_sub(1);
            if t.shards == 0 {
                t.idle_since = Some(now);
            }
        }
        new
    }

    fn keeps(&self, topic: &str) -> bool {
        self.broadcaster.sequencer().streams().keeps(topic)
    }
}

/// Runs the publish script (shared by the broker and its spawned tasks).
#[derive(Clone)]
struct Publisher {
    script: Arc<Script>,
    names: Names,
    size: usize,
    ttl_secs: u64,
}

impl Publisher {
    /// Publishes `events` in one script call; `Err` unless Redis took them.
    async fn run(&self, c: &mut MultiplexedConnection, events: &[Outgoing]) -> Result<(), Unavailable> {
        let names = &self.names;
        let mut invocation = self.script.prepare_invoke();
        for e in events {
            invocation.key(names.stream(&e.topic)).key(names.meta(&e.topic));
        }
        invocation.key(names.devices());
        invocation
            .arg(self.size)
            .arg(self.ttl_secs)
            .arg(META_TTL_SECS.max(self.ttl_secs))
            .arg(Epoch::random().as_str());
        for e in events {
            invocation
                .arg(names.channel(&e.topic))
                .arg(if e.keep { "1" } else { "0" })
                .arg(&e.body[..])
                .arg(e.device.as_deref().unwrap_or(""));
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, invocation.invoke_async::<Value>(c)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => {
                tracing::warn!(%error, "broker refused a publish");
                Err(Unavailable)
            }
            Err(_) => Err(Unavailable),
        }
    }
}

/// Says `offline` for every device dead node `node` still held (this node
/// removed `node` from the cluster, so only it does this).
async fn take_over(c: &mut MultiplexedConnection, publisher: &Publisher, node: &str) {
    let names = &publisher.names;
    let Ok(Ok(owners)) = tokio::time::timeout(
        REQUEST_TIMEOUT,
        redis::cmd("HGETALL")
            .arg(names.owners())
            .query_async::<HashMap<String, String>>(c),
    )
    .await
    else {
        return;
    };
    let script = Script::new(script::TAKE_OVER);
    let mut count = 0;
    for device in owners.into_iter().filter(|(_, n)| n == node).map(|(d, _)| d) {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(names.owners())
            .key(names.devices())
            .arg(&device)
            .arg(node);
        let Ok(Some(last)) = invocation.invoke_async::<Option<Vec<u8>>>(c).await else {
            continue;
        };
        let frame = match broadcast::decode(&last) {
            Some((Content::Frame(f), _)) => Some(f),
            _ => None,
        };
        let bare = devices::presence("offline", frame.as_deref());
        let Ok(drafts) = devices::events(&device, &bare, &crate::time::now_rfc3339(), usize::MAX) else {
            continue;
        };
        let events: Vec<Outgoing> = drafts
            .into_iter()
            .map(|d| Outgoing {
                keep: false,
                body: broadcast::encode(&d),
                topic: d.topic,
                device: d.device,
            })
            .collect();
        if publisher.run(c, &events).await.is_ok() {
            count += 1;
        }
    }
    if count > 0 {
        tracing::info!(
            node,
            devices = count,
            "a node left the cluster: its devices are offline"
        );
    }
}

/// Monitors' topics: their first follow reads the devices' last statuses.
fn is_device_topic(topic: &str) -> bool {
    topic == "devices" || topic.starts_with("device:")
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An event that came from Redis, ready for `Broadcaster::deliver`.
fn arrived(topic: &str, position: Option<Position>, body: &[u8]) -> Option<Arrived> {
    let Some((content, device)) = broadcast::decode(body) else {
        tracing::debug!(topic, "broker event not understood: dropped");
        return None;
    };
    Some(Arrived {
        draft: Draft {
            topic: topic.into(),
            content,
            device,
        },
        position,
    })
}
