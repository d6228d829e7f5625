//! One connection's TLS session: rustls's `ServerConnection` driven by
//! hand on the raw non-blocking socket (no async wrapper). Ciphertext the
//! caller read is fed in and plaintext comes out; plaintext (a frame, or a
//! run of frames as one record) is encrypted into the session's own buffer
//! and the ciphertext goes out through the same non-blocking `sendmsg` as
//! the plain path ([`FdWriter`]); what the socket does not take stays
//! there, as ciphertext, until the connection's driver flushes it.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use crate::sys::sockets;

/// The TLS record type of a handshake message: what a ClientHello starts with.
const HANDSHAKE: u8 = 0x16;

/// Why a TLS session ended before or during its handshake.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The first byte was not a TLS handshake record; `http`: it looks like
    /// a plain HTTP request (an `http://` or `ws://` client on the TLS port).
    #[error("not a TLS ClientHello")]
    NotTls { http: bool },
    #[error("TLS: {0}")]
    Protocol(#[from] rustls::Error),
    #[error("TLS: {0}")]
    Io(#[from] io::Error),
}

/// One connection's TLS state.
pub struct Session {
    conn: ServerConnection,
    /// Ciphertext has been received (the first byte is checked).
    started: bool,
}

impl Session {
    pub fn new(config: Arc<ServerConfig>) -> Result<Session, TlsError> {
        let mut conn = ServerConnection::new(config)?;
        // Our own queue (conn::queue) bounds what waits for a slow reader;
        // rustls holds at most the ciphertext of one flush.
        conn.set_buffer_limit(None);
        Ok(Session { conn, started: false })
    }

    /// Feeds ciphertext the socket delivered; appends what it decrypts to
    /// `plain`. Returns true once the peer sent close_notify. After an error
    /// the session may hold an alert to send ([`Session::send`]).
    pub fn feed(&mut self, mut data: &[u8], plain: &mut Vec<u8>) -> Result<bool, TlsError> {
        if !self.started {
            if let Some(&first) = data.first() {
                self.started = true;
                if first != HANDSHAKE {
                    return Err(TlsError::NotTls {
                        http: first.is_ascii_uppercase(),
                    });
                }
            }
        }
        let mut closed = false;
        while !data.is_empty() {
            self.conn.read_tls(&mut data)?;
            let state = self.conn.process_new_packets()?;
            closed |= state.peer_has_closed();
            self.read_plain(plain)?;
        }
        Ok(closed)
    }

    /// Moves decrypted bytes rustls holds into `plain`.
    fn read_plain(&mut self, plain: &mut Vec<u8>) -> Result<(), TlsError> {
        match self.conn.reader().read_to_end(plain) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            // The peer closed TCP without close_notify: the caller sees EOF.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Encrypts `plain` (one record per 16 KiB) into the session's buffer.
    pub fn encrypt(&mut self, plain: &[u8]) {
        // With no buffer limit rustls takes everything.
        let _ = self.conn.writer().write_all(plain);
    }

    /// Encrypts consecutive frames as one record where they fit in one:
    /// `scratch` (the shard's) gathers them first.
    pub fn encrypt_run<'a>(&mut self, frames: impl Iterator<Item = &'a [u8]>, scratch: &mut Vec<u8>) {
        scratch.clear();
        for frame in frames {
            scratch.extend_from_slice(frame);
        }
        self.encrypt(scratch);
    }

    /// Whether ciphertext waits for the socket.
    pub fn pending(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes waiting ciphertext to `out` until it is all out (`Ok(true)`)
    /// or the socket is full (`Ok(false)`).
    pub fn send(&mut self, out: &mut impl Write) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues close_notify (then [`Session::send`] it).
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }
}

/// A buffer as rustls's output: takes all ciphertext (the batched io_uring
/// path sends it from there).
pub struct VecWriter<'a>(pub &'a mut Vec<u8>);

impl Write for VecWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for buf in bufs {
            self.0.extend_from_slice(buf);
            n += buf.len();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The raw socket as rustls's output: non-blocking `sendmsg`, never SIGPIPE.
pub struct FdWriter(pub RawFd);

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sockets::send(self.0, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        sockets::send_vectored(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
