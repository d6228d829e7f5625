//! The history settings: how many events each topic keeps, for how long,
//! in how many bytes in all, and which topic kinds keep any.

use std::time::Duration;

/// Which topic kinds keep a stream (`history_topics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kinds {
    pub all: bool,
    pub types: bool,
    pub users: bool,
    pub rooms: bool,
}

impl Kinds {
    /// Parses `all,type:*,user:*,room:*` (any subset; empty: none).
    pub fn parse(items: &[String]) -> Result<Kinds, String> {
        let mut k = Kinds::default();
        for item in items {
            match item.as_str() {
                "all" => k.all = true,
                "type:*" => k.types = true,
                "user:*" => k.users = true,
                "room:*" => k.rooms = true,
                other => {
                    return Err(format!(
                        "'{}' is not one of all, type:*, user:*, room:* (device topics carry flat statuses and keep none)",
                        other.chars().take(64).collect::<String>()
                    ))
                }
            }
        }
        Ok(k)
    }

    /// Whether `topic` (a canonical topic key) keeps a stream.
    pub fn keeps(&self, topic: &str) -> bool {
        match topic.split_once(':') {
            None => topic == "all" && self.all,
            Some(("type", _)) => self.types,
            Some(("user", _)) => self.users,
            Some(("room", _)) => self.rooms,
            Some(_) => false,
        }
    }
}

/// The history settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events kept per topic (0: history off, no offsets).
    pub size: usize,
    pub ttl: Duration,
    pub max_bytes: usize,
    pub kinds: Kinds,
}
