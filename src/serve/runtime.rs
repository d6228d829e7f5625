//! The loop of one shard: its accept loops (public and admin port), the
//! sweeper that sends heartbeats, enforces timeouts and (on shard 0)
//! expires topic histories, the dispatcher and
//! local-publish tasks, and the drain on shutdown.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use glommio::net::TcpListener;
use glommio::{Latency, Shares};

use crate::api::route::Port;
use crate::auth::admission::SocketSlot;
use crate::conn::handle::Expiry;
use crate::fanout::broadcast::Batch;
use crate::proto::close::CloseReason;
use crate::serve::{dispatcher, http};
use crate::shard::{secs, Shard, Shared};

/// How often the sweeper runs.
const TICK: Duration = Duration::from_millis(500);

/// glommio's listener from a bound, listening socket this shard owns.
fn listener_from(fd: OwnedFd) -> TcpListener {
    // SAFETY: `OwnedFd` guarantees the descriptor is open and owned; its
    // ownership passes to the listener.
    unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) }
}

/// One shard's listening sockets: the public port (TLS when a certificate
/// is configured), an opt-in plain public port beside it, the admin port.
pub struct Listeners {
    pub public: OwnedFd,
    pub plain: Option<OwnedFd>,
    pub admin: Option<OwnedFd>,
}

/// Runs shard `id` on the current executor until `shutdown` fires and the
/// drain completes.
pub async fn run(
    id: usize,
    shared: Shared,
    listeners: Listeners,
    events: flume::Receiver<Arc<Batch>>,
    shutdown: flume::Receiver<()>,
) {
    let listener = listener_from(listeners.public);
    let plain = listeners.plain.map(listener_from);
    let admin = listeners.admin.map(listener_from);
    let (shard, local_publishes) = Shard::new(id, shared);
    let shard = Rc::new(shard);
    // One task forwards this shard's own publishes into the broadcast
    // channels, so they wait for room there in order, bounded.
    let broadcaster = shard.broadcaster.clone();
    let forwarder = glommio::spawn_local(async move {
        while let Some((events, accepted)) = local_publishes.recv().await {
            if broadcaster.publish(events, accepted).await.is_err() {
                tracing::warn!(
                    shard = id,
                    "broker unavailable: a device presence was not published"
                );
            }
        }
    })
    .detach();
    let sweeper = glommio::spawn_local(sweep(shard.clone())).detach();
    // The dispatcher's own queue, with an equal share of the core beside
    // the default one. Not latency-sensitive: the dispatcher hands the core
    // back by itself (`dispatcher::SLICE`), and a short latency would arm a
    // short preempt timer, which is what lets glommio 0.9 park with a
    // runnable task (see `dispatcher::step_aside`). A cross-thread wake
    // still reaches a sleeping executor at once: glommio writes its eventfd
    // whenever the executor has said it is going to sleep.
    let executor = glommio::executor();
    let queue = executor.create_task_queue(Shares::default(), Latency::NotImportant, "dispatch");
    let dispatcher = glommio::spawn_local_into(dispatcher::run(shard.clone(), events), queue)
        .map(|task| task.detach())
        .map_err(|e| tracing::error!(shard = id, error = %e, "cannot start the dispatcher"))
        .ok();
    let tls = shard.tls.is_some();
    let public = accept_loop(shard.clone(), &listener, Port::Public, tls);
    let beside = optional(shard.clone(), plain.as_ref(), Port::Public, false);
    let internal = optional(
        shard.clone(),
        admin.as_ref(),
        Port::Admin,
        tls && shard.config.admin_tls,
    );
    let all = futures_lite::future::or(public, futures_lite::future::or(beside, internal));
    futures_lite::future::or(all, async {
        let _ = shutdown.recv_async().await;
    })
    .await;
    drop(listener);
    drop(plain);
    drop(admin);
    drain(&shard).await;
    sweeper.cancel();
    forwarder.cancel();
    if let Some(dispatcher) = dispatcher {
        dispatcher.cancel();
    }
}

/// The accept loop of a listener that may not exist (then: never ends).
async fn optional(shard: Rc<Shard>, listener: Option<&TcpListener>, port: Port, tls: bool) {
    match listener {
        Some(listener) => accept_loop(shard, listener, port, tls).await,
        None => std::future::pending().await,
    }
}

/// Accepts sockets on `listener` (speaking TLS when `tls`) until cancelled.
async fn accept_loop(shard: Rc<Shard>, listener: &TcpListener, port: Port, tls: bool) {
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok(stream) if port == Port::Admin => {
                glommio::spawn_local(http::serve(shard.clone(), stream, port, None, tls)).detach();
            }
            Ok(stream) => {
                let task = match SocketSlot::take(&shard.board, shard.config.max_sockets) {
                    Some(slot) => http::serve(shard.clone(), stream, port, Some(slot), tls).boxed_local(),
                    None => http::refuse_socket(shard.clone(), stream, tls).boxed_local(),
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

/// Heartbeats and timeouts for every connection, once per tick.
async fn sweep(shard: Rc<Shard>) {
    let heartbeat = secs(shard.config.heartbeat_interval);
    let idle = secs(shard.config.idle_timeout);
    let close_timeout = shard.close_timeout_secs();
    let notice = secs(shard.config.token_expiry_notice);
    loop {
        glommio::timer::sleep(TICK).await;
        let now = shard.tick_clock();
        // Ticking only writes and wakes; it never re-enters the slab.
        shard.counters().set_rooms(shard.registry.borrow().room_count());
        let expiry = Expiry {
            now: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32),
            notice,
        };
        let mut queued = 0;
        shard.for_each_conn(|conn| {
            conn.tick(now, heartbeat, idle, close_timeout, expiry);
            queued += conn.queued_bytes() as u64;
        });
        shard.counters().set_queued_bytes(queued);
        if shard.id == 0 {
            let sequencer = shard.broadcaster.sequencer();
            let delivered = sequencer.delivered_everywhere();
            let mut streams = sequencer.streams();
            streams.sweep(Instant::now(), delivered);
            let (bytes, count, evicted) = streams.usage();
            drop(streams);
            shard.board.set_history(bytes as u64, count as u64, evicted);
        }
    }
}

/// Delivers what was acknowledged, then closes every connection with 1001
/// and waits for them to finish, at most `drain_timeout` in all.
async fn drain(shard: &Rc<Shard>) {
    shard.start_draining();
    let deadline = Instant::now() + shard.config.drain_timeout;
    deliver_acknowledged(shard, deadline).await;
    let close_by = shard.clock() + shard.close_timeout_secs();
    shard.for_each_conn(|conn| conn.close(CloseReason::Shutdown, close_by));
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

/// Closes the publish gate (later publishes get 503), waits until no
/// publish is in flight on any shard (then every acknowledged event is in
/// every shard's channel), and until this shard's dispatcher has delivered
/// all of them: the close frames queue behind those events, so no client
/// misses an event its publisher was told was accepted. Through a broker
/// the events are in Redis once acknowledged; clients recover them on
/// their next node. Bounded by `deadline`.
async fn deliver_acknowledged(shard: &Shard, deadline: Instant) {
    let gate = shard.broadcaster.gate();
    gate.close();
    while gate.in_flight() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    if shard.broadcaster.remote().is_some() {
        return;
    }
    let last = shard.broadcaster.sequencer().streams().last_seq();
    while shard.delivered() < last && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}
