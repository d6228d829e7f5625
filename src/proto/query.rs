//! Query-string parameters: find one by name and percent-decode it
//! (`%XX`, `+` as a space) into UTF-8.

use std::borrow::Cow;

/// Why a parameter's value cannot be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("'{0}': a '%' not followed by two hex digits")]
    BadEscape(&'static str),
    #[error("'{0}': not UTF-8 once decoded")]
    NotUtf8(&'static str),
}

/// The decoded value of the first `name=` parameter in `query`.
pub fn param<'a>(query: Option<&'a str>, name: &'static str) -> Option<Result<Cow<'a, str>, QueryError>> {
    let raw = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))?;
    Some(decode(raw, name))
}

fn decode<'a>(raw: &'a str, name: &'static str) -> Result<Cow<'a, str>, QueryError> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .ok_or(QueryError::BadEscape(name))?;
                let digit = |h: u8| (h as char).to_digit(16).unwrap_or(0) as u8;
                out.push(digit(hex[0]) << 4 | digit(hex[1]));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| QueryError::NotUtf8(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_decodes() {
        let q = Some("token=a.b&since=%7B%22all%22%3A1%7D&x=a+b");
        assert_eq!(param(q, "since").unwrap().unwrap(), r#"{"all":1}"#);
        assert_eq!(param(q, "x").unwrap().unwrap(), "a b");
        assert_eq!(param(q, "token").unwrap().unwrap(), "a.b");
        assert!(param(q, "nope").is_none());
        assert!(param(Some("sincex=1"), "since").is_none());
        assert_eq!(
            param(Some("since=%"), "since").unwrap(),
            Err(QueryError::BadEscape("since"))
        );
        assert_eq!(
            param(Some("since=%zz"), "since").unwrap(),
            Err(QueryError::BadEscape("since"))
        );
        assert_eq!(
            param(Some("since=%+1"), "since").unwrap(),
            Err(QueryError::BadEscape("since"))
        );
        assert_eq!(
            param(Some("since=%ff"), "since").unwrap(),
            Err(QueryError::NotUtf8("since"))
        );
        assert_eq!(
            param(Some("since=%e2%82"), "since").unwrap(),
            Err(QueryError::NotUtf8("since"))
        );
    }
}
