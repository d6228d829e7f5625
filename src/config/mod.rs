//! Configuration: flags, `SHARDCAST_*` environment variables, an optional TOML
//! file, embedded defaults, dev mode and validation (`ConfigError`).
//!
//! Precedence, highest first: command-line flag, environment variable, TOML
//! file (`--config FILE`), embedded default. Every limit is a named setting; an
//! invalid value is reported as one line naming its key, and `main` exits 2.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod args;
pub mod history;
mod values;

pub use args::ServeArgs;
use history::{Kinds, Limits};
pub use values::parse_duration;
use values::{at_least, duration, list, positive, read_file};

/// The fixed dev-mode JWT secret. Only ever used on a loopback address.
pub const DEV_JWT_SECRET: &str = "shardcast-dev-secret-NOT-FOR-PRODUCTION";
/// The fixed dev-mode API key for the publish API. Only ever used on loopback.
pub const DEV_API_KEY: &str = "shardcast-dev-api-key";
/// Default listen address in dev mode (no secret configured).
pub const DEV_LISTEN: &str = "127.0.0.1:8080";
/// Default listen address when a secret is configured.
pub const PROD_LISTEN: &str = "0.0.0.0:8080";

/// A configuration value that cannot be used. `key` is the setting's name as
/// it appears in the TOML file (flags and env vars use the same name).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value has the wrong form or is out of range.
    #[error("invalid config: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// The `--config` file cannot be read or parsed.
    #[error("invalid config: config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// How the dispatcher writes to sockets with nothing queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendPathKind {
    /// One `sendmsg` syscall per recipient, inline.
    Direct,
    /// One io_uring SQE per recipient, one submit per broadcast.
    Uring,
}

/// A feature turned `on` or `off` (permessage-deflate, the console). In a
/// file also `true` / `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Switch, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Switch;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"on\", \"off\", true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<Switch, E> {
                Ok(if on { Switch::On } else { Switch::Off })
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Switch, E> {
                match text {
                    "on" => Ok(Switch::On),
                    "off" => Ok(Switch::Off),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The PEM files of the TLS port (read and checked at start-up and on SIGHUP).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Validated server configuration, shared read-only by every shard.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where the internal endpoints live, if not on `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `listen` serves TLS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// `listen` serves TLS with a generated localhost certificate.
    pub tls_self_signed: bool,
    /// A plain listener beside the TLS one (opt-in).
    pub plain_listen: Option<SocketAddr>,
    /// The admin port speaks TLS too.
    pub admin_tls: bool,
    pub shards: usize,
    pub backlog: u32,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
    pub handshake_timeout: Duration,
    pub max_message_bytes: usize,
    pub max_queue_bytes: usize,
    pub max_batch_events: usize,
    pub max_rooms_per_connection: usize,
    /// 0 means no limit (for the three connection limits).
    pub max_connections: u64,
    /// `max_connections` was not configured and comes from the open-file
    /// limit (set at start-up).
    pub max_connections_from_nofile: bool,
    pub max_connections_per_type: u64,
    pub max_connections_per_user: u32,
    pub max_json_depth: usize,
    pub max_status_bytes: usize,
    pub max_devices: usize,
    /// `history_size`, `history_ttl`, `history_max_bytes`, `history_topics`.
    pub history: Limits,
    /// `broker`: the Redis URL of the cluster (None: a single node in memory).
    pub broker: Option<String>,
    /// `broker_prefix`: of every Redis key and channel.
    pub broker_prefix: String,
    /// `broker_ca`: PEM bytes of the CA a rediss:// broker's certificate is checked against.
    pub broker_ca: Option<Vec<u8>>,
    pub client_publish_rate: u32,
    pub client_publish_burst: u32,
    /// 0 until start-up sets it from the open-file limit.
    pub max_sockets: u64,
    pub heartbeat_interval: Duration,
    pub idle_timeout: Duration,
    pub token_expiry_notice: Duration,
    pub close_timeout: Duration,
    pub drain_timeout: Duration,
    pub jwt_secret: String,
    /// PEM bytes of the RS256/ES256 public key, when configured.
    pub jwt_public_key: Option<Vec<u8>>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_leeway: Duration,
    pub api_key: String,
    pub allowed_origins: Vec<String>,
    pub client_types: Vec<String>,
    pub device_types: Vec<String>,
    pub echo: bool,
    /// Pin each shard to one CPU (default).
    pub pin: bool,
    /// True when no JWT secret was configured: loopback only, fixed dev secrets.
    pub dev_mode: bool,
    pub log_format: LogFormat,
    pub send_path: SendPathKind,
    /// Negotiate permessage-deflate when a client offers it (default on).
    pub compression: bool,
    /// Events smaller than this go out uncompressed.
    pub compression_min_bytes: usize,
    /// zlib level, 0-9 (default 2: zlib-rs level 1 codes with static Huffman
    /// tables only, 0.70 of a 400 B event against 0.58 at 2; once per event).
    pub compression_level: u32,
    /// Serve the browser console (`api::console`) at `GET /`.
    pub console: bool,
    pub log: String,
}

/// Secrets are never printed, not even in debug output.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("shards", &self.shards)
            .field("dev_mode", &self.dev_mode)
            .field("echo", &self.echo)
            .field("jwt_secret", &"<redacted>")
            .field("api_key", &"<redacted>")
            .field("broker", &self.broker.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Merges flags/env over the TOML file over defaults, and validates.
    pub fn from_args(args: ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => args::FileConfig::default(),
        };
        macro_rules! pick {
            ($name:ident) => {
                args.$name.or(file.$name)
            };
        }
        let jwt_secret = pick!(jwt_secret).filter(|s| !s.is_empty());
        let jwt_public_key = match pick!(jwt_public_key) {
            Some(path) => Some(
                std::fs::read(&path)
                    .map_err(|e| invalid("jwt_public_key", format!("cannot read {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let dev_mode = jwt_secret.is_none() && jwt_public_key.is_none();
        let listen_text =
            pick!(listen).unwrap_or_else(|| if dev_mode { DEV_LISTEN } else { PROD_LISTEN }.to_string());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| invalid("listen", format!("'{listen_text}' is not an IP:PORT address")))?;
        if dev_mode && !listen.ip().is_loopback() {
            return Err(invalid(
                "listen",
                format!(
                    "refusing dev mode on non-loopback address {listen}: no jwt_secret is \
                     configured; set --jwt-secret (or SHARDCAST_JWT_SECRET) and --api-key, \
                     or listen on 127.0.0.1"
                ),
            ));
        }
        let api_key = match pick!(api_key).filter(|s| !s.is_empty()) {
            Some(key) => key,
            None if dev_mode => DEV_API_KEY.to_string(),
            None => {
                return Err(invalid(
                    "api_key",
                    "required when jwt_secret is set (the dev API key is only used in dev mode)",
                ))
            }
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = pick!(shards).unwrap_or(cores);
        if shards == 0 || shards > 1024 {
            return Err(invalid("shards", format!("{shards} is not in 1..=1024")));
        }
        let client_types = list(pick!(client_types).as_deref()).unwrap_or_else(|| {
            ["user", "shop", "admin", "pico", "esp32cam"]
                .map(String::from)
                .into()
        });
        for t in &client_types {
            if !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    "client_types",
                    format!("'{t}' may only use [A-Za-z0-9_-]"),
                ));
            }
        }
        let admin_listen = match pick!(admin_listen).filter(|s| !s.is_empty()) {
            Some(text) => Some(
                text.parse::<SocketAddr>()
                    .map_err(|_| invalid("admin_listen", format!("'{text}' is not an IP:PORT address")))?,
            ),
            None => None,
        };
        let tls = match (pick!(tls_cert), pick!(tls_key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("tls_key", "required with tls_cert")),
            (None, Some(_)) => return Err(invalid("tls_cert", "required with tls_key")),
        };
        let tls_self_signed = args.tls_self_signed || file.tls_self_signed.unwrap_or(false);
        if tls_self_signed && tls.is_some() {
            return Err(invalid("tls_self_signed", "not with tls_cert/tls_key"));
        }
        let serves_tls = tls.is_some() || tls_self_signed;
        let plain_listen = match pick!(plain_listen).filter(|s| !s.is_empty()) {
            Some(_) if !serves_tls => {
                return Err(invalid(
                    "plain_listen",
                    "only beside a TLS port (tls_cert and tls_key)",
                ))
            }
            Some(text) => {
                let addr = text
                    .parse::<SocketAddr>()
                    .map_err(|_| invalid("plain_listen", format!("'{text}' is not an IP:PORT address")))?;
                if dev_mode && !addr.ip().is_loopback() {
                    return Err(invalid("plain_listen", "dev mode serves loopback addresses only"));
                }
                Some(addr)
            }
            None => None,
        };
        let admin_tls = args.admin_tls || file.admin_tls.unwrap_or(false);
        if admin_tls && (!serves_tls || admin_listen.is_none()) {
            return Err(invalid("admin_tls", "needs admin_listen and a TLS port"));
        }
        let config = Config {
            listen,
            admin_listen,
            tls,
            tls_self_signed,
            plain_listen,
            admin_tls,
            shards,
            backlog: positive("backlog", pick!(backlog).unwrap_or(4096))?,
            max_header_bytes: at_least("max_header_bytes", pick!(max_header_bytes).unwrap_or(8192), 256)?,
            max_headers: at_least("max_headers", pick!(max_headers).unwrap_or(64), 8)?,
            max_body_bytes: at_least("max_body_bytes", pick!(max_body_bytes).unwrap_or(1 << 20), 1)?,
            handshake_timeout: duration("handshake_timeout", pick!(handshake_timeout), "10s")?,
            max_message_bytes: at_least(
                "max_message_bytes",
                pick!(max_message_bytes).unwrap_or(64 << 10),
                125,
            )?,
            max_queue_bytes: at_least("max_queue_bytes", pick!(max_queue_bytes).unwrap_or(1 << 20), 1024)?,
            max_batch_events: at_least("max_batch_events", pick!(max_batch_events).unwrap_or(1000), 1)?,
            max_rooms_per_connection: pick!(max_rooms_per_connection).unwrap_or(64),
            max_connections: pick!(max_connections).unwrap_or(0),
            max_connections_from_nofile: false,
            max_connections_per_type: pick!(max_connections_per_type).unwrap_or(0),
            max_connections_per_user: pick!(max_connections_per_user).unwrap_or(0),
            max_json_depth: at_least("max_json_depth", pick!(max_json_depth).unwrap_or(128), 2)?,
            max_status_bytes: at_least(
                "max_status_bytes",
                pick!(max_status_bytes).unwrap_or(16 << 10),
                256,
            )?,
            max_devices: at_least("max_devices", pick!(max_devices).unwrap_or(10_000), 1)?,
            history: Limits {
                size: pick!(history_size).unwrap_or(100),
                ttl: duration("history_ttl", pick!(history_ttl), "5m")?,
                max_bytes: at_least(
                    "history_max_bytes",
                    pick!(history_max_bytes).unwrap_or(64 << 20),
                    4096,
                )?,
                kinds: Kinds::parse(
                    &list(Some(
                        pick!(history_topics)
                            .as_deref()
                            .unwrap_or("all,type:*,user:*,room:*"),
                    ))
                    .unwrap_or_default(),
                )
                .map_err(|reason| invalid("history_topics", reason))?,
            },
            broker: match pick!(broker).filter(|s| !s.is_empty()) {
                Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => Some(url),
                Some(_) => {
                    return Err(invalid(
                        "broker",
                        "must be a redis://host:port[/db] or rediss://host:port[/db] URL",
                    ))
                }
                None => None,
            },
            broker_ca: match pick!(broker_ca) {
                Some(path) => Some(
                    std::fs::read(&path)
                        .map_err(|e| invalid("broker_ca", format!("cannot read {}: {e}", path.display())))?,
                ),
                None => None,
            },
            broker_prefix: match pick!(broker_prefix) {
                None => "shardcast:".to_string(),
                Some(p) if p.len() <= 64 && p.bytes().all(|b| b.is_ascii_graphic()) => p,
                Some(_) => return Err(invalid("broker_prefix", "at most 64 visible ASCII characters")),
            },
            client_publish_rate: positive("client_publish_rate", pick!(client_publish_rate).unwrap_or(50))?,
            client_publish_burst: positive(
                "client_publish_burst",
                pick!(client_publish_burst).unwrap_or(100),
            )?,
            max_sockets: pick!(max_sockets).unwrap_or(0),
            heartbeat_interval: duration("heartbeat_interval", pick!(heartbeat_interval), "25s")?,
            idle_timeout: duration("idle_timeout", pick!(idle_timeout), "60s")?,
            close_timeout: duration("close_timeout", pick!(close_timeout), "5s")?,
            token_expiry_notice: duration("token_expiry_notice", pick!(token_expiry_notice), "60s")?,
            drain_timeout: duration("drain_timeout", pick!(drain_timeout), "10s")?,
            jwt_secret: jwt_secret.unwrap_or_else(|| DEV_JWT_SECRET.to_string()),
            jwt_public_key,
            jwt_issuer: pick!(jwt_issuer).filter(|s| !s.is_empty()),
            jwt_audience: pick!(jwt_audience).filter(|s| !s.is_empty()),
            jwt_leeway: match pick!(jwt_leeway) {
                None => Duration::ZERO,
                Some(text) => parse_duration(&text).ok_or_else(|| {
                    invalid("jwt_leeway", format!("'{text}' is not a duration like 0s or 30s"))
                })?,
            },
            api_key,
            allowed_origins: list(pick!(allowed_origins).as_deref()).unwrap_or_default(),
            device_types: list(pick!(device_types).as_deref())
                .unwrap_or_else(|| vec!["pico".into(), "esp32cam".into()]),
            client_types,
            echo: args.echo || file.echo.unwrap_or(false),
            pin: !args.no_pin && file.pin.unwrap_or(true),
            dev_mode,
            log_format: pick!(log_format).unwrap_or(LogFormat::Human),
            send_path: pick!(send_path).unwrap_or(SendPathKind::Uring),
            compression: pick!(compression).unwrap_or(Switch::On) == Switch::On,
            compression_min_bytes: pick!(compression_min_bytes).unwrap_or(256),
            compression_level: match pick!(compression_level).unwrap_or(2) {
                level @ 0..=9 => level,
                other => {
                    return Err(invalid(
                        "compression_level",
                        format!("{other} is not a zlib level 0-9"),
                    ))
                }
            },
            console: pick!(console).unwrap_or(Switch::On) == Switch::On,
            log: pick!(log).unwrap_or_else(|| "info".to_string()),
        };
        if config.idle_timeout <= config.heartbeat_interval {
            return Err(invalid(
                "idle_timeout",
                "must be longer than heartbeat_interval, or healthy idle clients are closed",
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_accepts_units_and_rejects_garbage() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("10x"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn no_secret_means_dev_mode_on_loopback() {
        let c = Config::from_args(ServeArgs::default()).unwrap();
        assert!(c.dev_mode);
        assert_eq!(c.listen.to_string(), DEV_LISTEN);
        assert_eq!(c.api_key, DEV_API_KEY);
    }

    #[test]
    fn dev_mode_refuses_non_loopback() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:9000".into()),
            ..Default::default()
        };
        let err = Config::from_args(args).unwrap_err().to_string();
        assert!(err.starts_with("invalid config: listen:"), "{err}");
    }

    #[test]
    fn a_secret_requires_an_api_key() {
        let args = ServeArgs {
            jwt_secret: Some("s3cret".into()),
            ..Default::default()
        };
        let err = Config::from_args(args).unwrap_err().to_string();
        assert!(err.contains("api_key"), "{err}");
    }

    #[test]
    fn flags_override_file_values() {
        let dir = std::env::temp_dir().join(format!("shardcast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "shards = 3\nbacklog = 17\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            shards: Some(1),
            ..Default::default()
        };
        let c = Config::from_args(args).unwrap();
        assert_eq!(c.shards, 1);
        assert_eq!(c.backlog, 17);
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let args = ServeArgs {
            jwt_secret: Some("top-secret-value".into()),
            api_key: Some("key-value".into()),
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c = Config::from_args(args).unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("top-secret-value") && !text.contains("key-value"));
    }
}
