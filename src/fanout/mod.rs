//! Publish → every local subscriber: events encoded once, topics, the
//! per-shard registry, delivery (direct or batched through io_uring), and
//! the last known status of each device; one order per topic across
//! shards, each topic's retained history, and the publish gate shutdown
//! closes.

pub mod broadcast;
pub mod deliver;
pub mod device_table;
pub mod devices;
pub mod envelope;
pub mod gate;
pub mod history;
pub mod registry;
pub mod remote;
pub mod sequencer;
pub mod topic;
pub mod uring_send;
