//! Wire formats, with no I/O policy: HTTP/1.1 requests and responses, query
//! parameters, the
//! WebSocket handshake, frame encoding and decoding, close codes, and the
//! checks every peer JSON passes before it is parsed.

pub mod close;
pub mod decode;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod json;
pub mod query;
