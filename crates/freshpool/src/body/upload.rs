//! A request body on its way out: when hyper is done with it
//! (`TrackEnd`, `UploadEnd`), whether it keeps the length it announced
//! (`ExactLength`), and its failure, kept for the request's error
//! (`SharedError`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::error::BoxError;

/// The largest body in memory whose HTTP/2 upload is not tracked
/// (`RequestBody::track_end`): one default-sized DATA frame (16 KiB) goes
/// out right behind the head, within the 64 KiB window every stream starts
/// with. (Left: a connection whose window other uploads used up holds even
/// a small one back.)
pub(super) const UNTRACKED_IN_MEMORY: u64 = 16 * 1024;

/// A body in memory handed to an HTTP/2 stream a frame's worth at a time.
///
/// Why: hyper's HTTP/2 upload takes a chunk whenever the stream has any
/// send capacity, and h2 buffers whatever of it the flow-control window
/// does not cover. Handed over whole, a large body was "sent" (and
/// dropped, so `UploadEnd` said done) while h2 still held most of it for a
/// server that might never read it. In frame-sized chunks the body ends
/// only with its last one: what h2 may still hold then is at most one
/// chunk. (`Bytes::split_to` shares the buffer: no copy.)
pub(super) struct InChunks(pub(super) Bytes);

impl http_body::Body for InChunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.0.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.0.len().min(UNTRACKED_IN_MEMORY as usize);
        Poll::Ready(Some(Ok(Frame::data(self.0.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.len() as u64)
    }
}

/// A streamed request body that says when hyper is done with it
/// (`track_end`): hyper drops a request body as soon as it has written the
/// last of it (its end, or as many bytes as announced: then without a
/// final poll), and keeps it while it still goes out, as when the server
/// answered early.
pub(super) struct TrackEnd {
    pub(super) inner: Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync>>,
    pub(super) done: Arc<UploadEnd>,
}

/// Whether a streamed request body is done with (`track_end`), and the
/// lease of an HTTP/2 stream whose response ended first, parked here until
/// it is: the server counts the stream until the upload ends too, and
/// given back before, the pool handed out a stream the server did not
/// allow (h2 then held that request until the upload ended: maybe never).
/// One lock for both, so that a lease is never parked after the end.
#[derive(Default)]
pub(crate) struct UploadEnd(
    std::sync::Mutex<(bool, Option<crate::pool::Lease>)>,
    /// The body's own error, if it failed: over HTTP/2 hyper resets the
    /// stream and returns that reset, not this (see `failure`).
    std::sync::OnceLock<SharedError>,
);

impl UploadEnd {
    /// Why the body failed, if it did: the request's error is then the
    /// caller's (`Kind::Body`), whatever the protocol made of it. (Its
    /// source chain leads to the caller's own error, as over HTTP/1.)
    pub(crate) fn failure(&self) -> Option<&SharedError> {
        self.1.get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, Option<crate::pool::Lease>)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the upload is over.
    pub(crate) fn is_done(&self) -> bool {
        self.lock().0
    }

    /// Keeps `lease` until the upload ends (released then); `Err` gives it
    /// back if the upload is over already. A parked lease is no longer
    /// one the leak report looks at: its response was read or dropped, and
    /// what holds the stream is the upload.
    pub(crate) fn park(&self, mut lease: crate::pool::Lease) -> Result<(), crate::pool::Lease> {
        let mut state = self.lock();
        if state.0 {
            return Err(lease);
        }
        lease.unwatch();
        state.1 = Some(lease);
        Ok(())
    }
}

impl http_body::Body for TrackEnd {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.inner.as_mut().poll_frame(cx) {
            // Kept for the request's error; hyper gets the same error.
            Poll::Ready(Some(Err(e))) => {
                let shared = SharedError(Arc::new(e));
                let _ = self.done.1.set(shared.clone());
                Poll::Ready(Some(Err(BoxError::from(shared))))
            }
            polled => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackEnd {
    fn drop(&mut self) {
        let parked = {
            let mut state = self.done.lock();
            state.0 = true;
            state.1.take()
        };
        // (Outside the lock: the release takes the origin's.)
        if let Some(lease) = parked {
            lease.release();
        }
    }
}

/// A request body's error, shared by hyper (which may only log it) and the
/// request's own error. Shows as the error it holds, whose source chain it
/// continues.
#[derive(Clone, Debug)]
pub(crate) struct SharedError(Arc<BoxError>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&**self.0, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.0)
    }
}

pin_project_lite::pin_project! {
    /// A streamed body that announced its exact length: ending short of it,
    /// or going past it, is the body's error (`Kind::Body`) on every
    /// protocol. (hyper checks a short body on HTTP/1 only, and cuts a long
    /// one there to the length announced; over HTTP/2 the server reset the
    /// stream, and the error read as the server's.)
    pub(super) struct ExactLength<B> {
        #[pin]
        pub(super) inner: B,
        pub(super) left: u64,
    }
}

impl<B> http_body::Body for ExactLength<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let wrong = |what: String| {
            Poll::Ready(Some(Err(BoxError::from(crate::error::RequestBodyError(
                what.into(),
            )))))
        };
        match std::task::ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if n > *this.left {
                    return wrong(format!(
                        "{} bytes more than the length it announced",
                        n - *this.left
                    ));
                }
                *this.left -= n;
                Poll::Ready(Some(Ok(frame)))
            }
            None if *this.left > 0 => wrong(format!(
                "ended {} bytes short of the length it announced",
                this.left
            )),
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        // (Not while bytes are owed: the next poll says so.)
        self.left == 0 && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
