//! Why a WebSocket connection ends: each reason's close code, the reason
//! text sent in the close frame, and its bounded metric label, in one place.

/// Why a connection ended. The discriminant is its index in [`CloseReason::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The peer started the close handshake.
    ClientClose,
    /// The peer vanished without one (reset, EOF, write error).
    Disconnect,
    /// Its queue passed `max_queue_bytes` (1008).
    SlowConsumer,
    /// Too many bad messages (1008).
    BadMessages,
    /// A protocol violation (1002).
    ProtocolError,
    /// Invalid UTF-8 in a text message or close reason (1007).
    InvalidPayload,
    /// A message over `max_message_bytes` (1009).
    MessageTooBig,
    /// The token's `exp` passed without a refresh (4001).
    TokenExpired,
    /// Silent past `idle_timeout` (1001).
    IdleTimeout,
    /// The server is shutting down (1001).
    Shutdown,
}

impl CloseReason {
    /// Every reason, in discriminant order (the metric label set).
    pub const ALL: [CloseReason; 10] = [
        CloseReason::ClientClose,
        CloseReason::Disconnect,
        CloseReason::SlowConsumer,
        CloseReason::BadMessages,
        CloseReason::ProtocolError,
        CloseReason::InvalidPayload,
        CloseReason::MessageTooBig,
        CloseReason::TokenExpired,
        CloseReason::IdleTimeout,
        CloseReason::Shutdown,
    ];

    /// The close code the server sends for this reason (the peer's own
    /// code is echoed for [`CloseReason::ClientClose`]).
    pub fn code(self) -> u16 {
        match self {
            CloseReason::ClientClose | CloseReason::Disconnect => 1000,
            CloseReason::SlowConsumer | CloseReason::BadMessages => 1008,
            CloseReason::ProtocolError => 1002,
            CloseReason::InvalidPayload => 1007,
            CloseReason::MessageTooBig => 1009,
            CloseReason::TokenExpired => 4001,
            CloseReason::IdleTimeout | CloseReason::Shutdown => 1001,
        }
    }

    /// The reason text of the close frame.
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::ClientClose | CloseReason::Disconnect => "",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::BadMessages => "too many bad messages",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::InvalidPayload => "invalid utf-8",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::TokenExpired => "token expired",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::Shutdown => "server shutting down",
        }
    }

    /// The metric label (`reason="…"`).
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "client_close",
            CloseReason::Disconnect => "disconnect",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::BadMessages => "bad_messages",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::InvalidPayload => "invalid_payload",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
        }
    }

    /// The reason with index `i` in [`CloseReason::ALL`].
    pub fn from_index(i: u8) -> Option<CloseReason> {
        CloseReason::ALL.get(i as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_labels_and_texts_agree() {
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(CloseReason::from_index(i as u8), Some(*r));
            assert!(r.text().len() <= 123, "fits a close frame");
        }
        let labels: std::collections::BTreeSet<_> = CloseReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), CloseReason::ALL.len());
    }
}
