//! Many nodes through a broker (`--broker redis://…`): publishes go to the
//! broker, every node delivers what comes back from it, and topic streams
//! (offsets, epochs, history) live there. The shards' side of it is
//! `fanout::remote`; this layer runs the broker thread.

pub mod redis;
pub mod script;
pub mod track;

use std::sync::Arc;

use crate::config::Config;
use crate::fanout::broadcast::Broadcaster;
use crate::fanout::remote::{Command, Remote};
use crate::ops::stats::Board;

/// Starts the broker thread for `url`: it connects (and reconnects) on its
/// own, so the node starts degraded when Redis is not there yet. `Err`
/// when the URL cannot be used; the message never repeats the URL.
pub fn start(
    config: &Config,
    url: &str,
    broadcaster: Broadcaster,
    remote: Arc<Remote>,
    commands: flume::Receiver<Command>,
    board: Arc<Board>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let client = if url.starts_with("rediss://") {
        // rustls, with ring as its one crypto provider (an error here only
        // means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs = ::redis::TlsCertificates {
            client_tls: None,
            root_cert: config.broker_ca.clone(),
        };
        ::redis::Client::build_with_tls(url, certs)
    } else {
        ::redis::Client::open(url)
    }
    .map_err(|e| format!("invalid broker URL: {}", e.category()))?;
    let setup = redis::Setup {
        client,
        prefix: config.broker_prefix.clone(),
        broadcaster,
        remote,
        commands,
        size: config.history.size,
        ttl: config.history.ttl,
        board,
    };
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(error) => {
                    tracing::error!(%error, "cannot start the broker runtime");
                    return;
                }
            };
            runtime.block_on(redis::run(setup));
        })
        .map_err(|e| format!("cannot start the broker thread: {e}"))
}
