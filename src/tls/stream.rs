//! The byte stream of an HTTP session before any upgrade: the plain socket,
//! or the socket with a TLS session over it. The TLS handshake happens
//! inside the first read (so it counts under the request's
//! `handshake_timeout`). After an upgrade the stream comes apart again
//! ([`Stream::into_parts`]): the WebSocket driver reads the socket itself
//! and the connection's writers encrypt through the session.

use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::sys::sockets;
use crate::tls::session::{FdWriter, Session, TlsError};

/// Ciphertext read per socket read during the HTTP session.
const READ_CHUNK: usize = 8 * 1024;

/// An accepted socket, plain or under TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// A TLS session after its HTTP request, and the plaintext it decrypted
/// that was not read yet.
pub type Handoff = (Box<Session>, Vec<u8>);

/// A socket with a TLS session over it.
pub struct TlsStream {
    tcp: TcpStream,
    session: Box<Session>,
    /// Decrypted bytes not yet read.
    plain: Vec<u8>,
    eof: bool,
}

impl Stream {
    pub fn tls(tcp: TcpStream, session: Session) -> Stream {
        Stream::Tls(Box::new(TlsStream {
            tcp,
            session: Box::new(session),
            plain: Vec::new(),
            eof: false,
        }))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.tcp,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The socket, and for TLS its session plus any plaintext it decrypted
    /// that was not read yet (bytes after an upgrade request).
    pub fn into_parts(self) -> (TcpStream, Option<Handoff>) {
        match self {
            Stream::Plain(tcp) => (tcp, None),
            Stream::Tls(tls) => {
                let TlsStream {
                    tcp, session, plain, ..
                } = *tls;
                (tcp, Some((session, plain)))
            }
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

/// The error a TLS failure reaches the HTTP session as (see [`tls_error`]).
fn io_error(error: TlsError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// The TLS failure inside an I/O error from a [`Stream`], if it is one.
pub fn tls_error(error: &io::Error) -> Option<&TlsError> {
    error.get_ref()?.downcast_ref::<TlsError>()
}

impl TlsStream {
    /// Sends waiting ciphertext; `Pending` (write readiness armed) while the
    /// socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = ArmedWriter {
            stream: &mut self.tcp,
            cx,
        };
        match self.session.send(&mut out) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let tls = match self.get_mut() {
            Stream::Plain(tcp) => return Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => tls,
        };
        loop {
            if !tls.plain.is_empty() {
                let n = buf.len().min(tls.plain.len());
                buf[..n].copy_from_slice(&tls.plain[..n]);
                tls.plain.drain(..n);
                return Poll::Ready(Ok(n));
            }
            if tls.eof {
                return Poll::Ready(Ok(0));
            }
            // Handshake messages first; a full socket only arms the waker.
            if let Poll::Ready(Err(e)) = tls.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            let mut cipher = [0u8; READ_CHUNK];
            match Pin::new(&mut tls.tcp).poll_read(cx, &mut cipher) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => tls.eof = true,
                Poll::Ready(Ok(n)) => match tls.session.feed(&cipher[..n], &mut tls.plain) {
                    Ok(closed) => tls.eof |= closed,
                    Err(error) => {
                        // The alert rustls queued, if any, best effort.
                        let _ = tls.session.send(&mut FdWriter(tls.tcp.as_raw_fd()));
                        return Poll::Ready(Err(io_error(error)));
                    }
                },
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let tls = match self.get_mut() {
            Stream::Plain(tcp) => return Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => tls,
        };
        // At most one write's ciphertext waits in the session.
        if tls.session.pending() {
            match tls.poll_send(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        tls.session.encrypt(buf);
        match tls.poll_send(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => tls.poll_send(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_close(cx),
            Stream::Tls(tls) => tls.poll_send(cx),
        }
    }
}

/// The socket as rustls's output inside a task: a non-blocking `sendmsg`
/// first; when the socket is full, glommio's `poll_write` with the same
/// bytes, which retries once and otherwise arms write readiness and the
/// task's waker (then `WouldBlock`).
pub struct ArmedWriter<'a, 'b> {
    pub stream: &'a mut TcpStream,
    pub cx: &'a mut Context<'b>,
}

impl Write for ArmedWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match sockets::send_vectored(self.stream.as_raw_fd(), bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
                match Pin::new(&mut *self.stream).poll_write(self.cx, first) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
