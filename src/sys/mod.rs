//! The raw operating system: sockets and their options, resource limits,
//! signals. Nothing here knows about HTTP, WebSockets or shards.

pub mod limits;
pub mod rings;
pub mod signals;
pub mod sockets;
