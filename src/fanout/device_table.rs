//! The last known status of each device, kept by every shard's dispatcher
//! so that a new monitor is sent it first. Bounded in count
//! (`max_devices`): past it the least recently updated device is forgotten
//! (and counted), so device ids a peer makes up cannot grow memory, and a
//! `/ws/devices/all` snapshot stays bounded too (each entry is at most
//! `max_status_bytes`).

use std::collections::BTreeMap;
use std::sync::Arc;

/// Device id → (update sequence, status frame), plus the update order.
pub struct DeviceTable {
    /// Sorted by id, so a monitor of all devices gets a stable order.
    by_id: BTreeMap<Arc<str>, (u64, Arc<[u8]>)>,
    /// Update sequence → id; the first entry is the least recently updated.
    by_age: BTreeMap<u64, Arc<str>>,
    next: u64,
    max: usize,
}

impl DeviceTable {
    /// An empty table that remembers at most `max` devices.
    pub fn new(max: usize) -> DeviceTable {
        DeviceTable {
            by_id: BTreeMap::new(),
            by_age: BTreeMap::new(),
            next: 0,
            max: max.max(1),
        }
    }

    /// Records `frame` as `id`'s last status; returns how many devices were
    /// forgotten to make room (0 or 1).
    pub fn record(&mut self, id: &Arc<str>, frame: &Arc<[u8]>) -> u64 {
        let seq = self.next;
        self.next += 1;
        if let Some((old, _)) = self.by_id.insert(id.clone(), (seq, frame.clone())) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(seq, id.clone());
        let mut forgotten = 0;
        while self.by_id.len() > self.max {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.by_id.remove(&oldest);
            forgotten += 1;
        }
        forgotten
    }

    /// `id`'s last status frame.
    pub fn get(&self, id: &str) -> Option<&Arc<[u8]>> {
        self.by_id.get(id).map(|(_, frame)| frame)
    }

    /// Every remembered status, by device id.
    pub fn frames(&self) -> impl Iterator<Item = &Arc<[u8]>> {
        self.by_id.values().map(|(_, frame)| frame)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Arc<[u8]> {
        Arc::from(text.as_bytes())
    }

    #[test]
    fn the_least_recently_updated_device_is_forgotten() {
        let mut t = DeviceTable::new(2);
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        assert_eq!(t.record(&a, &frame("a1")), 0);
        assert_eq!(t.record(&b, &frame("b1")), 0);
        // Updating `a` makes `b` the oldest.
        assert_eq!(t.record(&a, &frame("a2")), 0);
        assert_eq!(t.record(&c, &frame("c1")), 1);
        assert_eq!(t.len(), 2);
        assert!(t.get("b").is_none());
        assert_eq!(t.get("a").map(|f| &f[..]), Some(&b"a2"[..]));
        let all: Vec<&[u8]> = t.frames().map(|f| &f[..]).collect();
        assert_eq!(all, [&b"a2"[..], &b"c1"[..]]);
    }

    #[test]
    fn updates_of_one_device_never_evict() {
        let mut t = DeviceTable::new(1);
        let a: Arc<str> = "a".into();
        for i in 0..100 {
            assert_eq!(t.record(&a, &frame(&i.to_string())), 0);
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.by_age.len(), 1);
    }
}
