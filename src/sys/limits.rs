//! Process resource limits: raise the soft `nofile` and `memlock` limits to
//! the hard ones at start-up and report the connection capacity they imply.

/// File descriptors kept back from the connection capacity: listeners, the
/// io_uring instances, stdio, eventfds and the odd log or config file.
const RESERVED_FDS: u64 = 64;

/// Descriptors kept free for HTTP requests (publishers, probes) and for
/// answering 503 to handshakes past the connection limit.
const SPARE_FDS: u64 = 64;

/// Descriptors kept back from the socket limit: the admin port's
/// connections and the brief socket of each 503 past the limit, so that a
/// refusal is an answer (accept never fails with EMFILE).
const ANSWER_FDS: u64 = 32;

/// The limits in force after [`raise`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Soft = hard `RLIMIT_NOFILE`.
    pub nofile: u64,
    /// Soft = hard `RLIMIT_MEMLOCK`, bytes (`u64::MAX` means unlimited).
    pub memlock: u64,
}

impl Limits {
    /// Client connections this process can hold: one descriptor each.
    pub fn connection_capacity(&self) -> u64 {
        self.nofile.saturating_sub(RESERVED_FDS)
    }

    /// The default `max_connections`: the capacity less the spare
    /// descriptors, so clients past it get a 503 rather than a hang.
    pub fn connection_limit(&self) -> u64 {
        self.connection_capacity().saturating_sub(SPARE_FDS).max(1)
    }

    /// The default `max_sockets`: every accepted socket on the public port,
    /// plain HTTP included, within the capacity less [`ANSWER_FDS`].
    pub fn socket_limit(&self) -> u64 {
        self.connection_capacity().saturating_sub(ANSWER_FDS).max(1)
    }
}

/// Raises each soft limit to its hard limit. A limit that cannot be raised
/// keeps its old value (never an error: the server still runs, with what
/// it has, and the capacity line says so).
pub fn raise() -> Limits {
    Limits {
        nofile: raise_one(libc::RLIMIT_NOFILE),
        memlock: raise_one(libc::RLIMIT_MEMLOCK),
    }
}

fn raise_one(resource: libc::__rlimit_resource_t) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit struct; soft <= hard always succeeds.
        if unsafe { libc::setrlimit(resource, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}
