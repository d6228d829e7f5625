//! Signals: SIGTERM and SIGINT are blocked in every thread and taken by one
//! waiting thread, which tells each shard to drain. A second signal exits
//! at once.

use std::thread;

/// Blocks SIGTERM and SIGINT in the calling thread; threads spawned after
/// this inherit the mask, so only [`on_signal`]'s thread sees them.
pub fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for the first signal in `set` and calls `first`; on a second one,
/// exits the process with status 1.
pub fn on_signal(set: libc::sigset_t, first: impl FnOnce(i32) + Send + 'static) {
    let spawned = thread::Builder::new().name("signals".into()).spawn(move || {
        let wait = || {
            let mut sig = 0;
            // SAFETY: `set` is a valid signal set; `sig` is writable.
            unsafe { libc::sigwait(&set, &mut sig) };
            sig
        };
        first(wait());
        wait();
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
