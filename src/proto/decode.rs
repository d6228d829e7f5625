//! RFC 6455 receive side: frame validation, message assembly across
//! fragments, control frames, close codes and UTF-8 checks. Pure logic over
//! byte slices; `conn` feeds it whatever the socket returned.

use std::io::Cursor;

use crate::proto::close::CloseReason;
use tungstenite::protocol::frame::FrameHeader;

use crate::proto::frame::{unmask, Control, Data, OpCode};

/// A complete unit the peer sent. Borrowed from the input or from the
/// receiver's assembly buffer; valid until the next call to [`Receiver::next`].
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, already checked to be UTF-8.
    Text(&'a [u8]),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// The peer's close frame: `None` when it carried no status code.
    Close(Option<u16>, &'a str),
    /// A compressed (permessage-deflate) text or binary message, still
    /// deflated: the caller inflates it and checks text as UTF-8.
    Deflated(Data, &'a [u8]),
}

/// A protocol violation by the peer. Each maps to the close code we send
/// before failing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("unknown opcode {0}")]
    UnknownOpcode(u8),
    #[error("client frames must be masked")]
    Unmasked,
    #[error("control frames must not be fragmented")]
    FragmentedControl,
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    #[error("close frame payload over 125 bytes")]
    CloseTooLong,
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is unfinished")]
    ExpectedContinuation,
    #[error("close frame with a 1-byte payload")]
    BadClosePayload,
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    #[error("invalid UTF-8 in text")]
    InvalidUtf8,
    #[error("invalid UTF-8 in a close reason")]
    InvalidCloseReason,
    #[error("message of {size} bytes exceeds the limit of {max}")]
    MessageTooBig { size: u64, max: usize },
    /// RFC 6455 §5.2: a 64-bit length's most significant bit must be 0.
    #[error("64-bit payload length with its most significant bit set")]
    BadLength,
    /// A permessage-deflate message that is not valid deflate data.
    #[error("compressed message is not valid deflate data")]
    BadDeflate,
}

impl ProtocolError {
    /// Why the connection is failed: the close code and reason to send.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason | ProtocolError::BadDeflate => {
                CloseReason::InvalidPayload
            }
            ProtocolError::MessageTooBig { .. } => CloseReason::MessageTooBig,
            _ => CloseReason::ProtocolError,
        }
    }
}

/// Close codes a peer may send (RFC 6455 §7.4, IANA registry).
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Incremental message assembly for one connection. Holds one pointer while
/// no fragmented message is in flight, so an idle connection costs 8 bytes.
#[derive(Debug, Default)]
pub struct Receiver {
    partial: Option<Box<Partial>>,
}

/// A fragmented message being assembled.
#[derive(Debug)]
struct Partial {
    kind: Data,
    /// Payload assembled so far.
    assembled: Vec<u8>,
    /// Bytes of `assembled` known to be valid UTF-8 (text only).
    utf8_checked: usize,
    /// Its first frame had RSV1 (permessage-deflate): checked once inflated.
    deflated: bool,
    /// The message was handed out by the last call and is dropped now.
    complete: bool,
}

impl Receiver {
    /// Parses one frame at the start of `input`, unmasking it in place.
    ///
    /// Returns `Ok(None)` when `input` does not hold a whole frame yet, else
    /// the bytes used and the message the frame completed (a non-final
    /// fragment completes none). A frame declared larger than the message
    /// limit is refused from its header alone, before its payload arrives.
    /// `max_message` is the largest message (all fragments) accepted;
    /// `deflate`: permessage-deflate was negotiated, so RSV1 may mark the
    /// first frame of a message as compressed.
    pub fn next<'a>(
        &'a mut self,
        input: &'a mut [u8],
        max_message: usize,
        deflate: bool,
    ) -> Result<Option<(usize, Option<Message<'a>>)>, ProtocolError> {
        if self.partial.as_ref().is_some_and(|p| p.complete) {
            self.partial = None;
        }
        if input.len() >= 3 && input[1] & 0x7f == 127 && input[2] & 0x80 != 0 {
            return Err(ProtocolError::BadLength);
        }
        let mut cursor = Cursor::new(&input[..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(_) => return Err(ProtocolError::UnknownOpcode(input[0] & 0x0f)),
        };
        let header_len = cursor.position() as usize;
        // RSV1 is permessage-deflate's, on a message's first frame only.
        let first_data = matches!(header.opcode, OpCode::Data(d) if d != Data::Continue);
        if header.rsv2 || header.rsv3 || (header.rsv1 && !(deflate && first_data)) {
            return Err(ProtocolError::ReservedBits);
        }
        let Some(mask) = header.mask else {
            return Err(ProtocolError::Unmasked);
        };
        let is_control = matches!(header.opcode, OpCode::Control(_));
        if is_control {
            if !header.is_final {
                return Err(ProtocolError::FragmentedControl);
            }
            if len > 125 {
                return Err(if header.opcode == OpCode::Control(Control::Close) {
                    ProtocolError::CloseTooLong
                } else {
                    ProtocolError::ControlTooLong
                });
            }
        } else {
            let so_far = self.partial.as_ref().map_or(0, |p| p.assembled.len());
            let total = len.saturating_add(so_far as u64);
            if total > max_message as u64 {
                return Err(ProtocolError::MessageTooBig {
                    size: total,
                    max: max_message,
                });
            }
        }
        // len <= max_message (or 125) here, so it fits in usize.
        let end = header_len + len as usize;
        if input.len() < end {
            return Ok(None);
        }
        let payload = &mut input[header_len..end];
        unmask(payload, mask);
        let message = match header.opcode {
            OpCode::Control(Control::Ping) => Some(Message::Ping(payload)),
            OpCode::Control(Control::Pong) => Some(Message::Pong),
            OpCode::Control(Control::Close) => Some(parse_close(payload)?),
            OpCode::Control(Control::Reserved(op)) => return Err(ProtocolError::UnknownOpcode(op)),
            OpCode::Data(Data::Reserved(op)) => return Err(ProtocolError::UnknownOpcode(op)),
            OpCode::Data(Data::Continue) => {
                let Some(partial) = self.partial.as_deref_mut() else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                partial.assembled.extend_from_slice(payload);
                if partial.kind == Data::Text && !partial.deflated {
                    check_utf8(&partial.assembled, &mut partial.utf8_checked, header.is_final)?;
                }
                if header.is_final {
                    partial.complete = true;
                    Some(if partial.deflated {
                        Message::Deflated(partial.kind, &partial.assembled)
                    } else {
                        data_message(partial.kind, &partial.assembled)
                    })
                } else {
                    None
                }
            }
            OpCode::Data(kind) => {
                if self.partial.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                if header.is_final && header.rsv1 {
                    Some(Message::Deflated(kind, payload))
                } else if header.is_final {
                    if kind == Data::Text && std::str::from_utf8(payload).is_err() {
                        return Err(ProtocolError::InvalidUtf8);
                    }
                    Some(data_message(kind, payload))
                } else {
                    let mut partial = Box::new(Partial {
                        kind,
                        assembled: payload.to_vec(),
                        utf8_checked: 0,
                        deflated: header.rsv1,
                        complete: false,
                    });
                    if kind == Data::Text && !header.rsv1 {
                        check_utf8(&partial.assembled, &mut partial.utf8_checked, false)?;
                    }
                    self.partial = Some(partial);
                    None
                }
            }
        };
        Ok(Some((end, message)))
    }
}

fn data_message(kind: Data, payload: &[u8]) -> Message<'_> {
    match kind {
        Data::Text => Message::Text(payload),
        _ => Message::Binary(payload),
    }
}

fn parse_close(payload: &[u8]) -> Result<Message<'_>, ProtocolError> {
    match payload.len() {
        0 => Ok(Message::Close(None, "")),
        1 => Err(ProtocolError::BadClosePayload),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_allowed(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(Message::Close(Some(code), reason))
        }
    }
}

/// Checks the bytes after `checked`; an incomplete sequence at the end is
/// fine until the final fragment, so invalid text fails as early as possible.
fn check_utf8(buf: &[u8], checked: &mut usize, fin: bool) -> Result<(), ProtocolError> {
    match std::str::from_utf8(&buf[*checked..]) {
        Ok(_) => {
            *checked = buf.len();
            Ok(())
        }
        Err(e) if e.error_len().is_none() && !fin => {
            *checked += e.valid_up_to();
            Ok(())
        }
        Err(_) => Err(ProtocolError::InvalidUtf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver and its message limit.
    struct Rx(Receiver, usize);

    /// A masked client frame.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn one(rx: &mut Rx, mut bytes: Vec<u8>) -> Result<Option<Vec<u8>>, ProtocolError> {
        let len = bytes.len();
        match rx.0.next(&mut bytes, rx.1, false)? {
            Some((used, msg)) => {
                assert_eq!(used, len);
                Ok(msg.map(|m| match m {
                    Message::Text(t) | Message::Binary(t) | Message::Ping(t) => t.to_vec(),
                    Message::Pong => b"<pong>".to_vec(),
                    Message::Close(c, r) => format!("close {c:?} {r}").into_bytes(),
                    Message::Deflated(_, t) => [&b"<deflated>"[..], t].concat(),
                }))
            }
            None => panic!("incomplete"),
        }
    }

    #[test]
    fn single_text_frame_is_a_message() {
        let mut rx = Rx(Receiver::default(), 1024);
        assert_eq!(
            one(&mut rx, client_frame(0x81, b"hello")),
            Ok(Some(b"hello".to_vec()))
        );
    }

    #[test]
    fn incomplete_input_asks_for_more_bytes() {
        let mut rx = Rx(Receiver::default(), 1024);
        let frame = client_frame(0x81, b"hello");
        for cut in 0..frame.len() {
            let mut part = frame[..cut].to_vec();
            assert_eq!(rx.0.next(&mut part, rx.1, false), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn fragments_are_assembled_with_control_frames_between() {
        let mut rx = Rx(Receiver::default(), 1024);
        assert_eq!(one(&mut rx, client_frame(0x01, b"hel")), Ok(None));
        assert_eq!(one(&mut rx, client_frame(0x89, b"p")), Ok(Some(b"p".to_vec())));
        assert_eq!(
            one(&mut rx, client_frame(0x80, b"lo")),
            Ok(Some(b"hello".to_vec()))
        );
        assert_eq!(one(&mut rx, client_frame(0x82, b"x")), Ok(Some(b"x".to_vec())));
    }

    #[test]
    fn utf8_split_across_fragments_is_accepted() {
        let mut rx = Rx(Receiver::default(), 1024);
        let euro = "€".as_bytes();
        assert_eq!(one(&mut rx, client_frame(0x01, &euro[..1])), Ok(None));
        assert_eq!(
            one(&mut rx, client_frame(0x80, &euro[1..])),
            Ok(Some(euro.to_vec()))
        );
    }

    #[test]
    fn invalid_utf8_fails_on_the_first_bad_fragment() {
        let mut rx = Rx(Receiver::default(), 1024);
        assert_eq!(
            one(&mut rx, client_frame(0x01, &[0xce, 0xba, 0xff])),
            Err(ProtocolError::InvalidUtf8)
        );
        let mut rx = Rx(Receiver::default(), 1024);
        assert_eq!(
            one(&mut rx, client_frame(0x81, &[0xc0, 0x80])),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn truncated_utf8_at_the_end_of_a_message_fails() {
        let mut rx = Rx(Receiver::default(), 1024);
        assert_eq!(one(&mut rx, client_frame(0x01, &[0xe2])), Ok(None));
        assert_eq!(
            one(&mut rx, client_frame(0x80, &[0x82])),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut rx = Rx(Receiver::default(), 100);
        let frame = client_frame(0x82, &[0u8; 101]);
        let mut header_only = frame[..8].to_vec();
        assert_eq!(
            rx.0.next(&mut header_only, rx.1, false),
            Err(ProtocolError::MessageTooBig { size: 101, max: 100 })
        );
    }

    #[test]
    fn oversized_fragmented_message_is_refused() {
        let mut rx = Rx(Receiver::default(), 100);
        assert_eq!(one(&mut rx, client_frame(0x02, &[0u8; 60])), Ok(None));
        assert_eq!(
            one(&mut rx, client_frame(0x80, &[0u8; 60])),
            Err(ProtocolError::MessageTooBig { size: 120, max: 100 })
        );
    }

    #[test]
    fn rsv1_marks_a_compressed_message_only_where_deflate_was_negotiated() {
        let mut rx = Receiver::default();
        let mut whole = client_frame(0xc1, b"zz");
        let (_, msg) = rx.next(&mut whole, 100, true).unwrap().unwrap();
        assert_eq!(msg, Some(Message::Deflated(Data::Text, b"zz")));
        // Fragmented: RSV1 on the first frame; not checked as UTF-8 until inflated.
        let mut first = client_frame(0x42, &[0xff]);
        assert_eq!(rx.next(&mut first, 100, true).unwrap().unwrap().1, None);
        let mut last = client_frame(0x80, &[0xfe]);
        let (_, msg) = rx.next(&mut last, 100, true).unwrap().unwrap();
        assert_eq!(msg, Some(Message::Deflated(Data::Binary, &[0xff, 0xfe][..])));
        for (what, mut bytes) in [
            ("without deflate", client_frame(0xc1, b"zz")),
            ("on a ping", client_frame(0xc9, b"")),
        ] {
            let deflate = what != "without deflate";
            assert_eq!(
                Receiver::default().next(&mut bytes, 100, deflate),
                Err(ProtocolError::ReservedBits),
                "{what}"
            );
        }
        let mut rx = Receiver::default();
        let mut first = client_frame(0x41, b"a");
        rx.next(&mut first, 100, true).unwrap();
        let mut cont = client_frame(0xc0, b"b");
        assert_eq!(rx.next(&mut cont, 100, true), Err(ProtocolError::ReservedBits));
    }

    #[test]
    fn protocol_violations_are_errors() {
        let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
            (client_frame(0xc1, b"x"), ProtocolError::ReservedBits),
            (client_frame(0x83, b""), ProtocolError::UnknownOpcode(3)),
            (client_frame(0x8b, b""), ProtocolError::UnknownOpcode(11)),
            (vec![0x81, 0x01, b'x'], ProtocolError::Unmasked),
            (client_frame(0x09, b""), ProtocolError::FragmentedControl),
            (client_frame(0x89, &[0u8; 126]), ProtocolError::ControlTooLong),
            (client_frame(0x88, &[0x03; 126]), ProtocolError::CloseTooLong),
            (
                vec![0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4],
                ProtocolError::BadLength,
            ),
            (client_frame(0x80, b"x"), ProtocolError::UnexpectedContinuation),
            (client_frame(0x88, &[3]), ProtocolError::BadClosePayload),
            (
                client_frame(0x88, &1005u16.to_be_bytes()),
                ProtocolError::InvalidCloseCode(1005),
            ),
            (
                client_frame(0x88, &[0x03, 0xe8, 0xff]),
                ProtocolError::InvalidCloseReason,
            ),
        ];
        for (bytes, want) in cases {
            let mut rx = Rx(Receiver::default(), 1024);
            assert_eq!(one(&mut rx, bytes), Err(want.clone()), "{want}");
        }
    }

    #[test]
    fn data_frame_inside_fragmented_message_is_an_error() {
        let mut rx = Rx(Receiver::default(), 1024);
        assert_eq!(one(&mut rx, client_frame(0x01, b"a")), Ok(None));
        assert_eq!(
            one(&mut rx, client_frame(0x81, b"b")),
            Err(ProtocolError::ExpectedContinuation)
        );
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let mut rx = Rx(Receiver::default(), 1024);
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        assert_eq!(
            one(&mut rx, client_frame(0x88, &payload)),
            Ok(Some(b"close Some(1000) bye".to_vec()))
        );
        assert_eq!(
            one(&mut rx, client_frame(0x88, b"")),
            Ok(Some(b"close None ".to_vec()))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic sweep over short inputs: every result is fine, a panic is not.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            let mut rx = Rx(Receiver::default(), 64);
            let _ = rx.0.next(&mut bytes, rx.1, false);
        }
    }
}
