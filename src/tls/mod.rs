//! TLS on our own sockets (`--tls-cert`/`--tls-key`): the server's
//! certificate and key, checked at start-up and swapped on SIGHUP (`keys`,
//! `der`); one rustls session per connection, driven by hand on the raw
//! non-blocking descriptor (`session`); the HTTP session's stream over it
//! (`stream`); and the probe for the kernel's TLS offload (`kernel`).
//! Nothing here knows about HTTP routes, WebSocket frames or shards.

pub mod der;
pub mod kernel;
pub mod keys;
pub mod session;
pub mod stream;
