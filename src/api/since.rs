//! The `since` query parameter of a reconnecting client: the last position
//! it saw per topic, `{"type:user":{"epoch":"k3Jd9xAa","offset":42},…}`
//! (URL-encoded JSON). A malformed one is refused with a message naming
//! the problem; topics it names are checked by recovery, not here.

use simd_json::prelude::*;
use simd_json::OwnedValue;

use crate::fanout::envelope::{Epoch, Position};
use crate::fanout::topic::MAX_NAME;
use crate::proto::http::Request;
use crate::proto::json;
use crate::proto::query;

/// Most topics one `since` may name.
pub const MAX_TOPICS: usize = 64;

/// The positions in `request`'s `since`, none when it has none.
pub fn parse(request: &Request) -> Result<Vec<(String, Position)>, String> {
    let Some(text) = query::param(request.query.as_deref(), "since") else {
        return Ok(Vec::new());
    };
    let text = text.map_err(|e| format!("invalid 'since': {e}"))?;
    let mut bytes = text.into_owned().into_bytes();
    positions(&mut bytes)
}

/// The positions in a decoded `since` value.
pub fn positions(bytes: &mut [u8]) -> Result<Vec<(String, Position)>, String> {
    let bad = |why: &str| format!("invalid 'since': {why}");
    match json::check_object(bytes, 3) {
        Ok(()) => {}
        Err(json::JsonError::NotAnObject) => {
            return Err(bad("expected a JSON object of topic → {\"epoch\",\"offset\"}"))
        }
        Err(e) => return Err(bad(&e.to_string())),
    }
    let value: OwnedValue =
        simd_json::to_owned_value(bytes).map_err(|e| bad(&json::describe(&e).to_string()))?;
    let Some(map) = value.as_object() else {
        return Err(bad("expected a JSON object of topic → {\"epoch\",\"offset\"}"));
    };
    if map.len() > MAX_TOPICS {
        return Err(bad(&format!("{} topics, at most {MAX_TOPICS}", map.len())));
    }
    let mut out = Vec::with_capacity(map.len());
    for (topic, place) in map.iter() {
        let name: String = topic.chars().take(MAX_NAME.min(64)).collect();
        if topic.len() > MAX_NAME + 16 {
            return Err(bad(&format!("topic '{name}…' is too long")));
        }
        let epoch = place.get_str("epoch");
        let offset = place.get_u64("offset");
        match (place.as_object().map(|o| o.len()), epoch, offset) {
            (Some(2), Some(epoch), Some(offset)) => out.push((
                topic.to_string(),
                Position {
                    offset,
                    epoch: Epoch::parse(epoch),
                },
            )),
            _ => {
                return Err(bad(&format!(
                    "'{name}' needs {{\"epoch\": string, \"offset\": non-negative integer}}"
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<(String, Position)>, String> {
        positions(&mut text.as_bytes().to_vec())
    }

    #[test]
    fn positions_are_read_and_problems_named() {
        let ok = parse_text(r#"{"all":{"epoch":"abcdEFG1","offset":3},"user:x":{"offset":0,"epoch":"zz"}}"#)
            .unwrap();
        assert_eq!(ok.len(), 2);
        let all = ok.iter().find(|(t, _)| t == "all").unwrap();
        assert_eq!(all.1.offset, 3);
        assert_eq!(all.1.epoch.as_str(), "abcdEFG1");
        for (text, needle) in [
            ("[1]", "expected a JSON object"),
            ("{not json", "invalid 'since'"),
            (r#"{"all":{"epoch":"a"}}"#, "'all' needs"),
            (r#"{"all":{"epoch":"a","offset":-1}}"#, "'all' needs"),
            (r#"{"all":{"epoch":1,"offset":1}}"#, "'all' needs"),
            (r#"{"all":{"epoch":"a","offset":1,"x":2}}"#, "'all' needs"),
            (r#"{"all":5}"#, "'all' needs"),
        ] {
            let err = parse_text(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let many: Vec<String> = (0..65)
            .map(|i| format!(r#""room:{i}":{{"epoch":"a","offset":1}}"#))
            .collect();
        assert!(parse_text(&format!("{{{}}}", many.join(",")))
            .unwrap_err()
            .contains("at most 64"));
    }
}
