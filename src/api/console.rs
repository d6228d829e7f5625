//! The browser console (`GET /`): one page, its style sheet and scripts,
//! embedded in the binary and served under a strict Content-Security-Policy
//! (the page loads and connects to nothing outside this server). In dev
//! mode the page comes pre-filled with a fresh dev token and the dev API
//! key (loopback only); elsewhere it asks for them and keeps them in the
//! page. Where it is served is `route::console_port`'s decision.

use serde::Serialize;

use crate::api::route::Port;
use crate::auth::token;
use crate::proto::http;
use crate::shard::Shard;

/// The page; `<!--SETTINGS-->` becomes a `<meta>` with [`Settings`].
const PAGE: &str = include_str!("console/index.html");

/// The page's files: name, content type, text.
const FILES: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("console/console.js"),
    ),
    (
        "plot.js",
        "text/javascript; charset=utf-8",
        include_str!("console/plot.js"),
    ),
];

/// Headers of every console response: no framing, no sniffing, no referrer.
const HARDENING: [(&str, &str); 3] = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
];

/// What the page's script reads from its `<meta name="shardcast-console">`.
#[derive(Serialize)]
struct Settings<'a> {
    dev: bool,
    /// A dev token (24 h, every right), or empty: ask for one.
    token: String,
    /// The dev API key, or empty: ask for it.
    api_key: &'a str,
    client_types: &'a [String],
    device_types: &'a [String],
    /// The public port, when the page is served on the admin port (the
    /// WebSocket endpoints live on the public one); else none: same port.
    ws_port: Option<u16>,
    /// Whether the public port speaks TLS (wss).
    ws_tls: bool,
    version: &'static str,
}

/// `GET /`: the page for a browser that reached it on `port`.
pub fn page(shard: &Shard, port: Port, keep_alive: bool) -> Vec<u8> {
    let config = &shard.config;
    let dev = config.dev_mode;
    let token = if dev {
        token::mint_hs256(&token::dev_claims(&config.client_types), &config.jwt_secret).unwrap_or_default()
    } else {
        String::new()
    };
    let settings = Settings {
        dev,
        token,
        api_key: if dev { &config.api_key } else { "" },
        client_types: &config.client_types,
        device_types: &config.device_types,
        ws_port: (port == Port::Admin).then(|| config.listen.port()),
        ws_tls: config.tls.is_some() || config.tls_self_signed,
        version: env!("CARGO_PKG_VERSION"),
    };
    let json = simd_json::to_string(&settings).unwrap_or_default();
    let meta = format!(r#"<meta name="shardcast-console" content="{}">"#, escape(&json));
    let body = PAGE.replacen("<!--SETTINGS-->", &meta, 1);
    // The page reaches WebSockets on its own origin; from the admin port,
    // the public port (another origin, same host as far as it knows).
    let connect = if port == Port::Admin {
        "'self' ws: wss:"
    } else {
        "'self'"
    };
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let mut headers = vec![
        ("Content-Security-Policy", policy.as_str()),
        // A dev token is in it.
        ("Cache-Control", "no-store"),
    ];
    headers.extend(HARDENING);
    http::response(200, "text/html; charset=utf-8", &body, keep_alive, &headers)
}

/// `GET /console/{file}`, or `None` for a file the console does not have.
pub fn file(name: &str, keep_alive: bool) -> Option<Vec<u8>> {
    let (_, content_type, text) = FILES.iter().find(|(n, _, _)| *n == name)?;
    let mut headers = vec![("Cache-Control", "no-cache")];
    headers.extend(HARDENING);
    Some(http::response(200, content_type, text, keep_alive, &headers))
}

/// `text` made safe inside a double-quoted HTML attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_text_cannot_close_the_attribute_or_tag() {
        assert_eq!(
            escape(r#"{"a":"x\"><script>'&"}"#),
            "{&quot;a&quot;:&quot;x\\&quot;&gt;&lt;script&gt;&#39;&amp;&quot;}"
        );
    }

    #[test]
    fn every_file_the_page_names_is_served() {
        for (name, _, _) in FILES {
            assert!(
                PAGE.contains(&format!("/console/{name}")) || name == &"plot.js",
                "{name}"
            );
            assert!(file(name, true).is_some());
        }
        assert!(file("nope.js", true).is_none());
        assert!(PAGE.contains("<!--SETTINGS-->"));
    }
}
