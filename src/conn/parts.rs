//! What a connection is made of and reports: the spec it is registered
//! with, its role and close state, what a send did, and the shapes the rest
//! of the server hands it (published frames, subscriptions, expiry facts).

use std::rc::Rc;
use std::sync::Arc;

/// A published frame as a connection queues it: the encoded bytes, and for
/// a device status its device, so that a monitor's queue can keep only the
/// newest per device (`fanout::broadcast::Event` is one).
pub trait Published {
    /// The frame for a connection that can inflate a `window`-bit LZ77
    /// window (0: it did not negotiate permessage-deflate): the shared
    /// compressed frame where there is one that fits, else the plain one.
    fn frame_for(&self, window: u8) -> &Arc<[u8]>;
    fn device(&self) -> Option<&Arc<str>>;
}

/// One connection's subscription to one topic (interned id, slot in the
/// topic's subscriber list), kept to undo it at close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub topic: u32,
    pub slot: u32,
}

/// Everything a connection is at registration (nothing is filled in later).
#[derive(Debug, Clone)]
pub struct ConnSpec {
    pub role: Role,
    /// Index into the configured client types, for the per-type counters.
    pub client_type: Option<u16>,
    /// A device connection's id (its token's `sub`).
    pub device: Option<Rc<String>>,
    /// The token's `exp` (Unix seconds; 0: none).
    pub exp: u32,
    /// permessage-deflate: the window the client can inflate (0: not
    /// negotiated).
    pub deflate: u8,
}

impl ConnSpec {
    /// An echo connection (conformance testing): no type, device or expiry.
    pub fn echo() -> ConnSpec {
        ConnSpec {
            role: Role::Echo,
            client_type: None,
            device: None,
            exp: 0,
            deflate: 0,
        }
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Exchanging messages.
    Open,
    /// We sent a close frame and wait for the peer's (until the deadline).
    Closing,
    /// The close handshake is done: flush what is queued, then drop TCP.
    Finishing,
    /// Our FIN is out: what the peer still sends is read and dropped until
    /// its FIN or the close deadline (a lingering close: closing the socket
    /// on unread bytes would send a reset, which can destroy our close frame
    /// while it is still in flight).
    Shut,
    /// Gone: nothing more is written, the driver ends.
    Dead,
}

/// What a connection does with the messages its client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sends every text and binary message back (conformance testing).
    Echo,
    /// An application client: JSON messages (`client_msg`).
    Client,
    /// A device (`device_types`): a client that may also report its status.
    Device,
    /// A device-status monitor: receives status objects only, answers nothing.
    Monitor,
}

/// What happened to frames handed to [`Conn::send_shared`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written to the socket inline.
    Written,
    /// (Partly) queued; the driver writes the rest when the socket drains.
    /// A monitor's queue may have dropped this many superseded statuses.
    Queued { conflated: u32 },
    /// The queue passed its limit: the connection is being closed (1008);
    /// this many queued frames were discarded.
    SlowConsumer { discarded: u32 },
    /// The connection is closing or gone; nothing was sent.
    Dropped,
}

/// Wall-clock facts for token expiry, computed once per sweep.
#[derive(Clone, Copy, Debug)]
pub struct Expiry {
    /// Unix seconds now.
    pub now: u32,
    /// Seconds before `exp` to send `token_expiring`.
    pub notice: u32,
}
