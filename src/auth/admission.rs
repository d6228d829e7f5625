//! Admission as guards: a place is taken by a constructor that checks its
//! limit and given back by `Drop`, so every exit path (a refused upgrade, a
//! failed 101 write, a closed connection, a task cancelled at shutdown)
//! gives it back exactly once.
//!
//! - [`SocketSlot`]: one accepted socket on the public port, HTTP or
//!   WebSocket, under `max_sockets`.
//! - [`Admission`]: one WebSocket connection under `max_connections`,
//!   `max_connections_per_type` and `max_connections_per_user`.

use std::sync::Arc;

use crate::config::Config;
use crate::ops::stats::Board;

/// One accepted socket on the public port, counted against `max_sockets`
/// from accept until this is dropped with the HTTP session, or handed to
/// the WebSocket driver on upgrade ([`SocketSlot::hand_to_driver`]).
pub struct SocketSlot(Option<Arc<Board>>);

impl SocketSlot {
    /// Counts one more socket, or `None` when `max` (0: no limit) are open.
    pub fn take(board: &Arc<Board>, max: u64) -> Option<SocketSlot> {
        board
            .try_open_socket(max)
            .then(|| SocketSlot(Some(board.clone())))
    }

    /// Passes the place to an upgraded connection's driver, which gives it
    /// back when it is dropped (`serve::ws`): an idle connection's task has
    /// no room for the guard itself (`bench/idle-rss`).
    pub fn hand_to_driver(mut self) {
        self.0 = None;
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        if let Some(board) = self.0.take() {
            board.close_socket();
        }
    }
}

/// A WebSocket connection's place under the connection limits, and its
/// user's slot when a per-user limit is configured.
pub struct Admission {
    /// `None` once handed to a driver.
    board: Option<Arc<Board>>,
    /// The user whose slot this holds (only with a per-user limit).
    user: Option<Box<str>>,
}

/// A connection limit is reached; the message names it (503 + Retry-After).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Full(pub String);

impl Admission {
    /// Admits one more connection of `client_type` for `user`, or says
    /// which limit is reached. Checked in the order per type, total, per
    /// user; a refusal holds nothing.
    pub fn admit(
        board: &Arc<Board>,
        config: &Config,
        client_type: Option<u16>,
        user: Option<&str>,
    ) -> Result<Admission, Full> {
        if let Some(t) = client_type.filter(|_| config.max_connections_per_type > 0) {
            if board.of_type(t) >= config.max_connections_per_type {
                let name = &config.client_types[t as usize];
                return Err(Full(format!(
                    "connection limit for '{name}' ({}) reached",
                    config.max_connections_per_type
                )));
            }
        }
        if !board.try_admit(config.max_connections) {
            return Err(Full(format!(
                "connection limit ({}{}) reached",
                config.max_connections,
                if config.max_connections_from_nofile {
                    ", set by the server's open-file limit"
                } else {
                    ""
                }
            )));
        }
        // From here on, dropping `admission` gives back what it holds.
        let mut admission = Admission {
            board: Some(board.clone()),
            user: None,
        };
        if let Some(user) = user.filter(|_| config.max_connections_per_user > 0) {
            if !board.take_user_slot(user, config.max_connections_per_user) {
                return Err(Full(format!(
                    "connection limit per user ({}) reached",
                    config.max_connections_per_user
                )));
            }
            admission.user = Some(user.into());
        }
        Ok(admission)
    }
}

impl Admission {
    /// Passes the place to an upgraded connection's driver, which gives it
    /// back when it is dropped, with the user slot of its claims' `sub`
    /// (`serve::ws`): an idle connection's task has no room for the guard.
    pub fn hand_to_driver(mut self) {
        self.board = None;
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(board) = self.board.take() {
            board.leave();
            if let Some(user) = &self.user {
                board.release_user_slot(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;

    fn config(total: u64, per_user: u32) -> Config {
        Config::from_args(ServeArgs {
            max_connections: Some(total),
            max_connections_per_user: Some(per_user),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn places_come_back_on_drop_and_refusals_hold_nothing() {
        let board = Arc::new(Board::new(1, vec!["user".into()]));
        let c = config(2, 1);
        let a = Admission::admit(&board, &c, None, Some("alice")).unwrap();
        let refused = Admission::admit(&board, &c, None, Some("alice")).unwrap_err();
        assert_eq!(refused, Full("connection limit per user (1) reached".into()));
        let b = Admission::admit(&board, &c, None, Some("bob")).unwrap();
        assert!(
            Admission::admit(&board, &c, None, Some("carol")).is_err(),
            "total is 2"
        );
        drop(a);
        let a2 = Admission::admit(&board, &c, None, Some("alice")).unwrap();
        drop((a2, b));
        assert!(board.try_admit(1), "all places are back");
    }

    #[test]
    fn socket_slots_count_until_dropped() {
        let board = Arc::new(Board::new(1, vec![]));
        let one = SocketSlot::take(&board, 1).unwrap();
        assert!(SocketSlot::take(&board, 1).is_none());
        drop(one);
        assert_eq!(board.open_sockets(), 0);
        assert!(SocketSlot::take(&board, 1).is_some());
    }
}
