//! Signals: SIGTERM, SIGINT and SIGHUP are blocked in every thread and
//! taken by one waiting thread. The first SIGTERM/SIGINT tells each shard
//! to drain, a second one exits at once; SIGHUP asks for a reload.

use std::thread;

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread; threads spawned after
/// this inherit the mask, so only [`on_signal`]'s thread sees them.
pub fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Calls `reload` on every SIGHUP; waits for the first other signal in
/// `set` and calls `first`; on a second one, exits the process with status 1.
pub fn on_signal(
    set: libc::sigset_t,
    first: impl FnOnce(i32) + Send + 'static,
    reload: impl Fn() + Send + 'static,
) {
    let spawned = thread::Builder::new().name("signals".into()).spawn(move || {
        let wait = || {
            let mut sig = 0;
            // SAFETY: `set` is a valid signal set; `sig` is writable.
            unsafe { libc::sigwait(&set, &mut sig) };
            sig
        };
        let stop = || loop {
            match wait() {
                libc::SIGHUP => reload(),
                sig => return sig,
            }
        };
        first(stop());
        stop();
        tracing::warn!("second signal: exiting without waiting for the drain");
        std::process::exit(1);
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the signal thread; SIGTERM will not drain");
    }
}

/// The shards' shutdown senders: one message each starts their drain.
pub struct Trigger(pub Vec<flume::Sender<()>>);

impl Trigger {
    pub fn fire(&self) {
        for tx in &self.0 {
            let _ = tx.try_send(());
        }
    }
}
