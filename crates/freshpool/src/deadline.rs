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
        sleep: Option<Pin<Box<Sleep>>>,
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
            sleep: limit.map(|d| Box::pin(tokio::time::sleep(d))),
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
        match this.sleep {
            Some(sleep) => sleep.as_mut().poll(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
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
        sleep: Option<Sleep>,
        at: tokio::time::Instant,
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
            sleep: None,
            at: tokio::time::Instant::now() + limit,
            authority,
            limit,
        })
    }

    /// When it ends.
    pub(crate) fn at(&self) -> tokio::time::Instant {
        self.at
    }

    /// How long it was set for (the `timeout` setting).
    pub(crate) fn limit(&self) -> Duration {
        self.limit
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
        Box::pin(RequestDeadline {
            sleep: Some(tokio::time::sleep_until(at)),
            at,
            authority,
            limit,
        })
    }

    /// Ready with the timeout error once the deadline passed; `during`
    /// ends its message with what was under way ("" while waiting for the
    /// response head).
    pub(crate) fn poll_elapsed(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        during: &str,
    ) -> Poll<crate::Error> {
        let mut this = self.project();
        // Passed already: no timer to ask (one made on a runtime since shut
        // down panics when polled, and a body may outlive its runtime).
        if tokio::time::Instant::now() < *this.at {
            if this.sleep.is_none() {
                this.sleep.set(Some(tokio::time::sleep_until(*this.at)));
            }
            let sleep = this.sleep.as_pin_mut().expect("set above");
            std::task::ready!(sleep.poll(cx));
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
