//! WebSocket frame bytes: server frames encoded once (unmasked, header +
//! payload in one buffer), and client payload unmasking.
//!
//! A server frame carries no mask, so the same bytes serve every recipient:
//! fan-out shares one encoded buffer instead of re-encoding per connection.

use std::sync::Arc;

pub use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Largest header of an unmasked server frame (2 + 8 length bytes).
pub const MAX_SERVER_HEADER: usize = 10;

/// Encodes one final, unmasked frame with `payload` into a new buffer.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_SERVER_HEADER + payload.len());
    write_header(opcode, payload.len(), &mut out);
    out.extend_from_slice(payload);
    out
}

/// Encodes a frame into an immutable buffer shared by every recipient.
pub fn encode_shared(opcode: OpCode, payload: &[u8]) -> Arc<[u8]> {
    Arc::from(encode(opcode, payload))
}

/// Writes the header of a final, unmasked frame of `len` payload bytes,
/// formatted by tungstenite's `FrameHeader::format`.
pub fn write_header(opcode: OpCode, len: usize, out: &mut Vec<u8>) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(len as u64, out);
}

/// The same with RSV1 set: a permessage-deflate message's (RFC 7692 §6).
pub fn write_header_deflated(opcode: OpCode, len: usize, out: &mut Vec<u8>) {
    let header = FrameHeader {
        opcode,
        rsv1: true,
        ..FrameHeader::default()
    };
    let _ = header.format(len as u64, out);
}

/// A close frame with `code` and a reason (cut to fit the 125-byte control
/// payload limit on a character boundary).
/// The payload of an unmasked server frame this server encoded (header
/// lengths 2, 4 or 10); empty for anything shorter than its header.
pub fn payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(header..).unwrap_or(&[])
}

pub fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OpCode::Control(Control::Close), &payload)
}

/// XORs `buf` with the client's 4-byte mask, 8 bytes at a time.
pub fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8])) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the mask phase is 0 there too.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_text_frame_has_two_byte_header() {
        assert_eq!(encode(OpCode::Data(Data::Text), b"hi"), vec![0x81, 2, b'h', b'i']);
    }

    #[test]
    fn medium_and_large_lengths_use_extended_fields() {
        let f = encode(OpCode::Data(Data::Binary), &[0u8; 300]);
        assert_eq!(&f[..4], &[0x82, 126, 1, 44]);
        assert_eq!(f.len(), 4 + 300);
        let f = encode(OpCode::Data(Data::Binary), &vec![0u8; 70_000]);
        assert_eq!(&f[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let f = close(1001, &"é".repeat(100));
        assert_eq!(f[0], 0x88);
        let len = f[1] as usize;
        assert!(len <= 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
        assert_eq!(u16::from_be_bytes([f[2], f[3]]), 1001);
    }

    #[test]
    fn unmask_matches_bytewise_xor_for_every_length() {
        let mask = [1, 2, 3, 4];
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }
}
