//! Bounded outbound queue of one connection: frames waiting for the socket,
//! written out together with one vectored send per wake-up.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use crate::sys::sockets::MAX_IOVECS;

/// One frame's bytes: shared by every recipient of a broadcast, or owned
/// (replies to this connection alone: pong, echo, close).
#[derive(Debug)]
pub enum Chunk {
    Shared(Arc<[u8]>),
    Owned(Vec<u8>),
    /// A shared device-status frame: a newer one for the same device may
    /// replace it while queued (conflation).
    Status(Arc<[u8]>, Arc<str>),
    /// TLS records already encrypted (the rest of a batched send the socket
    /// did not take): sent as they are, never dropped, since a TLS stream
    /// with a record missing is broken. Only ever the head of a queue.
    Sealed(Vec<u8>),
}

impl Chunk {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(b) | Chunk::Status(b, _) => b,
            Chunk::Owned(b) | Chunk::Sealed(b) => b,
        }
    }
}

/// Frames not yet written. `head_sent` bytes of the first frame already went
/// out: a frame is never interleaved with another, so the peer always sees
/// whole frames in order.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    head_sent: usize,
    bytes: usize,
}

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Bytes waiting to be written.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends a frame of which `sent` bytes were already written (only
    /// valid on an empty queue, after a partial inline write).
    pub fn push(&mut self, chunk: Chunk, sent: usize) {
        debug_assert!(sent == 0 || self.chunks.is_empty());
        self.bytes += chunk.bytes().len() - sent;
        if self.chunks.is_empty() {
            self.head_sent = sent;
        }
        self.chunks.push_back(chunk);
    }

    /// Fills `out` with the unsent bytes of up to `MAX_IOVECS` frames.
    pub fn io_slices<'a>(&'a self, out: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut n = 0;
        for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
            let bytes = chunk.bytes();
            out[i] = IoSlice::new(if i == 0 { &bytes[self.head_sent..] } else { bytes });
            n += 1;
        }
        n
    }

    /// Drops `written` bytes from the front.
    pub fn consume(&mut self, mut written: usize) {
        self.bytes -= written;
        while written > 0 {
            let Some(head) = self.chunks.front() else { break };
            let left = head.bytes().len() - self.head_sent;
            if written >= left {
                written -= left;
                self.chunks.pop_front();
                self.head_sent = 0;
            } else {
                self.head_sent += written;
                written = 0;
            }
        }
        if self.chunks.is_empty() && self.chunks.capacity() > 16 {
            // A burst grew the ring; give the memory back to idle connections.
            self.chunks = VecDeque::new();
        }
    }

    /// Drops every frame not yet started; keeps a partly written head frame
    /// so the byte stream stays a valid sequence of frames.
    /// Returns the frames dropped.
    pub fn keep_partial_head(&mut self) -> usize {
        let frames = self.chunks.len();
        let sealed = matches!(self.chunks.front(), Some(Chunk::Sealed(_)));
        if self.head_sent == 0 && !sealed {
            self.clear();
            return frames;
        }
        self.chunks.truncate(1);
        self.bytes = self
            .chunks
            .front()
            .map_or(0, |c| c.bytes().len() - self.head_sent);
        frames - 1
    }

    /// Keeps only the newest queued status per device (never touching a
    /// partly written head frame, nor frames of other kinds). Returns the
    /// frames dropped.
    pub fn conflate(&mut self) -> usize {
        let before = self.chunks.len();
        let mut seen = std::collections::HashSet::new();
        let mut kept = VecDeque::with_capacity(self.chunks.len());
        let head_partial = self.head_sent > 0;
        for (i, chunk) in self.chunks.drain(..).enumerate().rev() {
            let keep = match &chunk {
                Chunk::Status(_, device) => (i == 0 && head_partial) || seen.insert(device.clone()),
                _ => true,
            };
            if keep {
                kept.push_front(chunk);
            } else {
                self.bytes -= chunk.bytes().len();
            }
        }
        self.chunks = kept;
        before - self.chunks.len()
    }

    /// The head chunk when it is already encrypted: its unsent bytes.
    pub fn sealed_head(&self) -> Option<&[u8]> {
        match self.chunks.front() {
            Some(Chunk::Sealed(bytes)) => Some(&bytes[self.head_sent..]),
            _ => None,
        }
    }

    /// Forgets every unsent frame (connection is going away).
    pub fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.head_sent = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &OutQueue) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = q.io_slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn partial_writes_resume_mid_frame_in_order() {
        let mut q = OutQueue::default();
        q.push(Chunk::Owned(b"abc".to_vec()), 1);
        q.push(Chunk::Shared(Arc::from(&b"def"[..])), 0);
        assert_eq!(q.bytes(), 5);
        assert_eq!(drain(&q), b"bcdef");
        q.consume(3);
        assert_eq!(drain(&q), b"ef");
        q.consume(2);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn keep_partial_head_drops_unstarted_frames_only() {
        let mut q = OutQueue::default();
        q.push(Chunk::Owned(b"abcd".to_vec()), 2);
        q.push(Chunk::Owned(b"efgh".to_vec()), 0);
        assert_eq!(q.keep_partial_head(), 1);
        assert_eq!(drain(&q), b"cd");
        assert_eq!(q.bytes(), 2);
        let mut q = OutQueue::default();
        q.push(Chunk::Owned(b"abcd".to_vec()), 0);
        assert_eq!(q.keep_partial_head(), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn conflate_keeps_the_newest_status_per_device_in_order() {
        let status = |device: &str, text: &str| Chunk::Status(Arc::from(text.as_bytes()), Arc::from(device));
        let mut q = OutQueue::default();
        q.push(status("a", "a1"), 1);
        q.push(status("a", "a2"), 0);
        q.push(status("b", "b1"), 0);
        q.push(Chunk::Owned(b"pong".to_vec()), 0);
        q.push(status("a", "a3"), 0);
        q.push(status("b", "b2"), 0);
        let dropped = q.conflate();
        assert_eq!(dropped, 2, "a2 and b1 dropped");
        // The partly written head ("a1", 1 byte sent) stays; order is kept.
        assert_eq!(drain(&q), b"1ponga3b2");
        assert_eq!(q.bytes(), drain(&q).len());
    }

    #[test]
    fn a_sealed_head_is_never_dropped() {
        let mut q = OutQueue::default();
        q.push(Chunk::Sealed(b"records".to_vec()), 0);
        q.push(Chunk::Owned(b"later".to_vec()), 0);
        assert_eq!(q.sealed_head(), Some(&b"records"[..]));
        assert_eq!(q.keep_partial_head(), 1, "only the plaintext after it goes");
        assert_eq!(drain(&q), b"records");
        q.consume(3);
        assert_eq!(q.sealed_head(), Some(&b"ords"[..]));
    }

    #[test]
    fn io_slices_stop_at_the_iovec_limit() {
        let mut q = OutQueue::default();
        for _ in 0..MAX_IOVECS + 5 {
            q.push(Chunk::Owned(b"x".to_vec()), 0);
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        assert_eq!(q.io_slices(&mut slices), MAX_IOVECS);
    }
}
