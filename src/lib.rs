//! shardcast: a WebSocket fan-out server, one glommio executor per core.
//!
//! Layers, lowest first; each imports only the ones before it:
//! [`config`], [`time`] → [`sys`] (sockets, rlimits, signals) → [`tls`]
//! (certificates, per-connection sessions on raw fds) → [`proto`]
//! (HTTP, handshake, frames, close codes, JSON checks) → [`ops`] (labels,
//! counters, metrics) → [`conn`] (the connection handle and its queue) →
//! [`fanout`] (events, topics, registry, delivery) → [`broker`] (many nodes
//! through Redis) → [`auth`] (tokens,
//! admission) → [`shard`] (per-core state) → [`api`] (endpoints) →
//! [`serve`] (the tasks) → [`server`] (one shard per core).
//!
//! **Connect path.** [`server`] binds one `SO_REUSEPORT` listener per shard
//! and starts each shard's loop (`serve::runtime`). An accepted socket gets
//! an HTTP session (`serve::http`): requests are read (`proto::http`),
//! routed and answered (`api::respond`); an upgrade is authorized and
//! admitted (`api::connect`, `auth`), checked (`proto::handshake`) and
//! becomes a registered `conn::handle::Conn` driven by `serve::ws`, which
//! reads client frames (`proto::decode`, `api::client_msg`) and flushes the
//! connection's bounded queue.
//!
//! **Publish path.** `api::publish` checks and parses a body once
//! (`proto::json`), encodes each event's frame once (`proto::frame`) and
//! hands one `Arc` to every shard's channel (`fanout::broadcast`). Each
//! shard's dispatcher (`serve::dispatcher`) delivers it to the local
//! subscribers (`fanout::registry`, `fanout::deliver`): written inline when
//! a connection has nothing queued, batched through io_uring
//! (`fanout::uring_send`), queued only when the socket is full.

pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod conn;
pub mod fanout;
pub mod ops;
pub mod proto;
pub mod serve;
pub mod server;
pub mod shard;
pub mod sys;
pub mod time;
pub mod tls;
