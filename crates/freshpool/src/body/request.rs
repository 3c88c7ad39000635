//! Request bodies: in memory (replayable) or streamed (sent once), and
//! the gate that holds one back behind `Expect: 100-continue`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use super::upload::{
    ExactLength, InChunks, Rechunked, TrackEnd, Unsync, UploadEnd, UNTRACKED_IN_MEMORY,
};
use crate::deadline::RuntimeTimer;
use crate::error::BoxError;

/// A request body: in memory (replayable, so safe retries can resend it) or
/// streamed (sent once).
///
/// ```
/// use freshpool::RequestBody;
/// let body = RequestBody::from("hello");
/// assert!(body.is_replayable());
/// let empty = RequestBody::empty();
/// assert!(empty.is_replayable());
/// ```
pub struct RequestBody {
    /// `None`: no body, an empty buffer, or one already sent.
    payload: Option<Box<Payload>>,
}

/// What a non-empty body holds, behind one pointer, so a `RequestBody` is
/// 8 bytes.
///
/// Why: the request moves by value from the caller through the send loop
/// into hyper's dispatch channel, whose envelope (request and callback, in
/// an `Option`, then in the channel's `Poll<Option<..>>`) is copied at
/// every hop, ~15 times per request. With a 40-byte body (an inline
/// `Bytes` and a tag) those copies were 280-296 bytes, past the 256 up to
/// which glibc's `memcpy` copies in one straight run of vector moves: each
/// took 52 instructions instead of 29 (callgrind, a GET). A body-less
/// request, the common case, allocates nothing; a body in memory costs
/// one 40-byte box.
enum Payload {
    /// In memory: replayable.
    Full(Bytes),
    Stream(Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync>>),
    /// Held back until the server says `100 Continue` (or the wait ends).
    Gated(Gate, RequestBody),
    /// Made again for each attempt (`RequestBody::replayable`). (Boxed:
    /// the rare case keeps every body's box at 40 bytes.)
    Replayable(Box<Replay>),
}

/// A body its caller can make again: the maker, the first body's size
/// (a copy kept for a retry has the same framing before it is made), and
/// the body, made at its first use: a copy kept for a retry that is never
/// needed (most) never calls the maker.
struct Replay {
    make: Arc<dyn Fn() -> RequestBody + Send + Sync>,
    hint: SizeHint,
    /// The caller's `Content-Length`, held to by every body made (see
    /// `hold_to_length`): a retry's body is made after the check.
    held: Option<u64>,
    body: Option<RequestBody>,
}

impl Replay {
    fn body(&mut self) -> &mut RequestBody {
        let held = self.held;
        self.body.get_or_insert_with(|| {
            let mut body = (self.make)();
            if let Some(announced) = held {
                body.hold_to_length(announced);
            }
            body
        })
    }
}

/// Opens when the server answers 100, or after the configured wait.
pub(crate) struct Gate {
    pub open: tokio::sync::oneshot::Receiver<()>,
    /// (Made by the runtime that sends the request, polled by the
    /// connection's task, which another runtime may drive, and go on after
    /// the first one shut down: a `RuntimeTimer`.)
    pub timer: Pin<Box<RuntimeTimer>>,
    pub state: std::sync::Arc<GateState>,
}

/// What the client learns from a gate after the attempt.
#[derive(Default)]
pub(crate) struct GateState {
    /// The body started to go out.
    pub released: std::sync::atomic::AtomicBool,
    /// ...because the server said 100 Continue (not because we gave up waiting).
    pub by_server: std::sync::atomic::AtomicBool,
    /// ...because `expect_continue_timeout` ran out: the server may ignore
    /// the expectation. (A final answer before either says nothing.)
    pub by_timer: std::sync::atomic::AtomicBool,
    /// The server answered `100 Continue`, in time or after the timer let
    /// the body go (a handler that reads the body only after slow work of
    /// its own: Go's net/http sends 100 at its first read).
    pub continued: std::sync::atomic::AtomicBool,
    /// Whether the connection read anything since the request went: a
    /// server that began to answer may have acted on the head alone.
    pub reads: Option<crate::connect::tcp::ReadWatch>,
}

impl std::fmt::Debug for GateState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateState")
            .field("released", &self.released)
            .field("by_server", &self.by_server)
            .field("by_timer", &self.by_timer)
            .finish_non_exhaustive()
    }
}

impl GateState {
    /// Whether the server began to answer (anything was read on the
    /// connection) since the request went. (No watch: assume it did.)
    pub(crate) fn answer_began(&self) -> bool {
        self.reads
            .as_ref()
            .is_none_or(crate::connect::tcp::ReadWatch::read_since)
    }

    /// A final answer came before a 100 Continue or the timer let the body
    /// go (the body may have gone after it, or not at all).
    pub(crate) fn answered_first(&self) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        !self.by_server.load(Acquire) && !self.by_timer.load(Acquire)
    }
}

impl RequestBody {
    /// No body.
    ///
    /// ```
    /// use freshpool::RequestBody;
    /// let request = http::Request::delete("http://127.0.0.1:8080/items/7")
    ///     .body(RequestBody::empty())
    ///     .unwrap();
    /// assert!(request.body().is_replayable());
    /// ```
    pub fn empty() -> RequestBody {
        RequestBody { payload: None }
    }

    fn of(payload: Payload) -> RequestBody {
        RequestBody {
            payload: Some(Box::new(payload)),
        }
    }

    /// A streamed body (not replayable: a failed request is not retried
    /// unless it provably never left; see [`RequestBody::replayable`]). It need not be `Sync`: an axum
    /// request's body, or an `UnsyncBoxBody`, can be forwarded as it is.
    ///
    /// ```
    /// use freshpool::RequestBody;
    /// use http_body_util::Full;
    /// let body = RequestBody::wrap(Full::new(bytes::Bytes::from_static(b"x")));
    /// assert!(!body.is_replayable());
    /// ```
    pub fn wrap<B>(body: B) -> RequestBody
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let body =
            Unsync::new(body.map_err(|e| BoxError::from(crate::error::RequestBodyError(e.into()))));
        match body.size_hint().exact() {
            Some(left) => RequestBody::of(Payload::Stream(Box::pin(ExactLength::new(
                body, left, false,
            )))),
            None => RequestBody::of(Payload::Stream(Box::pin(body))),
        }
    }

    /// A body made again for each attempt by `make` (a file reopened, a
    /// stream built anew), so that it can be retried as a body in memory
    /// can: a request on a pooled connection that died under it goes
    /// again (when its method allows), and a body behind `Expect:
    /// 100-continue` is held back. As Go's `Request.GetBody` and OkHttp's
    /// `RequestBody` that is not one-shot. `make` runs once here (the
    /// first attempt's body) and once for each retry; every body it makes must be the
    /// same (the same length, if it says one).
    ///
    /// ```
    /// use freshpool::RequestBody;
    /// use http_body_util::Full;
    /// let body = RequestBody::replayable(|| {
    ///     RequestBody::wrap(Full::new(bytes::Bytes::from_static(b"streamed, made again")))
    /// });
    /// assert!(body.is_replayable());
    /// ```
    pub fn replayable<F>(make: F) -> RequestBody
    where
        F: Fn() -> RequestBody + Send + Sync + 'static,
    {
        let body = make();
        RequestBody::of(Payload::Replayable(Box::new(Replay {
            make: Arc::new(make),
            hint: body.size_hint(),
            held: None,
            body: Some(body),
        })))
    }

    /// True when the body is in memory and can be sent again.
    ///
    /// ```
    /// use freshpool::RequestBody;
    /// use http_body_util::Full;
    /// assert!(RequestBody::from("in memory").is_replayable());
    /// let streamed = RequestBody::wrap(Full::new(bytes::Bytes::from_static(b"streamed")));
    /// assert!(!streamed.is_replayable());
    /// ```
    pub fn is_replayable(&self) -> bool {
        matches!(
            self.payload.as_deref(),
            None | Some(Payload::Full(_) | Payload::Replayable(_))
        )
    }

    /// A copy for a retry, when the body is in memory.
    pub(crate) fn try_clone(&self) -> Option<RequestBody> {
        match self.payload.as_deref() {
            None => Some(RequestBody::empty()),
            Some(Payload::Full(b)) => Some(RequestBody::of(Payload::Full(b.clone()))),
            Some(Payload::Replayable(r)) => {
                Some(RequestBody::of(Payload::Replayable(Box::new(Replay {
                    make: r.make.clone(),
                    hint: r.hint,
                    held: r.held,
                    body: None,
                }))))
            }
            Some(_) => None,
        }
    }

    /// No body at all (`RequestBody::empty`, or an empty buffer, which
    /// `From` turns into it).
    pub(crate) fn is_empty_in_memory(&self) -> bool {
        self.payload.is_none()
    }

    /// Length when known up front.
    pub(crate) fn len(&self) -> Option<u64> {
        self.size_hint().exact()
    }

    pub(crate) fn gated(self, gate: Gate) -> RequestBody {
        RequestBody::of(Payload::Gated(gate, self.ungated()))
    }

    /// For a streamed body: what says once hyper is done with it, so that
    /// a connection whose response ended while its request body was still
    /// going out is not pooled (HTTP/1: the next request would wait for
    /// that upload), or its stream not given back before (HTTP/2: the
    /// server still counts it).
    ///
    /// A body in memory is tracked over HTTP/2 only, and only past
    /// [`UNTRACKED_IN_MEMORY`]: HTTP/1 writes it whole with the head, but
    /// HTTP/2 sends it as flow control allows, so after an early answer
    /// hyper may hold most of a large one until the server reads it.
    pub(crate) fn track_end(&mut self, http2: bool) -> Option<Arc<UploadEnd>> {
        match self.payload.as_deref_mut()? {
            Payload::Full(b) if !http2 || b.len() as u64 <= UNTRACKED_IN_MEMORY => return None,
            Payload::Gated(_, inner) => return inner.track_end(http2),
            Payload::Replayable(r) => return r.body().track_end(http2),
            Payload::Full(_) | Payload::Stream(_) => {}
        }
        let inner = match self.payload.take().map(|p| *p) {
            Some(Payload::Stream(inner)) if http2 => Box::pin(Rechunked::new(inner)),
            Some(Payload::Stream(inner)) => inner,
            Some(Payload::Full(b)) => Box::pin(InChunks(b)),
            _ => unreachable!("matched Full or Stream above"),
        };
        let done = Arc::new(UploadEnd::default());
        let tracked = TrackEnd {
            inner,
            done: done.clone(),
        };
        *self = RequestBody::of(Payload::Stream(Box::pin(tracked)));
        Some(done)
    }

    /// Holds a streamed body of unknown length to `announced` bytes (the
    /// caller's `Content-Length`): ending short of it or going past it is
    /// then the body's error, as for a body that announced its own length.
    /// (A body whose length is known is checked against the header before
    /// the request goes: `client::content_length`.)
    pub(crate) fn hold_to_length(&mut self, announced: u64) {
        if let Some(Payload::Replayable(r)) = self.payload.as_deref_mut() {
            // (A body not made yet is held when it is: `Replay::body`.)
            r.held = Some(announced);
            if let Some(body) = r.body.as_mut() {
                body.hold_to_length(announced);
            }
            return;
        }
        if !matches!(self.payload.as_deref(), Some(Payload::Stream(_))) {
            return;
        }
        let Some(Payload::Stream(inner)) = self.payload.take().map(|p| *p) else {
            unreachable!("matched Stream above")
        };
        *self = RequestBody::of(Payload::Stream(Box::pin(ExactLength::new(
            inner, announced, true,
        ))));
    }

    /// Whether `prepare` put a gate on it (an `Expect` of the pool's).
    pub(crate) fn is_gated(&self) -> bool {
        matches!(self.payload.as_deref(), Some(Payload::Gated(..)))
    }

    /// The body without its `Expect: 100-continue` gate (a request hyper
    /// handed back unsent goes again with a new gate, or none).
    pub(crate) fn ungated(self) -> RequestBody {
        match self.payload.map(|p| *p) {
            Some(Payload::Gated(_, inner)) => inner.ungated(),
            payload => RequestBody {
                payload: payload.map(Box::new),
            },
        }
    }
}

impl Default for RequestBody {
    fn default() -> Self {
        RequestBody::empty()
    }
}

impl From<Bytes> for RequestBody {
    fn from(b: Bytes) -> Self {
        if b.is_empty() {
            RequestBody::empty()
        } else {
            RequestBody::of(Payload::Full(b))
        }
    }
}
impl From<Vec<u8>> for RequestBody {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}
impl From<String> for RequestBody {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}
impl From<&'static str> for RequestBody {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}
impl From<&'static [u8]> for RequestBody {
    fn from(s: &'static [u8]) -> Self {
        Bytes::from_static(s).into()
    }
}
impl From<()> for RequestBody {
    fn from(_: ()) -> Self {
        RequestBody::empty()
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.payload.as_deref_mut() {
            None => Poll::Ready(None),
            Some(Payload::Full(_)) => match self.payload.take().map(|p| *p) {
                Some(Payload::Full(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
                _ => unreachable!("matched Full above"),
            },
            Some(Payload::Stream(s)) => s.as_mut().poll_frame(cx),
            Some(Payload::Replayable(r)) => Pin::new(r.body()).poll_frame(cx),
            Some(Payload::Gated(gate, inner)) => {
                use std::sync::atomic::Ordering::Release;
                if !gate
                    .state
                    .released
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    // `open` ends once (a finished oneshot panics if polled
                    // again): with 100 Continue, or closed when the server
                    // answered without one (hyper drops the informational
                    // callback at the final response head). Either way the
                    // wait is over: the body goes (if hyper still wants it).
                    let by_server = !gate.open.is_terminated()
                        && matches!(Pin::new(&mut gate.open).poll(cx), Poll::Ready(Ok(())));
                    let answered = !by_server && gate.open.is_terminated();
                    // (No timer can keep the wait outside any runtime: the
                    // body goes, as if the wait ran out.)
                    let by_timer =
                        !by_server && !answered && gate.timer.as_mut().poll_passed(cx).is_ready();
                    if !(by_server || answered || by_timer) {
                        return Poll::Pending;
                    }
                    gate.state.by_server.store(by_server, Release);
                    gate.state.by_timer.store(by_timer, Release);
                    gate.state.released.store(true, Release);
                }
                Pin::new(inner).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.payload.as_deref() {
            None => true,
            Some(Payload::Full(_)) => false,
            Some(Payload::Stream(s)) => s.is_end_stream(),
            Some(Payload::Gated(_, inner)) => inner.is_end_stream(),
            Some(Payload::Replayable(r)) => r
                .body
                .as_ref()
                .map_or(r.hint.exact() == Some(0), |b| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.payload.as_deref() {
            None => SizeHint::with_exact(0),
            Some(Payload::Full(b)) => SizeHint::with_exact(b.len() as u64),
            Some(Payload::Stream(s)) => s.size_hint(),
            Some(Payload::Gated(_, inner)) => inner.size_hint(),
            Some(Payload::Replayable(r)) => {
                r.body.as_ref().map_or_else(|| r.hint, |b| b.size_hint())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The sizes `Payload`'s note relies on: the request with hyper's
    /// callback beside it (16 bytes) and a tag stays within 256.
    #[test]
    fn a_request_stays_within_one_vector_copy() {
        use std::mem::size_of;
        assert_eq!(size_of::<RequestBody>(), 8);
        let request = size_of::<http::Request<RequestBody>>();
        assert!(request + 16 + 8 <= 256, "a request is {request} bytes");
    }

    /// A body that is not `Sync` (axum's request body, an
    /// `UnsyncBoxBody`) can be wrapped, and reads back what it holds: its
    /// end and size are known before and after each poll.
    #[tokio::test]
    async fn a_body_that_is_not_sync_can_be_wrapped() {
        struct NotSync(std::cell::Cell<u8>, Option<Bytes>);
        impl http_body::Body for NotSync {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
                self.0.set(self.0.get() + 1);
                Poll::Ready(self.1.take().map(|b| Ok(Frame::data(b))))
            }
            fn is_end_stream(&self) -> bool {
                self.1.is_none()
            }
        }
        fn send_and_sync<T: Send + Sync>(_: &T) {}
        let body = RequestBody::wrap(NotSync(
            Default::default(),
            Some(Bytes::from_static(b"abc")),
        ));
        send_and_sync(&body);
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
        let empty = RequestBody::wrap(NotSync(Default::default(), None));
        assert!(empty.is_end_stream());
    }

    /// Over HTTP/2 a large body in memory is tracked and goes out in
    /// frame-sized chunks (whole, in order); a small one, or any over
    /// HTTP/1, is left as it is.
    #[tokio::test]
    async fn a_large_body_in_memory_is_tracked_over_http2_only() {
        let large: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut http1 = RequestBody::from(large.clone());
        assert!(http1.track_end(false).is_none());
        assert!(http1.is_replayable());
        let mut small = RequestBody::from(vec![1u8; 16 * 1024]);
        assert!(small.track_end(true).is_none());
        let mut body = RequestBody::from(large.clone());
        let done = body.track_end(true).expect("tracked");
        assert_eq!(body.len(), Some(40_000));
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        let sizes: Vec<usize> = frames.iter().map(bytes::Bytes::len).collect();
        assert_eq!(sizes, [16_384, 16_384, 7_231, 1]);
        assert_eq!(frames.concat(), large);
        assert!(!done.is_done(), "hyper still holds the body");
        drop(body);
        assert!(done.is_done());
    }

    /// Each kind reports its length, end and replayability; a body in
    /// memory yields its bytes once, then ends.
    #[tokio::test]
    async fn every_kind_reads_back_what_it_holds() {
        let empty = RequestBody::empty();
        assert!(empty.is_end_stream() && empty.is_replayable() && empty.is_empty_in_memory());
        assert_eq!(empty.len(), Some(0));
        assert!(RequestBody::from("").is_empty_in_memory());

        let full = RequestBody::from("hello");
        assert!(!full.is_end_stream() && full.is_replayable() && !full.is_empty_in_memory());
        assert_eq!(full.len(), Some(5));
        let copy = full.try_clone().expect("in memory");
        assert_eq!(full.collect().await.unwrap().to_bytes(), "hello");
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello");

        let stream = RequestBody::wrap(http_body_util::Full::new(Bytes::from_static(b"abc")));
        assert!(!stream.is_replayable() && stream.try_clone().is_none());
        assert_eq!(stream.len(), Some(3));
        assert_eq!(stream.collect().await.unwrap().to_bytes(), "abc");
    }

    fn new_gate(timer: Duration) -> (tokio::sync::oneshot::Sender<()>, Gate) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gate = Gate {
            open: rx,
            timer: Box::pin(RuntimeTimer::after(timer)),
            state: std::sync::Arc::new(GateState::default()),
        };
        (tx, gate)
    }

    /// The server answered without `100 Continue` (hyper dropped the
    /// informational callback, closing the gate's channel) while the gate's
    /// timer still ran: the body goes at once. It used to wait for the
    /// timer and then poll the finished channel again, which panics
    /// ("called after complete").
    #[tokio::test]
    async fn a_gate_whose_channel_closes_opens_and_never_polls_it_again() {
        use std::sync::atomic::Ordering::Acquire;
        let (tx, gate) = new_gate(Duration::from_millis(50));
        let state = gate.state.clone();
        let mut body = RequestBody::from("payload").gated(gate);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        drop(tx);
        // Polled again and again, as hyper does whenever its task wakes.
        let frame = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(
            matches!(frame, Poll::Ready(Some(Ok(_)))),
            "the body goes once the channel closed"
        );
        assert!(state.released.load(Acquire) && !state.by_server.load(Acquire));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));

        // 100 Continue: by the server; the timer alone: not.
        let (tx, gate) = new_gate(Duration::from_secs(60));
        let state = gate.state.clone();
        let mut body = RequestBody::from("x").gated(gate);
        tx.send(()).unwrap();
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_ready());
        assert!(state.released.load(Acquire) && state.by_server.load(Acquire));
        let (_tx, gate) = new_gate(Duration::from_millis(1));
        let state = gate.state.clone();
        let mut body = RequestBody::from("x").gated(gate);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_ready());
        assert!(state.released.load(Acquire) && !state.by_server.load(Acquire));
    }

    /// A request handed back unsent loses its gate with its `Expect`
    /// header; a gate put on a gated body replaces the old one.
    #[test]
    fn ungated_and_regated_bodies_keep_one_gate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let (_a, first) = new_gate(Duration::from_secs(60));
        let (_b, second) = new_gate(Duration::from_secs(60));
        let body = RequestBody::from("abc").gated(first);
        assert!(!body.is_replayable());
        let plain = body.ungated();
        assert!(plain.is_replayable(), "the in-memory body again");
        assert_eq!(plain.len(), Some(3));
        let twice = RequestBody::from("abc")
            .gated(second)
            .gated(new_gate(Duration::ZERO).1);
        match twice.payload.as_deref() {
            Some(Payload::Gated(_, inner)) => {
                assert!(matches!(inner.payload.as_deref(), Some(Payload::Full(_))));
            }
            _ => panic!("gated"),
        }
    }
}
