//! Per-connection offset checking: every event on a topic with a history
//! carries `"offset"`, +1 per event with no gaps. A connection starts from
//! the positions in its `connected` event, and a skipped offset is loss, an
//! offset seen again is a duplicate — across reconnects too, since a
//! reconnecting client keeps its tracker and resumes from `since`.

use simd_json::prelude::*;

/// The last offset seen per topic on one connection.
#[derive(Default, Clone)]
pub struct Offsets {
    topics: Vec<(String, u64)>,
    /// Epoch per topic, as the `connected` event gave it.
    epochs: Vec<(String, String)>,
}

/// What the `connected` event said.
#[derive(Default, Debug, PartialEq)]
pub struct Connected {
    /// Events recovery replays (sum of `missed` over `recovered:true` topics).
    pub missed: u64,
    /// Topics recovery could not serve, with the reason.
    pub lost: Vec<(String, String)>,
}

impl Offsets {
    /// Reads a `connected` event: starts tracking each topic at its position
    /// (unless already tracked: a reconnect resumes where it was).
    pub fn connected(&mut self, message: &[u8]) -> Option<Connected> {
        if !message.starts_with(br#"{"event":"connected""#) {
            return None;
        }
        let mut bytes = message.to_vec();
        let value = simd_json::to_owned_value(&mut bytes).ok()?;
        let data = value.get("data")?;
        if let Some(positions) = data.get("positions").and_then(|p| p.as_object()) {
            for (topic, p) in positions.iter() {
                let (Some(offset), Some(epoch)) = (p.get_u64("offset"), p.get_str("epoch")) else {
                    continue;
                };
                let topic: &str = topic.as_ref();
                let known = self.epochs.iter().position(|(t, _)| t == topic);
                match known {
                    // A reconnect in the same epoch resumes where it was.
                    Some(i) if self.epochs[i].1 == epoch => {}
                    // A new epoch (the server lost its history: a restart
                    // of the in-memory default) numbers from its position.
                    Some(i) => {
                        self.epochs[i].1 = epoch.to_string();
                        if let Some(t) = self.topics.iter_mut().find(|(t, _)| t == topic) {
                            t.1 = offset;
                        }
                    }
                    None => {
                        self.topics.retain(|(t, _)| t != topic);
                        self.topics.push((topic.to_string(), offset));
                        self.epochs.push((topic.to_string(), epoch.to_string()));
                    }
                }
            }
        }
        let mut out = Connected::default();
        if let Some(recovery) = data.get("recovery").and_then(|r| r.as_object()) {
            for (topic, r) in recovery.iter() {
                if r.get_bool("recovered") == Some(true) {
                    out.missed += r.get_u64("missed").unwrap_or(0);
                } else {
                    out.lost
                        .push((topic.to_string(), r.get_str("reason").unwrap_or("").to_string()));
                }
            }
        }
        Some(out)
    }

    /// Checks one event; returns (offsets skipped, 1 if seen before).
    pub fn see(&mut self, message: &[u8]) -> (u64, u64) {
        let (Some(topic), Some(offset)) = (
            string_after(message, b"\"topic\":\""),
            number_after(message, b"\"offset\":"),
        ) else {
            return (0, 0);
        };
        match self.topics.iter_mut().find(|(t, _)| t.as_bytes() == topic) {
            Some((_, last)) if offset <= *last => (0, 1),
            Some((_, last)) => {
                let skipped = offset - *last - 1;
                *last = offset;
                (skipped, 0)
            }
            None => {
                // A topic the connected event gave no position for: start here.
                self.topics
                    .push((String::from_utf8_lossy(topic).into_owned(), offset));
                (0, 0)
            }
        }
    }

    /// The last offset seen on `topic`.
    pub fn last(&self, topic: &str) -> Option<u64> {
        self.topics.iter().find(|(t, _)| t == topic).map(|(_, o)| *o)
    }

    /// `{"topic":{"epoch":…,"offset":…},…}` of every tracked topic with an epoch.
    pub fn since(&self) -> String {
        let parts: Vec<String> = self
            .epochs
            .iter()
            .filter_map(|(t, e)| {
                let o = self.last(t)?;
                Some(format!(r#""{t}":{{"epoch":"{e}","offset":{o}}}"#))
            })
            .collect();
        format!("{{{}}}", parts.join(","))
    }
}

fn number_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = hay.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = hay[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&hay[at..at + digits]).ok()?.parse().ok()
}

fn string_after<'a>(hay: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = hay.windows(key.len()).position(|w| w == key)? + key.len();
    let len = hay[at..].iter().position(|&b| b == b'"')?;
    Some(&hay[at..at + len])
}

/// Percent-encodes `text` for a query string.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_duplicates_are_counted_from_the_connected_positions() {
        let mut o = Offsets::default();
        let hello = br#"{"event":"connected","timestamp":"T","data":{"positions":{"type:user":{"offset":4,"epoch":"AAAAAAAA"}}}}"#;
        assert_eq!(o.connected(hello), Some(Connected::default()));
        let ev = |n: u64| {
            format!(r#"{{"event":"e","topic":"type:user","offset":{n},"epoch":"AAAAAAAA","data":1}}"#)
        };
        assert_eq!(o.see(ev(5).as_bytes()), (0, 0));
        assert_eq!(o.see(ev(8).as_bytes()), (2, 0));
        assert_eq!(o.see(ev(8).as_bytes()), (0, 1));
        assert_eq!(o.since(), r#"{"type:user":{"epoch":"AAAAAAAA","offset":8}}"#);
        let back = br#"{"event":"connected","timestamp":"T","data":{"positions":{"type:user":{"offset":9,"epoch":"AAAAAAAA"}},"recovery":{"type:user":{"recovered":true,"missed":1},"all":{"recovered":false,"reason":"too old"}}}}"#;
        let c = o.connected(back).unwrap();
        assert_eq!((c.missed, c.lost.len()), (1, 1));
        assert_eq!(o.last("type:user"), Some(8), "a reconnect resumes where it was");
        assert_eq!(o.see(br#"{"event":"x","topic":"devices"}"#), (0, 0));
        // A restarted server: a new epoch numbers from its own position.
        let restarted = br#"{"event":"connected","timestamp":"T","data":{"positions":{"type:user":{"offset":0,"epoch":"BBBBBBBB"}},"recovery":{"type:user":{"recovered":false,"reason":"epoch changed"}}}}"#;
        let c = o.connected(restarted).unwrap();
        assert_eq!(
            c.lost,
            vec![("type:user".to_string(), "epoch changed".to_string())]
        );
        assert_eq!(o.since(), r#"{"type:user":{"epoch":"BBBBBBBB","offset":0}}"#);
        assert_eq!(o.see(ev(1).as_bytes()), (0, 0), "offset 1 follows 0, no gap");
    }
}
