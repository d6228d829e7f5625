//! One WebSocket connection as the rest of the server sees it: the shared
//! handle (with its single close state machine), its bounded outbound
//! queue, its publish budget, and on the TLS port its encrypted write path.

pub mod handle;
pub mod parts;
pub mod queue;
pub mod rate;
pub mod secure;
pub mod send;
