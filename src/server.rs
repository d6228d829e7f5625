//! Process wiring: raise limits, bind one `SO_REUSEPORT` listener per shard,
//! start one pinned glommio executor per shard, and wait for them to drain
//! after SIGTERM/SIGINT.

use std::io::Write;
use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement};

use crate::auth::token;
use crate::auth::verify::Verifier;
use crate::broker;
use crate::config::Config;
use crate::fanout::broadcast::Broadcaster;
use crate::fanout::remote::Remote;
use crate::fanout::sequencer::Sequencer;
use crate::ops::stats::Board;
use crate::serve::runtime::{self, Listeners};
use crate::shard::Shared;
use crate::sys::signals as shutdown;
use crate::sys::{limits, rings, sockets};
use crate::tls::kernel;
use crate::tls::keys::{Keys, SelfSigned};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start shard {shard}: {reason} (glommio needs io_uring and RLIMIT_MEMLOCK >= 512 KiB per shard; try `ulimit -l unlimited`)")]
    Executor { shard: usize, reason: String },
}

/// glommio pre-registers this much memory per shard for storage I/O, which
/// we do not use; its default (10 MiB) would need a large memlock limit.
const IO_MEMORY: usize = 64 * 1024;

/// Published batches each shard's channel holds before publishers wait.
const BROADCAST_CAPACITY: usize = 4096;

/// Runs the server until it has drained after a signal.
pub fn run(mut config: Config) -> Result<(), ServerError> {
    let limits = limits::raise();
    let (ring_depth, ring_reason) = rings::depth();
    if config.max_connections == 0 {
        // Past the file limit accept() fails and clients hang in the
        // backlog; below it, the server can still answer them 503.
        config.max_connections = limits.connection_limit();
        config.max_connections_from_nofile = true;
    }
    if config.max_sockets == 0 {
        config.max_sockets = limits.socket_limit();
    }
    let (tls, self_signed) = load_tls(&config)?;
    let (fds, addr) =
        sockets::bind_listeners(config.listen, config.shards, config.backlog).map_err(|source| {
            ServerError::Bind {
                addr: config.listen,
                source,
            }
        })?;
    // The bound address (port 0 picks one): the console tells browsers on
    // the admin port where the public one is.
    config.listen = addr;
    let (admin_fds, admin_addr) = bind_optional(config.admin_listen, &config)?;
    let (plain_fds, plain_addr) = bind_optional(config.plain_listen, &config)?;
    let board = Arc::new(Board::new(config.shards, config.client_types.clone()));
    if let Some(keys) = &tls {
        let mode = tls_mode(config.shards);
        let _ = board.tls.mode.set(mode.label());
        board
            .tls
            .not_after
            .store(keys.not_after(), std::sync::atomic::Ordering::Relaxed);
    }
    let verifier = Arc::new(Verifier::new(&config).map_err(|e| ServerError::Config(e.to_string()))?);
    let sequencer = Arc::new(Sequencer::new(
        config.shards,
        config.history,
        config.broker.is_some(),
    ));
    let (remote, commands) = match config.broker {
        Some(_) => {
            let (remote, commands) = Remote::new();
            (Some(remote), Some(commands))
        }
        None => (None, None),
    };
    let (broadcaster, mut event_rxs) =
        Broadcaster::new(sequencer, remote.clone(), config.shards, BROADCAST_CAPACITY);
    if let (Some(url), Some(remote), Some(commands)) = (&config.broker, remote, commands) {
        broker::start(&config, url, broadcaster.clone(), remote, commands, board.clone())
            .map_err(ServerError::Config)?;
        tracing::info!(prefix = %config.broker_prefix, "publishing through the Redis broker");
    }
    let config = Arc::new(config);
    let signals = shutdown::block_signals();
    let cpus = allowed_cpus();
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    let sockets = fds.into_iter().zip(plain_fds).zip(admin_fds);
    for (id, ((public, plain), admin)) in sockets.enumerate() {
        let (tx, rx) = flume::bounded(1);
        senders.push(tx);
        let shared = Shared {
            config: config.clone(),
            board: board.clone(),
            broadcaster: broadcaster.clone(),
            verifier: verifier.clone(),
            tls: tls.clone(),
        };
        let listeners = Listeners { public, plain, admin };
        let events = event_rxs.remove(0);
        let placement = if config.pin {
            Placement::Fixed(cpus[id % cpus.len()])
        } else {
            Placement::Unbound
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .io_memory(IO_MEMORY)
            .ring_depth(ring_depth)
            .spawn(move || runtime::run(id, shared, listeners, events, rx))
            .map_err(|e| ServerError::Executor {
                shard: id,
                reason: e.to_string(),
            })?;
        handles.push(handle);
    }
    let trigger = shutdown::Trigger(senders);
    let reload_board = board.clone();
    let reload_keys = tls.clone();
    shutdown::on_signal(
        signals,
        move |signal| {
            tracing::info!(signal, "shutting down: closing connections (1001)");
            trigger.fire();
        },
        move || reload(reload_keys.as_deref(), &reload_board),
    );
    tracing::info!(
        %addr,
        shards = config.shards,
        nofile = limits.nofile,
        memlock = limits.memlock,
        ring_depth,
        ring_reason,
        max_connections = config.max_connections,
        max_sockets = config.max_sockets,
        send_path = ?config.send_path,
        tls = tls.is_some(),
        "listening"
    );
    announce(&config, addr, admin_addr, plain_addr, self_signed.as_ref());
    for handle in handles {
        if let Err(error) = handle.join() {
            tracing::error!(%error, "shard ended with an error");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Prints the line tests and scripts wait for, and in dev mode a ready token
/// and copy-paste commands.
fn announce(
    config: &Config,
    addr: std::net::SocketAddr,
    admin: Option<std::net::SocketAddr>,
    plain: Option<std::net::SocketAddr>,
    self_signed: Option<&SelfSigned>,
) {
    let mut out = std::io::stdout().lock();
    let tls = config.tls.is_some() || config.tls_self_signed;
    if let Some(admin) = admin {
        let what = if config.admin_tls {
            " (TLS: https)"
        } else {
            " (plain: http)"
        };
        let _ = writeln!(
            out,
            "shardcast admin listening on {admin}{}",
            if tls { what } else { "" }
        );
    }
    if let Some(plain) = plain {
        let _ = writeln!(out, "shardcast plain listening on {plain} (plain: http, ws)");
    }
    if let Some(cert) = self_signed {
        let _ = writeln!(
            out,
            "self-signed TLS certificate for localhost (dev only): SHA-256 {}\n  PEM: {} (e.g. curl --cacert it)",
            cert.fingerprint,
            cert.pem_path.display()
        );
    }
    if tls {
        let _ = writeln!(out, "shardcast listening on {addr} (TLS: https, wss)");
    } else {
        let _ = writeln!(out, "shardcast listening on {addr}");
    }
    if config.dev_mode {
        let claims = token::dev_claims(&config.client_types);
        let token = token::mint_hs256(&claims, &config.jwt_secret).unwrap_or_default();
        let key = &config.api_key;
        let api = admin.unwrap_or(addr);
        let (ws, web) = if tls { ("wss", "https") } else { ("ws", "http") };
        let api_web = if admin.is_some() && !config.admin_tls {
            "http"
        } else {
            web
        };
        let trust = self_signed.map(|c| c.pem_path.display().to_string());
        let cacert = trust.as_ref().map_or(String::new(), |p| format!("--cacert {p} "));
        let api_cacert = if api_web == "https" { cacert.as_str() } else { "" };
        let py_env = trust
            .as_ref()
            .map_or(String::new(), |p| format!("SSL_CERT_FILE={p} "));
        let _ = write!(
            out,
            "\nDEV MODE: no --jwt-secret configured. Using the built-in dev secret and dev API key.\n\
             Loopback only; never use these values in production.\n\n\
             dev token (sub=dev-user, 24h):\n  {token}\n\
             dev API key:\n  {key}\n\n\
             connect a client (pip install websockets):\n  {py_env}python3 -m websockets '{ws}://{addr}/ws/user?token={token}'\n\
             publish an event:\n  curl -sS {api_cacert}-X POST {api_web}://{api}/api/v1/publish -H 'Authorization: Bearer {key}' \
             -H 'Content-Type: application/json' -d '{{\"topic\":\"all\",\"event\":\"hello\",\"data\":{{\"text\":\"hi\"}}}}'\n\
             health and stats:\n  curl -sS {cacert}{web}://{addr}/health\n  curl -sS {cacert}{web}://{addr}/ws/stats\n"
        );
        match crate::api::route::console_port(config) {
            Some(crate::api::route::Port::Public) => {
                let _ = write!(out, "console in a browser:\n  {web}://{addr}/\n");
            }
            Some(crate::api::route::Port::Admin) => {
                let _ = write!(out, "console in a browser:\n  {api_web}://{api}/\n");
            }
            None => {}
        }
        let _ = writeln!(out);
    }
    let _ = out.flush();
}

/// One listener per shard on `addr`, if it is configured (else none each).
fn bind_optional(
    addr: Option<std::net::SocketAddr>,
    config: &Config,
) -> Result<(Vec<Option<std::os::fd::OwnedFd>>, Option<std::net::SocketAddr>), ServerError> {
    match addr {
        Some(addr) => {
            let (fds, bound) = sockets::bind_listeners(addr, config.shards, config.backlog)
                .map_err(|source| ServerError::Bind { addr, source })?;
            Ok((fds.into_iter().map(Some).collect(), Some(bound)))
        }
        None => Ok(((0..config.shards).map(|_| None).collect(), None)),
    }
}

/// The TLS identity, if configured: read and checked now (a bad file stops
/// start-up with one line), or generated for localhost.
fn load_tls(config: &Config) -> Result<(Option<Arc<Keys>>, Option<SelfSigned>), ServerError> {
    if let Some(files) = &config.tls {
        let keys = Keys::load(&files.cert, &files.key)
            .map_err(|e| ServerError::Config(format!("invalid config: {e}")))?;
        return Ok((Some(Arc::new(keys)), None));
    }
    if config.tls_self_signed {
        let (keys, cert) = Keys::self_signed(&std::env::temp_dir()).map_err(ServerError::Config)?;
        return Ok((Some(Arc::new(keys)), Some(cert)));
    }
    Ok((None, None))
}

/// How TLS records are made, logged per shard: the kernel's TLS offload is
/// probed, but the key hand-off is not built, so always in user space.
fn tls_mode(shards: usize) -> kernel::Mode {
    let why = match kernel::probe() {
        Ok(()) => "the kernel offers kTLS, but this build does not hand keys to it".to_string(),
        Err(error) => format!("the kernel has no TLS offload ({error})"),
    };
    let mode = kernel::Mode::Userspace;
    for shard in 0..shards {
        tracing::info!(shard, mode = mode.label(), why = %why, "TLS records made by rustls in the shard");
    }
    mode
}

/// SIGHUP: re-reads the certificate and key; a failure keeps the old pair.
fn reload(keys: Option<&Keys>, board: &Board) {
    let Some(keys) = keys else {
        tracing::info!("SIGHUP: nothing to reload (no TLS certificate configured)");
        return;
    };
    match keys.reload() {
        Ok(()) => {
            board
                .tls
                .reloads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            board
                .tls
                .not_after
                .store(keys.not_after(), std::sync::atomic::Ordering::Relaxed);
            tracing::info!("SIGHUP: TLS certificate reloaded; new handshakes use it");
        }
        Err(error) => {
            board
                .tls
                .reload_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(%error, "SIGHUP: TLS reload failed; keeping the certificate in use");
        }
    }
}

/// CPUs this process may run on, to pin shards to.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    let cpus: Vec<usize> = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            Vec::new()
        } else {
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    };
    if cpus.is_empty() {
        vec![0]
    } else {
        cpus
    }
}
