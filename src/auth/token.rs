//! Client token claims and offline minting: the dev-mode banner and the
//! `shardcast token` subcommand (devices are provisioned with tokens minted
//! offline; no endpoint hands them out). Tokens are never logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
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

/// The dev-mode token's claims (`sub` dev-user, 24 h): every client type,
/// every room to join and publish to, every device to watch. Printed in the
/// dev banner and pre-filled in the dev console; dev mode is loopback only.
pub fn dev_claims(client_types: &[String]) -> Claims {
    let mut claims = Claims::new("dev-user", Duration::from_secs(24 * 3600));
    claims.types = client_types.to_vec();
    claims.rooms = vec!["*".into()];
    claims.publish = vec!["*".into()];
    claims.devices = vec!["*".into()];
    claims
}

/// `shardcast token` flags.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// Subject: the user or device id.
    #[arg(long)]
    pub sub: String,
    /// Client types the token may open, comma-separated (e.g. user,shop).
    #[arg(long, default_value = "")]
    pub types: String,
    /// Rooms (or `prefix*`) it may join, comma-separated.
    #[arg(long, default_value = "")]
    pub rooms: String,
    /// Rooms it may publish to, comma-separated.
    #[arg(long, default_value = "")]
    pub publish: String,
    /// Device ids it may watch (`*` = all), comma-separated.
    #[arg(long, default_value = "")]
    pub devices: String,
    /// Lifetime, e.g. 30m, 24h, 365d; `0s` mints a token that is already
    /// expired (for testing a client's expiry handling).
    #[arg(long, default_value = "24h")]
    pub ttl: String,
    /// HS256 secret (default: SHARDCAST_JWT_SECRET, else the dev secret).
    #[arg(
        long,
        env = "SHARDCAST_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "key"
    )]
    pub secret: Option<String>,
    /// PEM private key (RSA → RS256, EC P-256 → ES256) instead of a secret.
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
}

/// Why a token cannot be minted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid --ttl '{0}': use e.g. 30m, 24h, 365d (0s: already expired)")]
    Ttl(String),
    #[error("cannot read --key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("cannot sign: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Mints the token `args` describe. The second value says whether the
/// built-in dev secret was used (the caller warns).
pub fn mint(args: &TokenArgs) -> Result<(String, bool), TokenError> {
    let ttl = crate::config::parse_duration(&args.ttl).ok_or_else(|| TokenError::Ttl(args.ttl.clone()))?;
    let list = |s: &str| {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    };
    let mut claims = Claims::new(&args.sub, ttl);
    if ttl.is_zero() {
        // `exp` equal to now is still valid for this second: one before.
        claims.exp = claims.exp.saturating_sub(1);
    }
    claims.types = list(&args.types);
    claims.rooms = list(&args.rooms);
    claims.publish = list(&args.publish);
    claims.devices = list(&args.devices);
    if let Some(path) = &args.key {
        let pem = std::fs::read(path).map_err(|e| TokenError::Key {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let (alg, key) = match EncodingKey::from_rsa_pem(&pem) {
            Ok(key) => (Algorithm::RS256, key),
            Err(_) => (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(&pem).map_err(|e| TokenError::Key {
                    path: path.display().to_string(),
                    reason: format!("neither an RSA nor an EC private key in PEM: {e}"),
                })?,
            ),
        };
        return Ok((encode(&Header::new(alg), &claims, &key)?, false));
    }
    let dev = args.secret.as_deref().is_none_or(str::is_empty);
    let secret = args
        .secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(crate::config::DEV_JWT_SECRET);
    Ok((mint_hs256(&claims, secret)?, dev))
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
