//! `GET /api/v1/history?topic=…&since=…&limit=…` (API key): a topic's
//! retained events after offset `since`, oldest first, as the envelopes
//! subscribers received, with the stream's epoch and newest offset.

use crate::api::refusal::reject;
use crate::auth::verify::{self, AuthError};
use crate::fanout::topic::Topic;
use crate::proto::frame;
use crate::proto::http::{self, Request};
use crate::proto::query;
use crate::shard::Shard;

/// Events one answer holds at most (and by default).
pub const MAX_LIMIT: usize = 1000;

/// The answer to a history request.
pub async fn answer(shard: &Shard, request: &Request, keep_alive: bool) -> Vec<u8> {
    if !verify::has_api_key(request, &shard.config.api_key) {
        let error = AuthError::BadApiKey;
        let (status, code) = error.status();
        return reject(
            shard,
            status,
            code,
            &error.to_string(),
            keep_alive,
            &[("WWW-Authenticate", "Bearer")],
        );
    }
    if let Some(remote) = shard.broadcaster.remote() {
        // Through a broker the stream lives in Redis: bring what this node
        // lacks of it first (after `since`).
        if let Some(Ok(Ok(topic))) =
            query::param(request.query.as_deref(), "topic").map(|t| t.map(|t| Topic::parse(&t)))
        {
            let since = number(request, "since", 0).unwrap_or(0);
            remote.warm(vec![(topic.key(), Some(since))]).await;
        }
    }
    match read(shard, request) {
        Ok(body) => http::json_response(200, &body, keep_alive, &[]),
        Err((status, code, message)) => reject(shard, status, code, &message, keep_alive, &[]),
    }
}

type Refused = (u16, &'static str, String);

fn bad(message: String) -> Refused {
    (400, "bad_request", message)
}

/// A number parameter, `default` when absent.
fn number(request: &Request, name: &'static str, default: u64) -> Result<u64, Refused> {
    match query::param(request.query.as_deref(), name) {
        None => Ok(default),
        Some(Err(e)) => Err(bad(e.to_string())),
        Some(Ok(text)) => text
            .parse()
            .map_err(|_| bad(format!("'{name}' must be a non-negative integer"))),
    }
}

fn read(shard: &Shard, request: &Request) -> Result<String, Refused> {
    let topic = match query::param(request.query.as_deref(), "topic") {
        None => return Err(bad("'topic' is required".into())),
        Some(Err(e)) => return Err(bad(e.to_string())),
        Some(Ok(text)) => Topic::parse(&text).map_err(|e| bad(format!("invalid topic: {e}")))?,
    };
    let since = number(request, "since", 0)?;
    let limit = number(request, "limit", MAX_LIMIT as u64)?;
    if limit == 0 || limit > MAX_LIMIT as u64 {
        return Err(bad(format!("'limit' must be 1 to {MAX_LIMIT}")));
    }
    let key = topic.key();
    let sequencer = shard.broadcaster.sequencer();
    let delivered = sequencer.delivered_everywhere();
    let mut streams = sequencer.streams();
    if !streams.keeps(&key) {
        return Err((
            400,
            "no_history",
            format!("topic '{key}' keeps no history (see history_topics and history_size)"),
        ));
    }
    let range = streams.range(&key, since, limit as usize, std::time::Instant::now(), delivered);
    let base = streams.base_epoch();
    drop(streams);
    let (epoch, top, first, frames) = match &range {
        Some(r) => (r.epoch, r.top, r.first, &r.frames[..]),
        None => (base, 0, 1, &[][..]),
    };
    // Complete: nothing after `since` has been dropped.
    let complete = since + 1 >= first || since >= top;
    let mut body = format!(
        "{{\"topic\":{},\"epoch\":\"{}\",\"top\":{top},\"complete\":{complete},\"events\":[",
        simd_json::to_string(&key).unwrap_or_default(),
        epoch.as_str()
    );
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        // Every retained frame is an envelope this server wrote as JSON text.
        body.push_str(std::str::from_utf8(frame::payload(f)).unwrap_or("null"));
    }
    body.push_str("]}");
    Ok(body)
}
