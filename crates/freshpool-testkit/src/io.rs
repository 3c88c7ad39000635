//! I/O adapters used by the test server: activity tracking (for the
//! server-side idle timeout) and the `Expect` header neutraliser used when
//! [`ServerConfig::expect_continue`](crate::server::ServerConfig::expect_continue)
//! is `false`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per-connection activity record: when bytes last moved and how many
/// requests are currently being handled.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    pub(crate) in_flight: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Records "something happened now".
    pub(crate) fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long since the last recorded activity.
    pub(crate) fn idle_for(&self) -> Duration {
        let now = self.base.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Wraps a transport and touches an [`Activity`] whenever bytes are read or
/// written.
pub(crate) struct Tracked<T> {
    inner: T,
    activity: std::sync::Arc<Activity>,
}

impl<T> Tracked<T> {
    pub(crate) fn new(inner: T, activity: std::sync::Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
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

/// Renames every header whose name starts with `expect` (at the start of a
/// line, case-insensitively) by replacing its 6th letter with `x`
/// (`Expect:` becomes `Expecx:`), on the *incoming* byte stream.
///
/// hyper's HTTP/1 server answers `Expect: 100-continue` with an automatic
/// `100 Continue` as soon as the handler polls the body, and offers no switch
/// to turn that off. Hiding the header from hyper is the only way to get a
/// server that ignores `Expect` while keeping everything else (routes, stats,
/// TLS, idle timeout) identical. The matcher is stateful across reads, so a
/// header split over several TCP segments is still caught; nothing is held
/// back. Side effect: a request *body* containing `\nexpect` is altered too.
pub(crate) struct ExpectStripper<T> {
    inner: T,
    /// `Some(k)`: we are at the start of a line and the first `k` bytes of it
    /// matched `expect`.
    matched: Option<usize>,
}

const EXPECT: &[u8] = b"expect";

impl<T> ExpectStripper<T> {
    pub(crate) fn new(inner: T) -> Self {
        ExpectStripper {
            inner,
            matched: None,
        }
    }

    fn rewrite(&mut self, data: &mut [u8]) {
        for b in data.iter_mut() {
            match self.matched {
                Some(k) if b.to_ascii_lowercase() == EXPECT[k] => {
                    if k + 1 == EXPECT.len() {
                        *b = b'x';
                        self.matched = None;
                    } else {
                        self.matched = Some(k + 1);
                    }
                }
                _ => self.matched = if *b == b'\n' { Some(0) } else { None },
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ExpectStripper<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) {
            let this = &mut *self;
            this.rewrite(&mut buf.filled_mut()[before..]);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ExpectStripper<T> {
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

    #[test]
    fn strips_expect_across_chunks() {
        let mut s = ExpectStripper::new(());
        let mut a = b"POST / HTTP/1.1\r\nHost: x\r\nExp".to_vec();
        let mut b = b"ect: 100-continue\r\nexpect-ct: 1\r\n\r\nbody".to_vec();
        s.rewrite(&mut a);
        s.rewrite(&mut b);
        let all = [a, b].concat();
        assert_eq!(
            String::from_utf8(all).unwrap(),
            "POST / HTTP/1.1\r\nHost: x\r\nExpecx: 100-continue\r\nexpecx-ct: 1\r\n\r\nbody"
        );
    }
}
