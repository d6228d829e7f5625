//! The publish API: `POST /api/v1/publish`, `/api/v1/publish/batch` and
//! `/api/v1/devices/{id}/status`. Bodies are checked, then parsed with
//! simd-json; each event is turned into its client envelope and WebSocket
//! frame exactly once. A batch with any bad event publishes nothing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use simd_json::OwnedValue;

use std::time::Instant;

use crate::api::refusal::reject;
use crate::auth::verify::{self, AuthError};
use crate::fanout::broadcast::{Content, Draft};
use crate::fanout::devices;
use crate::fanout::envelope::Envelope;
use crate::fanout::topic::{Topic, TopicError};
use crate::proto::http::{self, Request};
use crate::proto::json::{self, JsonError};
use crate::shard::Shard;
use crate::time;

/// Longest event name.
pub const MAX_EVENT_NAME: usize = 200;

/// Why a publish request is refused (nothing of it is published).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The body is not JSON of the expected shape.
    #[error("invalid JSON body: {0}")]
    BadJson(JsonError),
    /// An event's topic is not a valid topic.
    #[error("{}invalid topic: {error}", at(*.index))]
    BadTopic { index: Option<usize>, error: TopicError },
    /// A `type:` topic naming no configured client type: nobody could ever
    /// receive it.
    #[error("{}no client type '{name}' (configured: {known}); no connection could receive this topic", at(*.index))]
    UnknownClientType {
        index: Option<usize>,
        name: String,
        known: String,
    },
    /// An event's name is empty or too long.
    #[error("{}'event' must be 1 to {MAX_EVENT_NAME} bytes", at(*.index))]
    BadEventName { index: Option<usize> },
    /// A batch with no events.
    #[error("'events' is empty")]
    EmptyBatch,
    /// A batch over the configured count limit.
    #[error("batch of {count} events exceeds the limit of {max}")]
    TooManyEvents { count: usize, max: usize },
}

fn at(index: Option<usize>) -> String {
    index.map(|i| format!("events[{i}]: ")).unwrap_or_default()
}

impl PublishError {
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            PublishError::TooManyEvents { .. } => (413, "too_many_events"),
            PublishError::BadJson(_) => (400, "bad_json"),
            _ => (400, "bad_event"),
        }
    }
}

#[derive(Deserialize)]
struct EventIn {
    topic: String,
    event: String,
    #[serde(default)]
    data: OwnedValue,
}

#[derive(Deserialize)]
struct BatchIn {
    events: Vec<EventIn>,
}

/// Parses a JSON object body of type `T`, nesting at most `max_depth` deep.
fn parse_body<T: serde::de::DeserializeOwned>(body: &mut [u8], max_depth: usize) -> Result<T, PublishError> {
    json::check_object(body, max_depth).map_err(PublishError::BadJson)?;
    simd_json::serde::from_slice(body).map_err(|e| PublishError::BadJson(json::describe(&e)))
}

/// What a publish body is checked against (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// `max_json_depth`.
    pub max_depth: usize,
    /// `max_batch_events`.
    pub max_events: usize,
    /// The configured client types (`type:` topics must name one).
    pub client_types: &'a [String],
}

/// Parses a single-event body into its encoded event.
pub fn parse_one(body: &mut [u8], timestamp: &str, rules: Rules<'_>) -> Result<Vec<Draft>, PublishError> {
    let event: EventIn = parse_body(body, rules.max_depth)?;
    Ok(vec![encode(event, timestamp, None, rules)?])
}

/// Parses a batch body (`{"events":[…]}`) into encoded events, in order.
pub fn parse_batch(body: &mut [u8], timestamp: &str, rules: Rules<'_>) -> Result<Vec<Draft>, PublishError> {
    let max_events = rules.max_events;
    let batch: BatchIn = parse_body(body, rules.max_depth)?;
    if batch.events.is_empty() {
        return Err(PublishError::EmptyBatch);
    }
    if batch.events.len() > max_events {
        return Err(PublishError::TooManyEvents {
            count: batch.events.len(),
            max: max_events,
        });
    }
    batch
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| encode(e, timestamp, Some(i), rules))
        .collect()
}

/// Validates one event and serializes its envelope
/// (`{"event":…,"topic":…,"timestamp":…,"data":…}`; framed once it has its place).
fn encode(
    event: EventIn,
    timestamp: &str,
    index: Option<usize>,
    rules: Rules<'_>,
) -> Result<Draft, PublishError> {
    let topic = Topic::parse(&event.topic).map_err(|error| PublishError::BadTopic { index, error })?;
    if let Topic::Type(name) = &topic {
        if !rules.client_types.iter().any(|t| t == name) {
            return Err(PublishError::UnknownClientType {
                index,
                name: name.chars().take(64).collect(),
                known: rules.client_types.join(", "),
            });
        }
    }
    if event.event.is_empty() || event.event.len() > MAX_EVENT_NAME {
        return Err(PublishError::BadEventName { index });
    }
    let key = topic.key();
    Ok(Draft {
        content: Content::Envelope(Envelope::new(&event.event, Some(&key), timestamp, &event.data)),
        topic: key.into(),
        device: None,
    })
}

/// An envelope with no topic or position (the `connected` event) as one
/// shared text frame.
pub fn envelope_frame(event: &str, timestamp: &str, data: &impl serde::Serialize) -> Arc<[u8]> {
    Envelope::new(event, None, timestamp, data).frame(None)
}

#[derive(Serialize)]
struct Accepted<'a> {
    id: &'a str,
    events: usize,
    timestamp: &'a str,
}

/// What a publish endpoint refuses: status, code, message.
type Refused = (u16, &'static str, String);

/// The publish endpoints: API key, then `parse` (which validates and encodes
/// each event once), broadcast to every shard, 202 with the id.
async fn publish_with(
    shard: &Shard,
    request: &mut Request,
    keep_alive: bool,
    parse: impl FnOnce(&mut Vec<u8>, &str) -> Result<(Vec<Draft>, usize), Refused>,
) -> Vec<u8> {
    if !verify::has_api_key(request, &shard.config.api_key) {
        let (status, code) = AuthError::BadApiKey.status();
        let message = AuthError::BadApiKey.to_string();
        return reject(
            shard,
            status,
            code,
            &message,
            keep_alive,
            &[("WWW-Authenticate", "Bearer")],
        );
    }
    // Counted until answered: shutdown delivers what was acknowledged
    // before it closes connections, and refuses what comes after.
    let Some(_pass) = shard.broadcaster.gate().enter() else {
        return reject(
            shard,
            503,
            "shutting_down",
            "server is shutting down: nothing was published; retry on another node",
            false,
            &[("Retry-After", "1")],
        );
    };
    let accepted = Instant::now();
    let timestamp = time::now_rfc3339();
    let (events, count) = match parse(&mut request.body, &timestamp) {
        Ok(parsed) => parsed,
        Err((status, code, message)) => return reject(shard, status, code, &message, keep_alive, &[]),
    };
    let id = shard.next_id();
    if shard.broadcaster.publish(events, accepted).await.is_err() {
        return reject(
            shard,
            503,
            "broker_unavailable",
            "the broker (Redis) is unreachable: nothing was published; retry later",
            keep_alive,
            &[("Retry-After", "1")],
        );
    }
    let body = simd_json::to_string(&Accepted {
        id: &id,
        events: count,
        timestamp: &timestamp,
    })
    .unwrap_or_default();
    http::json_response(202, &body, keep_alive, &[])
}

/// `POST /api/v1/publish[/batch]`: `{topic, event, data}` or `{"events":[…]}`.
pub async fn publish(shard: &Shard, request: &mut Request, batch: bool, keep_alive: bool) -> Vec<u8> {
    let rules = Rules {
        max_depth: shard.config.max_json_depth,
        max_events: shard.config.max_batch_events,
        client_types: &shard.config.client_types,
    };
    publish_with(shard, request, keep_alive, |body, ts| {
        let parsed = if batch {
            parse_batch(body, ts, rules)
        } else {
            parse_one(body, ts, rules)
        };
        parsed
            .map(|events| {
                let n = events.len();
                (events, n)
            })
            .map_err(|e| {
                let (status, code) = e.status();
                (status, code, e.to_string())
            })
    })
    .await
}

/// `POST /api/v1/devices/{id}/status`: validate, record, fan out.
pub async fn device_status(
    shard: &Shard,
    request: &mut Request,
    device_id: &str,
    keep_alive: bool,
) -> Vec<u8> {
    let (depth, max_bytes) = (shard.config.max_json_depth, shard.config.max_status_bytes);
    publish_with(shard, request, keep_alive, |body, ts| {
        // One status, carried by two events (`devices`, `device:{id}`).
        devices::parse(body, depth)
            .and_then(|report| devices::events(device_id, &report, ts, max_bytes))
            .map(|events| (events, 1))
            .map_err(|e| {
                let (status, code) = e.status();
                (status, code, e.to_string())
            })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2026-01-01T12:00:00.000Z";

    fn rules(max_events: usize) -> Rules<'static> {
        static TYPES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        Rules {
            max_depth: 128,
            max_events,
            client_types: TYPES.get_or_init(|| vec!["user".into(), "shop".into()]),
        }
    }

    fn payload(draft: &Draft) -> String {
        let Content::Envelope(e) = &draft.content else {
            panic!("not an envelope")
        };
        String::from_utf8(crate::proto::frame::payload(&e.frame(None)).to_vec()).unwrap()
    }

    #[test]
    fn one_event_becomes_its_envelope() {
        let mut body =
            br#"{"topic":"type:user","event":"product.approved","data":{"product_id":123,"name":"a\"b"}}"#
                .to_vec();
        let events = parse_one(&mut body, TS, rules(10)).unwrap();
        assert_eq!(&*events[0].topic, "type:user");
        let text = payload(&events[0]);
        let v: OwnedValue = simd_json::from_slice(&mut text.as_bytes().to_vec()).unwrap();
        use simd_json::prelude::*;
        assert_eq!(v.get_str("event"), Some("product.approved"));
        assert_eq!(v.get_str("timestamp"), Some(TS));
        assert_eq!(v["data"].get_i64("product_id"), Some(123));
        assert_eq!(v["data"].get_str("name"), Some("a\"b"));
    }

    #[test]
    fn missing_data_is_null() {
        let mut body = br#"{"topic":"all","event":"ping"}"#.to_vec();
        let events = parse_one(&mut body, TS, rules(10)).unwrap();
        assert!(payload(&events[0]).ends_with(r#""data":null}"#));
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        let mut b = b"{not json".to_vec();
        assert!(matches!(
            parse_one(&mut b, TS, rules(10)),
            Err(PublishError::BadJson(_))
        ));
        let mut b = br#"{"event":"x"}"#.to_vec();
        assert!(
            matches!(parse_one(&mut b, TS, rules(10)), Err(PublishError::BadJson(m)) if m.to_string() == "missing field \"topic\"")
        );
        let mut b = br#"{"topic":"nope","event":"x"}"#.to_vec();
        assert!(matches!(
            parse_one(&mut b, TS, rules(10)),
            Err(PublishError::BadTopic { index: None, .. })
        ));
        let mut b = br#"{"topic":"all","event":""}"#.to_vec();
        assert_eq!(
            parse_one(&mut b, TS, rules(10)).unwrap_err(),
            PublishError::BadEventName { index: None }
        );
    }

    #[test]
    fn a_type_topic_must_name_a_configured_client_type() {
        let mut b = br#"{"topic":"type:nosuch","event":"x"}"#.to_vec();
        let err = parse_one(&mut b, TS, rules(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no client type 'nosuch' (configured: user, shop); no connection could receive this topic"
        );
        assert_eq!(err.status(), (400, "bad_event"));
        let mut b = br#"{"topic":"type:shop","event":"x"}"#.to_vec();
        assert!(parse_one(&mut b, TS, rules(10)).is_ok());
    }

    #[test]
    fn a_batch_with_one_bad_event_is_refused_whole() {
        let mut b = br#"{"events":[{"topic":"all","event":"a"},{"topic":"bad","event":"b"}]}"#.to_vec();
        let err = parse_batch(&mut b, TS, rules(10)).unwrap_err();
        assert!(err.to_string().starts_with("events[1]: invalid topic"), "{err}");
        let mut b = br#"{"events":[]}"#.to_vec();
        assert_eq!(
            parse_batch(&mut b, TS, rules(10)).unwrap_err(),
            PublishError::EmptyBatch
        );
        let two = br#"{"events":[{"topic":"all","event":"a"},{"topic":"user:x","event":"b"}]}"#;
        assert_eq!(
            parse_batch(&mut two.to_vec(), TS, rules(1)).unwrap_err(),
            PublishError::TooManyEvents { count: 2, max: 1 }
        );
        let events = parse_batch(&mut two.to_vec(), TS, rules(2)).unwrap();
        let topics: Vec<&str> = events.iter().map(|e| &*e.topic).collect();
        assert_eq!(topics, ["all", "user:x"]);
    }
}
