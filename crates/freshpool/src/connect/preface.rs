//! Reads the server's HTTP/2 SETTINGS frames as they pass through.
//!
//! hyper exposes the peer's stream limit only on the connection its driver
//! task owns, and nothing tells us when it changed. The pool must know the
//! real limit before it hands a new connection to waiters, and must follow
//! it afterwards: assume too many streams and requests queue inside one
//! connection (h2 holds them until a stream ends); assume too few and it
//! opens connections it does not need. So the I/O wrapper walks the frames
//! the server sends (a 9-byte header each, payloads skipped) and reads every
//! SETTINGS frame:
//!
//! * the first frame, which RFC 9113 section 3.4 requires to be SETTINGS,
//!   is reported on a watch channel ([`Preface`]) that the dial waits on;
//! * each SETTINGS frame's `MAX_CONCURRENT_STREAMS`, the first one's and
//!   any later one's (a server may lower or raise it at any time, RFC 9113
//!   section 6.5.2), is published in a [`StreamLimit`] the pool reads.
//!
//! Its value is what the server announced, not yet acknowledged by h2: h2
//! applies it within the same read, before it opens another stream.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
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
    /// The peer closed the connection before sending any frame.
    Closed,
}

/// The HTTP/2 stream cap we apply when a server announces none (RFC 9113
/// says "unlimited"; one connection carrying thousands of streams would make
/// a single TCP loss stall them all), and to any larger announcement.
pub(crate) const DEFAULT_MAX_STREAMS: u32 = 256;

const FRAME_HEADER: usize = 9;
const TYPE_SETTINGS: u8 = 0x4;
const TYPE_GOAWAY: u8 = 0x7;
const FLAG_ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// An HTTP/2 connection's current stream limit, as its server last
/// announced it (capped at [`DEFAULT_MAX_STREAMS`]): written by the
/// connection's I/O as SETTINGS frames pass, read by the pool whenever it
/// decides where a stream goes. Also how many reads brought bytes, so the
/// pool can tell a connection that went silent (see
/// `Origin::abandon_stream`). A clone shares the values.
#[derive(Clone, Debug, Default)]
pub(crate) struct StreamLimit(Arc<LimitCell>);

#[derive(Debug, Default)]
pub(crate) struct LimitCell {
    max: AtomicU32,
    reads: AtomicU32,
    /// The server said it is done: a GOAWAY, an end of stream, or a read
    /// error (a reset). Never set for a connection the client ended on
    /// its own (an unanswered keep-alive PING).
    signed_off: std::sync::atomic::AtomicBool,
    /// Its driver tasks were dropped before the connection ended (see
    /// `connect::driver`). An allocation of its own: every future hyper
    /// spawns for the connection (one or two per request) holds a clone,
    /// and its count must not share a line with `reads`, which the
    /// connection's reads write.
    driver_lost: Arc<super::DriverLost>,
}

impl StreamLimit {
    /// The connection's `DriverLost` mark, for its driver tasks to hold.
    pub(crate) fn driver_lost(&self) -> &Arc<super::DriverLost> {
        &self.0.driver_lost
    }
}

impl AsRef<super::DriverLost> for StreamLimit {
    fn as_ref(&self) -> &super::DriverLost {
        &self.0.driver_lost
    }
}

impl StreamLimit {
    pub(crate) fn get(&self) -> u32 {
        // Relaxed: a stale read costs one stream queued in h2 or one dial,
        // never a wrong answer, and the next decision reads it again.
        self.0.max.load(Ordering::Relaxed)
    }

    /// Reads that brought bytes so far (wrapping): unchanged between two
    /// looks, the server sent nothing meanwhile.
    pub(crate) fn reads(&self) -> u32 {
        self.0.reads.load(Ordering::Relaxed)
    }

    /// Whether the server ended the connection or said it would (see
    /// `LimitCell::signed_off`).
    pub(crate) fn peer_signed_off(&self) -> bool {
        self.0.signed_off.load(Ordering::Relaxed)
    }

    fn sign_off(&self) {
        self.0.signed_off.store(true, Ordering::Relaxed);
    }

    /// Follows a SETTINGS frame. Without `MAX_CONCURRENT_STREAMS` the first
    /// frame means "unlimited" and a later one "unchanged" (RFC 9113
    /// section 6.5.2, as h2 applies it).
    fn follow(&self, announced: Option<u32>, first: bool) {
        let limit = match (announced, first) {
            (Some(n), _) => n.min(DEFAULT_MAX_STREAMS),
            (None, true) => DEFAULT_MAX_STREAMS,
            (None, false) => return,
        };
        self.0.max.store(limit, Ordering::Relaxed);
    }
}

/// Incremental reader of the server's frames; fed every byte read. Keeps
/// only the current frame's header and, for SETTINGS, its payload.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    head: [u8; FRAME_HEADER],
    head_len: usize,
    /// Payload bytes of the current frame still to come.
    left: usize,
    /// The current frame's entries as they pass, when it is a SETTINGS
    /// frame: scanned, never buffered whole (a server may send many, with
    /// GREASE or extension ids; h2 bounds the frame, not the count).
    settings: Option<SettingsScan>,
    /// A first frame was complete.
    past_first: bool,
    /// The first frame was not SETTINGS: nothing more is read.
    broken: bool,
    /// A GOAWAY frame came (after the first frame).
    goaway: bool,
}

/// A SETTINGS payload read entry by entry.
#[derive(Debug, Default)]
struct SettingsScan {
    entry: [u8; 6],
    entry_len: usize,
    /// The last `MAX_CONCURRENT_STREAMS` so far (the last one counts).
    max: Option<u32>,
}

impl SettingsScan {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (6 - self.entry_len).min(bytes.len());
            self.entry[self.entry_len..self.entry_len + take].copy_from_slice(&bytes[..take]);
            self.entry_len += take;
            bytes = &bytes[take..];
            if self.entry_len == 6 {
                let e = &self.entry;
                if u16::from_be_bytes([e[0], e[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS {
                    self.max = Some(u32::from_be_bytes([e[2], e[3], e[4], e[5]]));
                }
                self.entry_len = 0;
            }
        }
    }
}

impl FrameReader {
    /// Feeds bytes read from the server; calls `seen` with the first frame
    /// (whatever it is) and with every later SETTINGS frame (not ACKs).
    pub(crate) fn feed(&mut self, mut bytes: &[u8], mut seen: impl FnMut(Preface)) {
        while !bytes.is_empty() && !self.broken {
            if self.head_len < FRAME_HEADER {
                let take = (FRAME_HEADER - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&bytes[..take]);
                self.head_len += take;
                bytes = &bytes[take..];
                if self.head_len < FRAME_HEADER {
                    return;
                }
                let h = &self.head;
                let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                let readable =
                    h[3] == TYPE_SETTINGS && h[4] & FLAG_ACK == 0 && len.is_multiple_of(6);
                if !self.past_first && !readable {
                    self.broken = true;
                    seen(Preface::Invalid);
                    return;
                }
                self.left = len;
                self.settings = readable.then(SettingsScan::default);
                self.goaway |= h[3] == TYPE_GOAWAY;
            }
            let take = self.left.min(bytes.len());
            if let Some(scan) = self.settings.as_mut() {
                scan.feed(&bytes[..take]);
            }
            self.left -= take;
            bytes = &bytes[take..];
            if self.left > 0 {
                return;
            }
            // The frame is complete.
            self.head_len = 0;
            self.past_first = true;
            if let Some(scan) = self.settings.take() {
                seen(Preface::Settings(scan.max));
            }
        }
    }
}

/// I/O wrapper that reports the server's preface on a watch channel and
/// follows its stream limit. The watch's sender lives as long as the I/O:
/// its drop tells the connection's driver the socket is gone.
pub(crate) struct PrefaceIo<T> {
    inner: T,
    frames: FrameReader,
    tx: watch::Sender<Preface>,
    told: bool,
    limit: StreamLimit,
}

impl<T> PrefaceIo<T> {
    pub(crate) fn new(inner: T) -> (PrefaceIo<T>, watch::Receiver<Preface>, StreamLimit) {
        let (tx, rx) = watch::channel(Preface::Pending);
        let limit = StreamLimit::default();
        let io = PrefaceIo {
            inner,
            frames: FrameReader::default(),
            tx,
            told: false,
            limit: limit.clone(),
        };
        (io, rx, limit)
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
        if let Poll::Ready(Err(_)) = res {
            self.limit.sign_off();
        }
        if let Poll::Ready(Ok(())) = res {
            let PrefaceIo {
                frames,
                tx,
                told,
                limit,
                ..
            } = &mut *self;
            let fresh = &buf.filled()[before..];
            if !fresh.is_empty() {
                // (Only this task writes: a load and a store, no atomic
                // read-modify-write per read.)
                let reads = &limit.0.reads;
                reads.store(
                    reads.load(Ordering::Relaxed).wrapping_add(1),
                    Ordering::Relaxed,
                );
            }
            if fresh.is_empty() {
                limit.sign_off();
                if !*told {
                    *told = true;
                    let _ = tx.send(Preface::Closed);
                }
            }
            frames.feed(fresh, |seen| {
                if let Preface::Settings(max) = seen {
                    limit.follow(max, !*told);
                }
                if !std::mem::replace(told, true) {
                    let _ = tx.send(seen);
                }
            });
            if frames.goaway {
                limit.sign_off();
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
        let mut p = FrameReader::default();
        let mut out = Vec::new();
        for b in &frame {
            p.feed(std::slice::from_ref(b), |seen| out.push(seen));
        }
        assert_eq!(out, [Preface::Settings(Some(50))]);
        assert_eq!(seen_in(&frame), [Preface::Settings(Some(50))]);
    }

    /// Everything `feed` reports for `bytes` fed at once.
    fn seen_in(bytes: &[u8]) -> Vec<Preface> {
        let mut out = Vec::new();
        FrameReader::default().feed(bytes, |seen| out.push(seen));
        out
    }

    /// A frame of another type, with a payload to skip.
    fn other_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            0,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn later_settings_are_read_past_other_frames_and_acks() {
        let mut bytes = settings_frame(&[(0x3, 100)]);
        // An ACK (empty SETTINGS with the ACK flag), a DATA frame whose
        // payload looks like a SETTINGS header, then a lowering to 1, one
        // SETTINGS without the limit and a raise to 10.
        bytes.extend_from_slice(&[0, 0, 0, TYPE_SETTINGS, FLAG_ACK, 0, 0, 0, 0]);
        bytes.extend(other_frame(0x0, &settings_frame(&[(0x3, 7)])));
        bytes.extend(settings_frame(&[(0x3, 1)]));
        bytes.extend(settings_frame(&[(0x4, 65535)]));
        bytes.extend(settings_frame(&[(0x3, 10)]));
        let want = [
            Preface::Settings(Some(100)),
            Preface::Settings(Some(1)),
            Preface::Settings(None),
            Preface::Settings(Some(10)),
        ];
        assert_eq!(seen_in(&bytes), want);
        for split in [1, 5, 9, 10, 17] {
            let mut p = FrameReader::default();
            let mut out = Vec::new();
            for chunk in bytes.chunks(split) {
                p.feed(chunk, |seen| out.push(seen));
            }
            assert_eq!(out, want, "fed in chunks of {split}");
        }
    }

    #[test]
    fn the_limit_follows_every_settings_frame() {
        let limit = StreamLimit::default();
        limit.follow(None, true);
        assert_eq!(limit.get(), DEFAULT_MAX_STREAMS, "none announced: our cap");
        limit.follow(Some(1), false);
        assert_eq!(limit.get(), 1);
        limit.follow(None, false);
        assert_eq!(
            limit.get(),
            1,
            "a later SETTINGS without it changes nothing"
        );
        limit.follow(Some(0), false);
        assert_eq!(limit.get(), 0, "a server may stop new streams for a while");
        limit.follow(Some(u32::MAX), false);
        assert_eq!(limit.get(), DEFAULT_MAX_STREAMS);
    }

    /// A SETTINGS frame with many entries (GREASE, extension ids) is
    /// SETTINGS: over 64 entries it was read as "not an HTTP/2 server",
    /// and a later one's new limit was not seen. Fed a byte at a time too.
    #[test]
    fn a_large_settings_frame_is_read_entry_by_entry() {
        let mut entries: Vec<(u16, u32)> = (0..100).map(|i| (0x0a0a + i, 1)).collect();
        entries.push((0x3, 5));
        entries.extend((0..10).map(|i| (0x1a1a + i, 2)));
        let frame = settings_frame(&entries);
        assert_eq!(seen_in(&frame), [Preface::Settings(Some(5))]);
        let mut reader = FrameReader::default();
        let mut seen = Vec::new();
        for b in &frame {
            reader.feed(std::slice::from_ref(b), |p| seen.push(p));
        }
        assert_eq!(seen, [Preface::Settings(Some(5))]);
    }

    #[test]
    fn settings_without_limit_and_non_settings() {
        assert_eq!(seen_in(&settings_frame(&[])), [Preface::Settings(None)]);
        assert_eq!(seen_in(b"HTTP/1.1 200 OK\r\n"), [Preface::Invalid]);
        // A first frame that is a SETTINGS ACK is no preface either.
        assert_eq!(
            seen_in(&[0, 0, 0, TYPE_SETTINGS, FLAG_ACK, 0, 0, 0, 0]),
            [Preface::Invalid]
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..8)) {
            let mut p = FrameReader::default();
            for c in &chunks {
                p.feed(c, |_| {});
            }
        }
    }
}
