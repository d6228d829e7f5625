//! Per-shard topic → local subscribers. Topics are interned to small ids so
//! a connection remembers its subscriptions as pairs of integers; subscribe
//! and unsubscribe are O(1); a topic with no subscribers is forgotten.

use std::collections::HashMap;
use std::rc::Rc;

use slab::Slab;

use crate::conn::handle::{Conn, Subscription};

struct TopicEntry {
    name: Box<str>,
    subscribers: Slab<Rc<Conn>>,
}

/// The shard's topics and who, on this shard, is subscribed to each.
#[derive(Default)]
pub struct Registry {
    ids: HashMap<Box<str>, u32>,
    topics: Slab<TopicEntry>,
}

impl Registry {
    /// Subscribes `conn` to `topic`.
    pub fn subscribe(&mut self, topic: &str, conn: &Rc<Conn>) -> Subscription {
        let id = match self.ids.get(topic) {
            Some(&id) => id,
            None => {
                let id = self.topics.insert(TopicEntry {
                    name: topic.into(),
                    subscribers: Slab::new(),
                }) as u32;
                self.ids.insert(topic.into(), id);
                id
            }
        };
        let slot = self.topics[id as usize].subscribers.insert(conn.clone()) as u32;
        Subscription { topic: id, slot }
    }

    /// Undoes `sub`; forgets the topic when it has no subscribers left,
    /// and then returns its name.
    pub fn unsubscribe(&mut self, sub: Subscription) -> Option<Box<str>> {
        let entry = self.topics.get_mut(sub.topic as usize)?;
        entry.subscribers.try_remove(sub.slot as usize);
        if entry.subscribers.is_empty() {
            let entry = self.topics.remove(sub.topic as usize);
            self.ids.remove(&entry.name);
            return Some(entry.name);
        }
        None
    }

    /// The id of `topic`, if anyone on this shard is subscribed.
    pub fn id(&self, topic: &str) -> Option<u32> {
        self.ids.get(topic).copied()
    }

    /// This shard's subscribers of `topic`.
    pub fn subscribers(&self, topic: &str) -> Option<&Slab<Rc<Conn>>> {
        let id = self.ids.get(topic)?;
        Some(&self.topics[*id as usize].subscribers)
    }

    /// Whether topic `id` is a room.
    pub fn is_room(&self, id: u32) -> bool {
        self.topics
            .get(id as usize)
            .is_some_and(|t| t.name.starts_with("room:"))
    }

    /// How many rooms `conn` joined (its subscriptions to `room:` topics).
    pub fn rooms_of(&self, conn: &Conn) -> usize {
        conn.room_count(|id| self.is_room(id))
    }

    /// Rooms with a subscriber on this shard.
    pub fn room_count(&self) -> usize {
        self.ids.keys().filter(|k| k.starts_with("room:")).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(key: u32) -> Rc<Conn> {
        Rc::new(Conn::new(key, -1, 0, crate::conn::handle::ConnSpec::echo(), None))
    }

    #[test]
    fn subscribe_find_unsubscribe_forget() {
        let mut r = Registry::default();
        let (a, b) = (conn(1), conn(2));
        let sa = r.subscribe("user:alice", &a);
        let sb = r.subscribe("user:alice", &b);
        assert_eq!(r.subscribers("user:alice").unwrap().len(), 2);
        assert!(r.subscribers("user:bob").is_none());
        r.unsubscribe(sa);
        let keys: Vec<u32> = r
            .subscribers("user:alice")
            .unwrap()
            .iter()
            .map(|(_, c)| c.key)
            .collect();
        assert_eq!(keys, vec![2]);
        r.unsubscribe(sb);
        assert!(r.subscribers("user:alice").is_none());
        assert_eq!(r.id("user:alice"), None);
    }

    #[test]
    fn room_count_counts_live_rooms() {
        let mut r = Registry::default();
        let a = conn(1);
        r.subscribe("room:x", &a);
        let s = r.subscribe("room:y", &a);
        r.subscribe("all", &a);
        assert_eq!(r.room_count(), 2);
        assert!(r.is_room(s.topic));
        r.unsubscribe(s);
        assert_eq!(r.room_count(), 1);
    }
}
