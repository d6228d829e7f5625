//! Method + path → `Endpoint`: the one table of what this server serves.

use crate::config::Config;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /health`
    Health,
    /// `GET /ws/stats`
    Stats,
    /// `GET /ws/echo` upgrade (only with `--echo`)
    Echo,
}

impl Endpoint {
    /// Whether the endpoint is a WebSocket upgrade.
    pub fn is_websocket(&self) -> bool {
        matches!(self, Endpoint::Echo)
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
        "/health" => (Endpoint::Health, "GET"),
        "/ws/stats" => (Endpoint::Stats, "GET"),
        "/ws/echo" if config.echo => (Endpoint::Echo, "GET"),
        _ => return Err(RouteError::NotFound),
    };
    if method == allow || (method == "HEAD" && allow == "GET" && !endpoint.is_websocket()) {
        Ok(endpoint)
    } else {
        Err(RouteError::MethodNotAllowed { allow })
    }
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
        assert_eq!(route("GET", "/nope", &c), Err(RouteError::NotFound));
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
    fn wrong_method_is_405_with_allow() {
        assert_eq!(
            route("POST", "/health", &config(false)),
            Err(RouteError::MethodNotAllowed { allow: "GET" })
        );
    }
}
