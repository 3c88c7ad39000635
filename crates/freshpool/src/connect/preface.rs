//! Reads the server's first HTTP/2 SETTINGS frame as it passes through.
//!
//! hyper exposes the peer's stream limit only after its driver has processed
//! SETTINGS, and nothing tells us when that happened. The pool must know the
//! real limit before it hands the new connection to waiters: assume too many
//! streams and requests queue inside one connection; assume too few and it
//! opens connections it does not need. So the I/O wrapper parses the first
//! server frame (which RFC 9113 section 3.4 requires to be SETTINGS) and then
//! becomes a plain pass-through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// What the server's preface told us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Preface {
    /// Not seen yet.
    Pending,
    /// SETTINGS arrived; `Some(n)` when it carried MAX_CONCURRENT_STREAMS.
    Settings(Option<u32>),
    /// The first frame was not SETTINGS (a broken peer).
    Invalid,
}

const FRAME_HEADER: usize = 9;
const TYPE_SETTINGS: u8 = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// Larger SETTINGS frames are not plausible; stop buffering.
const MAX_SETTINGS_PAYLOAD: usize = 6 * 64;

/// Incremental parser for the first frame; fed every byte read until done.
#[derive(Debug, Default)]
pub(crate) struct PrefaceParser {
    buf: Vec<u8>,
}

impl PrefaceParser {
    /// Feeds bytes; returns the result once the first frame is complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<Preface> {
        let wanted = self.wanted();
        let take = wanted.saturating_sub(self.buf.len()).min(bytes.len());
        self.buf.extend_from_slice(&bytes[..take]);
        if self.buf.len() < FRAME_HEADER {
            return None;
        }
        let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
        let kind = self.buf[3];
        if kind != TYPE_SETTINGS || !len.is_multiple_of(6) || len > MAX_SETTINGS_PAYLOAD {
            return Some(Preface::Invalid);
        }
        if self.buf.len() < FRAME_HEADER + len {
            // The header told us the full size; feed again with the rest.
            if take < bytes.len() {
                return self.feed(&bytes[take..]);
            }
            return None;
        }
        let max = self.buf[FRAME_HEADER..FRAME_HEADER + len]
            .chunks_exact(6)
            .filter(|e| u16::from_be_bytes([e[0], e[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
            .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
            .next_back();
        Some(Preface::Settings(max))
    }

    fn wanted(&self) -> usize {
        if self.buf.len() < FRAME_HEADER {
            FRAME_HEADER
        } else {
            let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
            FRAME_HEADER + len.min(MAX_SETTINGS_PAYLOAD)
        }
    }
}

/// I/O wrapper that reports the server's preface on a watch channel.
pub(crate) struct PrefaceIo<T> {
    inner: T,
    parser: Option<PrefaceParser>,
    tx: watch::Sender<Preface>,
}

impl<T> PrefaceIo<T> {
    pub(crate) fn new(inner: T) -> (PrefaceIo<T>, watch::Receiver<Preface>) {
        let (tx, rx) = watch::channel(Preface::Pending);
        (
            PrefaceIo {
                inner,
                parser: Some(PrefaceParser::default()),
                tx,
            },
            rx,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefaceIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(parser) = self.parser.as_mut() {
            if let Poll::Ready(Ok(())) = res {
                let fresh = &buf.filled()[before..];
                let done = if fresh.is_empty() {
                    Some(Preface::Invalid)
                } else {
                    parser.feed(fresh)
                };
                if let Some(preface) = done {
                    self.parser = None;
                    let _ = self.tx.send(preface);
                }
            }
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefaceIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_frame(entries: &[(u16, u32)]) -> Vec<u8> {
        let len = entries.len() * 6;
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            TYPE_SETTINGS,
            0,
            0,
            0,
            0,
            0,
        ];
        for (id, v) in entries {
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f
    }

    #[test]
    fn reads_max_streams_even_byte_by_byte() {
        let frame = settings_frame(&[(0x1, 4096), (0x3, 50), (0x4, 65535)]);
        let mut p = PrefaceParser::default();
        let mut out = None;
        for b in &frame {
            out = p.feed(std::slice::from_ref(b));
            if out.is_some() {
                break;
            }
        }
        assert_eq!(out, Some(Preface::Settings(Some(50))));
        let mut whole = PrefaceParser::default();
        let mut with_tail = frame.clone();
        with_tail.extend_from_slice(b"trailing frames");
        assert_eq!(whole.feed(&with_tail), Some(Preface::Settings(Some(50))));
    }

    #[test]
    fn settings_without_limit_and_non_settings() {
        let mut p = PrefaceParser::default();
        assert_eq!(p.feed(&settings_frame(&[])), Some(Preface::Settings(None)));
        let mut q = PrefaceParser::default();
        assert_eq!(q.feed(b"HTTP/1.1 200 OK\r\n"), Some(Preface::Invalid));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..8)) {
            let mut p = PrefaceParser::default();
            for c in &chunks {
                if p.feed(c).is_some() { break; }
            }
        }
    }
}
