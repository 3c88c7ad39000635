//! An optional deadline around a future, as one type.
//!
//! `match limit { None => f.await, Some(d) => timeout(d, f).await }` gives
//! the caller's state machine two slots, one per arm, each as large as `f`;
//! on the request path that doubled a multi-kilobyte future that is then
//! moved on every poll. [`MaybeTimeout`] keeps one slot either way, and
//! boxes the timer: a `Sleep` is ~100 bytes that every request future would
//! carry (and copy) even with no limit set, the default; with a limit the
//! box is one allocation beside the timer registration.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

pin_project_lite::pin_project! {
    /// `fut`, failed with `Err(Elapsed)` when `limit` (if any) passes first.
    pub(crate) struct MaybeTimeout<F> {
        #[pin]
        fut: F,
        // (A `RuntimeTimer`: the request's future may go on under another
        // runtime than the one that dispatched it, which may shut down.)
        sleep: Option<Pin<Box<RuntimeTimer>>>,
    }
}

/// The deadline passed before the future finished.
#[derive(Debug)]
pub(crate) struct Elapsed;

impl<F: Future> MaybeTimeout<F> {
    // Inlined so a large `fut` is built in place, not copied in and out.
    #[inline(always)]
    pub(crate) fn new(fut: F, limit: Option<Duration>) -> Self {
        MaybeTimeout {
            fut,
            // (Outside any tokio runtime, where a request may be polled by
            // a caller's own executor, no timer can be made: tokio panicked,
            // "no reactor running". The future then runs unbounded there.)
            sleep: limit.map(|d| Box::pin(RuntimeTimer::after(d))),
        }
    }
}

impl<F: Future> Future for MaybeTimeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The future first: an answer that is ready wins over the deadline.
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match this
            .sleep
            .as_mut()
            .map(|timer| timer.as_mut().poll_passed(cx))
        {
            Some(Poll::Ready(Ok(()))) => Poll::Ready(Err(Elapsed)),
            Some(Poll::Ready(Err(NoTimer)) | Poll::Pending) | None => Poll::Pending,
        }
    }
}

/// One request's overall timeout, in place of the client's
/// [`timeout`](crate::ClientBuilder::timeout) setting: put it in the
/// request's extensions. Like the setting, it bounds the whole request,
/// from the wait for a connection to the end of the response body, and
/// ends it with a [`Kind::Timeout`](crate::Kind::Timeout) error that names
/// the limit (or, while the request waits for the pool, the pool's state).
///
/// Per request, as reqwest's `RequestBuilder::timeout` and Go's context
/// deadlines: a health check that must answer within a second and a large
/// download can share one client, and so one pool.
///
/// ```
/// use std::time::Duration;
/// use freshpool::Timeout;
///
/// let mut check = http::Request::get("http://127.0.0.1:8080/health").body(()).unwrap();
/// check.extensions_mut().insert(Timeout::after(Duration::from_secs(1)));
///
/// // No overall timeout for this one, whatever the client's setting.
/// let mut download = http::Request::get("http://127.0.0.1:8080/big").body(()).unwrap();
/// download.extensions_mut().insert(Timeout::none());
/// # let _ = (check, download);
/// ```
///
/// A limit of zero, or of more than a year, fails the request with a
/// [`Kind::Config`](crate::Kind::Config) error before anything is sent.
/// The other timeouts (`pool_timeout`, `connect_timeout`,
/// `tls_handshake_timeout`, `response_header_timeout`, `read_timeout`)
/// still apply: whichever ends first ends the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout(Option<Duration>);

impl Timeout {
    /// This request ends with a timeout error `limit` after it starts.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(freshpool::Timeout::after(Duration::from_secs(2)).limit(), Some(Duration::from_secs(2)));
    /// ```
    pub fn after(limit: Duration) -> Timeout {
        Timeout(Some(limit))
    }

    /// This request has no overall timeout, even if the client sets one.
    ///
    /// ```
    /// assert_eq!(freshpool::Timeout::none().limit(), None);
    /// ```
    pub fn none() -> Timeout {
        Timeout(None)
    }

    /// The limit (`None`: none).
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(freshpool::Timeout::after(Duration::from_millis(250)).limit(), Some(Duration::from_millis(250)));
    /// ```
    pub fn limit(self) -> Option<Duration> {
        self.0
    }
}

impl Timeout {
    /// The overall limit of `request`: its own `Timeout`, taken out of its
    /// extensions (a retry copy then carries none, and a bare request stays
    /// bare), else the client's `setting`. A limit no timer can keep is a
    /// `Config` error, as the setting's would be at `build()`.
    ///
    /// (Inlined up to the empty-extensions check, which is every `get` and
    /// `post`: out of line it cost ~20 instructions per request, callgrind.)
    #[inline(always)]
    pub(crate) fn take_from<B>(
        request: &mut http::Request<B>,
        setting: Option<Duration>,
    ) -> Result<Option<Duration>, crate::Error> {
        if request.extensions().is_empty() {
            return Ok(setting);
        }
        Timeout::take_own(request, setting)
    }

    #[inline(never)]
    fn take_own<B>(
        request: &mut http::Request<B>,
        setting: Option<Duration>,
    ) -> Result<Option<Duration>, crate::Error> {
        let Some(Timeout(own)) = request.extensions_mut().remove::<Timeout>() else {
            return Ok(setting);
        };
        let Some(limit) = own else {
            return Ok(None);
        };
        let host = request.uri().host().unwrap_or("");
        if limit == Duration::ZERO {
            return Err(crate::Error::config(format!(
                "the request to {host} has a Timeout of zero: it could never be sent (Timeout::none() switches the timeout off)"
            )));
        }
        if limit > crate::config::LONGEST_SETTING {
            return Err(crate::Error::config(format!(
                "the request to {host} has a Timeout of {limit:?}, longer than a year (Timeout::none() switches the timeout off)"
            )));
        }
        Ok(Some(limit))
    }
}

/// The overall timeout of one request (its own [`Timeout`] or the
/// client's setting) once it has started: when it ends, and how long it
/// was set for (which the errors name).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OverallDeadline {
    pub at: tokio::time::Instant,
    pub limit: Duration,
}

pin_project_lite::pin_project! {
    /// A timer for one instant that may be polled under any runtime, or
    /// none: a response body may be read anywhere, and a tokio `Sleep`
    /// panics when polled after its runtime shut down, or made outside
    /// one. It is made (again) by the runtime that polls it, when that is
    /// not the one whose timer it is: the other may have shut down. Polled
    /// outside any runtime, the one made stays while its runtime may still
    /// run it (`has_shut_down`); else no timer can keep the instant there
    /// ([`NoTimer`]), and the owner says what that means.
    pub(crate) struct RuntimeTimer {
        #[pin]
        sleep: Option<Sleep>,
        // The runtime whose timer `sleep` is. Its handle, not its id: read
        // outside any runtime, it is asked whether it shut down.
        runtime: Option<tokio::runtime::Handle>,
        // The task that asks it (`has_shut_down`), while that one has not
        // run: one at a time.
        probe: Option<tokio::task::JoinHandle<()>>,
        at: tokio::time::Instant,
    }
}

/// No timer can keep a [`RuntimeTimer`]'s instant where it is polled:
/// outside any tokio runtime, with none made, or its runtime shut down.
pub(crate) struct NoTimer;

impl RuntimeTimer {
    /// For `at`, its timer made at its first poll.
    pub(crate) fn unmade(at: tokio::time::Instant) -> RuntimeTimer {
        RuntimeTimer {
            sleep: None,
            runtime: None,
            probe: None,
            at,
        }
    }

    /// For `at`, its timer made now if this runs under a runtime (then it
    /// can be kept outside one later).
    pub(crate) fn made_here(at: tokio::time::Instant) -> RuntimeTimer {
        let runtime = tokio::runtime::Handle::try_current().ok();
        RuntimeTimer {
            sleep: runtime.as_ref().map(|_| tokio::time::sleep_until(at)),
            runtime,
            probe: None,
            at,
        }
    }

    /// `limit` from now, its timer made now if this runs under a runtime.
    pub(crate) fn after(limit: Duration) -> RuntimeTimer {
        RuntimeTimer::made_here(tokio::time::Instant::now() + limit)
    }

    /// When it passes.
    pub(crate) fn at(&self) -> tokio::time::Instant {
        self.at
    }

    /// Makes the timer now, if none is made yet.
    fn arm(self: Pin<&mut Self>) -> Result<(), NoTimer> {
        let mut this = self.project();
        if this.sleep.is_none() {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| NoTimer)?;
            *this.runtime = Some(runtime);
            this.sleep.set(Some(tokio::time::sleep_until(*this.at)));
        }
        Ok(())
    }

    /// Ready once the instant passed, with a wake-up registered until then;
    /// `Err(NoTimer)` if no timer can keep it here.
    pub(crate) fn poll_passed(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), NoTimer>> {
        let mut this = self.project();
        // Passed already: no timer to ask (one made on a runtime since shut
        // down panics when polled).
        if tokio::time::Instant::now() >= *this.at {
            return Poll::Ready(Ok(()));
        }
        let here = tokio::runtime::Handle::try_current().ok();
        let made_by = this.runtime.as_ref().map(|h| h.id());
        // Made here if there is none yet, or if it is another runtime's: a
        // body read on a runtime of its own after the request's shut down
        // (`#[tokio::test]`s, a runtime per call in a blocking wrapper, a
        // read given up under one runtime and taken up under another)
        // panicked there.
        if this.sleep.is_none() || here.as_ref().is_some_and(|h| Some(h.id()) != made_by) {
            let Some(runtime) = here else {
                // None made, and none can be here (tokio panicked, "no
                // reactor running").
                return Poll::Ready(Err(NoTimer));
            };
            this.sleep.set(Some(tokio::time::sleep_until(*this.at)));
            *this.runtime = Some(runtime);
            *this.probe = None;
        } else if here.is_none()
            && this
                .runtime
                .as_ref()
                .is_some_and(|h| has_shut_down(h, this.probe))
        {
            // Outside any runtime after the timer's shut down: none can be
            // made here, as above.
            return Poll::Ready(Err(NoTimer));
        }
        let sleep = this.sleep.as_pin_mut().expect("set above");
        sleep.poll(cx).map(Ok)
    }
}

pin_project_lite::pin_project! {
    /// The client's overall `timeout` of one request, from its start to the
    /// end of its response body, with what its error names. Boxed where it
    /// is kept (only when a `timeout` is set): the request future holds one
    /// until the response head, the response `Body` one for the same
    /// instant (`at`, `until`).
    ///
    /// Why not `MaybeTimeout`: the error needs the authority and the
    /// limit, and keeping them beside a `MaybeTimeout` made the request
    /// future 104 bytes instead of 56 and cost 107 instructions per request
    /// (callgrind), with no timeout set. Here everything a timeout needs
    /// is one optional box.
    ///
    /// The request's timer is made at the first poll, not with the
    /// deadline (`start`): a request future may be made outside any runtime
    /// (`rt.block_on(client.get(url))` evaluates `get` first), where
    /// tokio's `Sleep` panics. The body's is made with it (`until`, in the
    /// send loop, on the runtime), since a body may be read anywhere.
    pub(crate) struct RequestDeadline {
        #[pin]
        timer: RuntimeTimer,
        authority: Option<http::uri::Authority>,
        limit: Duration,
    }
}

impl RequestDeadline {
    /// A deadline `limit` from now (at most a year: `config::validate`),
    /// its timer made at the first poll (the request future may be made
    /// outside a runtime).
    pub(crate) fn start(
        limit: Duration,
        authority: Option<http::uri::Authority>,
    ) -> Pin<Box<RequestDeadline>> {
        Box::pin(RequestDeadline {
            timer: RuntimeTimer::unmade(tokio::time::Instant::now() + limit),
            authority,
            limit,
        })
    }

    /// When it ends.
    pub(crate) fn at(&self) -> tokio::time::Instant {
        self.timer.at()
    }

    /// How long it was set for (the `timeout` setting, or the request's
    /// own `Timeout`).
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// When it ends and how long it was set for.
    pub(crate) fn overall(&self) -> OverallDeadline {
        OverallDeadline {
            at: self.at(),
            limit: self.limit,
        }
    }

    /// Whether it has passed, by the clock (`Sleep::is_elapsed` stays
    /// false for a timer never polled, as when every poll finds data).
    pub(crate) fn has_passed(&self) -> bool {
        tokio::time::Instant::now() >= self.at()
    }

    /// Another deadline at `at` (the same request's, for its body), its
    /// timer made now: this runs in the send loop, on the runtime, while
    /// the body may be read anywhere (`futures::executor::block_on`),
    /// where making a tokio timer panics.
    pub(crate) fn until(
        at: tokio::time::Instant,
        limit: Duration,
        authority: Option<http::uri::Authority>,
    ) -> Pin<Box<RequestDeadline>> {
        // (None outside any runtime, where tokio panics making one: a
        // request first polled in one and finished by another executor.)
        Box::pin(RequestDeadline {
            timer: RuntimeTimer::made_here(at),
            authority,
            limit,
        })
    }

    /// Makes the timer, before the request is first polled: outside any
    /// tokio runtime (a caller's own executor) none can be made, and the
    /// request fails before anything is sent. (Checked at the first wait,
    /// a request on a warm connection was already written when it failed.)
    pub(crate) fn arm(self: Pin<&mut Self>) -> Result<(), crate::Error> {
        self.project().timer.arm().map_err(|NoTimer| no_runtime())
    }

    /// Ready with the timeout error once the deadline passed; `during`
    /// ends its message with what was under way ("" while waiting for the
    /// response head).
    pub(crate) fn poll_elapsed(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        during: &str,
    ) -> Poll<crate::Error> {
        let this = self.project();
        if let Err(NoTimer) = std::task::ready!(this.timer.poll_passed(cx)) {
            // The timeout cannot be kept here: said so, rather than a read
            // that may hang past it.
            return Poll::Ready(no_runtime().mark_possibly_processed());
        }
        let origin = this.authority.as_ref().map_or("", |a| a.as_str());
        // (It may have ended the request before or after its write: read
        // as "may have", the safe answer. A request still waiting for the
        // pool is ended by its wait instead, with why: `Queued::wait`.)
        Poll::Ready(
            crate::Error::new(
                crate::Kind::Timeout,
                format!(
                    "request to {origin} timed out after {} (timeout){during}",
                    crate::error::fmt_duration(*this.limit)
                ),
            )
            .mark_possibly_processed(),
        )
    }
}

/// Whether `handle`'s runtime has shut down. tokio has no such question,
/// but cancels every task of a runtime that shuts down, and a task spawned
/// on one already shut down before it returns its handle. So an empty task
/// is spawned there (`probe`) and asked: cancelled, the runtime is gone;
/// pending, it is alive (perhaps a current-thread runtime nobody drives
/// now), and the same task is asked again at the next wait, so that waits
/// do not pile tasks up in its queue. A probe that finished tells nothing
/// about now (the runtime may have shut down since it ran): a new one is
/// spawned and asked at once. (Asked only of a body read outside any
/// runtime: a rare path. A runtime that shuts down between this and the
/// timer's poll still panics it.)
fn has_shut_down(
    handle: &tokio::runtime::Handle,
    probe: &mut Option<tokio::task::JoinHandle<()>>,
) -> bool {
    struct NoWake;
    impl std::task::Wake for NoWake {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(NoWake));
    let mut cx = Context::from_waker(&waker);
    // (At most twice: a finished probe, then a fresh one.)
    for _ in 0..2 {
        let task = probe.get_or_insert_with(|| handle.spawn(async {}));
        match Pin::new(task).poll(&mut cx) {
            Poll::Ready(Err(e)) if e.is_cancelled() => return true,
            Poll::Ready(_) => *probe = None,
            Poll::Pending => return false,
        }
    }
    // Two probes ran at once (a multi-thread runtime's idle worker): alive.
    false
}

/// The overall timeout cannot be kept: no tokio runtime to time it.
fn no_runtime() -> crate::Error {
    crate::Error::new(
        crate::Kind::Closed,
        "no async runtime: a request with a timeout was polled outside any tokio runtime, \
         where its timer cannot run (await it inside one)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limit_fails_a_slow_future_and_none_waits() {
        let slow = tokio::time::sleep(Duration::from_secs(30));
        let r = MaybeTimeout::new(slow, Some(Duration::from_millis(20))).await;
        assert!(r.is_err());
        let later = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            7
        };
        assert_eq!(MaybeTimeout::new(later, None).await.unwrap(), 7);
        let quick = async { 3 };
        let r = MaybeTimeout::new(quick, Some(Duration::ZERO)).await;
        assert_eq!(r.unwrap(), 3, "a ready answer beats an elapsed deadline");
    }
}
