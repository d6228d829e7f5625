//! The event payload: scheduled send time and sequence number ride inside
//! `data`, padded to the requested size, so every delivery can be timed.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME: publisher and clients
/// run on one machine, so their clocks agree).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The JSON `data` of event `seq` scheduled at `ts_ns`, padded so the whole
/// client envelope is about `payload_bytes`.
pub fn data(seq: u64, ts_ns: u64, payload_bytes: usize) -> String {
    // The envelope adds ~70 bytes around data; product fields add ~60.
    let fixed = 70 + 60 + 40;
    let pad = payload_bytes.saturating_sub(fixed);
    format!(
        r#"{{"seq":{seq},"ts":{ts_ns},"product_id":{seq},"product_name":"loadgen product","shop_id":10,"pad":"{}"}}"#,
        prose(seq, pad)
    )
}

/// `len` bytes of product-description prose, different for each `seq`:
/// padding that compresses like real event text (about 2x with deflate),
/// not like one repeated byte.
fn prose(seq: u64, len: usize) -> String {
    const WORDS: [&str; 32] = [
        "lamp", "desk", "oak", "steel", "warm", "light", "shade", "brass", "cable", "switch", "table",
        "modern", "classic", "white", "black", "matte", "glass", "linen", "round", "tall", "small", "soft",
        "bright", "home", "office", "reading", "dimmable", "LED", "bulb", "base", "arm", "cord",
    ];
    let mut out = String::with_capacity(len + 12);
    let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        // xorshift64: cheap, deterministic per event.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push_str(WORDS[(state % 32) as usize]);
        if state & 0x300 == 0 {
            out.push_str(&(state % 1000).to_string());
        }
        out.push(' ');
    }
    out.truncate(len);
    out
}

/// The WebSocket text message a device sends to report status change
/// `seq`, scheduled at `ts_ns`; the timing rides in `result`, which the
/// server passes through to monitors.
pub fn device_status(seq: u64, ts_ns: u64, payload_bytes: usize) -> String {
    // Monitors see ~190 bytes of fixed fields around `result`.
    let pad = payload_bytes.saturating_sub(190 + 40);
    let status = ["success", "fail", "error"][(seq % 3) as usize];
    format!(
        // `result` is a string: statuses are flat objects.
        r#"{{"type":"status","status":"{status}","mac_address":"02:00:00:00:00:01","serial_number":"LG-1","result":"seq={seq};ts={ts_ns};pad={}"}}"#,
        "x".repeat(pad)
    )
}

/// `(seq, ts_ns)` from a received envelope (`"seq":…,"ts":…` in its data)
/// or device status (`seq=…;ts=…` in its `result` string), if it carries them.
pub fn decode(message: &[u8]) -> Option<(u64, u64)> {
    let field =
        |json: &[u8], flat: &[u8]| number_after(message, json).or_else(|| number_after(message, flat));
    Some((field(b"\"seq\":", b"seq=")?, field(b"\"ts\":", b";ts=")?))
}

fn number_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = hay.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = hay[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&hay[at..at + digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trips_through_an_envelope() {
        let d = data(42, 1_700_000_000_123_456_789, 400);
        let envelope = format!(r#"{{"event":"product.approved","timestamp":"T","data":{d}}}"#);
        assert!((380..=420).contains(&envelope.len()), "{}", envelope.len());
        assert_eq!(decode(envelope.as_bytes()), Some((42, 1_700_000_000_123_456_789)));
    }

    #[test]
    fn a_device_status_round_trips_as_a_flat_object() {
        let status = device_status(7, 1_700_000_000_000_000_001, 400);
        assert!(status.contains(r#""result":"seq=7;"#), "{status}");
        assert_eq!(decode(status.as_bytes()), Some((7, 1_700_000_000_000_000_001)));
    }

    #[test]
    fn messages_without_fields_decode_to_none() {
        assert_eq!(decode(br#"{"event":"connected"}"#), None);
    }
}
