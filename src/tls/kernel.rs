//! Whether the kernel can take TLS records off our hands (kTLS): a probe
//! that asks a connected loopback socket for the `tls` upper-layer
//! protocol. The hand-off of session keys is not built (see the README's
//! TLS section); the probe's answer is logged and exported so operators see
//! which mode a host runs in.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// How TLS records are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// rustls in the shard, per connection (what this build always does).
    Userspace,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Userspace => "userspace",
        }
    }
}

/// Whether `setsockopt(TCP_ULP, "tls")` succeeds on a connected loopback
/// socket: `Err` carries the kernel's refusal (ENOENT: no `tls` module).
pub fn probe() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let _server = listener.accept()?;
    let name = b"tls";
    // SAFETY: setsockopt on a socket we own, with a valid buffer and length.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
