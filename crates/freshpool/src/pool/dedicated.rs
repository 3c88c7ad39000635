//! A retry's own connection: after an attempt on a reused connection
//! failed in a way a stale connection fails, the request goes again on a
//! newly dialed HTTP/1 connection, never on another idle one that may have
//! died the same way (after a NAT's or a freeze's loss, every idle one
//! has). The wait for that dial is held to the request's `timeout`, and
//! says what it waited for.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use super::*;
use crate::deadline::{NoTimer, OverallDeadline, RuntimeTimer};

impl Pool {
    /// Like [`Pool::checkout`], but for a retry after a stale connection
    /// failed: the request gets a newly dialed HTTP/1 connection, never
    /// another idle one that may have died the same way. Falls back to a
    /// normal checkout when no slot is free (or the origin multiplexes).
    pub(crate) async fn checkout_dedicated(
        &self,
        uri: &http::Uri,
        security: &Arc<SecurityContext>,
        connector: &Arc<Connector>,
        caller: &'static Location<'static>,
        // The request's overall timeout, if any: a retry that queues (no
        // slot for its own dial) waits under it as its first checkout
        // did, and times out with the pool's report. (Without it the
        // request's timer cut the wait off with "timed out after 10s
        // (timeout)" alone, uncounted.)
        request_timeout: Option<OverallDeadline>,
    ) -> Result<Lease, Error> {
        // (Counted: this wait spans `.await`s, past what a borrow may.)
        let origin = self.origin_for(uri, security, connector)?.arc();
        // No runtime to dial on (a request polled by a caller's own
        // executor): a normal checkout, which may find a connection idle
        // and says why it cannot wait for one. (A slot was reserved first,
        // and the retry failed with a bare "no async runtime".)
        let runtime = tokio::runtime::Handle::try_current().ok();
        let reserved = runtime.is_some()
            && origin
                .lock()
                .state
                .reserve_dedicated(origin.limits, &*origin.budget);
        let Some(handle) = runtime.filter(|_| reserved) else {
            return self
                .checkout(uri, security, connector, caller)?
                .lease(self, caller, request_timeout)
                .await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The guard owns the slot from here: dropped unspawned (no
        // runtime) or unpolled (its runtime shutting down), it gives the
        // slot back, and a dropped `tx` sends this request to a normal
        // checkout below.
        let (slot, dialing) = SlotGuard::new(&origin, None);
        // (Ends the dedicated count however the dial ends, unspawned too.)
        let dedicated = super::dial::DedicatedGuard::new(origin.clone());
        drop(handle.spawn(origin.clone().dial_dedicated(tx, slot, dialing, dedicated)));
        // Dropped before it takes the connection (its request cancelled
        // as the dial lands), the guard gives it to the pool: the dial,
        // finding the channel closed, does the same.
        let mut handoff = WaiterGuard {
            origin: origin.clone(),
            rx: Some(rx),
            waiter_id: None,
        };
        let handed = {
            let rx = handoff.rx.as_mut().expect("just set");
            // Under the request's `timeout`, as a queued wait is: cut off
            // from outside, a slow dial (a TLS handshake, a far host) read
            // "timed out after 1s (timeout)" alone, with nothing of the
            // retry or the dial that took the time.
            let mut timer = request_timeout.map(|t| Box::pin(RuntimeTimer::unmade(t.at)));
            let outcome = std::future::poll_fn(|cx| {
                if let Poll::Ready(handed) = Pin::new(&mut *rx).poll(cx) {
                    return Poll::Ready(Some(handed));
                }
                match timer.as_mut().map(|t| t.as_mut().poll_passed(cx)) {
                    Some(Poll::Ready(Ok(()))) => Poll::Ready(None),
                    // (No timer here, outside any runtime: the request's
                    // own timer, where one can run, ends it.)
                    Some(Poll::Ready(Err(NoTimer)) | Poll::Pending) | None => Poll::Pending,
                }
            })
            .await;
            let Some(handed) = outcome else {
                let limit = request_timeout.map_or(Duration::ZERO, |t| t.limit);
                // (The guard hands the connection to the pool when it lands.)
                drop(handoff);
                return Err(Error::new(
                    Kind::Timeout,
                    format!(
                        "request to {} timed out after {} (timeout) while a new connection was \
                         being made for its retry (name lookup, connect, TLS handshake), after \
                         the connection it was sent on failed",
                        origin.label,
                        fmt_duration(limit)
                    ),
                ));
            };
            handed
        };
        handoff.rx = None;
        match handed {
            Ok(Ok(Handoff::Exclusive(idle))) => {
                let now = self.inner.budget.stamp(Instant::now());
                let lease_id = origin.register_lease(&mut origin.lock(), now, caller, 0);
                let freeze_seen = origin.budget.freeze_at.load(Ordering::Acquire);
                Ok(Lease::new(
                    LeaseKind::H1(idle),
                    lease_id,
                    false,
                    false,
                    now,
                    freeze_seen,
                ))
            }
            Ok(Err(err)) => Err(err),
            Ok(Ok(Handoff::Stream { .. } | Handoff::AskAgain)) | Err(_) => {
                self.checkout(uri, security, connector, caller)?
                    .lease(self, caller, request_timeout)
                    .await
            }
        }
    }
}
