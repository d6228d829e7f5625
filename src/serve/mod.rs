//! The tasks of a shard: its accept, sweep and drain loop, the HTTP session
//! of each accepted socket, the WebSocket driver of each upgraded one, and
//! the dispatcher that fans published batches out to local subscribers.

pub mod dispatcher;
pub mod http;
pub mod runtime;
pub mod ws;
