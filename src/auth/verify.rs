//! Authentication: client JWTs → `Claims`, and the publish API key. Tokens
//! are read from `Authorization: Bearer` or `?token=` and never logged.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

use crate::auth::token::Claims;
use crate::config::Config;
use crate::proto::http::Request;

/// Why a request is not let in. `Unauthorized` → 401, `Forbidden` → 403.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token: send 'Authorization: Bearer <token>' or '?token=<token>'")]
    MissingToken,
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    InvalidToken,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("missing or wrong API key")]
    BadApiKey,
    #[error("token does not allow {0}")]
    Forbidden(String),
}

impl AuthError {
    /// Status and machine-readable code.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            AuthError::MissingToken | AuthError::InvalidToken | AuthError::NotYetValid => {
                (401, "unauthorized")
            }
            AuthError::Expired => (401, "token_expired"),
            AuthError::BadApiKey => (401, "unauthorized"),
            AuthError::Forbidden(_) => (403, "forbidden"),
        }
    }
}

/// Verifies client tokens with the configured key. Only the configured
/// algorithm is accepted, so `alg: none` and algorithm confusion fail.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// A configured public key that is neither RSA nor EC P-256 in PEM.
#[derive(Debug, thiserror::Error)]
#[error("invalid config: jwt_public_key: not an RSA or EC public key in PEM")]
pub struct KeyError;

impl Verifier {
    /// HS256 with the secret, or RS256/ES256 with the configured public key
    /// (then only that algorithm: a token signed with the public key as an
    /// HMAC secret, or with `alg: none`, fails).
    pub fn new(config: &Config) -> Result<Verifier, KeyError> {
        let (algorithm, key) = match &config.jwt_public_key {
            Some(pem) => match DecodingKey::from_rsa_pem(pem) {
                Ok(key) => (Algorithm::RS256, key),
                Err(_) => (
                    Algorithm::ES256,
                    DecodingKey::from_ec_pem(pem).map_err(|_| KeyError)?,
                ),
            },
            None => (
                Algorithm::HS256,
                DecodingKey::from_secret(config.jwt_secret.as_bytes()),
            ),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = config.jwt_leeway.as_secs();
        validation.validate_nbf = true;
        if let Some(iss) = &config.jwt_issuer {
            validation.set_issuer(&[iss]);
        }
        match &config.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Verifier { key, validation })
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if has_crit_header(token) {
            return Err(AuthError::InvalidToken);
        }
        decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::InvalidToken,
            })
    }

    /// Verifies the token `request` carries.
    pub fn from_request(&self, request: &Request) -> Result<Claims, AuthError> {
        self.verify(token(request).ok_or(AuthError::MissingToken)?)
    }
}

/// Whether the JOSE header names critical extensions (`crit`). RFC 7515
/// §4.1.11: a recipient must refuse extensions it does not understand, and
/// this verifier understands none. An undecodable header counts as `crit`
/// (the token is refused either way).
fn has_crit_header(token: &str) -> bool {
    use base64::Engine;
    use simd_json::prelude::*;
    let head = token.split('.').next().unwrap_or("");
    let Ok(mut bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head) else {
        return true;
    };
    if crate::proto::json::check_object(&bytes, 8).is_err() {
        return true;
    }
    simd_json::to_borrowed_value(&mut bytes).map_or(true, |v| v.contains_key("crit"))
}

/// The token from `Authorization: Bearer …`, else from `?token=…`.
pub fn token(request: &Request) -> Option<&str> {
    if let Some(bearer) = request.header("authorization").and_then(bearer) {
        return Some(bearer);
    }
    request
        .query
        .as_deref()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Whether `request` carries `api_key` (`Authorization: Bearer` or `X-API-Key`).
pub fn has_api_key(request: &Request, api_key: &str) -> bool {
    let offered = request
        .header("x-api-key")
        .map(str::trim)
        .or_else(|| request.header("authorization").and_then(bearer));
    offered.is_some_and(|k| constant_time_eq(k.as_bytes(), api_key.as_bytes()))
}

/// Whether a browser `origin` is allowed by `patterns` (exact origins, or
/// `scheme://*.domain` for any subdomain). No patterns: every origin.
pub fn origin_allowed(origin: &str, patterns: &[String]) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| match p.split_once("://*.") {
            Some((scheme, domain)) => origin
                .strip_prefix(scheme)
                .and_then(|rest| rest.strip_prefix("://"))
                .is_some_and(|host| host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}"))),
            None => p == origin,
        })
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::mint_hs256;
    use crate::config::ServeArgs;
    use std::time::Duration;

    fn request(headers: &[(&str, &str)], query: Option<&str>) -> Request {
        Request::get("/", query, headers)
    }

    fn verifier(secret: &str) -> Verifier {
        let config = Config::from_args(ServeArgs {
            jwt_secret: Some(secret.into()),
            api_key: Some("k".into()),
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        })
        .unwrap();
        Verifier::new(&config).unwrap()
    }

    #[test]
    fn origins_exact_and_wildcard() {
        let p = vec![
            "https://app.example.com".to_string(),
            "https://*.shop.io".to_string(),
        ];
        assert!(origin_allowed("https://app.example.com", &p));
        assert!(origin_allowed("https://eu.shop.io", &p));
        assert!(origin_allowed("https://a.b.shop.io", &p));
        assert!(!origin_allowed("https://shop.io", &p));
        assert!(!origin_allowed("http://eu.shop.io", &p));
        assert!(!origin_allowed("https://evil.com", &p));
        assert!(!origin_allowed("https://evilshop.io", &p));
        assert!(origin_allowed("https://anything", &[]));
    }

    #[test]
    fn token_comes_from_bearer_or_query() {
        assert_eq!(
            token(&request(&[("authorization", "Bearer abc")], None)),
            Some("abc")
        );
        assert_eq!(token(&request(&[], Some("x=1&token=def"))), Some("def"));
        assert_eq!(token(&request(&[], Some("token="))), None);
        assert_eq!(token(&request(&[("authorization", "Basic abc")], None)), None);
    }

    #[test]
    fn valid_expired_and_foreign_tokens() {
        let v = verifier("s1");
        let good = mint_hs256(&Claims::new("alice", Duration::from_secs(60)), "s1").unwrap();
        assert_eq!(v.verify(&good).unwrap().sub, "alice");
        let mut old = Claims::new("alice", Duration::ZERO);
        old.exp -= 10;
        assert_eq!(
            v.verify(&mint_hs256(&old, "s1").unwrap()),
            Err(AuthError::Expired)
        );
        let foreign = mint_hs256(&Claims::new("alice", Duration::from_secs(60)), "s2").unwrap();
        assert_eq!(v.verify(&foreign), Err(AuthError::InvalidToken));
        assert_eq!(v.verify("not.a.token"), Err(AuthError::InvalidToken));
    }

    #[test]
    fn alg_none_is_refused() {
        // {"alg":"none","typ":"JWT"} . {"sub":"a","exp":9999999999,"iat":0} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5LCJpYXQiOjB9.";
        assert_eq!(verifier("s1").verify(none), Err(AuthError::InvalidToken));
    }

    #[test]
    fn future_nbf_and_crit_headers_are_refused() {
        use base64::Engine;
        let v = verifier("s1");
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        // Hand-written header and body: jsonwebtoken cannot emit `crit`.
        let sign = |head: &str, body: &str| {
            let input = format!("{}.{}", b64(head), b64(body));
            let key = jsonwebtoken::EncodingKey::from_secret(b"s1");
            let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap();
            format!("{input}.{sig}")
        };
        let now = Claims::new("a", Duration::ZERO).iat;
        let body = format!(r#"{{"sub":"a","exp":{},"nbf":{}}}"#, now + 600, now + 300);
        assert_eq!(
            v.verify(&sign(r#"{"alg":"HS256","typ":"JWT"}"#, &body)),
            Err(AuthError::NotYetValid)
        );
        let body = format!(r#"{{"sub":"a","exp":{},"nbf":{}}}"#, now + 600, now - 5);
        assert!(v.verify(&sign(r#"{"alg":"HS256","typ":"JWT"}"#, &body)).is_ok());
        assert_eq!(
            v.verify(&sign(r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#, &body)),
            Err(AuthError::InvalidToken)
        );
    }

    #[test]
    fn api_key_from_bearer_or_header() {
        assert!(has_api_key(
            &request(&[("authorization", "Bearer k1")], None),
            "k1"
        ));
        assert!(has_api_key(&request(&[("x-api-key", "k1")], None), "k1"));
        assert!(!has_api_key(&request(&[("x-api-key", "k2")], None), "k1"));
        assert!(!has_api_key(&request(&[], None), "k1"));
    }
}
