//! Peer JSON, checked before any parser sees it, and parser errors in plain
//! words. Every JSON body or message a peer sends goes through [`check`]
//! first: serde (and the drop of a parsed value) recurse once per nesting
//! level, so input deeper than `max_json_depth` is refused here, by a loop
//! whose stack use does not depend on the input. The same pass refuses
//! what simd-json would silently mangle or refuse with a misleading error:
//! lone UTF-16 surrogate escapes and numbers that fit no i64, u64 or finite
//! f64.

/// Why a peer's JSON is refused. Every message describes the input only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Nothing but whitespace.
    #[error("empty body")]
    Empty,
    /// More nested arrays/objects than the limit.
    #[error("nesting deeper than {max}")]
    TooDeep { max: usize },
    /// `\ud800` without its low half, or a low half alone.
    #[error("lone surrogate escape \\u{code:04x} in a string at byte {at}")]
    LoneSurrogate { code: u16, at: usize },
    /// A number that fits neither a 64-bit integer nor a finite double.
    #[error("number {text} at byte {at} is out of range (integers must fit 64 bits, floats must be finite)")]
    NumberOutOfRange { text: String, at: usize },
    /// Well-formed JSON whose top level is not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// The parser's own complaint (syntax, or a field of the wrong shape).
    #[error("{0}")]
    Invalid(String),
}

/// Checks nesting depth, surrogate escapes and number ranges in one pass
/// over `bytes`, without recursion. Syntax errors are left to the parser.
pub fn check(bytes: &[u8], max_depth: usize) -> Result<(), JsonError> {
    let mut depth = 0usize;
    let mut i = 0;
    let mut any = false;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'"' => {
                any = true;
                i = skip_string(bytes, i + 1)?;
                continue;
            }
            b'[' | b'{' => {
                any = true;
                depth += 1;
                if depth > max_depth {
                    return Err(JsonError::TooDeep { max: max_depth });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                any = true;
                i = check_number(bytes, i)?;
                continue;
            }
            _ => any = true,
        }
        i += 1;
    }
    if !any {
        return Err(JsonError::Empty);
    }
    Ok(())
}

/// [`check`], then whether the top level is an object (`{`), so that a
/// parse failure can be told apart from a well-formed non-object.
pub fn check_object(bytes: &[u8], max_depth: usize) -> Result<(), JsonError> {
    check(bytes, max_depth)?;
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => Err(JsonError::NotAnObject),
        _ => Err(JsonError::Invalid("invalid JSON syntax at byte 0".into())),
    }
}

/// The plain-words form of a simd-json parse or shape error.
pub fn describe(error: &simd_json::Error) -> JsonError {
    use simd_json::ErrorType as E;
    let at = error.index();
    let text = match error.error() {
        // serde names fields with backticks: `missing field `event``.
        E::Serde(message) => message.replace('`', "\""),
        E::Eof => "unexpected end of input".to_string(),
        E::TrailingData => format!("unexpected data after the JSON value at byte {at}"),
        E::InvalidUtf8 => format!("invalid UTF-8 at byte {at}"),
        E::InvalidEscape | E::InvalidUnicodeEscape | E::InvalidUnicodeCodepoint => {
            format!("invalid escape sequence at byte {at}")
        }
        E::InvalidNumber | E::InvalidExponent => format!("invalid number at byte {at}"),
        E::UnterminatedString => "unterminated string".to_string(),
        E::ExpectedMap => "not a JSON object".to_string(),
        _ => format!("invalid JSON syntax at byte {at}"),
    };
    JsonError::Invalid(text)
}

/// Skips a string body starting after its opening quote; returns the index
/// after the closing quote.
fn skip_string(bytes: &[u8], mut i: usize) -> Result<usize, JsonError> {
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Ok(i + 1),
            b'\\' if bytes.get(i + 1) == Some(&b'u') => {
                let Some(code) = hex4(bytes, i + 2) else {
                    // Malformed: the parser reports it.
                    i += 2;
                    continue;
                };
                match code {
                    0xD800..=0xDBFF => {
                        let low = (bytes.get(i + 6) == Some(&b'\\') && bytes.get(i + 7) == Some(&b'u'))
                            .then(|| hex4(bytes, i + 8))
                            .flatten();
                        if !matches!(low, Some(0xDC00..=0xDFFF)) {
                            return Err(JsonError::LoneSurrogate { code, at: i });
                        }
                        i += 12;
                    }
                    0xDC00..=0xDFFF => return Err(JsonError::LoneSurrogate { code, at: i }),
                    _ => i += 6,
                }
            }
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Ok(i)
}

fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = bytes.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    u16::from_str_radix(text, 16).ok()
}

/// Checks the number token at `start`; returns the index after it.
fn check_number(bytes: &[u8], start: usize) -> Result<usize, JsonError> {
    let end = bytes[start..]
        .iter()
        .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .map_or(bytes.len(), |n| start + n);
    let token = &bytes[start..end];
    // The token holds only ASCII, so this cannot fail.
    let text = std::str::from_utf8(token).unwrap_or("");
    let is_integer = !token.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
    let fits = if is_integer {
        let digits = text.strip_prefix('-').unwrap_or(text);
        // Malformed integers (`-`, `1-2`) are the parser's to report.
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            true
        } else if text.starts_with('-') {
            text.parse::<i64>().is_ok()
        } else {
            text.parse::<u64>().is_ok()
        }
    } else {
        text.parse::<f64>().map_or(true, f64::is_finite)
    };
    if !fits {
        return Err(JsonError::NumberOutOfRange {
            text: text.chars().take(40).collect(),
            at: start,
        });
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        let mut v = b"{\"x\":".to_vec();
        v.extend(std::iter::repeat_n(b'[', depth));
        v.extend(std::iter::repeat_n(b']', depth));
        v.push(b'}');
        v
    }

    #[test]
    fn depth_at_the_limit_passes_and_one_more_is_refused() {
        assert_eq!(check(&nested(127), 128), Ok(()));
        assert_eq!(check(&nested(128), 128), Err(JsonError::TooDeep { max: 128 }));
        assert_eq!(check(&nested(100_000), 128), Err(JsonError::TooDeep { max: 128 }));
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let text = format!(r#"{{"a":"{}\"[{{"}}"#, "[".repeat(500));
        assert_eq!(check(text.as_bytes(), 4), Ok(()));
    }

    #[test]
    fn lone_surrogates_are_refused_either_half() {
        assert!(matches!(
            check(br#"{"a":"\ud800"}"#, 8),
            Err(JsonError::LoneSurrogate { code: 0xd800, .. })
        ));
        assert!(matches!(
            check(br#"{"a":"\udc00x"}"#, 8),
            Err(JsonError::LoneSurrogate { code: 0xdc00, .. })
        ));
        assert!(matches!(
            check(br#"{"a":"\ud800\u0041"}"#, 8),
            Err(JsonError::LoneSurrogate { .. })
        ));
        assert_eq!(check(br#"{"a":"\ud83d\ude00 \u00e9 \\ud800"}"#, 8), Ok(()));
    }

    #[test]
    fn numbers_out_of_range_are_named() {
        for big in ["1e400", "18446744073709551616", "-9223372036854775809", "-1e999"] {
            let text = format!(r#"{{"n":{big}}}"#);
            let err = check(text.as_bytes(), 8).unwrap_err();
            assert!(
                matches!(&err, JsonError::NumberOutOfRange { text, .. } if text == big),
                "{big}: {err}"
            );
        }
        let ok = br#"{"n":[18446744073709551615,-9223372036854775808,1.5e300,-0.0,0]}"#;
        assert_eq!(check(ok, 8), Ok(()));
    }

    #[test]
    fn empty_and_non_objects_are_told_apart() {
        assert_eq!(check(b"  \n", 8), Err(JsonError::Empty));
        assert_eq!(check_object(b"[1,2]", 8), Err(JsonError::NotAnObject));
        assert_eq!(check_object(b" {\"a\":1}", 8), Ok(()));
        assert!(matches!(check_object(b"}{", 8), Err(JsonError::Invalid(_))));
    }

    #[test]
    fn any_bytes_return_without_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b"[]{}\"\\u0dD8e+-.1 ax"[(seed % 19) as usize]
                })
                .collect();
            let _ = check_object(&bytes, 16);
        }
    }

    #[test]
    fn serde_messages_lose_their_backticks() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Need {
            event: String,
        }
        let err = simd_json::serde::from_slice::<Need>(&mut b"{}".to_vec()).unwrap_err();
        assert_eq!(
            describe(&err),
            JsonError::Invalid("missing field \"event\"".into())
        );
    }
}
