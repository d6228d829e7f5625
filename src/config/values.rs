//! Reading setting values: the TOML file, lists, bounded numbers and
//! durations, each refusal naming its key.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::args::FileConfig;
use crate::config::{invalid, ConfigError};

pub fn read_file(path: &PathBuf) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.clone(),
        reason: locate(&text, e.span(), e.message()),
    })
}

/// `line N: key: message` for a TOML error at byte `span` of `text` (the key
/// is the one assigned on that line, when there is one).
fn locate(text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> String {
    let Some(span) = span else {
        return message.to_string();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    match line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty())
    {
        Some(key) => format!("line {line_no}: {key}: {message}"),
        None => format!("line {line_no}: {message}"),
    }
}

pub fn list(text: Option<&str>) -> Option<Vec<String>> {
    text.map(|t| {
        t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
}

pub fn positive(key: &'static str, value: u32) -> Result<u32, ConfigError> {
    if value == 0 {
        return Err(invalid(key, "must be greater than 0"));
    }
    Ok(value)
}

pub fn at_least(key: &'static str, value: usize, min: usize) -> Result<usize, ConfigError> {
    if value < min {
        return Err(invalid(key, format!("{value} is below the minimum {min}")));
    }
    Ok(value)
}

pub fn duration(key: &'static str, value: Option<String>, default: &str) -> Result<Duration, ConfigError> {
    let text = value.as_deref().unwrap_or(default);
    match parse_duration(text) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(invalid(
            key,
            format!("'{text}' is not a positive duration like 500ms, 10s, 5m, 24h"),
        )),
    }
}

/// Parses `500ms`, `10s`, `5m`, `24h`, `7d`, or bare seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    }
}
