//! The client envelope of a published event,
//! `{"event":…,"topic":…,"offset":…,"epoch":…,"timestamp":…,"data":…}`:
//! serialized once when the event is parsed, and framed once when its
//! topic's stream gives it a place (offset and epoch), so the position is
//! part of the one frame every subscriber shares.

use std::sync::Arc;

use crate::proto::frame::{self, Data, OpCode, MAX_SERVER_HEADER};

/// An event's envelope without its position: the JSON before and after
/// the place where `"offset":…,"epoch":…` goes.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `{"event":…,"topic":…` then `,"timestamp":…,"data":…}`.
    json: Vec<u8>,
    /// Where the head ends and the tail begins.
    split: usize,
}

/// A place in a topic's stream (as JSON: `{"offset":…,"epoch":…}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    pub offset: u64,
    pub epoch: Epoch,
}

/// The name of one continuous life of a topic's stream: 8 characters of
/// `[0-9A-Za-z]`, so it is written into JSON without escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch([u8; 8]);

impl Epoch {
    /// A fresh epoch from `seed` bits (callers pass random ones).
    pub fn from_bits(mut seed: u64) -> Epoch {
        const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut out = [0u8; 8];
        for b in &mut out {
            *b = ALPHABET[(seed % 62) as usize];
            seed /= 62;
            // Stir the bits left over so all 8 characters stay random.
            seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        }
        Epoch(out)
    }

    /// A random epoch (from the standard library's randomly keyed hasher).
    pub fn random() -> Epoch {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Epoch::from_bits(h.finish())
    }

    /// The epoch a client sent back. Text that no epoch of this server
    /// could be reads as one that matches none.
    pub fn parse(text: &str) -> Epoch {
        match <[u8; 8]>::try_from(text.as_bytes()) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_alphanumeric) => Epoch(bytes),
            _ => Epoch([b'-'; 8]),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl serde::Serialize for Epoch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Envelope {
    /// `{"event":<event>[,"topic":<topic>]` … `,"timestamp":"<ts>","data":<data>}`.
    pub fn new(event: &str, topic: Option<&str>, timestamp: &str, data: &impl serde::Serialize) -> Envelope {
        let mut json = Vec::with_capacity(128 + event.len());
        json.extend_from_slice(b"{\"event\":");
        // Writing JSON into a Vec cannot fail.
        let _ = simd_json::to_writer(&mut json, event);
        if let Some(topic) = topic {
            json.extend_from_slice(b",\"topic\":");
            let _ = simd_json::to_writer(&mut json, topic);
        }
        let split = json.len();
        json.extend_from_slice(b",\"timestamp\":\"");
        json.extend_from_slice(timestamp.as_bytes());
        json.extend_from_slice(b"\",\"data\":");
        let _ = simd_json::to_writer(&mut json, data);
        json.push(b'}');
        Envelope { json, split }
    }

    /// The finished text frame, with `position` when the topic keeps a
    /// stream.
    pub fn frame(&self, position: Option<&Position>) -> Arc<[u8]> {
        let mut place = [0u8; 64];
        let place = match position {
            Some(p) => write_position(p, &mut place),
            None => &[][..],
        };
        let len = self.json.len() + place.len();
        let mut out = Vec::with_capacity(MAX_SERVER_HEADER + len);
        frame::write_header(OpCode::Data(Data::Text), len, &mut out);
        out.extend_from_slice(&self.json[..self.split]);
        out.extend_from_slice(place);
        out.extend_from_slice(&self.json[self.split..]);
        Arc::from(out)
    }

    /// The JSON and where its position goes (to carry it to other nodes).
    pub fn parts(&self) -> (&[u8], usize) {
        (&self.json, self.split)
    }

    /// An envelope from [`Envelope::parts`]; `None` if `split` is past the end.
    pub fn from_parts(json: Vec<u8>, split: usize) -> Option<Envelope> {
        (split <= json.len()).then_some(Envelope { json, split })
    }

    /// Bytes this envelope will take in its frame, position aside.
    pub fn len(&self) -> usize {
        self.json.len()
    }

    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }
}

/// `,"offset":<n>,"epoch":"<e>"` into `buf`; the bytes written.
fn write_position<'a>(p: &Position, buf: &'a mut [u8; 64]) -> &'a [u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // 64 bytes hold the longest u64 and the 8-character epoch.
    let _ = write!(
        cursor,
        ",\"offset\":{},\"epoch\":\"{}\"",
        p.offset,
        p.epoch.as_str()
    );
    let n = cursor.position() as usize;
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_sits_between_topic_and_timestamp() {
        let e = Envelope::new("product.approved", Some("type:user"), "T", &42);
        let p = Position {
            offset: 7,
            epoch: Epoch(*b"k3Jd9xAa"),
        };
        let f = e.frame(Some(&p));
        assert_eq!(
            std::str::from_utf8(frame::payload(&f)).unwrap(),
            r#"{"event":"product.approved","topic":"type:user","offset":7,"epoch":"k3Jd9xAa","timestamp":"T","data":42}"#
        );
        let plain = e.frame(None);
        assert_eq!(
            std::str::from_utf8(frame::payload(&plain)).unwrap(),
            r#"{"event":"product.approved","topic":"type:user","timestamp":"T","data":42}"#
        );
        let max = Position {
            offset: u64::MAX,
            epoch: Epoch::random(),
        };
        let f = e.frame(Some(&max));
        assert!(std::str::from_utf8(frame::payload(&f))
            .unwrap()
            .contains("18446744073709551615"));
    }

    #[test]
    fn epochs_are_alphanumeric_and_differ() {
        let a = Epoch::random();
        let b = Epoch::random();
        assert_ne!(a, b);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(a.as_str().len(), 8);
    }
}
