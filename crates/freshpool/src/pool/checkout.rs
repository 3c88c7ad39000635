//! Taking a connection: idle (validated), an HTTP/2 stream, a dial, or a
//! FIFO wait bounded by `pool_timeout`.
//!
//! Why two steps: [`Pool::checkout`] is a plain function that ends in a
//! lease whenever one is free (the common case), and only a request that
//! must queue gets a future ([`Queued::wait`]). An `async fn` for both would
//! build the waiting machinery (timer, receiver, guard) into every
//! request's future and move it around on the hot path: profiles showed
//! ~300 of ~3,200 instructions per checkout+return were such copies.

use super::*;
use crate::deadline::OverallDeadline;

/// What [`Pool::checkout`] found.
pub(crate) enum Checkout {
    /// A connection or stream, without waiting.
    Ready(Lease),
    /// In the origin's FIFO queue: await [`Queued::wait`].
    Queued(Queued),
}

impl Checkout {
    /// The lease, waiting for it if need be: for paths off the hot one. The
    /// request path matches on the two arms itself and boxes the wait:
    /// awaiting this `async fn` there cost ~120 instructions per request
    /// (callgrind), the future built and polled even when a lease is ready.
    pub(crate) async fn lease(
        self,
        pool: &Pool,
        caller: &'static Location<'static>,
        // The request's overall timeout, if any (see `Queued::wait`).
        request_timeout: Option<OverallDeadline>,
    ) -> Result<Lease, Error> {
        match self {
            Checkout::Ready(lease) => Ok(lease),
            Checkout::Queued(queued) => queued.wait(pool, caller, request_timeout).await,
        }
    }
}

/// A request waiting in an origin's queue. Dropping it leaves the queue
/// (and passes on anything handed to it meanwhile).
pub(crate) struct Queued {
    guard: WaiterGuard,
    /// When the checkout began: `pool_timeout` bounds the whole wait.
    started: Instant,
    /// Its place in the queue, kept if it is sent back to ask again.
    waiter_id: u64,
}

impl Pool {
    /// Takes a connection for `uri` now, or queues for one (FIFO, bounded
    /// by `pool_timeout` once awaited) when the origin is at its limit.
    pub(crate) fn checkout(
        &self,
        uri: &http::Uri,
        security: &Arc<SecurityContext>,
        connector: &Arc<Connector>,
        caller: &'static Location<'static>,
    ) -> Result<Checkout, Error> {
        let origin = self.origin_for(uri, security, connector)?;
        // Coarse (see `coarse_clock`): the beat takes the bound that is
        // never ahead of real time, deadlines the one never behind it.
        let now = self.inner.budget.clock.now();
        self.ensure_heartbeat(now.lower_ns, origin.key.runtime == super::partition::SHARED);
        origin.follow_dns(now.lower_ns);
        self.check_freeze(now.lower_ns);
        self.take(&origin, None, now.upper, caller)
    }

    /// One pass under the origin's lock: a lease, a place in the queue, or
    /// `PoolFull`. Loops only past idle connections found stale.
    /// `asking_again` is a queued request sent back to ask again: its wait
    /// began at its `started` (None: now, read precisely, since the wait is
    /// reported to users) and it keeps its place in the queue.
    fn take(
        &self,
        origin: &Origin,
        asking_again: Option<(Instant, u64)>,
        mut now: Stamp,
        caller: &'static Location<'static>,
    ) -> Result<Checkout, Error> {
        let cfg = &self.inner.config;
        loop {
            let mut expired = Vec::new();
            let mut expired_shared = None;
            let acquired = {
                let mut g = origin.lock();
                // (HTTP/2 only: an HTTP/1 origin shares no connections.)
                if !g.state.shared.is_empty() {
                    let mut spare_total = origin.budget.spare();
                    // An idle connection made before the pool's last
                    // freeze crossed it: drained here too, not only by the
                    // eviction that follows the detection, which may not
                    // have reached it yet (another worker's). A busy one is
                    // the eviction's and the sweep's to judge: they drain
                    // it only while a slot is left to replace it, one slot
                    // for the whole pool, which a checkout here would spend
                    // again.
                    let freeze_at = origin.budget.freeze_at.load(Ordering::Acquire);
                    if freeze_at != 0 {
                        g.state
                            .drain_idle_shared_made_before(Stamp::from_nanos(freeze_at));
                    }
                    expired_shared = Some(g.state.expire_shared(
                        now,
                        SharedExpiry::of(cfg),
                        origin.limits.per_host,
                        &mut spare_total,
                    ));
                }
                let acquired = g.state.acquire(
                    now,
                    origin.limits,
                    &*origin.budget,
                    caller,
                    &mut expired,
                    asking_again.map(|(_, id)| id),
                );
                match acquired {
                    Acquire::Idle(idle) => {
                        // (Taken back below if the connection is stale.)
                        g.reused += u64::from(!idle.fresh());
                        let lease_id = origin.register_lease(&mut g, now, caller, 0);
                        Ok((LeaseKind::H1(idle), lease_id, true, false))
                    }
                    Acquire::Stream {
                        conn_id,
                        sender,
                        first,
                        idle_since,
                    } => {
                        g.reused += u64::from(!first);
                        // For the retry rule, a first stream is a reuse too
                        // when the connection rested unused long (dialed for
                        // a waiter that left): it may have died meanwhile.
                        let rested = now >= idle_since.after(cfg.validate_after_idle);
                        let reads = sender.limit.reads();
                        let lease_id = origin.register_lease(&mut g, now, caller, reads);
                        Ok((
                            LeaseKind::H2 {
                                origin: origin.arc(),
                                conn_id,
                                sender: sender.sender,
                                limit: sender.limit,
                            },
                            lease_id,
                            !first || rested,
                            !first,
                        ))
                    }
                    other => Err(other),
                }
            };
            // (Tested first: an empty Vec's iterator still costs its setup
            // and drop on every checkout.)
            if !expired.is_empty() {
                for idle in expired {
                    origin.counters.closed(origin.close_reason(&idle, now));
                }
            }
            if let Some(gone) = expired_shared {
                for why in gone {
                    origin.counters.closed(why);
                }
            }
            match acquired {
                Ok((kind, lease_id, reused, counted_stream_reuse)) => {
                    let freeze_seen = origin.budget.freeze_at.load(Ordering::Acquire);
                    let mut lease = Lease::new(
                        kind,
                        lease_id,
                        reused,
                        counted_stream_reuse,
                        now,
                        freeze_seen,
                    );
                    // Anything taken from the idle list may have died while
                    // it rested (even one never used: it was dialed for a
                    // waiter that another connection served), so it counts as
                    // reused for the retry rule; stats count only real reuse.
                    // An HTTP/2 connection's first stream, soon after it
                    // landed, is not reuse: it gets a fresh dial's three
                    // unsent retries, not one per connection the origin may
                    // have (`UnsentAttempts`).
                    if let Some(LeaseKind::H1(idle)) = &lease.kind {
                        if let Err(stale) = self.still_fresh(idle, now, freeze_seen) {
                            lease.uncount_reuse();
                            lease.not_reusable = Some(stale);
                            lease.discard();
                            now = self.inner.budget.clock.now().upper;
                            continue;
                        }
                    }
                    return Ok(Checkout::Ready(lease));
                }
                Err(Acquire::Full {
                    waiting,
                    behind_first_dial,
                }) => {
                    origin.counters.pool_full();
                    return Err(Error::new(
                        Kind::PoolFull,
                        origin.pool_full_report(waiting, cfg.max_pending, behind_first_dial),
                    ));
                }
                Err(Acquire::Wait {
                    waiter_id,
                    rx,
                    dial,
                }) => {
                    let starving = !dial && origin.lock().state.starving;
                    let origin = origin.arc();
                    if dial {
                        origin.spawn_dials(vec![waiter_id]);
                    } else if starving {
                        self.relieve_total(&origin);
                    }
                    return Ok(Checkout::Queued(Queued {
                        guard: WaiterGuard {
                            origin,
                            rx: Some(rx),
                            waiter_id: Some(waiter_id),
                        },
                        started: asking_again.map_or_else(Instant::now, |(started, _)| started),
                        waiter_id,
                    }));
                }
                Err(Acquire::Retired) => {
                    return self.take_from_successor(origin, asking_again, now, caller)
                }
                Err(Acquire::Idle(_) | Acquire::Stream { .. }) => unreachable!("handled above"),
            }
        }
    }
}

impl Pool {
    /// `take`, from the origin that took over from a retired `origin` (the
    /// sweep forgot it: see `Pool::forget_unused`). A request sent back to
    /// ask again keeps the start of its wait and is not refused for
    /// `max_pending`; its place is the back of the new origin's queue (the
    /// queue it was in is gone, and the new one holds no one from before).
    #[cold]
    #[inline(never)]
    fn take_from_successor(
        &self,
        origin: &Origin,
        asking_again: Option<(Instant, u64)>,
        now: Stamp,
        caller: &'static Location<'static>,
    ) -> Result<Checkout, Error> {
        // (Counted before the memo, which may be what lent `origin`, is
        // cleared; `origin` is not used after this.)
        let retired = origin.arc();
        let successor = self.successor_of(&retired);
        drop(retired);
        let moved =
            asking_again.map(|(started, _)| (started, successor.lock().state.fresh_waiter_id()));
        self.take(&successor, moved, now, caller)
    }
}

impl Queued {
    /// Waits for the connection, the dial error, or `pool_timeout` (which
    /// then names the limit, who waits and who holds the connections).
    pub(crate) async fn wait(
        mut self,
        pool: &Pool,
        caller: &'static Location<'static>,
        // The request's overall timeout (`ClientBuilder::timeout` or its
        // own `Timeout`), when set: the wait ends by it too, and then says
        // why the pool was full, as `pool_timeout` does. (Cut off from
        // outside, the wait left the queue saying nothing: "timed out after
        // 10s (timeout)", the "task was canceled" of the field reports,
        // with no limit, no holder, no count.)
        request_timeout: Option<OverallDeadline>,
    ) -> Result<Lease, Error> {
        let pool_timeout = pool.inner.config.pool_timeout;
        let mut deadline = self.started + pool_timeout;
        let mut freeze_seen = 0;
        // The time the process was frozen meanwhile, as the pool's freeze
        // detection measured it (its total when the wait began, and what
        // was added to the deadline since: see the timeout below).
        let frozen_before = pool.inner.budget.frozen_ns.load(Ordering::Acquire);
        let mut frozen = Duration::ZERO;
        loop {
            let origin = self.guard.origin.clone();
            let rx = self
                .guard
                .rx
                .as_mut()
                .expect("a queued request has its receiver");
            let remaining = deadline.saturating_duration_since(Instant::now());
            let pool_due = tokio::time::Instant::now() + remaining;
            // (At the request's own deadline to the instant: the request
            // future's timer fires in the same tick, and this, polled
            // first, answers.)
            let due = request_timeout.map_or(pool_due, |t| t.at.min(pool_due));
            let outcome = if origin.key.runtime != super::partition::SHARED {
                until_moved(origin.key.runtime, tokio::time::timeout_at(due, rx)).await
            } else if tokio::runtime::Handle::try_current().is_ok() {
                Some(tokio::time::timeout_at(due, rx).await)
            } else {
                // Polled outside any runtime (a caller's own executor): no
                // timer can be made here (tokio panicked, "no reactor
                // running"). Leaves with the error below.
                None
            };
            let served = match outcome {
                // Polled by another runtime now: this queue's connections,
                // its dials and the timer just made are all driven by the
                // current-thread runtime that queued it, which may never run
                // again. It leaves the queue and asks again here (below).
                // Leaves first: a connection handed to it meanwhile must rest
                // in the old partition before this request asks elsewhere,
                // where, with `max_connections_total` reached, that is the
                // idle connection to close to make room.
                None => {
                    self.guard.leave();
                    if tokio::runtime::Handle::try_current().is_err() {
                        return Err(Error::new(
                            Kind::Closed,
                            "no async runtime: a request waiting for a connection was \
                             polled outside any tokio runtime",
                        ));
                    }
                    None
                }
                Some(Ok(Ok(result))) => {
                    self.guard.rx = None;
                    // (Read before it is judged: see `Lease::new`.)
                    freeze_seen = pool.inner.budget.freeze_at.load(Ordering::Acquire);
                    match result? {
                        Handoff::Exclusive(idle) => {
                            // Its return judged its expiry by the coarse
                            // clock, which may lag the real time by a beat
                            // or more: judged again here, precisely (a
                            // connection past `max_lifetime` went to the
                            // next waiter).
                            let now = pool.inner.budget.stamp(Instant::now());
                            // And as `still_fresh` judges idle ones: a freeze
                            // detected while it was on its way (the sweep at
                            // the detection cannot see it), or a rest long
                            // enough for a peek (passed on by a waiter that
                            // left, it may have waited in its channel).
                            let stale = if now >= idle.expires_at {
                                Some(origin.close_reason(&idle, now))
                            } else if idle.conn.is_closed() {
                                Some(CloseReason::ServerClose)
                            } else if idle.fresh() {
                                // Just dialed: no peek (a TLS 1.3 session
                                // ticket may sit unread in its socket, and
                                // would read as stray bytes), the freeze only.
                                idle.rested_across(freeze_seen)
                                    .then_some(CloseReason::FreezeEviction)
                            } else {
                                pool.still_fresh(&idle, now, freeze_seen).err()
                            };
                            if let Some(why) = stale {
                                origin.counters.closed(why);
                                drop(idle);
                                None
                            } else {
                                let reused = !idle.fresh();
                                Some(((0, LeaseKind::H1(idle)), reused))
                            }
                        }
                        Handoff::Stream {
                            conn_id,
                            sender,
                            first,
                        } => Some((
                            // (Its read count is taken at registration.)
                            (
                                sender.limit.reads(),
                                LeaseKind::H2 {
                                    origin: origin.clone(),
                                    conn_id,
                                    sender: sender.sender,
                                    limit: sender.limit,
                                },
                            ),
                            !first,
                        )),
                        // Counted out of the queue by the sender already.
                        Handoff::AskAgain => None,
                    }
                }
                Some(Ok(Err(_))) => {
                    // Sender dropped without an answer.
                    self.guard.rx = None;
                    origin.lock().state.cancel_waiter(self.waiter_id);
                    None
                }
                Some(Err(_))
                    if request_timeout.is_some_and(|t| tokio::time::Instant::now() >= t.at) =>
                {
                    // The request's own `timeout` came first: the pool's
                    // state is the answer to "why so slow", as for
                    // `pool_timeout` (counted, recorded and warned alike).
                    let limit = request_timeout.map_or(Duration::ZERO, |t| t.limit);
                    // (Running time, as every wait figure: a freeze the
                    // pool detected is not the queue's. A thaw this timer
                    // is the first to see is judged here, as below.)
                    pool.check_freeze(pool.inner.budget.stamp(Instant::now()).nanos());
                    let waited = self
                        .started
                        .elapsed()
                        .saturating_sub(frozen_since(pool, frozen_before));
                    origin.counters.waited(waited);
                    // Unless a connection was being dialed for it: then the
                    // dial was slow (a TLS handshake, a far host), not the
                    // pool full, and "raise max_connections_per_host" would
                    // mislead.
                    if origin.lock().state.dial_covers(self.waiter_id) {
                        let message = format!(
                            "request to {} timed out after {} (timeout) while a connection was \
                             being made for it (name lookup, connect, TLS and HTTP/2 handshakes)",
                            origin.label,
                            fmt_duration(limit)
                        );
                        drop(self);
                        return Err(Error::new(Kind::Timeout, message));
                    }
                    origin.counters.pool_timeout();
                    let report = origin.starvation_report(limit, waited, "timeout");
                    drop(self);
                    warn_starvation(&origin.label, &report);
                    return Err(Error::new(Kind::Timeout, report));
                }
                Some(Err(_)) => {
                    // `pool_timeout` bounds a wait for the pool (its limits),
                    // not a connection being dialed for this request: that
                    // one has its own timeouts, and its error (a refused or
                    // timed-out connect) says what went wrong, where
                    // PoolTimeout would blame the limit. So the wait goes on
                    // for as long as a dial can take.
                    if origin.lock().state.dial_covers(self.waiter_id) {
                        let conn = &origin.connector.config;
                        deadline =
                            Instant::now() + conn.connect_timeout + conn.tls_handshake_timeout;
                        continue;
                    }
                    // Nor does it count time the process was frozen (a
                    // serverless sandbox paused between invocations): no
                    // one could have freed a connection then, and the limit
                    // is not to blame. The freezes are those the pool
                    // detected and the liveness thread saw (none with
                    // detection off), and a thaw this timer is the first to
                    // see is judged here.
                    pool.check_freeze(pool.inner.budget.stamp(Instant::now()).nanos());
                    let stopped = frozen_since(pool, frozen_before);
                    if stopped > frozen {
                        frozen = stopped;
                        let due = self.started + pool_timeout + stopped;
                        if due > Instant::now() {
                            deadline = due;
                            continue;
                        }
                    }
                    // Report before leaving the queue: "waiting" counts this
                    // request too.
                    origin.counters.pool_timeout();
                    // (Past `pool_timeout` if a dial on its way ended
                    // without serving this request: then the real figure.)
                    let waited = if deadline > self.started + pool_timeout + frozen {
                        self.started.elapsed().saturating_sub(frozen)
                    } else {
                        pool_timeout
                    };
                    // The waits that ran out are the ones the wait figures
                    // (stats `pool_wait`, `freshpool.pool.wait.duration`)
                    // are for: without them starvation looked healthy.
                    origin.counters.waited(waited);
                    let mut report = origin.starvation_report(waited, waited, "pool_timeout");
                    if !frozen.is_zero() {
                        report += &format!(
                            " (the process was frozen for {} meanwhile, not counted)",
                            fmt_duration(frozen)
                        );
                    }
                    drop(self);
                    warn_starvation(&origin.label, &report);
                    return Err(Error::new(Kind::PoolTimeout, report));
                }
            };
            let Some(((reads, kind), reused)) = served else {
                // Not served: ask again, in the partition of the runtime that
                // polls this request now. One whose future moved to another
                // runtime while it waited asked its old one, whose dials
                // `spawn_dials` refuses to run here, and was sent back at
                // once, again and again.
                let now = pool.inner.budget.stamp(Instant::now());
                let here = super::partition::current();
                let asking = if here == origin.key.runtime {
                    pool.take(&origin, Some((self.started, self.waiter_id)), now, caller)?
                } else {
                    let moved = pool.in_partition(&origin, here);
                    let id = moved.lock().state.fresh_waiter_id();
                    pool.take(&moved, Some((self.started, id)), now, caller)?
                };
                match asking {
                    Checkout::Ready(lease) => {
                        // (A wait too: served by asking again. Recorded
                        // where it was served: a request that moved
                        // runtimes was served by another partition's
                        // origin, and its old one may be forgotten.)
                        let frozen = frozen_since(pool, frozen_before);
                        let waited = self.started.elapsed().saturating_sub(frozen);
                        lease.origin().counters.waited(waited);
                        return Ok(lease);
                    }
                    Checkout::Queued(again) => self = again,
                }
                continue;
            };
            let now = Instant::now();
            // (Running time, as for a wait that ran out: less the freezes
            // detected since it began, credited or not.)
            let frozen = frozen_since(pool, frozen_before);
            let waited = now.saturating_duration_since(self.started);
            origin.counters.waited(waited.saturating_sub(frozen));
            let now = pool.inner.budget.stamp(now);
            let lease_id = {
                let mut g = origin.lock();
                g.reused += u64::from(reused);
                origin.register_lease(&mut g, now, caller, reads)
            };
            return Ok(Lease::new(kind, lease_id, reused, reused, now, freeze_seen));
        }
    }
}

impl Pool {
    /// Whether an idle HTTP/1 connection may carry a request: not idle
    /// across a freeze, and (past `validate_after_idle`) its socket is
    /// quiet: no FIN, no reset, no stray bytes. If not, why it must close
    /// (counted once, when the lease is discarded).
    ///
    /// `freeze_at`: `Budget::freeze_at` as read for the lease it will be
    /// (`Lease::new`), so that the lease is judged by the freeze it records.
    pub(super) fn still_fresh(
        &self,
        idle: &Idle<H1Conn>,
        now: Stamp,
        freeze_at: u64,
    ) -> Result<(), CloseReason> {
        if idle.rested_across(freeze_at) {
            return Err(CloseReason::FreezeEviction);
        }
        let validate_after = self.inner.config.validate_after_idle;
        if now >= idle.idle_since.after(validate_after)
            && tcp::peek(&idle.conn.socket) != tcp::Peek::Quiet
        {
            return Err(CloseReason::StaleDetected);
        }
        Ok(())
    }

    /// Total capacity is exhausted while this origin waits: close one idle
    /// connection of another origin so the budget can move here. (Later
    /// returns help too: see `Lease::release`.)
    ///
    /// The scan is O(origins). Under sustained overload with nothing idle
    /// anywhere, every queued request would repeat it for nothing, so after
    /// a fruitless scan the next one waits `RELIEF_RESCAN`: at most 100 full
    /// scans a second, however many requests starve.
    pub(super) fn relieve_total(&self, starving: &Arc<Origin>) {
        const RELIEF_RESCAN: Duration = Duration::from_millis(10);
        let budget = &self.inner.budget;
        // Registered once per starving spell (`newly_starving`), not once
        // per queued request: every stale entry kept the list non-empty
        // after the origin was served, so returns anywhere (its own too)
        // closed their connection for a claim nobody had.
        let newly = std::mem::take(&mut starving.lock().state.newly_starving);
        if newly {
            budget.starving.push(starving);
        }
        let now = budget.stamp(Instant::now()).nanos();
        let fruitless_at = budget.fruitless_relief_at.load(Ordering::Acquire);
        if fruitless_at != 0 && now.saturating_sub(fruitless_at) < RELIEF_RESCAN.as_nanos() as u64 {
            return;
        }
        // Claimed before the scan (and given back if it finds nothing), so
        // that requests queuing at once do not each close one: the origin
        // lock is not held while other origins' locks are taken.
        {
            let mut g = starving.lock();
            if !g.state.wants_relief(starving.limits.per_host) {
                return;
            }
            g.state.reliefs = g.state.reliefs.saturating_add(1);
        }
        for other in self.origins().iter().filter(|o| !Arc::ptr_eq(o, starving)) {
            // An HTTP/2 connection without streams rests too: dropping the
            // pool's sender closes it.
            let victim = other.lock().state.take_resting();
            if let Some(victim) = victim {
                other.counters.closed(CloseReason::Surplus);
                drop(victim);
                return;
            }
        }
        {
            let mut g = starving.lock();
            g.state.reliefs = g.state.reliefs.saturating_sub(1);
        }
        budget
            .fruitless_relief_at
            .store(now.max(1), Ordering::Release);
    }
}

/// Logs a starvation report at most once per 10 s per process, so a
/// starving service does not also drown its logs.
fn warn_starvation(origin: &str, report: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let now = epoch.elapsed().as_secs() + 1;
    let last = LAST.load(Ordering::Relaxed);
    if (last == 0 || now >= last + 10)
        && LAST
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(origin, "{report}");
    }
}

/// Polls `wait` while the current-thread runtime `runtime` polls it: `None`
/// as soon as another runtime does (the request's future moved), before
/// `wait` is polled there. (Only a queued request of a current-thread
/// runtime's partition pays for the question, once per poll.)
async fn until_moved<F: std::future::Future>(runtime: u64, wait: F) -> Option<F::Output> {
    let mut wait = std::pin::pin!(wait);
    std::future::poll_fn(|cx| {
        if super::partition::current() != runtime {
            return std::task::Poll::Ready(None);
        }
        wait.as_mut().poll(cx).map(Some)
    })
    .await
}

/// The time the process was frozen since the pool's frozen-time total
/// read `before` (the freezes detected meanwhile, credited or not).
fn frozen_since(pool: &Pool, before: u64) -> Duration {
    let total = pool.inner.budget.frozen_ns.load(Ordering::Acquire);
    Duration::from_nanos(total.saturating_sub(before))
}
