//! The settings as flags (with their `SHARDCAST_*` environment variables)
//! and as TOML file keys; `Config::from_args` merges and validates them.

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use crate::config::{LogFormat, SendPathKind, Switch};

/// `shardcast serve` flags. Each is also read from `SHARDCAST_<NAME>` and from
/// the TOML file key `<name>` (dashes become underscores).
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys use underscores).
    #[arg(long, env = "SHARDCAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080 in dev mode, else 0.0.0.0:8080).
    #[arg(long, env = "SHARDCAST_LISTEN")]
    pub listen: Option<String>,
    /// Internal address for the publish API, device status, /metrics and
    /// /debug/latency (they then leave the public port).
    #[arg(long, env = "SHARDCAST_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// PEM certificate chain (leaf first): with --tls-key, `listen` serves
    /// TLS (https://, wss://). SIGHUP re-reads both files.
    #[arg(long, env = "SHARDCAST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(long, env = "SHARDCAST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a throwaway certificate for localhost (dev only);
    /// prints its SHA-256 fingerprint and where its PEM was written.
    #[arg(long, env = "SHARDCAST_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// With TLS on `listen`: also serve plain HTTP/ws on this address (opt-in).
    #[arg(long, env = "SHARDCAST_PLAIN_LISTEN")]
    pub plain_listen: Option<String>,
    /// With TLS and --admin-listen: the admin port speaks TLS too (default: plain).
    #[arg(long, env = "SHARDCAST_ADMIN_TLS")]
    pub admin_tls: bool,
    /// Number of shards (one pinned executor each); default: all cores.
    #[arg(long, env = "SHARDCAST_SHARDS")]
    pub shards: Option<usize>,
    /// Listen backlog of each shard's socket.
    #[arg(long, env = "SHARDCAST_BACKLOG")]
    pub backlog: Option<u32>,
    /// Largest HTTP request head (request line + headers), bytes; over it: 431.
    #[arg(long, env = "SHARDCAST_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Most header lines in one request; over it: 431.
    #[arg(long, env = "SHARDCAST_MAX_HEADERS")]
    pub max_headers: Option<usize>,
    /// Largest HTTP request body, bytes; over it: 413.
    #[arg(long, env = "SHARDCAST_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Time allowed for one HTTP request or handshake, and keep-alive idle time (e.g. 10s).
    #[arg(long, env = "SHARDCAST_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<String>,
    /// Largest WebSocket message a client may send, bytes; over it: close 1009.
    #[arg(long, env = "SHARDCAST_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Most bytes queued for one connection before its slow-consumer policy applies.
    #[arg(long, env = "SHARDCAST_MAX_QUEUE_BYTES")]
    pub max_queue_bytes: Option<usize>,
    /// Most WebSocket connections in total (0: the open-file limit less 128); over it: 503.
    #[arg(long, env = "SHARDCAST_MAX_CONNECTIONS")]
    pub max_connections: Option<u64>,
    /// Most connections of one client type (0: no limit); over it: 503.
    #[arg(long, env = "SHARDCAST_MAX_CONNECTIONS_PER_TYPE")]
    pub max_connections_per_type: Option<u64>,
    /// Most connections of one user (token `sub`; 0: no limit); over it: 503.
    #[arg(long, env = "SHARDCAST_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<u32>,
    /// Most events in one `POST /api/v1/publish/batch`; over it: 413.
    #[arg(long, env = "SHARDCAST_MAX_BATCH_EVENTS")]
    pub max_batch_events: Option<usize>,
    /// Most rooms one connection may join; past it: error `too_many_rooms`.
    #[arg(long, env = "SHARDCAST_MAX_ROOMS_PER_CONNECTION")]
    pub max_rooms_per_connection: Option<usize>,
    /// Deepest nesting of arrays/objects in any JSON a peer sends; deeper: `bad_json`.
    #[arg(long, env = "SHARDCAST_MAX_JSON_DEPTH")]
    pub max_json_depth: Option<usize>,
    /// Largest encoded device status, bytes (far below the body limit); over it: 413.
    #[arg(long, env = "SHARDCAST_MAX_STATUS_BYTES")]
    pub max_status_bytes: Option<usize>,
    /// Most devices whose last status is remembered; past it the least
    /// recently updated is forgotten (and counted).
    #[arg(long, env = "SHARDCAST_MAX_DEVICES")]
    pub max_devices: Option<usize>,
    /// Events kept per topic for recovery and the history API (0: history off, no offsets).
    #[arg(long, env = "SHARDCAST_HISTORY_SIZE")]
    pub history_size: Option<usize>,
    /// How long a topic's events are kept (e.g. 5m).
    #[arg(long, env = "SHARDCAST_HISTORY_TTL")]
    pub history_ttl: Option<String>,
    /// Bytes all topics' histories may hold; past it the least recently published topics go.
    #[arg(long, env = "SHARDCAST_HISTORY_MAX_BYTES")]
    pub history_max_bytes: Option<usize>,
    /// Topic kinds that keep a history: any of all, type:*, user:*, room:* (comma-separated; empty: none).
    #[arg(long, env = "SHARDCAST_HISTORY_TOPICS")]
    pub history_topics: Option<String>,
    /// Run as one node of a cluster through Redis: redis://[:password@]host:port[/db]
    /// (unset: the in-memory single node). The password is never logged.
    #[arg(long, env = "SHARDCAST_BROKER")]
    pub broker: Option<String>,
    /// Prefix of every Redis key and channel this cluster uses.
    #[arg(long, env = "SHARDCAST_BROKER_PREFIX")]
    pub broker_prefix: Option<String>,
    /// For a rediss:// broker: PEM file of the CA that signed Redis's
    /// certificate (default: the system's trusted roots).
    #[arg(long, env = "SHARDCAST_BROKER_CA")]
    pub broker_ca: Option<PathBuf>,
    /// Messages per second one connection may publish (rooms, device status); past it: `rate_limited`.
    #[arg(long, env = "SHARDCAST_CLIENT_PUBLISH_RATE")]
    pub client_publish_rate: Option<u32>,
    /// Messages one connection may publish in a burst above the rate.
    #[arg(long, env = "SHARDCAST_CLIENT_PUBLISH_BURST")]
    pub client_publish_burst: Option<u32>,
    /// Most accepted sockets on the public port, HTTP and WebSocket alike
    /// (0: the open-file limit less a reserve); past it: 503 at once.
    #[arg(long, env = "SHARDCAST_MAX_SOCKETS")]
    pub max_sockets: Option<u64>,
    /// Interval of server pings to each connection (e.g. 25s).
    #[arg(long, env = "SHARDCAST_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<String>,
    /// How long before a token's `exp` the client is sent `token_expiring`.
    #[arg(long, env = "SHARDCAST_TOKEN_EXPIRY_NOTICE")]
    pub token_expiry_notice: Option<String>,
    /// A peer silent for this long is closed (e.g. 60s).
    #[arg(long, env = "SHARDCAST_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// How long to wait for the peer's close frame after sending ours.
    #[arg(long, env = "SHARDCAST_CLOSE_TIMEOUT")]
    pub close_timeout: Option<String>,
    /// On SIGTERM/SIGINT, how long to wait for connections to close before exiting.
    #[arg(long, env = "SHARDCAST_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,
    /// HS256 secret for client JWTs. Without it the server runs in dev mode.
    #[arg(long, env = "SHARDCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256 or ES256 client tokens (instead of a secret).
    #[arg(long, env = "SHARDCAST_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Required `iss` claim, if set.
    #[arg(long, env = "SHARDCAST_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, if set.
    #[arg(long, env = "SHARDCAST_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed when checking `exp` (e.g. 0s, 30s).
    #[arg(long, env = "SHARDCAST_JWT_LEEWAY")]
    pub jwt_leeway: Option<String>,
    /// API key for the publish API.
    #[arg(long, env = "SHARDCAST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Comma-separated browser origins allowed to connect (`https://*.example.com` allowed).
    #[arg(long, env = "SHARDCAST_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Comma-separated client types served on /ws/{client_type}.
    #[arg(long, env = "SHARDCAST_CLIENT_TYPES")]
    pub client_types: Option<String>,
    /// Client types that are devices (publish online/offline, may report status).
    #[arg(long, env = "SHARDCAST_DEVICE_TYPES")]
    pub device_types: Option<String>,
    /// Do not pin shards to CPUs (for hosts where other busy processes, such
    /// as a load generator, share the cores).
    #[arg(long, env = "SHARDCAST_NO_PIN")]
    pub no_pin: bool,
    /// Serve /ws/echo (no auth; for conformance tests only).
    #[arg(long, env = "SHARDCAST_ECHO")]
    pub echo: bool,
    /// Log format.
    #[arg(long, env = "SHARDCAST_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// How fan-out writes to sockets: `uring` (default: batched io_uring
    /// sends) or `direct` (sendmsg per recipient); see the README's measurements.
    #[arg(long, env = "SHARDCAST_SEND_PATH", value_enum)]
    pub send_path: Option<SendPathKind>,
    /// permessage-deflate when a client offers it: `on` (default) or `off`.
    #[arg(long, env = "SHARDCAST_COMPRESSION", value_enum)]
    pub compression: Option<Switch>,
    /// Events smaller than this many bytes go out uncompressed (default 256).
    #[arg(long, env = "SHARDCAST_COMPRESSION_MIN_BYTES")]
    pub compression_min_bytes: Option<usize>,
    /// zlib compression level 0-9 (default 2).
    #[arg(long, env = "SHARDCAST_COMPRESSION_LEVEL")]
    pub compression_level: Option<u32>,
    /// The browser console at `GET /`: `on` (default: dev mode's public
    /// port, else the admin port) or `off`.
    #[arg(long, env = "SHARDCAST_CONSOLE", value_enum)]
    pub console: Option<Switch>,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info` or `shardcast=debug`).
    #[arg(long, env = "SHARDCAST_LOG")]
    pub log: Option<String>,
}

/// The same settings as read from a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_self_signed: Option<bool>,
    pub plain_listen: Option<String>,
    pub admin_tls: Option<bool>,
    pub shards: Option<usize>,
    pub backlog: Option<u32>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub handshake_timeout: Option<String>,
    pub max_message_bytes: Option<usize>,
    pub max_queue_bytes: Option<usize>,
    pub max_batch_events: Option<usize>,
    pub max_rooms_per_connection: Option<usize>,
    pub max_connections: Option<u64>,
    pub max_connections_per_type: Option<u64>,
    pub max_connections_per_user: Option<u32>,
    pub max_json_depth: Option<usize>,
    pub max_status_bytes: Option<usize>,
    pub max_devices: Option<usize>,
    pub history_size: Option<usize>,
    pub history_ttl: Option<String>,
    pub history_max_bytes: Option<usize>,
    pub history_topics: Option<String>,
    pub broker: Option<String>,
    pub broker_prefix: Option<String>,
    pub broker_ca: Option<PathBuf>,
    pub client_publish_rate: Option<u32>,
    pub client_publish_burst: Option<u32>,
    pub max_sockets: Option<u64>,
    pub heartbeat_interval: Option<String>,
    pub idle_timeout: Option<String>,
    pub token_expiry_notice: Option<String>,
    pub close_timeout: Option<String>,
    pub drain_timeout: Option<String>,
    pub jwt_secret: Option<String>,
    pub jwt_public_key: Option<PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_leeway: Option<String>,
    pub api_key: Option<String>,
    pub allowed_origins: Option<String>,
    pub client_types: Option<String>,
    pub device_types: Option<String>,
    pub echo: Option<bool>,
    pub pin: Option<bool>,
    pub log_format: Option<LogFormat>,
    pub send_path: Option<SendPathKind>,
    pub compression: Option<Switch>,
    pub compression_min_bytes: Option<usize>,
    pub compression_level: Option<u32>,
    pub console: Option<Switch>,
    pub log: Option<String>,
}
