//! What a request holds while it uses a connection, and the guard that
//! cleans up a waiter that gave up.

use super::*;

/// The lease id of a lease that left the lease table (`Lease::unwatch`):
/// no record has it (a slab key past any it gives out).
pub(super) const NO_RECORD: usize = usize::MAX;

/// A connection (HTTP/1) or a stream (HTTP/2) lent to one request.
///
/// It holds its origin through what it was lent: an HTTP/1 connection's
/// record holds it (`H1Conn::origin`), an HTTP/2 stream's lease holds a
/// reference of its own. So taking and returning a connection counts no
/// reference (see "Who keeps an origin alive" in the module doc).
pub(crate) struct Lease {
    pub(super) kind: Option<LeaseKind>,
    pub(super) lease_id: usize,
    /// Taken from the pool, not freshly dialed.
    pub reused: bool,
    /// Counted as a reuse in the stats (see `counted_reuse`): set for an
    /// HTTP/2 stream that was not its connection's first. (An HTTP/1
    /// record says it itself.)
    counted_stream_reuse: bool,
    /// Its response body's reader waits for the next frame, as its record
    /// says (`note_awaited`; changed only on a change, under the lock).
    awaited: bool,
    /// When the server's `Keep-Alive: timeout` hint runs out (less the
    /// margin), counted from when its response arrived (see
    /// `keep_alive_hint`).
    keep_alive: Option<KeepAlive>,
    /// Why the connection must close when the lease ends (`None`: it may
    /// go back to the pool): the response said `Connection: close`, the
    /// request failed, or the check before reuse found it dead.
    pub not_reusable: Option<CloseReason>,
    /// The pool's last freeze (`Budget::freeze_at`) when it was handed
    /// over: one detected since (a changed value) means it was leased
    /// across a freeze. (Compared as a value, not as a time: the checkout's
    /// coarse clock and the detection's are different bounds.)
    freeze_seen: u64,
    /// When the pool handed it over, by the checkout's coarse clock (never
    /// before the real time: see `coarse_clock`), so idle ages computed
    /// from it err toward older (`idled`, asked before the request goes).
    /// Not for latencies (`metrics::Stopwatch`). Once its response head
    /// came late or its body is being read, moved on to when progress was
    /// last noted (`note_progress`):
    /// a field more would push every response past 256 bytes, where each
    /// of its moves costs a longer copy.
    taken_at: Stamp,
}

/// When the server's `Keep-Alive: timeout` (less the margin) runs out:
/// at an instant, or that long after the connection's return (see
/// `Lease::keep_alive_hint`).
#[derive(Clone, Copy)]
pub(crate) enum KeepAlive {
    Until(Stamp),
    AfterReturn(Duration),
}

pub(crate) enum LeaseKind {
    H1(Idle<H1Conn>),
    H2 {
        origin: Arc<Origin>,
        conn_id: u64,
        sender: http2::SendRequest<RequestBody>,
        /// The connection's shared stream limit, kept (the stream's
        /// checkout cloned it anyway) for its `DriverLost` mark.
        limit: crate::connect::StreamLimit,
    },
}

impl Lease {
    /// A lease registered as `lease_id`, handed over at `taken_at`.
    pub(super) fn new(
        kind: LeaseKind,
        lease_id: usize,
        reused: bool,
        counted_stream_reuse: bool,
        taken_at: Stamp,
        // `Budget::freeze_at` as read before the connection was judged
        // fresh (a later read could take in a freeze it was not judged by).
        freeze_seen: u64,
    ) -> Lease {
        Lease {
            freeze_seen,
            kind: Some(kind),
            lease_id,
            reused,
            counted_stream_reuse,
            awaited: false,
            keep_alive: None,
            not_reusable: None,
            taken_at,
        }
    }

    /// Whether its checkout counted a reuse in the stats (`reused`): a
    /// connection that served before (not every lease `reused` for the
    /// retry rule is one).
    pub(crate) fn counted_reuse(&self) -> bool {
        match &self.kind {
            Some(LeaseKind::H1(idle)) => !idle.fresh(),
            Some(LeaseKind::H2 { .. }) => self.counted_stream_reuse,
            None => false,
        }
    }

    /// Takes back the reuse its checkout counted (see `counted_reuse`):
    /// the try failed and the request goes again, to be counted once, by
    /// the connection that serves it.
    pub(crate) fn uncount_reuse(&self) {
        if self.counted_reuse() {
            self.origin().uncount_reuse();
        }
    }

    /// The server's `Keep-Alive: timeout`, read as its response arrives:
    /// its timer runs from about then (once it has sent the response), not
    /// from when the caller has read the body, which may be seconds later
    /// (a held response, a slow read of a buffered body), by when the
    /// server may be about to close. (The coarse clock errs earlier: on
    /// the safe side.)
    ///
    /// `arrived`: the whole response came with its head (no body, or a
    /// small one). A longer body is still being sent: the server's timer
    /// starts once it ends, which the return of the connection marks (a
    /// caller reading a long download as it comes), so the hint is counted
    /// from the return, as before: from the head, every download longer
    /// than the hint would have closed its connection.
    pub(crate) fn keep_alive_hint(&mut self, hint: Duration, arrived: bool) {
        let origin = self.origin();
        let left = hint.saturating_sub(origin.config.keep_alive_margin);
        self.keep_alive = Some(if arrived {
            // (The coarse clock's lower bound: within a tick, never late.)
            let from = Stamp::from_nanos(origin.budget.clock.now().lower_ns);
            KeepAlive::Until(from.after(left))
        } else {
            KeepAlive::AfterReturn(left)
        });
    }

    pub(crate) fn kind_mut(&mut self) -> &mut LeaseKind {
        self.kind.as_mut().expect("a live lease has its connection")
    }

    pub(crate) fn origin_label(&self) -> &Arc<str> {
        &self.origin().label
    }

    /// (Of a live lease: not after `release` or `discard`.)
    pub(crate) fn origin(&self) -> &Arc<Origin> {
        match self.kind.as_ref().expect("a live lease has its connection") {
            LeaseKind::H1(idle) => &idle.conn.origin,
            LeaseKind::H2 { origin, .. } => origin,
        }
    }

    /// Whether the task that drove the connection was dropped before the
    /// connection ended (its runtime shut down: see `connect::driver`).
    pub(crate) fn driver_lost(&self) -> bool {
        match &self.kind {
            Some(LeaseKind::H1(idle)) => idle.conn.driver_lost.as_ref().is_some_and(|l| l.get()),
            Some(LeaseKind::H2 { limit, .. }) => limit.as_ref().get(),
            None => false,
        }
    }

    /// When the HTTP/1 connection last started resting (None for h2).
    pub(crate) fn idle_since(&self) -> Option<Stamp> {
        match &self.kind {
            Some(LeaseKind::H1(idle)) => Some(idle.idle_since),
            _ => None,
        }
    }

    pub(crate) fn is_h2(&self) -> bool {
        matches!(self.kind, Some(LeaseKind::H2 { .. }))
    }

    /// How long the connection rested before this lease (zero for h2).
    pub(crate) fn idled(&self) -> Duration {
        match &self.kind {
            Some(LeaseKind::H1(idle)) => self.taken_at.since(idle.idle_since),
            _ => Duration::ZERO,
        }
    }

    /// Its response head came, or its body is being read (a frame came):
    /// for the leak report, which looks at how long a lease went without
    /// progress, not how long it was held (a long poll, a long download,
    /// an event stream). A lock at most every
    /// `NOTE_EVERY` per lease, by the pool's beat: none for a response read
    /// within that (the common case costs a load and a compare per frame).
    #[inline]
    pub(crate) fn note_progress(&mut self) {
        const NOTE_EVERY: Duration = Duration::from_millis(100);
        let beat = self.origin().budget.last_beat.load(Ordering::Relaxed);
        if beat.saturating_sub(self.taken_at.nanos()) >= NOTE_EVERY.as_nanos() as u64 {
            self.noted(Stamp::from_nanos(beat));
        }
    }

    /// Its response body's reader waits for the next frame (`Body`'s
    /// `poll_frame` returned `Pending`: `true`), or got one (`false`).
    /// A lease whose reader waits is not reported as a leak, however long
    /// the server stays quiet (an event stream, a watch): the README's
    /// promise. (Its cost: the origin's lock when it changes, around a
    /// wait that costs a wake-up anyway. A caller that stops polling in
    /// the middle of a wait, holding the body, is not reported.)
    #[inline]
    pub(crate) fn note_awaited(&mut self, on: bool) {
        if self.awaited != on {
            self.set_awaited(on);
        }
    }

    #[cold]
    #[inline(never)]
    fn set_awaited(&mut self, on: bool) {
        self.awaited = on;
        if self.lease_id != NO_RECORD {
            let id = self.lease_id;
            self.origin().lock().leases.note_awaited(id, on);
        }
    }

    #[cold]
    #[inline(never)]
    fn noted(&mut self, at: Stamp) {
        self.taken_at = at;
        let id = self.lease_id;
        self.origin().lock().leases.note_progress(id, at);
    }

    /// The request is done and the connection is healthy: back to the pool.
    pub(crate) fn release(mut self) {
        let Some(kind) = self.kind.take() else { return };
        if self.not_reusable.is_some() {
            self.kind = Some(kind);
            return self.discard();
        }
        match kind {
            LeaseKind::H1(mut idle) => {
                // The record holds the origin's reference, and goes back
                // into that origin's list under its lock below: a borrow
                // that outlives the record's move. Used only until the lock
                // is released: afterwards the record (and its reference)
                // may be in another request's hands, or closed.
                // SAFETY: the origin outlives that span. Until the record
                // is offered, the record keeps it. Once offered, under the
                // lock: the record rests in the origin's own list (only a
                // lock holder takes it out), or comes back to us (surplus,
                // DNS moved, or the origin is retired: its pool is gone),
                // or goes to a queued request; a queued request holds a
                // client, so the pool, whose map holds the origin, is alive,
                // and the pool cannot drop it before taking this lock. (Nor
                // forget it: it retires an origin under this lock first,
                // only with no waiter, and a retired origin hands the record
                // back to us instead of to anyone.)
                let origin: &Origin = unsafe { &*Arc::as_ptr(&idle.conn.origin) };
                // Coarse (see `Budget::coarse_now`): errs toward "older".
                let now = origin.budget.coarse_now();
                idle.requests += 1;
                idle.idle_since = now;
                idle.expires_at = origin.expiry(now, idle.created, self.keep_alive);
                let cfg = &origin.config;
                let spent = cfg
                    .max_requests_per_connection
                    .is_some_and(|m| idle.requests >= m);
                let expired = idle.expires_at <= now;
                // Leased across a freeze (detected since it was taken): a
                // NAT or peer may have dropped it meanwhile, as one idle
                // then; back in the pool it would look fresh.
                let frozen = origin.budget.freeze_at.load(Ordering::Acquire) != self.freeze_seen;
                if spent || expired || frozen || idle.conn.is_closed() {
                    return close_on_return(idle, self.lease_id, now, spent, frozen);
                }
                // (Closed outside the lock, as the surplus is.)
                let (surplus, moved) = {
                    let mut g = origin.lock();
                    g.leases.try_remove(self.lease_id);
                    if g.moved_away(&idle.conn.peer) {
                        (None, Some(idle))
                    } else {
                        (origin.offer_to_rest(&mut g, idle), None)
                    }
                };
                // (Through the records now: `origin` may be gone.)
                if let Some(moved) = moved {
                    // DNS no longer lists its address.
                    moved.conn.origin.counters.closed(CloseReason::Lifetime);
                }
                if let Some((surplus, why)) = surplus {
                    surplus.conn.origin.counters.closed(why);
                }
            }
            LeaseKind::H2 {
                origin, conn_id, ..
            } => origin.release_stream(conn_id, self.lease_id),
        }
    }

    /// The connection cannot be reused (error, unread body): close it,
    /// counted under `not_reusable`'s reason (`Error` if none was given).
    /// Leaves the lease table (the leak report, `oldest_leases`) while the
    /// lease is kept: an HTTP/2 stream parked until its upload ends
    /// (`body::UploadEnd`). Its id then names no record of its own
    /// (`NO_RECORD`): the table gives a freed id to the next lease, whose
    /// record the release would otherwise remove.
    pub(crate) fn unwatch(&mut self) {
        if let Some(LeaseKind::H2 { origin, .. }) = &self.kind {
            lock(&origin.guarded).leases.try_remove(self.lease_id);
            self.lease_id = NO_RECORD;
        }
    }

    pub(crate) fn discard(mut self) {
        self.close();
    }

    /// HTTP/2: the pool's hold on its connection (see
    /// `connect::PoolHold`), for one that must outlive the lease.
    pub(crate) fn h2_hold(&self) -> Option<Arc<crate::connect::PoolHold>> {
        match &self.kind {
            Some(LeaseKind::H2 {
                origin, conn_id, ..
            }) => origin.hold_of(*conn_id),
            _ => None,
        }
    }

    /// Ends the lease and, HTTP/2, lets its connection take no new
    /// streams, for `why` (`Origin::give_up_stream`): for a stream that
    /// stays the server's after the pool stops counting it (a parked
    /// upload given up). HTTP/1: closed, as `discard` does.
    pub(crate) fn give_up_connection(mut self, why: CloseReason) {
        match self.kind.take() {
            Some(LeaseKind::H2 {
                origin, conn_id, ..
            }) => origin.give_up_stream(conn_id, self.lease_id, why),
            kind => {
                self.kind = kind;
                self.not_reusable.get_or_insert(why);
                self.close();
            }
        }
    }

    /// `discard`, for `Drop` too (a lease dropped unreleased: an unread
    /// body, a cancelled request).
    fn close(&mut self) {
        let Some(kind) = self.kind.take() else { return };
        match kind {
            LeaseKind::H1(idle) => {
                let origin = &idle.conn.origin;
                origin
                    .counters
                    .closed(self.not_reusable.unwrap_or(CloseReason::Error));
                lock(&origin.guarded).leases.try_remove(self.lease_id);
                // Dropping it shuts the socket (`Drop for H1Conn`); the
                // driver task then ends and frees the slot.
                drop(idle);
            }
            // An h2 stream failing does not doom its connection (hyper
            // resets the stream), unless the connection went silent.
            LeaseKind::H2 {
                origin, conn_id, ..
            } => origin.abandon_stream(conn_id, self.lease_id),
        }
    }
}

impl Drop for Lease {
    #[inline]
    fn drop(&mut self) {
        // Most leases end released (`kind` taken): test that here, inline,
        // before calling out (the call and its frame were ~15 instructions
        // of every request).
        if self.kind.is_some() {
            self.close();
        }
    }
}

/// Cancels a waiter when its request future is dropped or times out, and
/// puts back anything that was handed to it in the meantime.
pub(super) struct WaiterGuard {
    pub(super) origin: Arc<Origin>,
    pub(super) rx: Option<tokio::sync::oneshot::Receiver<Result<Handoff<H1Conn, H2Conn>, Error>>>,
    /// Its place in the queue; None for a retry waiting on the dial
    /// dedicated to it (`Pool::checkout_dedicated`), which is in no queue.
    pub(super) waiter_id: Option<u64>,
}

/// A returned HTTP/1 connection that must not rest (see `Lease::release`):
/// counted under its reason and closed. (Out of line: it kept the return
/// path, which runs on every request, too large for the inliner, and
/// `Mutex::lock` was called rather than inlined.)
#[cold]
#[inline(never)]
fn close_on_return(idle: Idle<H1Conn>, lease_id: usize, now: Stamp, spent: bool, frozen: bool) {
    // (Through the record, which holds the origin until it drops last.)
    let origin = &idle.conn.origin;
    let reason = if spent {
        CloseReason::MaxRequests
    } else if frozen {
        CloseReason::FreezeEviction
    } else {
        origin.close_reason(&idle, now)
    };
    origin.counters.closed(reason);
    lock(&origin.guarded).leases.try_remove(lease_id);
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.leave();
    }
}

impl WaiterGuard {
    /// Leaves the queue now (at most once): cancels the waiter, or puts
    /// back what was handed to it.
    pub(super) fn leave(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        rx.close();
        match rx.try_recv() {
            Ok(Ok(Handoff::Exclusive(idle))) => {
                // Served just as we gave up: the connection goes to the next.
                self.origin.offer_unused(idle);
            }
            Ok(Ok(Handoff::Stream { conn_id, .. })) => {
                self.origin.untake_stream(conn_id);
            }
            Ok(Err(_) | Ok(Handoff::AskAgain)) => {}
            Err(_) => {
                if let Some(id) = self.waiter_id {
                    self.origin.lock().state.cancel_waiter(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::pool::origin_of;
    use freshpool_testkit::{eventually, TestServer};
    use std::sync::Arc;

    /// An HTTP/1 connection's record holds the origin's reference its
    /// lease uses, so a resting connection and its origin hold each other
    /// (origin -> idle list -> record -> origin). The cycle must not
    /// outlive the pool: `Drop for PoolInner` empties the lists, the
    /// connections close, and the origin goes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_origin_goes_with_its_pool_and_connections() {
        let server = TestServer::http1().await;
        let client = crate::Client::new();
        let url = server.url("/");
        let response = client.get(&url).await.unwrap();
        response.into_body().bytes().await.unwrap();
        let origin = origin_of(&client, &url);
        // This test's, the map's two (by key, by spelling), this thread's
        // memo's (the request and `origin_of` ran here), the resting
        // record's and the connection driver's.
        assert_eq!(Arc::strong_count(&origin), 6);
        let weak = Arc::downgrade(&origin);
        drop(origin);
        drop(client);
        eventually("the connection closed", || {
            server.stats().open_connections() == 0
        })
        .await;
        // Only the memo holds it now (one origin per thread at most, given
        // back at the thread's next miss).
        eventually("only the memo holds the origin", || {
            weak.strong_count() == 1
        })
        .await;
        crate::pool::origin_memo::clear();
        assert!(weak.upgrade().is_none(), "the origin outlived its pool");
    }

    /// What a held-back body's retry rule counts as "the server began to
    /// answer" is plaintext HTTP/1 delivered above TLS: a server closing an
    /// idle TLS connection sends a close_notify record, which is no answer.
    /// (Counted on the socket under TLS, it was one, and a POST that met
    /// that close failed with PossiblyProcessed instead of going again.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tls_close_notify_is_not_read_as_an_answer() {
        use freshpool_testkit::{ServerConfig, TestCa};
        let ca = TestCa::new();
        let server = TestServer::start(ServerConfig {
            tls: Some(ServerConfig::tls_config(&ca, &[b"http/1.1"])),
            idle_timeout: Some(std::time::Duration::from_millis(300)),
            ..ServerConfig::default()
        })
        .await;
        let client = crate::Client::builder()
            .add_root_certificate(ca.ca_cert_der())
            .build()
            .unwrap();
        let url = server.url("/");
        let response = client.get(&url).await.unwrap();
        response.into_body().bytes().await.unwrap();
        let origin = origin_of(&client, &url);
        let watch = {
            let g = origin.lock();
            let idle = g.state.idle.iter().next().expect("an idle connection");
            crate::connect::tcp::ReadWatch::start(&idle.conn.socket).expect("its socket")
        };
        // The server closes it (close_notify, then FIN), and the
        // connection's task reads that.
        eventually("the server closed the idle connection", || {
            server.stats().open_connections() == 0
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!watch.read_since(), "a close_notify counted as an answer");
    }
}
