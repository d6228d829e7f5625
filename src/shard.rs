//! One core: its listener and accept loop, the connections it owns, the
//! sweeper that sends heartbeats and enforces timeouts, and its drain on
//! shutdown. Nothing here is shared with other shards.

use std::cell::{Cell, RefCell};
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use glommio::net::TcpListener;
use glommio::{Latency, Shares};
use slab::Slab;

use crate::auth::Verifier;
use crate::broadcast::{Batch, Broadcaster};
use crate::config::Config;
use crate::conn::Conn;
use crate::device_table::DeviceTable;
use crate::registry::Registry;
use crate::route::Port;
use crate::stats::{Board, ShardCounters};
use crate::{dispatch, handler};

/// Bytes one socket read may return; shared by every connection of the
/// shard, so an idle connection holds no read buffer of its own.
const SCRATCH_BYTES: usize = 64 * 1024;
/// How often the sweeper runs.
const TICK: Duration = Duration::from_millis(500);

/// What every shard shares (read-only, or `Send` handles).
pub struct Shared {
    pub config: Arc<Config>,
    pub board: Arc<Board>,
    pub broadcaster: Broadcaster,
    pub verifier: Arc<Verifier>,
}

/// State owned by one shard (one executor thread).
pub struct Shard {
    pub id: usize,
    pub config: Arc<Config>,
    pub board: Arc<Board>,
    pub broadcaster: Broadcaster,
    pub verifier: Arc<Verifier>,
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
    started: Instant,
    /// Whole seconds since the shard started, updated each tick.
    clock: Cell<u32>,
    draining: Cell<bool>,
}

impl Shard {
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

    /// A process-unique id: `<shard>-<n>`.
    pub fn next_id(&self) -> String {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        format!("{}-{n}", self.id)
    }

    /// Publishes `events` from this shard (spawned: callers may be sync).
    pub fn publish_later(&self, events: Vec<crate::broadcast::Event>) {
        let broadcaster = self.broadcaster.clone();
        let batch = Batch {
            events,
            accepted: Instant::now(),
        };
        glommio::spawn_local(async move { broadcaster.publish(batch).await }).detach();
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
        registry.unsubscribe(list.swap_remove(pos));
        *subs = list.into_boxed_slice();
        true
    }

    /// Subscribes `conn` to `topic` (once).
    pub fn subscribe(&self, conn: &Rc<Conn>, topic: &str) {
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
    }

    /// Adds an upgraded connection; returns it with its key set.
    pub fn register(&self, fd: RawFd, client_type: Option<u16>) -> Rc<Conn> {
        let mut conns = self.conns.borrow_mut();
        let entry = conns.vacant_entry();
        let conn = Rc::new(Conn::new(entry.key() as u32, fd, self.clock(), client_type));
        entry.insert(conn.clone());
        self.board.shard(self.id).opened(conn.client_type());
        tracing::debug!(shard = self.id, conn = conn.key, "connection opened");
        conn
    }

    /// Removes a connection whose driver has ended.
    pub fn unregister(&self, conn: &Conn) {
        let subs = std::mem::take(&mut *conn.subscriptions.borrow_mut());
        let mut registry = self.registry.borrow_mut();
        for &sub in subs.iter() {
            registry.unsubscribe(sub);
        }
        drop(registry);
        if self.conns.borrow_mut().try_remove(conn.key as usize).is_some() {
            self.board
                .shard(self.id)
                .closed(conn.client_type(), conn.close_reason());
            self.board.leave();
            tracing::debug!(shard = self.id, conn = conn.key, "connection closed");
        }
    }

    fn connection_count(&self) -> usize {
        self.conns.borrow().len()
    }
}

fn secs(d: Duration) -> u32 {
    d.as_secs_f64().ceil().clamp(1.0, u32::MAX as f64) as u32
}

/// Runs shard `id` on the current executor until `shutdown` fires and the
/// drain completes.
pub async fn run(
    id: usize,
    shared: Shared,
    listener_fd: RawFd,
    admin_fd: Option<RawFd>,
    events: flume::Receiver<Arc<Batch>>,
    shutdown: flume::Receiver<()>,
) {
    // SAFETY: the fd is a bound, listening socket handed to this shard alone.
    let listener = unsafe { TcpListener::from_raw_fd(listener_fd) };
    // SAFETY: likewise for the admin listener.
    let admin = admin_fd.map(|fd| unsafe { TcpListener::from_raw_fd(fd) });
    let max_devices = shared.config.max_devices;
    let shard = Rc::new(Shard {
        id,
        config: shared.config,
        board: shared.board,
        broadcaster: shared.broadcaster,
        verifier: shared.verifier,
        registry: RefCell::new(Registry::default()),
        devices: RefCell::new(DeviceTable::new(max_devices)),
        next_id: Cell::new(0),
        conns: RefCell::new(Slab::new()),
        scratch: Rc::new(RefCell::new(vec![0; SCRATCH_BYTES])),
        started: Instant::now(),
        clock: Cell::new(0),
        draining: Cell::new(false),
    });
    let sweeper = glommio::spawn_local(sweep(shard.clone())).detach();
    // A cross-thread wake (flume's) reaches a sleeping executor late in the
    // default queue; a latency-sensitive queue makes the reactor wake for it.
    let executor = glommio::executor();
    let queue = executor.create_task_queue(
        Shares::default(),
        Latency::Matters(Duration::from_millis(1)),
        "dispatch",
    );
    let dispatcher = glommio::spawn_local_into(dispatch::run(shard.clone(), events), queue)
        .map(|task| task.detach())
        .map_err(|e| tracing::error!(shard = id, error = %e, "cannot start the dispatcher"))
        .ok();
    let public = accept_loop(shard.clone(), &listener, Port::Public);
    let internal = async {
        match &admin {
            Some(admin) => accept_loop(shard.clone(), admin, Port::Admin).await,
            None => std::future::pending().await,
        }
    };
    futures_lite::future::or(futures_lite::future::or(public, internal), async {
        let _ = shutdown.recv_async().await;
    })
    .await;
    drop(listener);
    drop(admin);
    drain(&shard).await;
    sweeper.cancel();
    if let Some(dispatcher) = dispatcher {
        dispatcher.cancel();
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: &TcpListener, port: Port) {
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok(stream) if port == Port::Admin => {
                glommio::spawn_local(handler::serve(shard.clone(), stream, port, None)).detach();
            }
            Ok(stream) => {
                let task = match SocketSlot::take(&shard) {
                    Some(slot) => handler::serve(shard.clone(), stream, port, Some(slot)).boxed_local(),
                    None => handler::refuse_socket(shard.clone(), stream).boxed_local(),
                };
                glommio::spawn_local(task).detach();
            }
            Err(error) => {
                // Typically EMFILE: out of descriptors. Say so at most once a
                // second and back off briefly rather than spin.
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(shard = shard.id, %error, "accept failed");
                    last_warning = Some(Instant::now());
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One accepted socket on the public port, counted against `max_sockets`
/// from accept until this is dropped (by the HTTP session, or by the
/// WebSocket driver it is handed to on upgrade).
pub struct SocketSlot(Option<Arc<Board>>);

impl SocketSlot {
    /// Counts one more socket, or `None` at `max_sockets`.
    fn take(shard: &Shard) -> Option<SocketSlot> {
        shard
            .board
            .try_open_socket(shard.config.max_sockets)
            .then(|| SocketSlot(Some(shard.board.clone())))
    }

    /// Hands the count to an upgraded connection's driver, whose drop gives
    /// it back (an idle driver has no room for the slot itself).
    pub fn hand_to_driver(mut self) {
        self.0 = None;
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        if let Some(board) = self.0.take() {
            board.close_socket();
        }
    }
}

/// Heartbeats and timeouts for every connection, once per tick.
async fn sweep(shard: Rc<Shard>) {
    let heartbeat = secs(shard.config.heartbeat_interval);
    let idle = secs(shard.config.idle_timeout);
    let close_timeout = shard.close_timeout_secs();
    let notice = secs(shard.config.token_expiry_notice);
    loop {
        glommio::timer::sleep(TICK).await;
        let now = shard.started.elapsed().as_secs() as u32;
        shard.clock.set(now);
        // Ticking only writes and wakes; it never re-enters the slab.
        shard.counters().set_rooms(shard.registry.borrow().room_count());
        let expiry = crate::conn::Expiry {
            now: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32),
            notice,
        };
        let mut queued = 0;
        for (_, conn) in shard.conns.borrow().iter() {
            conn.tick(now, heartbeat, idle, close_timeout, expiry);
            queued += conn.queued_bytes() as u64;
        }
        shard.counters().set_queued_bytes(queued);
    }
}

/// Closes every connection with 1001 and waits for them to finish, at most
/// `drain_timeout`.
async fn drain(shard: &Rc<Shard>) {
    shard.draining.set(true);
    let deadline = Instant::now() + shard.config.drain_timeout;
    let close_by = shard.clock() + shard.close_timeout_secs();
    for (_, conn) in shard.conns.borrow().iter() {
        conn.close(1001, "server shutting down", close_by);
    }
    while shard.connection_count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    let left = shard.connection_count();
    if left > 0 {
        tracing::warn!(
            shard = shard.id,
            left,
            "drain timeout: dropping remaining connections"
        );
    }
}
