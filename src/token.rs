//! Client token claims and offline minting (dev-mode banner now, the
//! `shardcast token` subcommand later). Tokens are never logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// What a client token says about its holder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User or device id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch (optional).
    #[serde(default)]
    pub iat: u64,
    /// Client types the token may open (`/ws/{client_type}`).
    #[serde(default)]
    pub types: Vec<String>,
    /// Rooms (or `prefix*`) it may join.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Rooms it may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Device ids it may watch (`*` = all).
    #[serde(default)]
    pub devices: Vec<String>,
}

impl Claims {
    /// Claims for `sub` valid for `ttl` from now.
    pub fn new(sub: &str, ttl: Duration) -> Claims {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Claims {
            sub: sub.to_string(),
            exp: now + ttl.as_secs(),
            iat: now,
            types: Vec::new(),
            rooms: Vec::new(),
            publish: Vec::new(),
            devices: Vec::new(),
        }
    }
}

/// Signs `claims` with HS256 and `secret`.
pub fn mint_hs256(claims: &Claims, secret: &str) -> Result<String, jsonwebtoken::errors::Error> {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    #[test]
    fn minted_token_verifies_with_the_same_secret_only() {
        let mut claims = Claims::new("alice", Duration::from_secs(60));
        claims.types = vec!["user".into()];
        let token = mint_hs256(&claims, "s1").unwrap();
        let got = decode::<Claims>(&token, &DecodingKey::from_secret(b"s1"), &Validation::default()).unwrap();
        assert_eq!(got.claims, claims);
        assert!(decode::<Claims>(&token, &DecodingKey::from_secret(b"s2"), &Validation::default()).is_err());
    }
}
