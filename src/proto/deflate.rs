//! permessage-deflate (RFC 7692): the offer a client makes on the upgrade,
//! the answer we give, and the codec.
//!
//! We always answer `server_no_context_takeover` and
//! `client_no_context_takeover`: every message is compressed on its own, so
//! one compressed broadcast frame is valid for every subscriber, and no
//! connection keeps a compression window (32 KiB or more each) between
//! messages. One compressor and one decompressor per shard do all the work.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::proto::frame::{self, OpCode, MAX_SERVER_HEADER};
use crate::proto::http::Request;

/// The tail a sync flush leaves, removed from each message (RFC 7692 §7.2.1)
/// and put back before inflating it (§7.2.2).
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What a client agreed to: the largest LZ77 window it can inflate
/// (`server_max_window_bits`, 8–15; 15 when it set none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    pub window_bits: u8,
}

impl Agreed {
    /// Whether a message of `len` bytes, compressed on its own, is valid for
    /// this client: its back-references reach at most `len - 1` bytes back,
    /// so any window that holds the whole message is enough.
    pub fn fits(window_bits: u8, len: usize) -> bool {
        window_bits != 0 && len <= 1usize << window_bits
    }
}

/// The first `permessage-deflate` offer in `request` we can accept, with
/// the `Sec-WebSocket-Extensions` line of the 101 (CRLF included).
/// Offers with unknown or repeated parameters, or invalid values, are
/// declined (RFC 7692 §5); other extensions are ignored.
pub fn negotiate(request: &Request) -> Option<(Agreed, String)> {
    request
        .headers
        .iter()
        .filter(|(name, _)| name == "sec-websocket-extensions")
        .flat_map(|(_, value)| value.split(','))
        .find_map(accept_offer)
}

/// One offer (`permessage-deflate; param; param=value`): our answer, or
/// `None` to decline it.
fn accept_offer(offer: &str) -> Option<(Agreed, String)> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let (mut server_nct, mut client_nct, mut client_bits) = (false, false, false);
    let mut server_bits: Option<u8> = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let seen = match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) => std::mem::replace(&mut server_nct, true),
            ("client_no_context_takeover", None) => std::mem::replace(&mut client_nct, true),
            ("server_max_window_bits", Some(v)) => server_bits.replace(window_bits(v)?).is_some(),
            ("client_max_window_bits", v) => {
                if let Some(v) = v {
                    window_bits(v)?;
                }
                std::mem::replace(&mut client_bits, true)
            }
            _ => return None,
        };
        if seen {
            return None;
        }
    }
    let mut line =
        String::from("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_bits {
        line.push_str(&format!("; server_max_window_bits={bits}"));
    }
    line.push_str("\r\n");
    Some((
        Agreed {
            window_bits: server_bits.unwrap_or(15),
        },
        line,
    ))
}

/// A window size parameter: 8–15, decimal digits only (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty()
        || value.len() > 2
        || !value.bytes().all(|b| b.is_ascii_digit())
        || value.starts_with('0')
    {
        return None;
    }
    value.parse().ok().filter(|b| (8..=15).contains(b))
}

/// A shard's permessage-deflate state: one compressor, one decompressor
/// and the buffer a client message is inflated into.
pub struct Codec {
    deflater: Deflater,
    pub inflater: Inflater,
    /// Lent to the message being handled (`std::mem::take`), then put back.
    pub inflated: Vec<u8>,
    scratch: Vec<u8>,
}

impl Codec {
    pub fn new(level: u32) -> Codec {
        Codec {
            deflater: Deflater::new(level),
            inflater: Inflater::default(),
            inflated: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// A final frame of `payload` compressed on its own (RSV1 set), or
    /// `None` when compressing does not make it smaller.
    pub fn frame(&mut self, opcode: OpCode, payload: &[u8]) -> Option<Vec<u8>> {
        self.scratch.clear();
        self.deflater.compress(payload, &mut self.scratch);
        if self.scratch.len() >= payload.len() {
            return None;
        }
        let mut out = Vec::with_capacity(MAX_SERVER_HEADER + self.scratch.len());
        frame::write_header_deflated(opcode, self.scratch.len(), &mut out);
        out.extend_from_slice(&self.scratch);
        Some(out)
    }

    /// Gives back the inflate buffer; a large one is not kept.
    pub fn restore(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() <= 1 << 20 {
            buf.clear();
            self.inflated = buf;
        }
    }
}

/// Why a compressed client message is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the message limit (close 1009).
    TooBig,
    /// It is not valid deflate data (close 1007).
    Corrupt,
}

/// A shard's compressor: raw deflate, 32 KiB window, reset per message.
pub struct Deflater(Compress);

impl Deflater {
    pub fn new(level: u32) -> Deflater {
        Deflater(Compress::new_with_window_bits(Compression::new(level), false, 15))
    }

    /// `payload` compressed on its own, trailer removed, appended to `out`.
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        self.0.reset();
        let start = out.len();
        out.reserve(payload.len() + payload.len() / 64 + 64);
        let mut used = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.len() - start + 64);
            }
            let (before_in, before_out) = (self.0.total_in(), self.0.total_out());
            // Compressing a valid stream into a Vec cannot fail.
            if self
                .0
                .compress_vec(&payload[used..], out, FlushCompress::Sync)
                .is_err()
            {
                break;
            }
            used += (self.0.total_in() - before_in) as usize;
            let progress = self.0.total_in() != before_in || self.0.total_out() != before_out;
            // The sync flush is complete once it leaves room to spare.
            if used == payload.len() && out.capacity() > out.len() || !progress {
                break;
            }
        }
        if out.len() >= start + TRAILER.len() && out.ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        }
    }
}

/// A shard's decompressor: raw inflate with a 32 KiB window (enough for
/// any client window), reset per message (no client context takeover).
pub struct Inflater(Decompress);

impl Default for Inflater {
    fn default() -> Inflater {
        Inflater(Decompress::new_with_window_bits(false, 15))
    }
}

impl Inflater {
    /// Inflates one message into `out` (cleared first), never past
    /// `max + 1` bytes: a decompression bomb stops at the limit.
    pub fn inflate(&mut self, payload: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
        self.0.reset(false);
        out.clear();
        let limit = max.saturating_add(1);
        for part in [payload, &TRAILER[..]] {
            let mut used = 0;
            loop {
                if out.capacity() == out.len() {
                    let want = (out.len() * 2).max(4096).min(limit);
                    out.reserve_exact(want.saturating_sub(out.len()).max(1));
                }
                let (before_in, before_out) = (self.0.total_in(), self.0.total_out());
                let status = self
                    .0
                    .decompress_vec(&part[used..], out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                used += (self.0.total_in() - before_in) as usize;
                if out.len() > max {
                    return Err(InflateError::TooBig);
                }
                if status == Status::StreamEnd {
                    // A final block ends the message; what follows is ignored.
                    return Ok(());
                }
                let progress = self.0.total_in() != before_in || self.0.total_out() != before_out;
                if used == part.len() && out.capacity() > out.len() || !progress {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(value: &str) -> Option<(Agreed, String)> {
        negotiate(&Request::get(
            "/ws/echo",
            None,
            &[("sec-websocket-extensions", value)],
        ))
    }

    #[test]
    fn a_plain_offer_is_accepted_without_context_takeover() {
        let (agreed, line) = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(agreed.window_bits, 15);
        assert_eq!(
            line,
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        );
    }

    #[test]
    fn a_window_limit_is_echoed_and_kept() {
        let (agreed, line) =
            offer("permessage-deflate; server_max_window_bits=9; server_no_context_takeover").unwrap();
        assert_eq!(agreed.window_bits, 9);
        assert!(line.ends_with("; server_max_window_bits=9\r\n"), "{line}");
        assert!(Agreed::fits(9, 512) && !Agreed::fits(9, 513) && !Agreed::fits(0, 1));
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; speed=fast",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        let (agreed, _) = offer(
            "permessage-deflate; server_max_window_bits=99, permessage-deflate; server_max_window_bits=10",
        )
        .unwrap();
        assert_eq!(agreed.window_bits, 10);
        assert_eq!(negotiate(&Request::get("/", None, &[])), None);
    }

    #[test]
    fn compress_then_inflate_round_trips() {
        let mut d = Deflater::new(1);
        let mut i = Inflater::default();
        for text in [
            &b""[..],
            b"x",
            &br#"{"event":"product.approved","data":{"id":1}}"#.repeat(40),
        ] {
            let mut packed = Vec::new();
            d.compress(text, &mut packed);
            let mut out = Vec::new();
            i.inflate(&packed, 1 << 20, &mut out).unwrap();
            assert_eq!(out, text);
        }
        let big: Vec<u8> = (0..200_000u32).map(|n| (n % 251) as u8).collect();
        let mut packed = Vec::new();
        d.compress(&big, &mut packed);
        let mut out = Vec::new();
        i.inflate(&packed, 1 << 20, &mut out).unwrap();
        assert_eq!(out, big);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let mut packed = Vec::new();
        Deflater::new(9).compress(&zeros, &mut packed);
        assert!(packed.len() < 20_000);
        let mut out = Vec::new();
        let mut i = Inflater::default();
        assert_eq!(i.inflate(&packed, 1 << 20, &mut out), Err(InflateError::TooBig));
        assert!(out.len() <= (1 << 20) + 1);
        assert_eq!(
            i.inflate(&[0xff, 0xff, 0xff], 100, &mut out),
            Err(InflateError::Corrupt)
        );
        // The inflater is usable again after a refusal.
        let mut small = Vec::new();
        Deflater::new(1).compress(b"hello", &mut small);
        i.inflate(&small, 100, &mut out).unwrap();
        assert_eq!(out, b"hello");
    }
}
