//! Raw socket operations glommio does not offer: a `SO_REUSEPORT` listener
//! with a configurable backlog, and a non-blocking vectored send.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `count` listening sockets to `addr`, one per shard, all with
/// `SO_REUSEPORT` so the kernel spreads incoming connections across shards
/// with no user-space hand-off. glommio's `TcpListener::bind` hard-codes a
/// backlog of 1024; a redeploy that reconnects 100k clients needs more, so we
/// build the sockets here and hand the raw fds to each shard.
///
/// With port 0 the first socket picks the port and the rest join it. Returns
/// the fds and the address actually bound.
pub fn bind_listeners(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
) -> io::Result<(Vec<OwnedFd>, SocketAddr)> {
    if addr.port() != 0 {
        check_port_free(addr)?;
    }
    let mut fds = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(bound), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(backlog.min(i32::MAX as u32) as i32)?;
        if bound.port() == 0 {
            bound = socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("listener has no inet address"))?;
        }
        fds.push(OwnedFd::from(socket));
    }
    Ok((fds, bound))
}

/// Fails with `AddrInUse` when anything listens on `addr`, another
/// shardcast included: our listeners set `SO_REUSEPORT`, which would
/// silently join a running process's group and split clients between two
/// servers. A probe without `SO_REUSEPORT` cannot bind a listening port.
fn check_port_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
}

/// Most iovecs one `send_vectored` call passes to the kernel.
pub const MAX_IOVECS: usize = 64;

/// Sends `bufs` with one `sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL)`: never blocks
/// the shard whatever the socket's mode, never raises SIGPIPE. Returns the
/// bytes written; `WouldBlock` when the socket buffer is full.
pub fn send_vectored(fd: RawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is a valid "no address, no control" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(MAX_IOVECS) as _;
    // SAFETY: msg points at `bufs`, which outlive the call; the kernel only reads them.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sends one buffer, non-blocking; see [`send_vectored`].
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes for the duration of the call.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn port_zero_binds_every_listener_to_one_port() {
        let (fds, addr) = bind_listeners("127.0.0.1:0".parse().unwrap(), 3, 128).unwrap();
        assert_eq!(fds.len(), 3);
        assert_ne!(addr.port(), 0);
        drop(fds);
    }

    #[test]
    fn send_vectored_writes_all_slices_in_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        use std::os::fd::AsRawFd;
        let n = send_vectored(
            client.as_raw_fd(),
            &[io::IoSlice::new(b"hello "), io::IoSlice::new(b"world")],
        )
        .unwrap();
        assert_eq!(n, 11);
        let mut got = [0u8; 11];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello world");
    }
}
