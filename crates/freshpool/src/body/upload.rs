//! A request body on its way out: when hyper is done with it
//! (`TrackEnd`, `UploadEnd`), whether it keeps the length it announced
//! (`ExactLength`), and its failure, kept for the request's error
//! (`SharedError`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::error::{BoxError, SharedError};

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
/// server that might never read it. In frame-sized chunks, the last of
/// them one byte, the body ends only when h2 can send all of it. (h2's
/// `capacity()` is the window assigned to the stream minus what it
/// buffered; hyper polls the body only while it is at least 1.)
/// (`Bytes::split_to` shares the buffer: no copy.)
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
        Poll::Ready(Some(Ok(Frame::data(next_piece(&mut self.0)))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.len() as u64)
    }
}

/// The next piece of `rest` for an HTTP/2 stream: at most a frame's worth,
/// the last byte alone. hyper hands over a chunk only while the stream has
/// capacity (h2: its window covers everything buffered, plus one byte), so
/// once the last one is taken all of it can go out without waiting for
/// the server to read.
fn next_piece(rest: &mut Bytes) -> Bytes {
    let n = match rest.len() {
        0 | 1 => rest.len(),
        len => (len - 1).min(UNTRACKED_IN_MEMORY as usize),
    };
    rest.split_to(n)
}

/// A caller's streamed body handed to an HTTP/2 stream as [`InChunks`]
/// hands a body in memory: a data frame over [`UNTRACKED_IN_MEMORY`] goes
/// in pieces of at most that, its last byte alone. Handed over whole, a
/// large last frame (or one followed by trailers) was taken at the first
/// byte of window and the body dropped ("done") while h2 still held most
/// of it for a server that might never read it; the stream went back to
/// the pool one more than the server allows. Smaller frames pass as they
/// are: at most that much may still be buffered at the end, as for bodies
/// in memory.
pub(super) struct Rechunked {
    pub(super) inner: Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync>>,
    /// What is left of a large frame.
    rest: Bytes,
}

impl Rechunked {
    pub(super) fn new(
        inner: Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync>>,
    ) -> Rechunked {
        Rechunked {
            inner,
            rest: Bytes::new(),
        }
    }

    fn piece(&mut self) -> Frame<Bytes> {
        Frame::data(next_piece(&mut self.rest))
    }
}

impl http_body::Body for Rechunked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.rest.is_empty() {
            return Poll::Ready(Some(Ok(self.piece())));
        }
        match std::task::ready!(self.inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.len() as u64 > UNTRACKED_IN_MEMORY => {
                    self.rest = data;
                    Poll::Ready(Some(Ok(self.piece())))
                }
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(other) => Poll::Ready(Some(Ok(other))),
            },
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut out = SizeHint::new();
        out.set_lower(hint.lower().saturating_add(rest));
        if let Some(upper) = hint.upper() {
            out.set_upper(upper.saturating_add(rest));
        }
        out
    }
}

/// A caller's streamed body that need not be `Sync` (axum's, an
/// `UnsyncBoxBody`): `RequestBody` is `Sync` (requests are shared by
/// reference where the request future holds them), and this body is only
/// ever polled through `&mut`, so it is held in a `SyncWrapper`. What
/// `&self` asks of it (its end, its size) is read when it is wrapped and
/// after each poll.
pub(super) struct Unsync<B> {
    inner: sync_wrapper::SyncWrapper<Pin<Box<B>>>,
    ended: bool,
    hint: SizeHint,
    /// Its `poll_frame` panicked: never polled again.
    panicked: bool,
}

impl<B: http_body::Body> Unsync<B> {
    pub(super) fn new(body: B) -> Unsync<B> {
        Unsync {
            ended: body.is_end_stream(),
            hint: body.size_hint(),
            panicked: false,
            inner: sync_wrapper::SyncWrapper::new(Box::pin(body)),
        }
    }
}

impl<B> http_body::Body for Unsync<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.panicked {
            return Poll::Ready(None);
        }
        let body = this.inner.get_mut();
        // A caller's body that panics fails its request as a `Body` error.
        // It runs in hyper's tasks (the connection's driver over HTTP/1,
        // the body's pipe over HTTP/2): the panic took the driver down
        // ("the runtime that drove it shut down"), or left an HTTP/2
        // stream waiting for the rest of the body, the request hung. (No
        // cost unless it panics; it is not polled again after.)
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            body.as_mut().poll_frame(cx)
        }));
        let polled = match polled {
            Ok(polled) => std::task::ready!(polled),
            Err(payload) => {
                this.panicked = true;
                this.ended = true;
                let what = crate::catch_panic::panic_message(&*payload);
                let why = crate::error::RequestBodyError(
                    format!("the request body panicked: {what}").into(),
                );
                return Poll::Ready(Some(Err(BoxError::from(why))));
            }
        };
        this.ended = polled.is_none() || body.is_end_stream();
        this.hint = body.size_hint();
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
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
    /// Frames hyper has taken: the upload's progress, which a parked
    /// lease's watch looks at (`watch_parked`).
    std::sync::atomic::AtomicU64,
    /// The body's last poll found nothing yet: the caller's body, not the
    /// server, holds the upload up (a stream fed as data comes).
    std::sync::atomic::AtomicBool,
);

/// How long an HTTP/2 upload parked after its response ended (see
/// [`UploadEnd::park`]) may go without hyper taking a frame before it is
/// given up. Its server has answered in full and takes nothing more (its
/// window stays shut); without a bound the stream stayed the server's for
/// good, one fewer on that connection for every such upload. Given up,
/// the connection takes no new streams and closes once the others end
/// (shut if it cannot: `connect::H2_CLOSE_GRACE`). Go's HTTP/2 client
/// stops such an upload as soon as the response ends; this waits for a
/// server that still reads.
pub(crate) const PARKED_STALL: std::time::Duration = std::time::Duration::from_secs(5);

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
    pub(crate) fn park(
        self: &Arc<Self>,
        mut lease: crate::pool::Lease,
    ) -> Result<(), crate::pool::Lease> {
        // (Before this lock: it takes the origin's.)
        let hold = lease.h2_hold();
        {
            let mut state = self.lock();
            if state.0 {
                return Err(lease);
            }
            lease.unwatch();
            state.1 = Some(lease);
        }
        // (No runtime here, a body dropped on a thread of its own: no
        // watch, as before it had one.)
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(watch_parked(Arc::downgrade(self), hold));
        }
        Ok(())
    }
}

/// Gives up a parked upload that took no frame for [`PARKED_STALL`] (a
/// look every `PARKED_STALL`: given up 5 to 10 s after its last frame)
/// while hyper waited for the server, not for the body: its connection
/// takes no new streams (`CloseReason::Unresponsive`: its server took
/// nothing) and the stream stops counting. Ends when the upload does (the
/// lease released by `TrackEnd`'s drop). `hold`: the pool's hold on the
/// connection, kept so that a close the pool's drop let run unbounded (a
/// stream in flight, this one) is bounded again once it is given up.
async fn watch_parked(
    upload: std::sync::Weak<UploadEnd>,
    hold: Option<Arc<crate::connect::PoolHold>>,
) {
    let progress = |u: &UploadEnd| u.2.load(std::sync::atomic::Ordering::Relaxed);
    let Some(mut seen) = upload.upgrade().map(|u| progress(&u)) else {
        return;
    };
    loop {
        tokio::time::sleep(PARKED_STALL).await;
        let Some(upload) = upload.upgrade() else {
            return;
        };
        {
            // Over (ended, or the lease gone): nothing to watch.
            let state = upload.lock();
            if state.0 || state.1.is_none() {
                return;
            }
        }
        let now = progress(&upload);
        // (Waiting for the caller's own body is no stall of the server's.)
        if now != seen || upload.3.load(std::sync::atomic::Ordering::Relaxed) {
            seen = now;
            continue;
        }
        let stalled = upload.lock().1.take();
        if let Some(lease) = stalled {
            tracing::debug!("an HTTP/2 upload whose response ended took nothing for {PARKED_STALL:?}; its connection takes no new streams");
            if let Some(hold) = &hold {
                hold.bound();
            }
            lease.give_up_connection(crate::stats::CloseReason::Unresponsive);
        }
        return;
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
                let shared = SharedError::new(e);
                let _ = self.done.1.set(shared.clone());
                Poll::Ready(Some(Err(BoxError::from(shared))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.done
                    .2
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.done
                    .3
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                self.done
                    .3
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Poll::Pending
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

pin_project_lite::pin_project! {
    /// A streamed body held to an exact length, its own (an exact size
    /// hint) or the caller's `Content-Length`: ending short of it, or going
    /// past it, is the body's error (`Kind::Body`) on every protocol.
    /// (hyper checks a short body on HTTP/1 only, and cuts a long one there
    /// to the length; over HTTP/2 the server reset the stream, and the
    /// error read as the server's.)
    pub(super) struct ExactLength<B> {
        #[pin]
        inner: B,
        left: u64,
        announced: u64,
        by_header: bool,
        // The frame that reached the length, held until the body shows
        // that it ends there: over HTTP/1 hyper polls no further once the
        // length is written, so a frame past it went unseen (and unsent:
        // the server answered a truncated body).
        held: Option<Frame<Bytes>>,
        // The inner body returned its end (not polled again).
        ended: bool,
    }
}

impl<B> ExactLength<B> {
    /// Holds `inner` to `announced` bytes: its own length (`by_header`
    /// false) or the request's `Content-Length` (true), for the message.
    pub(super) fn new(inner: B, announced: u64, by_header: bool) -> ExactLength<B> {
        ExactLength {
            inner,
            left: announced,
            announced,
            by_header,
            held: None,
            ended: false,
        }
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
        let mut this = self.project();
        let whose = if *this.by_header {
            format!("its Content-Length header ({} bytes)", this.announced)
        } else {
            "the length it announced".to_owned()
        };
        let wrong = |what: String| {
            Poll::Ready(Some(Err(BoxError::from(crate::error::RequestBodyError(
                what.into(),
            )))))
        };
        loop {
            if *this.ended {
                return Poll::Ready(this.held.take().map(Ok));
            }
            match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let n = data.len() as u64;
                        if n > *this.left {
                            return wrong(format!("{} bytes more than {whose}", n - *this.left));
                        }
                        *this.left -= n;
                    } else if *this.left > 0 {
                        // Trailers end the body: over HTTP/2 hyper sends them
                        // as its end and asks for nothing after.
                        return wrong(format!("ended {} bytes short of {whose}", this.left));
                    }
                    if let Some(earlier) = this.held.take() {
                        // (An empty frame or trailers after the length: pass
                        // them on in order, still watching for more data.)
                        *this.held = Some(frame);
                        return Poll::Ready(Some(Ok(earlier)));
                    }
                    if *this.left > 0 || this.inner.is_end_stream() {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    *this.held = Some(frame);
                }
                None if *this.left > 0 => {
                    return wrong(format!("ended {} bytes short of {whose}", this.left));
                }
                None => *this.ended = true,
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // (Not while bytes are owed, or a frame is held: the next poll says
        // how it ends.)
        self.held.is_none() && (self.ended || self.left == 0 && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held = self
            .held
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, Bytes::len);
        SizeHint::with_exact(self.left + held as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body of the given frames, in order, that says nothing of its length.
    struct Frames(std::collections::VecDeque<Frame<Bytes>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn data(b: &'static [u8]) -> Frame<Bytes> {
        Frame::data(Bytes::from_static(b))
    }

    fn trailers() -> Frame<Bytes> {
        Frame::trailers(http::HeaderMap::new())
    }

    /// A large frame goes in pieces of at most 16 KiB, its last byte
    /// alone; small frames and trailers pass as they are, in order.
    #[tokio::test]
    async fn rechunked_cuts_large_frames_and_keeps_the_rest() {
        let big = Bytes::from(vec![3u8; 40_000]);
        let frames = vec![data(b"small"), Frame::data(big.clone()), trailers()];
        let mut body = std::pin::pin!(Rechunked::new(Box::pin(Frames(frames.into()))));
        let mut sizes = Vec::new();
        let mut joined = Vec::new();
        let mut trailers_seen = false;
        while let Some(frame) = body.frame().await {
            match frame.unwrap().into_data() {
                Ok(d) => {
                    sizes.push(d.len());
                    joined.extend_from_slice(&d);
                }
                Err(f) => trailers_seen = f.is_trailers(),
            }
        }
        assert_eq!(sizes, [5, 16_384, 16_384, 7_231, 1]);
        assert_eq!(&joined[5..], &big[..]);
        assert!(trailers_seen);
    }

    /// Every frame of `frames` held to `announced` bytes, or the error.
    async fn read(frames: Vec<Frame<Bytes>>, announced: u64) -> Result<Vec<Frame<Bytes>>, String> {
        let mut body = std::pin::pin!(ExactLength::new(Frames(frames.into()), announced, true));
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.push(frame.map_err(|e| e.to_string())?);
        }
        assert!(http_body::Body::is_end_stream(&*body));
        Ok(out)
    }

    /// The length reached at a frame's end with more to come: the frame is
    /// held until the body shows how it goes on (over HTTP/1 hyper asks
    /// for nothing past the length, and the rest went unseen).
    #[tokio::test]
    async fn data_past_the_length_after_a_frame_that_reached_it_fails() {
        let err = read(vec![data(b"he"), data(b"llo")], 2).await.unwrap_err();
        assert!(
            err.contains("3 bytes more than its Content-Length header (2 bytes)"),
            "{err}"
        );
        let err = read(vec![data(b""), data(b"x")], 0).await.unwrap_err();
        assert!(err.contains("1 bytes more than"), "{err}");
    }

    /// Trailers end the body (HTTP/2 sends them as its end): before the
    /// length is reached they are its end, short.
    #[tokio::test]
    async fn trailers_before_the_length_end_it_short() {
        let err = read(vec![data(b"he"), trailers()], 5).await.unwrap_err();
        assert!(
            err.contains("ended 3 bytes short of its Content-Length header (5 bytes)"),
            "{err}"
        );
    }

    /// At the length, what follows without data (empty frames, trailers)
    /// passes on, in order.
    #[tokio::test]
    async fn frames_without_data_after_the_length_pass_in_order() {
        let frames = read(vec![data(b"he"), data(b"llo"), data(b""), trailers()], 5)
            .await
            .unwrap();
        let kinds: Vec<String> = frames
            .iter()
            .map(|f| match f.data_ref() {
                Some(d) => String::from_utf8_lossy(d).into_owned(),
                None => "trailers".to_owned(),
            })
            .collect();
        assert_eq!(kinds, ["he", "llo", "", "trailers"]);
    }
}
