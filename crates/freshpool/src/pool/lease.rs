//! What a request holds while it uses a connection, and the guard that
//! cleans up a waiter that gave up.

use super::*;

/// A connection (HTTP/1) or a stream (HTTP/2) lent to one request.
pub(crate) struct Lease {
    pub(super) origin: Arc<Origin>,
    pub(super) kind: Option<LeaseKind>,
    pub(super) lease_id: usize,
    /// Taken from the pool, not freshly dialed.
    pub reused: bool,
    /// The server's `Keep-Alive: timeout` hint, read from the response.
    pub keep_alive_hint: Option<Duration>,
    /// The response said `Connection: close` (or the request failed).
    pub reusable: bool,
    /// When the pool handed it over, by the checkout's coarse clock (never
    /// before the real time: see `coarse_clock`), so idle ages computed
    /// from it err toward older. Not for latencies (`metrics::Stopwatch`).
    pub taken_at: Stamp,
}

pub(crate) enum LeaseKind {
    H1(Idle<H1Conn>),
    H2 {
        conn_id: u64,
        sender: http2::SendRequest<RequestBody>,
    },
}

impl Lease {
    /// A lease registered as `lease_id`, handed over at `taken_at`.
    pub(super) fn new(
        origin: Arc<Origin>,
        kind: LeaseKind,
        lease_id: usize,
        reused: bool,
        taken_at: Stamp,
    ) -> Lease {
        Lease {
            origin,
            kind: Some(kind),
            lease_id,
            reused,
            keep_alive_hint: None,
            reusable: true,
            taken_at,
        }
    }

    pub(crate) fn kind_mut(&mut self) -> &mut LeaseKind {
        self.kind.as_mut().expect("a live lease has its connection")
    }

    pub(crate) fn origin_label(&self) -> &Arc<str> {
        &self.origin.label
    }

    pub(crate) fn origin(&self) -> &Arc<Origin> {
        &self.origin
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

    /// The request is done and the connection is healthy: back to the pool.
    pub(crate) fn release(mut self) {
        let Some(kind) = self.kind.take() else { return };
        if !self.reusable {
            self.kind = Some(kind);
            return self.discard();
        }
        // Borrowed, not cloned: an `Arc` clone here was two atomic updates
        // per returned connection for nothing.
        let origin = &self.origin;
        match kind {
            LeaseKind::H1(mut idle) => {
                // Coarse (see `Budget::coarse_now`): errs toward "older".
                let now = origin.budget.coarse_now();
                idle.requests += 1;
                idle.idle_since = now;
                idle.expires_at = origin.expiry(now, idle.created, self.keep_alive_hint);
                let cfg = &origin.config;
                let spent = cfg
                    .max_requests_per_connection
                    .is_some_and(|m| idle.requests >= m);
                let expired = idle.expires_at <= now;
                if spent || expired || idle.conn.is_closed() {
                    let reason = if spent {
                        CloseReason::MaxRequests
                    } else {
                        origin.close_reason(&idle, now)
                    };
                    origin.counters.closed(reason);
                    lock(&origin.guarded).leases.try_remove(self.lease_id);
                    return;
                }
                // Another origin waits for total capacity: unless a request
                // here wants this connection, close it so the slot moves.
                let others_starve = origin.budget.starving.any();
                // (Closed outside the lock, as the surplus is.)
                let (surplus, moved) = {
                    let mut g = origin.lock();
                    g.leases.try_remove(self.lease_id);
                    if g.moved_away(&idle.conn.peer) {
                        (None, Some(idle))
                    } else {
                        let surplus = if others_starve {
                            g.state.offer_idle_or_yield(idle, origin.limits)
                        } else {
                            g.state.offer_idle(idle, origin.limits)
                        };
                        (surplus, None)
                    }
                };
                if moved.is_some() {
                    // DNS no longer lists its address.
                    origin.counters.closed(CloseReason::Lifetime);
                }
                if surplus.is_some() {
                    origin.counters.closed(CloseReason::Surplus);
                }
            }
            LeaseKind::H2 { conn_id, .. } => origin.release_stream(conn_id, self.lease_id),
        }
    }

    /// The connection cannot be reused (error, unread body): close it.
    pub(crate) fn discard(mut self) {
        self.close();
    }

    /// `discard`, for `Drop` too (a lease dropped unreleased: an unread
    /// body, a cancelled request).
    fn close(&mut self) {
        let Some(kind) = self.kind.take() else { return };
        match kind {
            LeaseKind::H1(idle) => {
                self.origin.counters.closed(CloseReason::Error);
                lock(&self.origin.guarded).leases.try_remove(self.lease_id);
                // Dropping the sender makes hyper close the socket; the
                // driver task then frees the slot.
                drop(idle);
            }
            // An h2 stream failing does not doom its connection; hyper
            // resets the stream.
            LeaseKind::H2 { conn_id, .. } => self.origin.release_stream(conn_id, self.lease_id),
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
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        rx.close();
        match rx.try_recv() {
            Ok(Ok(Handoff::Exclusive(idle))) => {
                // Served just as we gave up: the connection goes to the next.
                let surplus = self
                    .origin
                    .lock()
                    .state
                    .offer_idle(idle, self.origin.limits);
                drop(surplus);
            }
            Ok(Ok(Handoff::Stream { conn_id, .. })) => {
                let dials = {
                    let mut g = self.origin.lock();
                    g.state.release_stream(conn_id);
                    g.state.service(self.origin.limits, &*self.origin.budget)
                };
                self.origin.spawn_dials(dials);
            }
            Ok(Err(_)) => {}
            Err(_) => {
                let mut g = self.origin.lock();
                g.state.cancel_waiter();
            }
        }
    }
}
