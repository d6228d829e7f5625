//! The per-shard latency histograms (fan-out, handshake), recorded once per
//! dispatch round or handshake, never per delivery.

use std::sync::Mutex;

use hdrhistogram::Histogram;

/// A shard's latency histograms (microseconds). The owning shard locks each
/// once per dispatch round or handshake; a scrape locks it briefly.
pub struct Latencies {
    pub fanout: Mutex<Histogram<u64>>,
    pub handshake: Mutex<Histogram<u64>>,
}

impl Default for Latencies {
    fn default() -> Self {
        let h = || Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"));
        Latencies {
            fanout: h(),
            handshake: h(),
        }
    }
}

/// Records `micros` into `h`.
pub fn record(h: &Mutex<Histogram<u64>>, micros: u64) {
    if let Ok(mut h) = h.lock() {
        let _ = h.record(micros.clamp(1, 60_000_000));
    }
}
