//! shardcast: a WebSocket fan-out server, one glommio executor per core.
//!
//! **Connect path.** [`server`] binds one `SO_REUSEPORT` listener per shard
//! ([`sockets`]) and starts the shards. Each [`shard`] accepts on its own
//! listener; [`handler`] reads bounded HTTP/1.1 requests ([`http`]), routes
//! them ([`route`]) and answers plain ones or checks the upgrade
//! ([`upgrade`]). An upgraded socket becomes a [`conn`]: registered in its
//! shard, driven by one task ([`driver`]) that reads client frames
//! ([`protocol`]) and flushes its bounded outbound [`queue`].
//!
//! **Write path.** Server frames are encoded once ([`frame`]); a writer calls
//! `Conn::send`, which writes inline when the connection has nothing queued
//! and only queues (and wakes the driver) when the socket is full. Fan-out
//! ([`dispatch`]) batches those writes through io_uring ([`uring_send`]).
//!
//! **Around them.** [`config`] (flags, env, TOML, dev mode), [`limits`]
//! (rlimits), [`stats`] (per-shard counters summed on request), [`token`]
//! (claims, minting), [`shutdown`] (signals → drain with close 1001).

pub mod auth;
pub mod broadcast;
pub mod client_msg;
pub mod config;
pub mod conn;
pub mod device_table;
pub mod devices;
pub mod dispatch;
pub mod driver;
pub mod frame;
pub mod handler;
pub mod http;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod publish;
pub mod queue;
pub mod rate;
pub mod registry;
pub mod route;
pub mod server;
pub mod shard;
pub mod shutdown;
pub mod sockets;
pub mod stats;
pub mod time;
pub mod token;
pub mod topic;
pub mod upgrade;
pub mod uring_send;
