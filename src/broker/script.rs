//! What shardcast keeps in Redis and the two Lua scripts that change and
//! read it, each one atomic step: key and channel names, publishing a
//! batch (append to each topic's stream, then PUBLISH with its place), and
//! reading a topic's stream back (its epoch, newest offset, and entries
//! after an offset).
//!
//! Per topic that keeps a stream: `<prefix>m:<topic>` a hash with the
//! epoch (`e`) and newest offset (`o`); `<prefix>s:<topic>` a stream of
//! at most `history_size` entries, id `0-<offset>`, field `d` the body;
//! both expire (`history_ttl`; the meta hash lives longer, so offsets go
//! on counting in the same epoch after the entries expired). Every topic
//! has the channel `<prefix>c:<topic>`; a message is
//! `<offset>:<epoch>:<body>` (`0::<body>` for a topic without a stream).
//! `<prefix>devices` holds each device's last status, `<prefix>owners`
//! the node each connected device is on, `<prefix>nodes` each node's last
//! report.

use redis::Value;

use crate::broker::track::Read;
use crate::fanout::envelope::{Epoch, Position};

/// How long a topic's meta hash outlives its last publish, at least.
pub const META_TTL_SECS: u64 = 24 * 3600;

/// KEYS: stream, meta per event, then the device hash. ARGV: size, ttl,
/// meta ttl, fresh epoch, then channel, keep (1/0), body, device (may be
/// empty) per event. A device's status is also its last known one in the
/// device hash. Returns the offsets.
pub const PUBLISH: &str = r#"
local size, ttl, meta_ttl, fresh = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local devices = KEYS[#KEYS]
local out = {}
for i = 0, (#KEYS - 1) / 2 - 1 do
  local stream, meta = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local channel, keep, body, device = ARGV[5 + 4 * i], ARGV[6 + 4 * i], ARGV[7 + 4 * i], ARGV[8 + 4 * i]
  if device ~= '' then
    redis.call('hset', devices, device, body)
  end
  if keep == '1' then
    local epoch = redis.call('hget', meta, 'e')
    if not epoch then
      epoch = fresh
      redis.call('del', stream)
      redis.call('hset', meta, 'e', epoch)
    end
    local offset = redis.call('hincrby', meta, 'o', 1)
    redis.call('xadd', stream, 'MAXLEN', size, '0-' .. offset, 'd', body)
    redis.call('expire', stream, ttl)
    redis.call('expire', meta, meta_ttl)
    redis.call('publish', channel, offset .. ':' .. epoch .. ':' .. body)
    out[#out + 1] = offset
  else
    redis.call('publish', channel, '0::' .. body)
    out[#out + 1] = 0
  end
end
return out
"#;

/// KEYS: stream, meta. ARGV: after, count, fresh epoch, meta ttl. Opens
/// the meta hash when missing (so a topic's first event takes the epoch a
/// client was told). Returns {epoch, top, {id, {field, value}}...}.
pub const READ: &str = r#"
local m = redis.call('hmget', KEYS[2], 'e', 'o')
local epoch, top = m[1], m[2]
if not epoch then
  epoch, top = ARGV[3], '0'
  redis.call('del', KEYS[1])
  redis.call('hset', KEYS[2], 'e', epoch, 'o', 0)
  redis.call('expire', KEYS[2], ARGV[4])
end
local entries = {}
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('xrange', KEYS[1], '0-' .. (tonumber(ARGV[1]) + 1), '+', 'COUNT', ARGV[2])
end
return {epoch, top or '0', entries}
"#;

/// KEYS: owners hash, devices hash. ARGV: device, node. Takes the device
/// from a dead `node` if that node still holds it; returns its last status
/// body (or false: someone else holds it now, or it was taken already).
pub const TAKE_OVER: &str = r#"
if redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return false
end
redis.call('hdel', KEYS[1], ARGV[1])
return redis.call('hget', KEYS[2], ARGV[1]) or ''
"#;

/// KEYS: owners hash. ARGV: device, node. A device left `node`: forget it
/// unless another node holds it by now.
pub const RELEASE: &str = r#"
if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('hdel', KEYS[1], ARGV[1])
end
return 1
"#;

/// The Redis names of one cluster (`broker_prefix`).
#[derive(Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_string(),
        }
    }

    pub fn channel(&self, topic: &str) -> String {
        format!("{}c:{topic}", self.prefix)
    }

    /// The topic of a channel name, if it is one of ours.
    pub fn topic_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.prefix)?.strip_prefix("c:")
    }

    pub fn stream(&self, topic: &str) -> String {
        format!("{}s:{topic}", self.prefix)
    }

    pub fn meta(&self, topic: &str) -> String {
        format!("{}m:{topic}", self.prefix)
    }

    /// The hash of every device's last known status (body by device id).
    pub fn devices(&self) -> String {
        format!("{}devices", self.prefix)
    }

    /// The hash of the node each connected device is on.
    pub fn owners(&self) -> String {
        format!("{}owners", self.prefix)
    }

    /// The hash of every node's last report (`<connections>:<unix ms>` by node id).
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// The channel a node sends its liveness probes through.
    pub fn probe(&self, node: &str) -> String {
        format!("{}probe:{node}", self.prefix)
    }
}

/// A channel message: its place and body.
pub fn parse_message(payload: &[u8]) -> Option<(Option<Position>, &[u8])> {
    let mut parts = payload.splitn(3, |&b| b == b':');
    let offset: u64 = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let epoch = parts.next()?;
    let body = parts.next()?;
    if offset == 0 {
        return Some((None, body));
    }
    let epoch = Epoch::parse(std::str::from_utf8(epoch).ok()?);
    Some((Some(Position { offset, epoch }), body))
}

/// The reply of [`READ`].
pub fn parse_read(value: Value) -> Option<Read> {
    let Value::Array(mut parts) = value else {
        return None;
    };
    if parts.len() != 3 {
        return None;
    }
    let entries = parts.pop()?;
    let top = text(&parts.pop()?)?.parse().ok()?;
    let epoch = Epoch::parse(&text(&parts.pop()?)?);
    let mut read = Read {
        epoch: Some(epoch),
        top,
        entries: Vec::new(),
    };
    let Value::Array(entries) = entries else {
        return None;
    };
    for entry in entries {
        let Value::Array(mut pair) = entry else {
            return None;
        };
        let Some(Value::Array(fields)) = pair.pop() else {
            return None;
        };
        let id = text(&pair.pop()?)?;
        let offset = id.strip_prefix("0-")?.parse().ok()?;
        let body = match fields.into_iter().nth(1)? {
            Value::BulkString(b) => b,
            _ => return None,
        };
        read.top = read.top.max(offset);
        read.entries.push((offset, body));
    }
    Some(read)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_with_and_without_a_place() {
        let (p, body) = parse_message(b"12:k3Jd9xAa:E3:{}:x").unwrap();
        assert_eq!(p.unwrap().offset, 12);
        assert_eq!(body, b"E3:{}:x");
        let (p, body) = parse_message(b"0::F0:ab").unwrap();
        assert!(p.is_none());
        assert_eq!(body, b"F0:ab");
        assert!(parse_message(b"x:y").is_none());
        let n = Names::new("sc:");
        assert_eq!(n.topic_of(&n.channel("user:1")), Some("user:1"));
        assert_eq!(n.topic_of("other:c:x"), None);
    }
}
