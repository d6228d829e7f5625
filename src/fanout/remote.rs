//! The shards' side of a broker (`--broker`): the handle they send
//! publishes, joins and interest through to the broker thread, and whether
//! the broker is reachable.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The broker could not take a publish (unreachable, or it did not answer
/// in time): nothing was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// An event on its way to the broker.
#[derive(Debug)]
pub struct Outgoing {
    pub topic: Box<str>,
    /// Whether the topic keeps a stream (offset, epoch, history).
    pub keep: bool,
    pub body: Vec<u8>,
    /// Set on a device status: it becomes the device's last known one.
    pub device: Option<Arc<str>>,
}

/// What the shards ask of the broker thread.
pub enum Command {
    /// Publish `events` in one step; the answer says whether the broker took them.
    Publish {
        events: Vec<Outgoing>,
        reply: flume::Sender<Result<(), Unavailable>>,
    },
    /// Make sure the node follows `topics` and holds each one's stream from
    /// after the offset given (for a joining client's recovery); answered
    /// once it does (or cannot).
    Warm {
        topics: Vec<(String, Option<u64>)>,
        reply: flume::Sender<()>,
    },
    /// A shard's first subscriber of `topic` arrived (`true`) or its last left.
    Interest { topic: Box<str>, up: bool },
    /// A device connected to this node (`true`) or left it: the cluster
    /// knows which node holds it, so a survivor can say `offline` for it
    /// when this node dies.
    Presence { device: Box<str>, online: bool },
}

/// The broker as the shards see it.
pub struct Remote {
    tx: flume::Sender<Command>,
    up: AtomicBool,
    /// Topics the node follows at the broker (subscribed and read).
    followed: Mutex<HashSet<Box<str>>>,
}

impl Remote {
    /// The handle and the receiving end the broker thread reads.
    pub fn new() -> (Arc<Remote>, flume::Receiver<Command>) {
        let (tx, rx) = flume::unbounded();
        (
            Arc::new(Remote {
                tx,
                up: AtomicBool::new(false),
                followed: Mutex::new(HashSet::new()),
            }),
            rx,
        )
    }

    /// Whether the broker is reachable now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Set by the broker thread.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
    }

    fn followed(&self) -> std::sync::MutexGuard<'_, HashSet<Box<str>>> {
        self.followed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the node follows `topic` at the broker.
    pub fn follows(&self, topic: &str) -> bool {
        self.followed().contains(topic)
    }

    /// Set by the broker thread as it subscribes and unsubscribes.
    pub fn set_followed(&self, topic: &str, followed: bool) {
        let mut set = self.followed();
        if followed {
            set.insert(topic.into());
        } else {
            set.remove(topic);
        }
    }

    /// Publishes `events` through the broker; `Err` when it did not take them.
    pub async fn publish(&self, events: Vec<Outgoing>) -> Result<(), Unavailable> {
        if !self.is_up() {
            return Err(Unavailable);
        }
        let (reply, answer) = flume::bounded(1);
        self.tx
            .send(Command::Publish { events, reply })
            .map_err(|_| Unavailable)?;
        answer.recv_async().await.unwrap_or(Err(Unavailable))
    }

    /// Waits until the node follows `topics` with their streams from the
    /// offsets given (see [`Command::Warm`]): one answer per topic.
    pub async fn warm(&self, topics: Vec<(String, Option<u64>)>) {
        let n = topics.len();
        let (reply, answer) = flume::unbounded();
        if self.tx.send(Command::Warm { topics, reply }).is_ok() {
            for _ in 0..n {
                if answer.recv_async().await.is_err() {
                    return;
                }
            }
        }
    }

    /// A device connected to this node or left it.
    pub fn presence(&self, device: &str, online: bool) {
        let _ = self.tx.send(Command::Presence {
            device: device.into(),
            online,
        });
    }

    /// A shard's interest in `topic` began or ended.
    pub fn interest(&self, topic: &str, up: bool) {
        let _ = self.tx.send(Command::Interest {
            topic: topic.into(),
            up,
        });
    }
}
