//! Request and response bodies.
//!
//! A response [`Body`] holds its connection's lease: reading it to the end
//! returns the connection to the pool; dropping it early closes the
//! connection (an HTTP/1.1 connection with unread response bytes cannot carry
//! another request), unless little is left on a connection that stays
//! reusable: that is drained in the background and the connection reused
//! (`drain.rs` says when). A body held and never
//! read keeps its lease, and the pool's leak report names where it was
//! taken.

mod drain;
mod request;
mod upload;

pub use request::RequestBody;
pub(crate) use request::{Gate, GateState};
pub(crate) use upload::UploadEnd;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::deadline::{NoTimer, RequestDeadline, RuntimeTimer};
use crate::error::{Error, Kind};
use crate::pool::Lease;

/// A response body. Read it to the end (or drop it) to free the connection:
/// dropped with little left (HTTP/1, up to 64 KiB arriving within 100 ms)
/// on a connection that stays reusable (not `Connection: close` or
/// HTTP/1.0), for a request whose body was not streamed, on a multi-thread
/// tokio runtime, the rest is read in the background and the connection
/// goes back to the pool; otherwise the connection closes.
///
/// ```no_run
/// # async fn run() -> Result<(), freshpool::Error> {
/// let client = freshpool::Client::new();
/// let response = client.get("http://127.0.0.1:8080/").await?;
/// let text = response.into_body().text().await?;
/// # Ok(()) }
/// ```
pub struct Body {
    inner: Option<Incoming>,
    /// What few responses need, behind one pointer: every `Body` moves
    /// with the response, and each field more costs every request.
    extras: Option<Box<Extras>>,
    /// Held until the body ends; it also names the origin in errors. (Not
    /// a copy of the origin's label: that was a shared reference count
    /// every response touched twice.) Without one, the body had already
    /// ended and cannot fail.
    lease: Option<Lease>,
}

/// A body's rarely set parts.
#[derive(Default)]
struct Extras {
    /// Says when a streamed request body has ended (`track_end`): an
    /// HTTP/1 connection whose response ends first is not pooled, an
    /// HTTP/2 stream is given back only then.
    request_done: Option<Arc<UploadEnd>>,
    /// The client's `timeout`, still running while the body is read.
    deadline: Option<Pin<Box<RequestDeadline>>>,
    /// `read_timeout`: the longest the body may go without data.
    reads: Option<ReadTimeout>,
}

/// `read_timeout` on a body: its limit, and the timer of the present
/// wait, begun when the reader finds nothing to read (not when a frame is
/// handed over: a reader busy with its frame is no quiet server). A frame
/// disarms it. A wait may go on under another runtime than the one it
/// began under (a read given up, and taken up elsewhere), which may have
/// shut down meanwhile: its timer is a `RuntimeTimer`.
struct ReadTimeout {
    limit: std::time::Duration,
    waiting: Option<Pin<Box<RuntimeTimer>>>,
}

impl Extras {
    /// Out of line: only streamed uploads get here, and the allocation
    /// kept `Body::new` from being inlined into every request.
    #[cold]
    #[inline(never)]
    fn tracking(request_done: Arc<UploadEnd>) -> Box<Extras> {
        Box::new(Extras {
            request_done: Some(request_done),
            ..Extras::default()
        })
    }
}

impl Body {
    #[inline]
    pub(crate) fn new(
        inner: Incoming,
        lease: Option<Lease>,
        request_done: Option<Arc<UploadEnd>>,
    ) -> Body {
        Body {
            inner: Some(inner),
            lease,
            extras: request_done.map(Extras::tracking),
        }
    }

    /// The request's overall `timeout` bounds reading this body too (as in
    /// reqwest and Go): a server that stalls mid-body fails the read with
    /// `Kind::Timeout` instead of holding the caller and the connection.
    pub(crate) fn bound_by(&mut self, deadline: Pin<Box<RequestDeadline>>) {
        // (No lease: the body already ended, and nothing is left to bound.)
        if self.lease.is_some() {
            self.extras.get_or_insert_with(Default::default).deadline = Some(deadline);
        }
    }

    /// `read_timeout` bounds the quiet between this body's frames.
    pub(crate) fn bound_reads(&mut self, limit: std::time::Duration) {
        if self.lease.is_some() {
            self.extras.get_or_insert_with(Default::default).reads = Some(ReadTimeout {
                limit,
                waiting: None,
            });
        }
    }

    /// With a deadline or a read timeout: the error of the one that
    /// passed (unread bytes remain: the connection is closed), else
    /// `Pending` with wake-ups registered.
    #[cold]
    fn timed_out(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let quiet = match self.extras.as_mut().and_then(|e| e.reads.as_mut()) {
            Some(reads) => {
                let limit = reads.limit;
                let timer = reads
                    .waiting
                    .get_or_insert_with(|| Box::pin(RuntimeTimer::after(limit)));
                match timer.as_mut().poll_passed(cx) {
                    Poll::Ready(Ok(())) => Some(limit),
                    // (Outside any runtime no timer can be kept: the read
                    // waits unbounded there, until one polls it again.)
                    Poll::Ready(Err(NoTimer)) | Poll::Pending => None,
                }
            }
            None => None,
        };
        if let Some(limit) = quiet {
            self.inner = None;
            let origin = match self.lease.take() {
                Some(lease) => {
                    let origin = lease.origin_label().to_string();
                    self.abandon(lease);
                    origin
                }
                None => String::new(),
            };
            let message = format!(
                "no response body data from {origin} for {} (read_timeout)",
                crate::error::fmt_duration(limit)
            );
            // (The head came: the server got the request.)
            return Poll::Ready(Some(Err(
                Error::new(Kind::Timeout, message).mark_possibly_processed()
            )));
        }
        let Some(deadline) = self.extras.as_mut().and_then(|e| e.deadline.as_mut()) else {
            return Poll::Pending;
        };
        let err = std::task::ready!(deadline
            .as_mut()
            .poll_elapsed(cx, " while its response body was read"));
        self.inner = None;
        if let Some(lease) = self.lease.take() {
            self.abandon(lease);
        }
        // (The head came: the server got the request.)
        Poll::Ready(Some(Err(err.mark_possibly_processed())))
    }

    /// Gives up a lease whose response was not read to its end (dropped,
    /// timed out, failed). An HTTP/2 stream whose upload still goes out
    /// stays the server's until it ends, as in `finish_upload`: the
    /// response's end sends no reset while hyper still sends the body, so
    /// given back now, the connection would carry one stream more than
    /// the server allows, and the next request there would wait inside h2.
    /// Anything else is discarded: unread bytes remain, the connection
    /// cannot carry another request, and closing it is cheaper and safer
    /// than draining an unknown amount.
    #[cold]
    fn abandon(&self, lease: Lease) {
        let lease = match self.extras.as_ref().and_then(|e| e.request_done.as_ref()) {
            Some(upload) if lease.is_h2() => match upload.park(lease) {
                Ok(()) => return,
                Err(back) => back,
            },
            _ => lease,
        };
        lease.discard();
    }

    /// The caller's own upload failed (a server that answers before it
    /// reads the request body): the protocol ended the response for it (a
    /// reset stream, an aborted connection), so the error is the caller's,
    /// as it is when the upload fails before the head (`Kind::Body`).
    #[cold]
    fn upload_failure(&mut self) -> Option<Error> {
        let why = self
            .extras
            .as_ref()?
            .request_done
            .as_ref()?
            .failure()?
            .clone();
        let lease = self.lease.take()?;
        let message = format!(
            "the request body failed while sending to {}, after its response began",
            lease.origin_label()
        );
        lease.discard();
        Some(
            Error::new(Kind::Body, message)
                .with_source(why)
                .mark_possibly_processed(),
        )
    }

    /// Reads the whole body.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), freshpool::Error> {
    /// let client = freshpool::Client::new();
    /// let response = client.get("http://127.0.0.1:8080/").await?;
    /// let bytes = response.into_body().bytes().await?;
    /// println!("{} bytes", bytes.len());
    /// # Ok(()) }
    /// ```
    ///
    /// It reads however much the server sends, without a limit. To cap it,
    /// wrap the body in [`http_body_util::Limited`] and collect that: a
    /// body past the limit fails with [`http_body_util::LengthLimitError`].
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), freshpool::BoxError> {
    /// use http_body_util::{BodyExt, Limited};
    /// let client = freshpool::Client::new();
    /// let response = client.get("http://127.0.0.1:8080/").await?;
    /// let body = Limited::new(response.into_body(), 1024 * 1024);
    /// let bytes = body.collect().await?.to_bytes();
    /// println!("{} bytes (at most 1 MiB)", bytes.len());
    /// # Ok(()) }
    /// ```
    // (Not `async`: that would wrap the reading future in one more state
    // machine, which moves the body into it: ~100 instructions per
    // response, callgrind.)
    pub fn bytes(self) -> impl Future<Output = Result<Bytes, Error>> + Send + 'static {
        __read_to_bytes(self)
    }

    /// Reads the whole body as UTF-8 text (invalid sequences replaced).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), freshpool::Error> {
    /// let client = freshpool::Client::new();
    /// let text = client.get("http://127.0.0.1:8080/").await?.into_body().text().await?;
    /// println!("{text}");
    /// # Ok(()) }
    /// ```
    pub async fn text(self) -> Result<String, Error> {
        // A body joined from several frames is in a buffer of its own, of
        // its exact size: it becomes the `String` as is, checked, not
        // copied. One frame is a slice of hyper's read buffer: copied out
        // of it, or, if nothing else holds that buffer any more, given the
        // whole buffer (up to hundreds of KiB), which `shrink_to_fit` gives
        // back (a no-op for a joined body).
        let mut bytes = Vec::from(self.bytes().await?);
        bytes.shrink_to_fit();
        Ok(String::from_utf8(bytes)
            .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned()))
    }

    /// Reads and discards the body, returning the connection to the pool.
    /// Returns how many body bytes it read.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), freshpool::Error> {
    /// let client = freshpool::Client::new();
    /// let response = client.get("http://127.0.0.1:8080/").await?;
    /// if !response.status().is_success() {
    ///     // Not wanted, but read to the end: the connection can be reused.
    ///     let skipped = response.into_body().drain().await?;
    ///     println!("skipped {skipped} bytes");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn drain(self) -> Result<u64, Error> {
        let mut body = self;
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                total += data.len() as u64;
            }
        }
        Ok(total)
    }

    /// Gives the connection back (not to be reused if the request body
    /// is still going out). Called at the end of the body, or at once for
    /// a response without one.
    pub(crate) fn finish(&mut self) {
        // The body is over: let hyper's stream go with the lease (a held
        // HTTP/2 stream keeps its connection, and the slot, alive).
        self.inner = None;
        if let Some(lease) = self.lease.take() {
            match self.extras.as_ref().and_then(|e| e.request_done.as_ref()) {
                None => lease.release(),
                Some(upload) => finish_upload(upload, lease),
            }
        }
    }
}

/// `Body::finish` for a request whose body was streamed: its upload may
/// still be going out. (Out of line: only streamed uploads get here, and
/// inlined it kept `finish` out of every response's `poll_frame`.)
#[cold]
#[inline(never)]
fn finish_upload(upload: &Arc<UploadEnd>, mut lease: Lease) {
    if !upload.is_done() {
        if lease.is_h2() {
            // The stream is the server's until the upload ends.
            match upload.park(lease) {
                Ok(()) => return,
                Err(back) => lease = back,
            }
        } else {
            // HTTP/1: hyper takes no next request before the upload ends,
            // which may be never. Closed for good: dropping the sender
            // alone leaves hyper's dispatcher writing the upload (the
            // response was read whole, so nothing stops it), and its task,
            // socket and slot stayed, for as long as the peer kept the
            // socket without reading.
            lease.not_reusable = Some(crate::CloseReason::Error);
            if let crate::pool::LeaseKind::H1(idle) = lease.kind_mut() {
                crate::connect::tcp::shut_down(&idle.conn.socket);
            }
        }
    }
    lease.release();
}

/// `first` and the frames after it, in one buffer of exactly their size:
/// the one copy a body of several frames needs, with no slack kept for
/// the caller's lifetime of the result (a buffer grown by doubling held up
/// to twice the body).
fn joined(first: &[u8], rest: &[Bytes]) -> bytes::BytesMut {
    let total = first.len() + rest.iter().map(Bytes::len).sum::<usize>();
    let mut all = bytes::BytesMut::with_capacity(total);
    all.extend_from_slice(first);
    for frame in rest {
        all.extend_from_slice(frame);
    }
    all
}

/// Reads `body` to its end into one `Bytes`: what [`Body::bytes`] does.
///
/// Most bodies come in one frame: that frame is the answer, as is, with
/// no copy. (`collect().to_bytes()` queues every frame in a list, an
/// allocation, and flattens it at the end: ~560 instructions more per
/// small response, callgrind.) Several frames are joined into one buffer
/// of exactly their size.
/// Trailers are dropped, as `to_bytes` drops them.
///
/// Public but hidden for the benchmarks: their hand-held hyper baseline
/// reads its bodies with it, so that both sides do the same work for a
/// body and the comparison measures the pool alone.
#[doc(hidden)]
pub async fn __read_to_bytes<B>(body: B) -> Result<Bytes, B::Error>
where
    B: http_body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    // Held (sharing hyper's buffers, no copy) until the end, when their
    // total is known.
    let mut rest: Vec<Bytes> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if first.is_none() {
            first = Some(data);
        } else {
            rest.push(data);
        }
    }
    Ok(match first {
        None => Bytes::new(),
        Some(first) if rest.is_empty() => first,
        Some(first) => joined(&first, &rest).freeze(),
    })
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        // A deadline passed ends the read even while frames keep coming
        // (buffered HTTP/2 data, a slow reader), not only when it waits.
        if self
            .extras
            .as_ref()
            .and_then(|e| e.deadline.as_ref())
            .is_some_and(|d| d.has_passed())
            // (A body that has all come in ends as it would have: its
            // connection goes back, the read is no failure.)
            && self.inner.as_ref().is_some_and(|i| !i.is_end_stream())
        {
            return self.timed_out(cx);
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.inner = None;
                self.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                // The last frame of a body whose end is known (its
                // Content-Length reached, HTTP/2's END_STREAM): the
                // connection goes back now, as if the caller had polled
                // once more for the end, which then costs nothing (a trip
                // through hyper's body channel, two of its locks, on a line
                // the connection's driver just wrote). hyper's HTTP/1
                // dispatcher is done with the body by then: it marks the
                // connection keep-alive before it hands the last chunk over.
                if self.inner.as_ref().is_some_and(|i| i.is_end_stream()) {
                    self.finish();
                    return Poll::Ready(Some(Ok(frame)));
                }
                // (Read as it comes: no leak, however long it takes.)
                if let Some(lease) = self.lease.as_mut() {
                    lease.note_awaited(false);
                    lease.note_progress();
                }
                // Data: the next wait has a timer of its own.
                if let Some(reads) = self.extras.as_mut().and_then(|e| e.reads.as_mut()) {
                    reads.waiting = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The connection broke mid-body: never reuse it.
                self.inner = None;
                if let Some(why) = self.upload_failure() {
                    return Poll::Ready(Some(Err(why)));
                }
                let mut kind = crate::error::classify(&e);
                let msg = match self.lease.take() {
                    Some(lease) => {
                        let origin = lease.origin_label();
                        // Cut off by its runtime's shutdown, not by the
                        // server: hyper's words ("connection closed before
                        // message completed") are a server's hang-up. (Over
                        // HTTP/2 only an I/O error, as h2 gives its streams
                        // when its connection is dropped: not a reset or
                        // GOAWAY from either side, since the mark is the
                        // connection's and may have come later.)
                        let other_cause =
                            crate::error::h2_error_in(&e).is_some_and(|h2| !h2.is_io());
                        let msg = if lease.driver_lost() && !other_cause {
                            kind = Kind::Io;
                            format!(
                                "the response body from {origin} was cut off: the runtime that \
                                 drove its connection shut down (or code it ran panicked)"
                            )
                        } else {
                            format!("response body from {origin} failed")
                        };
                        self.abandon(lease);
                        msg
                    }
                    None => "response body failed".to_owned(),
                };
                // (The head came: the server got the request and may
                // have acted on it.)
                let err = Error::new(kind, msg).with_source(e);
                Poll::Ready(Some(Err(err.mark_possibly_processed())))
            }
            Poll::Pending => {
                // Its reader waits: no leak, however long the server stays
                // quiet (an event stream).
                if let Some(lease) = self.lease.as_mut() {
                    lease.note_awaited(true);
                }
                if self.extras.is_none() {
                    Poll::Pending
                } else {
                    self.timed_out(cx)
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or(SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if self.lease.is_none() {
            return;
        }
        if self.inner.as_ref().is_none_or(|b| b.is_end_stream()) {
            // All read, though the caller never polled for the end: the
            // same rules as at the end (the upload may still be going out).
            self.finish();
            return;
        }
        // Little left, no upload going out: read in the background, and
        // the connection goes back to the pool (`drain.rs`).
        if self
            .extras
            .as_ref()
            .is_none_or(|e| e.request_done.is_none())
        {
            let runtime = match (&self.inner, &self.lease) {
                (Some(inner), Some(lease)) => drain::runtime_for(inner, lease),
                _ => None,
            };
            if let Some(runtime) = runtime {
                if let (Some(inner), Some(lease)) = (self.inner.take(), self.lease.take()) {
                    return drain::spawn(&runtime, inner, lease);
                }
            }
        }
        if let Some(lease) = self.lease.take() {
            self.abandon(lease);
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("origin", &self.lease.as_ref().map(|l| l.origin_label()))
            .field("holds_connection", &self.lease.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several frames are joined in order into a buffer of exactly their
    /// size: nothing more is kept for as long as the caller keeps the
    /// result.
    #[test]
    fn frames_are_joined_into_a_buffer_of_their_size() {
        let rest = [Bytes::from(vec![b'b'; 5000]), Bytes::from_static(b"c")];
        let all = joined(b"aa", &rest);
        assert_eq!(all.len(), 5003);
        assert_eq!(all.capacity(), 5003);
        assert_eq!(&all[..3], b"aab");
        assert_eq!(all[5002], b'c');
    }

    /// Frames are joined in order; empty ones and trailers add nothing;
    /// a single frame comes back as the very same buffer (no copy).
    #[tokio::test]
    async fn read_to_bytes_joins_frames_in_order_and_keeps_one_as_is() {
        /// A body that yields the frames it is given.
        struct Frames(std::collections::VecDeque<Frame<Bytes>>);
        impl http_body::Body for Frames {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
                Poll::Ready(self.0.pop_front().map(Ok))
            }
        }
        let frames = |parts: Vec<Frame<Bytes>>| Frames(parts.into());
        let one = Bytes::from(vec![7u8; 100]);
        let ptr = one.as_ptr();
        let read = __read_to_bytes(frames(vec![Frame::data(one)]))
            .await
            .unwrap();
        assert_eq!(read.as_ptr(), ptr, "one frame is returned as is");
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        let many = vec![
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::new()),
            Frame::data(Bytes::from_static(b"cd")),
            Frame::data(Bytes::from_static(b"e")),
            Frame::trailers(trailers),
        ];
        assert_eq!(__read_to_bytes(frames(many)).await.unwrap(), "abcde");
        assert!(__read_to_bytes(frames(Vec::new()))
            .await
            .unwrap()
            .is_empty());
    }
}
