//! Topics: `all`, `type:{client_type}`, `user:{id}`, `room:{name}`,
//! `devices`, `device:{id}`. Parsed and validated once, at the edge.

use std::fmt;

/// Longest name after the `kind:` prefix.
pub const MAX_NAME: usize = 200;

/// A topic a connection can be subscribed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    All,
    Type(String),
    User(String),
    Room(String),
    Devices,
    Device(String),
}

/// Why a topic string is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("unknown topic kind in '{0}' (expected all, type:, user:, room:, devices, device:)")]
    UnknownKind(String),
    #[error("topic name is empty")]
    EmptyName,
    #[error("topic name longer than {MAX_NAME} bytes")]
    TooLong,
    #[error("topic name contains whitespace, control, bidi-control or zero-width characters")]
    BadCharacter,
}

impl Topic {
    /// Parses `all`, `type:user`, `user:42`, `room:lobby`, `devices`, `device:esp-1`.
    pub fn parse(text: &str) -> Result<Topic, TopicError> {
        match text {
            "all" => return Ok(Topic::All),
            "devices" => return Ok(Topic::Devices),
            _ => {}
        }
        let (kind, name) = text
            .split_once(':')
            .ok_or_else(|| TopicError::UnknownKind(truncate(text)))?;
        let make: fn(String) -> Topic = match kind {
            "type" => Topic::Type,
            "user" => Topic::User,
            "room" => Topic::Room,
            "device" => Topic::Device,
            _ => return Err(TopicError::UnknownKind(truncate(text))),
        };
        check_name(name)?;
        Ok(make(name.to_string()))
    }

    /// The canonical text form, the registry key.
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::All => f.write_str("all"),
            Topic::Devices => f.write_str("devices"),
            Topic::Type(n) => write!(f, "type:{n}"),
            Topic::User(n) => write!(f, "user:{n}"),
            Topic::Room(n) => write!(f, "room:{n}"),
            Topic::Device(n) => write!(f, "device:{n}"),
        }
    }
}

/// Checks an id or name used inside a topic (user ids, rooms, device ids).
pub fn check_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::EmptyName);
    }
    if name.len() > MAX_NAME {
        return Err(TopicError::TooLong);
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || invisible(c))
    {
        return Err(TopicError::BadCharacter);
    }
    Ok(())
}

/// Characters that change how a name is displayed without being seen:
/// bidi controls (a name that reads differently than it compares) and
/// zero-width characters (two names that look the same).
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}'
    )
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        for text in [
            "all",
            "devices",
            "type:user",
            "user:alice",
            "room:lobby",
            "device:esp-1",
        ] {
            assert_eq!(Topic::parse(text).unwrap().key(), text);
        }
    }

    #[test]
    fn bad_topics_are_refused() {
        assert!(matches!(Topic::parse("nope"), Err(TopicError::UnknownKind(_))));
        assert!(matches!(Topic::parse("group:x"), Err(TopicError::UnknownKind(_))));
        assert_eq!(Topic::parse("user:"), Err(TopicError::EmptyName));
        assert_eq!(Topic::parse("room:a b"), Err(TopicError::BadCharacter));
        for sneaky in [
            "room:a\u{202E}b",
            "room:a\u{200B}",
            "device:\u{FEFF}x",
            "user:\u{2066}y",
        ] {
            assert_eq!(Topic::parse(sneaky), Err(TopicError::BadCharacter), "{sneaky:?}");
        }
        assert!(Topic::parse("room:caf\u{e9}").is_ok());
        assert_eq!(
            Topic::parse(&format!("room:{}", "x".repeat(201))),
            Err(TopicError::TooLong)
        );
    }
}
