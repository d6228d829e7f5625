//! Bounded HTTP/1.1: read one request (head size, header count and body
//! size capped, `Content-Length` bodies only), and write responses. Every
//! rejection of a peer's request becomes a status and a short JSON body here.

use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use serde::Serialize;

use crate::config::Config;

/// One parsed request. `query` may hold a token: never log it.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Lower-cased names; values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A GET request to `path` with `headers`, for unit tests.
    #[cfg(test)]
    pub(crate) fn get(path: &str, query: Option<&str>, headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            query: query.map(String::from),
            minor_version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    /// First value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// How many times header `name` (lower-case) appears.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }

    /// Whether a comma-separated header contains `token` (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// HTTP/1.1 keeps the connection unless `Connection: close`; 1.0 closes
    /// unless `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.header_has_token("connection", "keep-alive")
        } else {
            !self.header_has_token("connection", "close")
        }
    }
}

/// Why a request could not be read. Peer faults carry a status; `Closed`
/// and `Io` end the connection without an answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The bytes are not an HTTP/1.x request.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The request head exceeds `max_header_bytes`.
    #[error("request head exceeds {max} bytes")]
    HeadTooLarge { max: usize },
    /// More header lines than `max_headers`.
    #[error("more than {max} header lines")]
    TooManyHeaders { max: usize },
    /// `Content-Length` exceeds `max_body_bytes`.
    #[error("body of {size} bytes exceeds the limit of {max}")]
    BodyTooLarge { size: u64, max: usize },
    /// A body sent without `Content-Length` (e.g. chunked).
    #[error("a request body needs Content-Length")]
    LengthRequired,
    /// The peer closed before a whole request arrived (or between requests).
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl HttpError {
    /// Status and machine-readable code to answer with, if any.
    pub fn status(&self) -> Option<(u16, &'static str)> {
        match self {
            HttpError::Malformed(_) => Some((400, "bad_request")),
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => {
                Some((431, "header_too_large"))
            }
            HttpError::BodyTooLarge { .. } => Some((413, "body_too_large")),
            HttpError::LengthRequired => Some((411, "length_required")),
            HttpError::Closed | HttpError::Io(_) => None,
        }
    }
}

/// Reads the next request from `stream`. `buf` carries bytes between calls:
/// on return it holds whatever followed the request (pipelined requests, or
/// the first WebSocket frames after an upgrade request).
pub async fn read_request(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    config: &Config,
) -> Result<Request, HttpError> {
    let max_head = config.max_header_bytes;
    loop {
        if let Some((head_len, mut request)) = parse_head(buf, config)? {
            check_host(&request)?;
            let body_len = body_length(&request, config.max_body_bytes)?;
            let total = head_len + body_len;
            while buf.len() < total {
                read_more(stream, buf, total - buf.len()).await?;
            }
            request.body = buf[head_len..total].to_vec();
            buf.drain(..total);
            return Ok(request);
        }
        if buf.len() >= max_head {
            return Err(HttpError::HeadTooLarge { max: max_head });
        }
        let before = buf.len();
        read_more(stream, buf, (max_head - before).min(4096)).await?;
    }
}

/// Reads at most `want` more bytes into `buf`; `Closed` on EOF. Cancel-safe:
/// if the read is dropped (a timeout), `buf` keeps only what had arrived.
async fn read_more(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    want: usize,
) -> Result<(), HttpError> {
    let start = buf.len();
    let mut fill = Filled { buf, keep: start };
    fill.buf.resize(start + want.clamp(1, 64 * 1024), 0);
    let n = stream.read(&mut fill.buf[start..]).await?;
    fill.keep = start + n;
    if n == 0 {
        return Err(HttpError::Closed);
    }
    Ok(())
}

/// Truncates a read buffer to the bytes really read, on every exit path
/// (the zeroed space a cancelled read leaves must not look like a request).
struct Filled<'a> {
    buf: &'a mut Vec<u8>,
    keep: usize,
}

impl Drop for Filled<'_> {
    fn drop(&mut self) {
        self.buf.truncate(self.keep);
    }
}

/// Parses the head if complete: `Ok(None)` means more bytes are needed.
fn parse_head(buf: &[u8], config: &Config) -> Result<Option<(usize, Request)>, HttpError> {
    let mut slots = vec![httparse::EMPTY_HEADER; config.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::TooManyHeaders {
                max: config.max_headers,
            })
        }
        Err(httparse::Error::Version) => return Err(HttpError::Malformed("unsupported HTTP version")),
        Err(_) => return Err(HttpError::Malformed("invalid request line or header")),
    };
    if head_len > config.max_header_bytes {
        return Err(HttpError::HeadTooLarge {
            max: config.max_header_bytes,
        });
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    if !path.starts_with('/') {
        return Err(HttpError::Malformed("request target must be an absolute path"));
    }
    let request = Request {
        method: req.method.unwrap_or("").to_string(),
        path,
        query,
        minor_version: req.version.unwrap_or(1),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
    };
    Ok(Some((head_len, request)))
}

/// The body length from `Content-Length`: exactly one header of plain
/// digits (RFC 9112 §6.3: a list, a sign or a second header is a framing
/// conflict that a proxy may resolve differently: request smuggling).
fn body_length(request: &Request, max: usize) -> Result<usize, HttpError> {
    if request.header("transfer-encoding").is_some() {
        return Err(HttpError::LengthRequired);
    }
    let mut values = request.headers.iter().filter(|(n, _)| n == "content-length");
    let Some((_, text)) = values.next() else {
        return Ok(0);
    };
    if values.next().is_some() {
        return Err(HttpError::Malformed("more than one Content-Length"));
    }
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::Malformed("invalid Content-Length"));
    }
    let size: u64 = text
        .parse()
        .map_err(|_| HttpError::Malformed("invalid Content-Length"))?;
    if size > max as u64 {
        return Err(HttpError::BodyTooLarge { size, max });
    }
    Ok(size as usize)
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`; 1.0 at most one.
fn check_host(request: &Request) -> Result<(), HttpError> {
    match (request.header_count("host"), request.minor_version) {
        (0, 0) | (1, _) => Ok(()),
        (0, _) => Err(HttpError::Malformed("missing Host header")),
        _ => Err(HttpError::Malformed("more than one Host header")),
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete response with a JSON body.
pub fn json_response(status: u16, body: &str, keep_alive: bool, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    response(status, "application/json", body, keep_alive, extra_headers)
}

/// A complete response with a body of `content_type`.
pub fn response(
    status: u16,
    content_type: &str,
    body: &str,
    keep_alive: bool,
    extra_headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        reason_phrase(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in extra_headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

/// `{"error": code, "message": message}` with `status`. The message must
/// describe the request, never internal state.
pub fn error_response(
    status: u16,
    code: &str,
    message: &str,
    keep_alive: bool,
    extra_headers: &[(&str, &str)],
) -> Vec<u8> {
    let body = simd_json::to_string(&ErrorBody { error: code, message })
        .unwrap_or_else(|_| format!("{{\"error\":\"{code}\"}}"));
    json_response(status, &body, keep_alive, extra_headers)
}

/// Drops the body of a complete response, keeping its head (and its
/// `Content-Length`): the answer to `HEAD` (RFC 9110 §9.3.2).
pub fn strip_body(response: &mut Vec<u8>) {
    if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        response.truncate(end + 4);
    }
}

/// Writes `bytes` fully (for TLS: until the ciphertext is out).
pub async fn write_all(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;

    fn config() -> Config {
        Config::from_args(ServeArgs::default()).unwrap()
    }

    #[test]
    fn complete_head_parses_path_query_and_headers() {
        let raw = b"GET /ws/user?token=abc HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\r\nrest";
        let (len, req) = parse_head(raw, &config()).unwrap().unwrap();
        assert_eq!(&raw[len..], b"rest");
        assert_eq!(req.path, "/ws/user");
        assert_eq!(req.query.as_deref(), Some("token=abc"));
        assert_eq!(req.header("upgrade"), Some("WebSocket"));
        assert!(req.keep_alive());
    }

    #[test]
    fn partial_head_needs_more_bytes() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost:", &config())
            .unwrap()
            .is_none());
    }

    #[test]
    fn garbage_is_malformed_and_too_many_headers_is_431() {
        let err = parse_head(b"\x16\x03\x01 hello\r\n\r\n", &config()).unwrap_err();
        assert_eq!(err.status().unwrap().0, 400);
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            raw.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let err = parse_head(&raw, &config()).unwrap_err();
        assert_eq!(err.status().unwrap().0, 431);
    }

    #[test]
    fn body_rules() {
        let c = config();
        let (_, req) = parse_head(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", &c)
            .unwrap()
            .unwrap();
        assert_eq!(body_length(&req, 1000).unwrap_err().status().unwrap().0, 413);
        let (_, req) = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &c)
            .unwrap()
            .unwrap();
        assert_eq!(body_length(&req, 1000).unwrap_err().status().unwrap().0, 411);
        let (_, req) = parse_head(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", &c)
            .unwrap()
            .unwrap();
        assert_eq!(body_length(&req, 1000).unwrap_err().status().unwrap().0, 400);
    }

    #[test]
    fn conflicting_content_lengths_are_refused() {
        let c = config();
        for head in [
            "Content-Length: 5\r\nContent-Length: 5",
            "Content-Length: 0, 44",
            "Content-Length: +27",
            "Content-Length: -1",
            "Content-Length: ",
        ] {
            let raw = format!("POST / HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n");
            let (_, req) = parse_head(raw.as_bytes(), &c).unwrap().unwrap();
            let err = body_length(&req, 1000).unwrap_err();
            assert_eq!(err.status().unwrap().0, 400, "{head}: {err}");
        }
    }

    #[test]
    fn host_must_appear_once_in_http11() {
        let c = config();
        let host = |raw: &[u8]| check_host(&parse_head(raw, &c).unwrap().unwrap().1);
        assert!(host(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
        assert!(host(b"GET / HTTP/1.0\r\n\r\n").is_ok());
        assert!(host(b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(host(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").is_err());
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let (_, req) = parse_head(b"GET / HTTP/1.0\r\n\r\n", &config()).unwrap().unwrap();
        assert!(!req.keep_alive());
    }

    #[test]
    fn error_response_is_json_with_length() {
        let text =
            String::from_utf8(error_response(404, "not_found", "no \"such\" path", false, &[])).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(body, r#"{"error":"not_found","message":"no \"such\" path"}"#);
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
    }
}
