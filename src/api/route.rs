//! Method + path → `Endpoint`: the one table of what this server serves.

use crate::config::Config;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /health`
    Health,
    /// `GET /ws/stats`
    Stats,
    /// `GET /metrics` (Prometheus text)
    Metrics,
    /// `GET /debug/latency` (hgrm text)
    DebugLatency,
    /// `GET /ws/echo` upgrade (only with `--echo`)
    Echo,
    /// `GET /ws/{client_type}` upgrade; the index into `client_types`.
    Client { client_type: u16 },
    /// `GET /api/v1/websocket/ws/{user_id}` upgrade.
    UserSocket { user_id: String },
    /// `POST /api/v1/publish`
    Publish,
    /// `POST /api/v1/publish/batch`
    PublishBatch,
    /// `GET /ws/devices/all` (`device: None`) or `/ws/devices/{id}` upgrade.
    Monitor { device: Option<String> },
    /// `POST /api/v1/devices/{device_id}/status`
    DeviceStatus { device_id: String },
    /// `GET /api/v1/history?topic=…&since=…&limit=…`
    History,
    /// `GET /`: the browser console's page (see [`console_port`]).
    Console,
    /// `GET /console/{file}`: its scripts and style sheet.
    ConsoleAsset { file: String },
}

impl Endpoint {
    /// Whether the endpoint is a WebSocket upgrade.
    pub fn is_websocket(&self) -> bool {
        matches!(
            self,
            Endpoint::Echo | Endpoint::Client { .. } | Endpoint::UserSocket { .. } | Endpoint::Monitor { .. }
        )
    }
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Public,
    /// `admin_listen`: the internal endpoints (and `/health`) only.
    Admin,
}

impl Endpoint {
    /// Endpoints for backends and operators, moved by `admin_listen`.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Endpoint::Publish
                | Endpoint::PublishBatch
                | Endpoint::History
                | Endpoint::DeviceStatus { .. }
                | Endpoint::Metrics
                | Endpoint::DebugLatency
        )
    }
}

impl Endpoint {
    /// The console's page and files.
    pub fn is_console(&self) -> bool {
        matches!(self, Endpoint::Console | Endpoint::ConsoleAsset { .. })
    }
}

/// Where the console is served: on the admin port when there is one (it
/// publishes and reads `/debug/latency`, which live there), else on the
/// public port in dev mode only (loopback); never with `console = off`.
pub fn console_port(config: &Config) -> Option<Port> {
    if !config.console {
        None
    } else if config.admin_listen.is_some() {
        Some(Port::Admin)
    } else if config.dev_mode {
        Some(Port::Public)
    } else {
        None
    }
}

/// Routes a request that came in on `port`: with `admin_listen` set, the
/// internal endpoints exist only on the admin port, the rest only on the
/// public one (`/health` on both, `/ws/stats` too for the console); the
/// console only where [`console_port`] puts it.
pub fn route_on(port: Port, method: &str, path: &str, config: &Config) -> Result<Endpoint, RouteError> {
    let endpoint = route(method, path, config);
    if matches!(&endpoint, Ok(e) if e.is_console()) {
        return if console_port(config) == Some(port) {
            endpoint
        } else {
            Err(RouteError::NotFound)
        };
    }
    if config.admin_listen.is_none() {
        return endpoint;
    }
    match (&endpoint, port) {
        (Ok(Endpoint::Health | Endpoint::Stats), _) => endpoint,
        (Ok(e), Port::Admin) if !e.is_internal() => Err(RouteError::NotFound),
        (Ok(e), Port::Public) if e.is_internal() => Err(RouteError::NotFound),
        _ => endpoint,
    }
}

/// No endpoint for the request.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// 404: no such path.
    NotFound,
    /// 405: the path exists with other methods (`allow` lists them).
    MethodNotAllowed { allow: &'static str },
}

/// Routes `method path` (path without the query string).
pub fn route(method: &str, path: &str, config: &Config) -> Result<Endpoint, RouteError> {
    let (endpoint, allow) = match path {
        "/" => (Endpoint::Console, "GET"),
        "/health" => (Endpoint::Health, "GET"),
        "/ws/stats" => (Endpoint::Stats, "GET"),
        "/metrics" => (Endpoint::Metrics, "GET"),
        "/debug/latency" => (Endpoint::DebugLatency, "GET"),
        "/ws/echo" if config.echo => (Endpoint::Echo, "GET"),
        "/api/v1/publish" => (Endpoint::Publish, "POST"),
        "/api/v1/publish/batch" => (Endpoint::PublishBatch, "POST"),
        "/api/v1/history" => (Endpoint::History, "GET"),
        _ => match dynamic(path, config) {
            Some(endpoint @ Endpoint::DeviceStatus { .. }) => (endpoint, "POST"),
            Some(endpoint) => (endpoint, "GET"),
            None => return Err(RouteError::NotFound),
        },
    };
    if method == allow || (method == "HEAD" && allow == "GET" && !endpoint.is_websocket()) {
        Ok(endpoint)
    } else {
        Err(RouteError::MethodNotAllowed { allow })
    }
}

/// Paths with a parameter.
fn dynamic(path: &str, config: &Config) -> Option<Endpoint> {
    let segment = |s: &str| !s.is_empty() && !s.contains('/');
    if let Some(file) = path.strip_prefix("/console/") {
        return segment(file).then(|| Endpoint::ConsoleAsset {
            file: file.to_string(),
        });
    }
    if let Some(device) = path.strip_prefix("/ws/devices/") {
        return match device {
            "all" => Some(Endpoint::Monitor { device: None }),
            d if segment(d) => Some(Endpoint::Monitor {
                device: Some(d.to_string()),
            }),
            _ => None,
        };
    }
    if let Some(rest) = path.strip_prefix("/api/v1/devices/") {
        let device_id = rest.strip_suffix("/status")?;
        return segment(device_id).then(|| Endpoint::DeviceStatus {
            device_id: device_id.to_string(),
        });
    }
    if let Some(user_id) = path.strip_prefix("/api/v1/websocket/ws/") {
        return (!user_id.is_empty() && !user_id.contains('/')).then(|| Endpoint::UserSocket {
            user_id: user_id.to_string(),
        });
    }
    let name = path.strip_prefix("/ws/")?;
    let index = config.client_types.iter().position(|t| t == name)?;
    Some(Endpoint::Client {
        client_type: index as u16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ServeArgs};

    fn config(echo: bool) -> Config {
        Config::from_args(ServeArgs {
            echo,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn known_paths_route_and_unknown_are_not_found() {
        let c = config(false);
        assert_eq!(route("GET", "/health", &c), Ok(Endpoint::Health));
        assert_eq!(route("GET", "/ws/stats", &c), Ok(Endpoint::Stats));
        assert_eq!(route("POST", "/api/v1/publish", &c), Ok(Endpoint::Publish));
        assert_eq!(
            route("POST", "/api/v1/publish/batch", &c),
            Ok(Endpoint::PublishBatch)
        );
        assert_eq!(route("GET", "/nope", &c), Err(RouteError::NotFound));
    }

    #[test]
    fn client_types_and_user_sockets() {
        let c = config(false);
        assert_eq!(
            route("GET", "/ws/user", &c),
            Ok(Endpoint::Client { client_type: 0 })
        );
        assert_eq!(
            route("GET", "/ws/esp32cam", &c),
            Ok(Endpoint::Client { client_type: 4 })
        );
        assert_eq!(route("GET", "/ws/robot", &c), Err(RouteError::NotFound));
        assert_eq!(
            route("GET", "/api/v1/websocket/ws/alice", &c),
            Ok(Endpoint::UserSocket {
                user_id: "alice".into()
            })
        );
        assert_eq!(
            route("GET", "/api/v1/websocket/ws/", &c),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn device_monitors_and_status() {
        let c = config(false);
        assert_eq!(
            route("GET", "/ws/devices/all", &c),
            Ok(Endpoint::Monitor { device: None })
        );
        assert_eq!(
            route("GET", "/ws/devices/esp-1", &c),
            Ok(Endpoint::Monitor {
                device: Some("esp-1".into())
            })
        );
        assert_eq!(
            route("POST", "/api/v1/devices/esp-1/status", &c),
            Ok(Endpoint::DeviceStatus {
                device_id: "esp-1".into()
            })
        );
        assert_eq!(
            route("GET", "/api/v1/devices/esp-1/status", &c),
            Err(RouteError::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(route("GET", "/ws/devices/", &c), Err(RouteError::NotFound));
    }

    #[test]
    fn echo_exists_only_when_enabled() {
        assert_eq!(
            route("GET", "/ws/echo", &config(false)),
            Err(RouteError::NotFound)
        );
        assert_eq!(route("GET", "/ws/echo", &config(true)), Ok(Endpoint::Echo));
    }

    #[test]
    fn the_console_lives_on_one_port() {
        use crate::config::Switch;
        let dev = config(false);
        assert_eq!(route_on(Port::Public, "GET", "/", &dev), Ok(Endpoint::Console));
        assert_eq!(
            route_on(Port::Public, "GET", "/console/console.js", &dev),
            Ok(Endpoint::ConsoleAsset {
                file: "console.js".into()
            })
        );
        let with = |args: ServeArgs| Config::from_args(args).unwrap();
        let off = with(ServeArgs {
            console: Some(Switch::Off),
            ..Default::default()
        });
        assert_eq!(
            route_on(Port::Public, "GET", "/", &off),
            Err(RouteError::NotFound)
        );
        let secret = || ServeArgs {
            jwt_secret: Some("s".into()),
            api_key: Some("k".into()),
            ..Default::default()
        };
        let production = with(secret());
        assert_eq!(
            route_on(Port::Public, "GET", "/", &production),
            Err(RouteError::NotFound)
        );
        let admin = with(ServeArgs {
            admin_listen: Some("127.0.0.1:0".into()),
            ..secret()
        });
        assert_eq!(
            route_on(Port::Public, "GET", "/", &admin),
            Err(RouteError::NotFound)
        );
        assert_eq!(route_on(Port::Admin, "GET", "/", &admin), Ok(Endpoint::Console));
        assert_eq!(
            route_on(Port::Admin, "GET", "/ws/stats", &admin),
            Ok(Endpoint::Stats)
        );
        assert_eq!(
            route_on(Port::Admin, "GET", "/ws/user", &admin),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        assert_eq!(
            route("POST", "/health", &config(false)),
            Err(RouteError::MethodNotAllowed { allow: "GET" })
        );
        assert_eq!(
            route("GET", "/api/v1/publish", &config(false)),
            Err(RouteError::MethodNotAllowed { allow: "POST" })
        );
    }
}
