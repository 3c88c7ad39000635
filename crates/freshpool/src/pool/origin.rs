//! One origin's partition: dials, hand-offs, eviction, diagnosis.

use super::*;

/// How long a server found ignoring `Expect: 100-continue` is sent bodies
/// without the gate before it is asked again (the wait, 250 ms by default,
/// once per this).
const EXPECT_NO_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether a "no" to `Expect` learned at `learned_ms` still holds at
/// `now_ms` (both on the budget's clock).
fn expect_no_holds(learned_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(learned_ms) < EXPECT_NO_FOR.as_millis() as u64
}

#[cfg(test)]
#[test]
fn a_learned_no_to_expect_expires() {
    assert!(expect_no_holds(1_000, 1_000));
    assert!(expect_no_holds(1_000, 1_000 + 299_999));
    assert!(!expect_no_holds(1_000, 1_000 + 300_000));
    // A clock read a little behind the learning (coarse) still holds it.
    assert!(expect_no_holds(1_000, 900));
}

/// An origin's lock, held. As it is let go, the pool's count of origins
/// that wait for total capacity (`Budget::starving_origins`) follows this
/// origin's `starving` mark, however the state moved it meanwhile (it
/// is set where a dial finds the total limit reached, and cleared where
/// the last waiter leaves, deep in the state's code).
pub(super) struct OriginLock<'a> {
    guard: MutexGuard<'a, Guarded>,
    was_starving: bool,
    starving_origins: &'a AtomicUsize,
}

impl std::ops::Deref for OriginLock<'_> {
    type Target = Guarded;

    #[inline(always)]
    fn deref(&self) -> &Guarded {
        &self.guard
    }
}

impl std::ops::DerefMut for OriginLock<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut Guarded {
        &mut self.guard
    }
}

impl Drop for OriginLock<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        let starving = self.guard.state.starving;
        if starving != self.was_starving {
            if starving {
                self.starving_origins.fetch_add(1, Ordering::AcqRel);
            } else {
                self.starving_origins.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Origin {
    // (Always inline: every checkout and return takes it, and the return
    // path grew past what the inliner takes on its own: out of line, with
    // std's `Mutex::lock`, it cost ~40 instructions per checkout+return.)
    #[inline(always)]
    pub(super) fn lock(&self) -> OriginLock<'_> {
        let guard = lock(&self.guarded);
        OriginLock {
            was_starving: guard.state.starving,
            guard,
            starving_origins: &self.budget.starving_origins,
        }
    }

    /// A reuse counted for a try that failed (see `Lease::uncount_reuse`).
    #[cold]
    pub(crate) fn uncount_reuse(&self) {
        self.lock().reused -= 1;
    }

    /// A counted reference to this origin, for what outlives a borrow of
    /// its pool (see "Who keeps an origin alive" in the module doc).
    pub(super) fn arc(&self) -> Arc<Origin> {
        self.this
            .upgrade()
            .expect("an origin in use is alive: its pool or a connection holds it")
    }

    /// The earliest of idle timeout, keep-alive hint and lifetime
    /// (`Stamp::NEVER` if none applies).
    /// (`keep_alive`: the server's hint, see `Lease::keep_alive_hint`.)
    pub(super) fn expiry(
        &self,
        now: Stamp,
        created: Stamp,
        keep_alive: Option<KeepAlive>,
    ) -> Stamp {
        let cfg = &self.config;
        // Written out rather than as an iterator over the three: this runs
        // on every return of a connection.
        let mut at = cfg.idle_timeout.map_or(Stamp::NEVER, |t| now.after(t));
        match keep_alive {
            Some(KeepAlive::Until(until)) => at = at.min(until),
            Some(KeepAlive::AfterReturn(left)) => at = at.min(now.after(left)),
            None => {}
        }
        if let Some(l) = cfg.max_lifetime {
            at = at.min(created.after(l));
        }
        at
    }

    /// Why an idle connection leaves the pool: the first of its expiries
    /// that has come (`now` past its `expires_at`), else (closed before
    /// any) the server's close.
    pub(super) fn close_reason(&self, idle: &Idle<H1Conn>, now: Stamp) -> CloseReason {
        let cfg = &self.config;
        if now < idle.expires_at {
            // (The sweep takes only expired or closed ones.)
            CloseReason::ServerClose
        } else if cfg
            .max_lifetime
            .is_some_and(|l| now >= idle.created.after(l))
        {
            CloseReason::Lifetime
        } else if cfg
            .idle_timeout
            .is_some_and(|t| now >= idle.idle_since.after(t))
        {
            CloseReason::IdleTimeout
        } else {
            CloseReason::KeepAliveHint
        }
    }

    /// Evicts idle connections that expired or (after a freeze) are suspect.
    /// `total_spare`: connections that may still open under
    /// `max_connections_total`, carried from origin to origin by the sweep
    /// (each busy HTTP/2 connection drained after a freeze takes one for
    /// its replacement).
    pub(super) fn evict(&self, now: Stamp, frozen_since: Option<Stamp>, total_spare: &mut usize) {
        let mut dropped = Vec::new();
        let dropped_shared;
        {
            let mut g = self.lock();
            // Closed sockets leave the list when their slot is freed, so
            // only expiry (or a freeze) makes the scan worth it; most
            // sweeps skip it. The scan takes only what goes.
            let scan = frozen_since.is_some() || g.state.idle.may_have_expired(now);
            let suspect =
                |idle: &Idle<H1Conn>| frozen_since.is_some_and(|f| idle.rested_across(f.nanos()));
            let gone = if !scan {
                Vec::new()
            } else {
                g.state.idle.take_where(|idle| {
                    suspect(idle) || now >= idle.expires_at || idle.conn.is_closed()
                })
            };
            for idle in gone {
                let reason = if suspect(&idle) {
                    CloseReason::FreezeEviction
                } else {
                    self.close_reason(&idle, now)
                };
                dropped.push((reason, idle));
            }
            // HTTP/2 connections after a freeze take no new streams: a dead
            // one would otherwise take the next burst down with it. Also one
            // carrying a stream across the freeze (an event stream, a long
            // poll): that stream ends as it will, while new requests hung on
            // a connection the NAT forgot. Else those past `max_lifetime` or
            // `idle_timeout`. A busy one only while a slot is left to replace
            // it (`drain_shared_where`); in a freeze, the idle ones going in
            // this pass give theirs back first.
            let going = if frozen_since.is_some() {
                dropped.len() + (g.state.shared.iter()).filter(|s| s.in_flight == 0).count()
            } else {
                0
            };
            // (Saturating: "unlimited" limits are `usize::MAX`.)
            *total_spare = total_spare.saturating_add(going);
            let expiry = SharedExpiry::of(&self.config);
            let freeze_at = self.budget.freeze_at.load(Ordering::Acquire);
            let g = &mut *g;
            let moved_from = g.dns_addrs.as_deref();
            g.state.drain_shared_where(
                self.limits.per_host.saturating_add(going),
                total_spare,
                |s| {
                    // (Also one a freeze found busy, at a limit: drained
                    // once a slot frees to replace it.)
                    if frozen_since.is_some() || s.created.nanos() < freeze_at {
                        return Some(CloseReason::FreezeEviction);
                    }
                    let moved = moved_from
                        .is_some_and(|addrs| s.sender.peer.is_some_and(|p| !addrs.contains(&p)));
                    expiry
                        .reason(s, now)
                        .or(moved.then_some(CloseReason::Lifetime))
                },
            );
            dropped_shared = g.state.drop_idle_shared(usize::MAX);
            // A server may raise its stream limit at any time (a SETTINGS
            // frame, read by the connection's I/O: `preface.rs`), and
            // nothing else looks while no stream ends: waiters get the new
            // streams within a sweep.
            g.state.serve_waiting_streams();
            // The once-a-second sample of the gauges (see `publish`).
            self.publish(&g.state);
        }
        for (reason, idle) in dropped {
            self.counters.closed(reason);
            drop(idle);
        }
        self.count_closed(dropped_shared);
    }

    /// Closes this origin's idle connections: HTTP/1 ones in the idle
    /// list, HTTP/2 ones without a stream in flight. Busy ones are left
    /// alone, and go back to the pool as usual.
    pub(super) fn close_idle(&self) {
        let (idle, shared) = {
            let mut g = self.lock();
            let idle = g.state.idle.take_where(|_| true);
            let shared = g.state.drop_idle_shared(0);
            self.publish(&g.state);
            (idle, shared)
        };
        for conn in idle {
            self.counters.closed(CloseReason::Surplus);
            drop(conn);
        }
        self.count_closed(shared);
    }

    /// Registers a lease taken at `now` by `caller`; `reads`: an HTTP/2
    /// stream's connection read count then (0 for HTTP/1).
    pub(super) fn register_lease(
        &self,
        g: &mut Guarded,
        now: Stamp,
        caller: &'static Location<'static>,
        reads: u32,
    ) -> usize {
        g.leases.insert(LeaseRecord {
            since: now,
            caller,
            active: 0,
            flags: 0,
            reads_at_take: reads as u16,
        })
    }

    /// Publishes the open-connection gauges (idle / active): when a
    /// connection opens or closes, and at the once-a-second sweep (`evict`),
    /// not on every checkout and return. Published on returns only, as it
    /// was, a connection leased for a long download read as idle until some
    /// later return; on both it would cost ~30 instructions a request for a
    /// value scraped every few seconds.
    pub(super) fn publish(&self, st: &State) {
        let idle = st.idle.len() + st.shared.iter().filter(|s| s.in_flight == 0).count();
        let established = st.slots - st.dialing;
        self.counters
            .metrics
            .open(idle, established.saturating_sub(idle));
    }

    /// What has used this origin so far: each request either reuses a
    /// connection or makes one (or fails to, or times out waiting). Read
    /// by the sweep to tell an origin in use from one that only looks
    /// empty at each sweep (requests that close their connection).
    fn uses(&self, g: &Guarded) -> u64 {
        let c = &self.counters;
        g.reused
            + c.created.load(Ordering::Relaxed)
            + c.connect_errors.load(Ordering::Relaxed)
            + c.pool_timeouts.load(Ordering::Relaxed)
            + c.pool_full.load(Ordering::Relaxed)
    }

    /// Retires this origin if it has had no connection (open or being
    /// dialed), no waiting request, no lease and no use (see `uses`) for
    /// `after`: the first step of forgetting it (`Pool::forget_unused`).
    /// Once retired, under this lock, it takes no new connection or waiter
    /// (`Acquire::Retired`), so it stays empty. Returns whether it retired
    /// it now.
    pub(super) fn retire_if_unused(&self, now: Stamp, after: Duration) -> bool {
        let mut g = self.lock();
        let uses = self.uses(&g);
        let unused = g.state.is_unused() && g.leases.is_empty();
        let since = self.unused_since_ns.load(Ordering::Relaxed);
        if !unused || since == 0 || self.unused_uses.load(Ordering::Relaxed) != uses {
            // In use, or newly unused: (re)start the watch.
            let start = if unused { now.nanos().max(1) } else { 0 };
            self.unused_since_ns.store(start, Ordering::Relaxed);
            self.unused_uses.store(uses, Ordering::Relaxed);
            return false;
        }
        if now.since(Stamp::from_nanos(since)) < after {
            return false;
        }
        g.state.retired = true;
        // (No waiter here: no claim on total capacity either, whatever
        // left the mark. Counted, it would outlive the origin.)
        g.state.starving = false;
        true
    }

    /// Adds this retired origin's counters to the pool's `forgotten`
    /// totals, once (the sweep and a checkout's `successor_of` may both
    /// take it out of the map). Called under the `forgotten` lock.
    pub(super) fn fold_into(&self, forgotten: &mut crate::stats::ForgottenOrigins) {
        debug_assert!(self.lock().state.retired);
        if !self.folded.swap(true, Ordering::AcqRel) {
            forgotten.add(&self.snapshot());
        }
    }

    /// Reports leases held past `lease_warn_after`, once each.
    pub(super) fn report_leaks(&self, now: Stamp) {
        let Some(limit) = self.config.lease_warn_after else {
            return;
        };
        let mut found = Vec::new();
        {
            let mut g = self.lock();
            // (Without progress for `limit`: a long download or an event
            // stream read as it comes is held long, and is no leak.)
            for record in g.leases.iter_mut() {
                if !record.has(REPORTED | AWAITED) && now.since(record.last_active()) >= limit {
                    record.flags |= REPORTED;
                    found.push(*record);
                }
            }
        }
        // (See `LeaseTable::discount_freeze`.)
        let freezes = if self.budget.freezes.load(Ordering::Relaxed) > 0 {
            " of running time (process freezes not counted)"
        } else {
            ""
        };
        for record in found {
            self.counters.leaks_reported.fetch_add(1, Ordering::Relaxed);
            let idle = now.since(record.last_active());
            // With progress noted, its response head came (see
            // `Lease::note_progress`); without, either the head came at
            // once and nothing was read since, or none came yet: the pool
            // cannot tell which without a lock on every request, so it
            // says both.
            let what = if record.has(PROGRESSED) {
                "read its response body to the end or drop it, or the pool will run dry"
            } else {
                "either its response body is held unread (read it to the end or drop it, or the pool \
                 will run dry) or its server has not answered yet (a long poll: bound it with \
                 `timeout`, or raise `lease_warn_after`)"
            };
            tracing::warn!(
                origin = %self.label,
                held = ?now.since(record.since),
                caller = %record.caller,
                "a connection has been held for {} by the request made at {}, with no progress seen for {}{freezes}: {what}",
                fmt_duration(now.since(record.since)),
                record.caller,
                fmt_duration(idle)
            );
        }
    }

    /// A process freeze ended at `now`, the process stopped `frozen` of the
    /// time since the last beat: not its leases' time without progress (see
    /// `LeaseTable::discount_freeze`).
    pub(super) fn discount_freeze(&self, now: Stamp, frozen: Duration) {
        self.lock().leases.discount_freeze(now, frozen);
    }

    pub(super) fn snapshot(&self) -> OriginStats {
        let g = self.lock();
        let now = self.budget.stamp(Instant::now());
        let st = &g.state;
        let mut leases: Vec<LeaseRecord> = g.leases.iter().copied().collect();
        leases.sort_by_key(|r| r.since);
        let oldest_leases = leases
            .iter()
            .take(5)
            .map(|r| LeaseInfo {
                age: now.since(r.since),
                caller: r.caller.to_string(),
            })
            .collect();
        let established = st.slots - st.dialing;
        let idle = st.idle.len() + st.shared.iter().filter(|s| s.in_flight == 0).count();
        let c = &self.counters;
        OriginStats {
            origin: self.label.to_string(),
            settings: self.key.security.settings.describe(),
            runtime: (self.key.runtime != super::partition::SHARED).then_some(self.key.runtime),
            protocol: match st.protocol {
                Protocol::Http1 => "HTTP/1.1",
                Protocol::Http2 => "HTTP/2",
                Protocol::Unknown => "unknown",
            },
            idle,
            active: established.saturating_sub(idle),
            connecting: st.dialing,
            waiting: st.live_waiters,
            limit: self.limits.per_host,
            created: c.created.load(Ordering::Relaxed),
            reused: g.reused,
            connect_errors: c.connect_errors.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            pool_timeouts: c.pool_timeouts.load(Ordering::Relaxed),
            pool_full: c.pool_full.load(Ordering::Relaxed),
            closed: CloseReason::ALL
                .iter()
                .zip(c.closed.iter())
                .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
                .collect(),
            pool_wait: c.pool_wait.summary(),
            connect_time: c.connect_time.summary(),
            oldest_leases,
            leaks_reported: c.leaks_reported.load(Ordering::Relaxed),
            tls_resumed: c.tls_resumed.load(Ordering::Relaxed),
        }
    }

    /// The message of a PoolTimeout: every number needed to fix it.
    /// `setting`: the limit that ran out (`pool_timeout`, or the
    /// request's own `timeout` while it waited), `limit` its length, and
    /// `waited` the part of it spent in the queue: a request's `timeout`
    /// counts from the request's start, and a retry may queue for the
    /// last few milliseconds of it (saying "after 10s waiting" of a 0.5 s
    /// wait sent readers to the pool's limits for the whole time).
    pub(super) fn starvation_report(
        &self,
        limit: Duration,
        waited: Duration,
        setting: &str,
    ) -> String {
        let (state, advice) = self.queue_state();
        let waited = if waited + Duration::from_millis(10) < limit {
            format!(", {} of it", fmt_duration(waited))
        } else {
            String::new()
        };
        format!(
            "timed out after {} ({setting}){waited} waiting for a connection to {} {state}; \
             {advice}, read or drop response bodies sooner, or raise {setting}",
            fmt_duration(limit),
            self.label,
        )
    }

    /// The message of a PoolFull: the queue's bound, then the same numbers
    /// as a PoolTimeout's (why requests queue at all).
    pub(super) fn pool_full_report(
        &self,
        waiting: usize,
        max_pending: usize,
        behind_first_dial: bool,
    ) -> String {
        let (state, advice) = self.queue_state();
        // (First: with no queue allowed, a request that would ride on a
        // first dial is refused by that, though none waits beyond it.)
        if max_pending == 0 {
            return format!(
                "no request may wait for a connection to {} (max_pending 0) {state}; \
                 {advice}, read or drop response bodies sooner, or let requests wait (max_pending)",
                self.label,
            );
        }
        if behind_first_dial {
            // No other dial starts before the first lands (its protocol
            // decides how many a connection carries): a slow connect or
            // handshake holds them all, not the per-host limit.
            return format!(
                "{waiting} requests already wait for a connection to {} beyond the {} that its \
                 first connection, still being made, will carry (max_pending {max_pending}) \
                 {state}; a slow connect or TLS handshake holds them: lower connect_timeout or \
                 tls_handshake_timeout, or raise max_pending",
                self.label,
                crate::connect::DEFAULT_MAX_STREAMS,
            );
        }
        // `waiting` counts the requests with no connection on the way, the
        // ones `max_pending` bounds: fewer than the state's "waiting" while
        // dials run for some (which read as a contradiction unsaid).
        let requests_wait = if waiting == 1 {
            "request already waits"
        } else {
            "requests already wait"
        };
        format!(
            "{waiting} {requests_wait} for a connection to {} with none on its way (max_pending {max_pending}) {state}; \
             {advice}, read or drop response bodies sooner, or raise max_pending",
            self.label,
        )
    }

    /// Why requests queue for this origin, as "(limit, in use, idle,
    /// connecting, waiting[, the total limit][, the longest lease])", and
    /// which limit to raise.
    fn queue_state(&self) -> (String, &'static str) {
        let s = self.snapshot();
        let holder = s
            .oldest_leases
            .first()
            .map(|l| {
                format!(
                    "; longest lease held {} by the request made at {}",
                    fmt_duration(l.age),
                    l.caller
                )
            })
            .unwrap_or_default();
        // Below its own limit yet waiting: the pool-wide limit is the one
        // reached, by connections of other origins. Say so, or the numbers
        // read as a pool that should have dialed.
        let open = self.budget.open.load(Ordering::Acquire);
        let own = s.active + s.idle + s.connecting;
        let (total, advice) = if own < s.limit && open >= self.budget.limit {
            (
                format!(
                    "; max_connections_total {} reached, {} of them to other origins",
                    self.budget.limit,
                    open.saturating_sub(own)
                ),
                "raise max_connections_total",
            )
        } else {
            (String::new(), "raise max_connections_per_host")
        };
        (
            format!(
                "(limit {}, in use {}, idle {}, connecting {}, waiting {}{total}{holder})",
                s.limit, s.active, s.idle, s.connecting, s.waiting,
            ),
            advice,
        )
    }
}

impl Origin {
    pub(super) fn release_stream(self: &Arc<Self>, conn_id: u64, lease_id: usize) {
        // Coarse (see `Budget::coarse_now`): errs toward "older".
        let now = self.budget.coarse_now();
        let (dials, gone) = {
            let mut g = self.lock();
            g.leases.try_remove(lease_id);
            g.state.release_stream(conn_id, now);
            self.settle_streams(&mut g)
        };
        self.count_closed(gone);
        self.spawn_dials(dials);
    }

    /// A stream that ended unreleased: its request failed or was dropped,
    /// or its body was dropped unread. Rule: if it ended because its
    /// response head did not come in time (`response_header_timeout`, or
    /// the request's `timeout`: `ended_by_timeout`), and its connection
    /// read nothing at all since the stream was taken, for at least 3/4 of
    /// [`SILENT_SUSPECT`] or of a shorter `response_header_timeout`, the
    /// connection is suspect: a NAT or peer that dropped the flow without
    /// FIN or RST, on which every stream would wait in vain until the
    /// kernel gives up on the socket (minutes). It takes no new streams
    /// from now on (`CloseReason::Unresponsive`) and closes when its last
    /// one ends. A live server that was only slower than the timeout, with
    /// nothing else to send meanwhile, costs a new connection, as an HTTP/1
    /// connection whose request failed is closed in any case. A caller's
    /// own drop (a `select!`, a hedged request) says nothing of the
    /// connection, nor does any frame read meanwhile. Not held back for
    /// want of a slot (as `drain_shared_where` holds busy ones): if dead,
    /// what it would serve times out too.
    pub(super) fn abandon_stream(self: &Arc<Self>, conn_id: u64, lease_id: usize) {
        // The limit that ran out, if one did: the request's own, of the
        // client that made it (a `timeout` of 500 ms alone, judged by a
        // `response_header_timeout` it does not have, never found a silent
        // connection: 750 ms of quiet were asked of 500 ms requests). Else
        // the origin's `response_header_timeout`, or `SILENT_SUSPECT`.
        let fired = super::TIMED_OUT.with(std::cell::Cell::get);
        let timed_out = fired.is_some();
        let rht = self.connector.config.response_header_timeout;
        let quiet_for = fired
            .or(rht)
            .map_or(SILENT_SUSPECT, |t| t.min(SILENT_SUSPECT))
            * 3
            / 4;
        // Precise: a coarse "now" may lag a request's whole wait.
        let now = self.budget.stamp(Instant::now());
        let (dials, gone) = {
            let mut g = self.lock();
            let g = &mut *g;
            let record = g.leases.try_remove(lease_id);
            let quiet = |conn: &Shared<H2Conn>| {
                record.as_ref().is_some_and(|r| {
                    now >= r.since.after(quiet_for)
                        && conn.sender.limit.reads() as u16 == r.reads_at_take
                })
            };
            if let Some(conn) = g.state.shared.iter_mut().find(|s| s.id == conn_id) {
                if quiet(conn) {
                    let reads = conn.sender.limit.reads();
                    // A caller's own give-up once is no sign (a long poll
                    // left by a `select!`); twice with nothing read between
                    // is, for a connection users bound with their own timers.
                    if timed_out || conn.quiet_abandon == Some(reads) {
                        tracing::debug!(origin = %self.label, conn_id, "HTTP/2 connection read nothing while a stream waited; no new streams on it");
                        conn.drain(CloseReason::Unresponsive);
                    } else {
                        conn.quiet_abandon = Some(reads);
                    }
                }
            }
            g.state.release_stream(conn_id, now);
            self.settle_streams(g)
        };
        self.count_closed(gone);
        self.spawn_dials(dials);
    }

    /// A stream given up for its connection's sake (see
    /// `Lease::give_up_connection`): the connection takes no new streams,
    /// for `why`, and closes once its last counted stream ends.
    pub(super) fn give_up_stream(
        self: &Arc<Self>,
        conn_id: u64,
        lease_id: usize,
        why: CloseReason,
    ) {
        // Drained first: between the two locks no checkout can take a
        // stream there. (Rare: the second lock costs nothing that matters.)
        if let Some(conn) = self
            .lock()
            .state
            .shared
            .iter_mut()
            .find(|s| s.id == conn_id)
        {
            conn.drain(why);
        }
        self.release_stream(conn_id, lease_id);
    }

    /// The pool's hold on the shared connection `conn_id`, if it still
    /// has its record.
    pub(super) fn hold_of(&self, conn_id: u64) -> Option<Arc<crate::connect::PoolHold>> {
        let g = self.lock();
        g.state
            .shared
            .iter()
            .find(|s| s.id == conn_id)?
            .hold
            .clone()
    }

    pub(super) fn count_closed(&self, reasons: Vec<CloseReason>) {
        for reason in reasons {
            self.counters.closed(reason);
        }
    }

    /// A stream handed to a waiter that had just given up: as if never
    /// taken, and then what the end of a stream does.
    pub(super) fn untake_stream(self: &Arc<Self>, conn_id: u64) {
        let (dials, gone) = {
            let mut g = self.lock();
            g.state.untake_stream(conn_id);
            self.settle_streams(&mut g)
        };
        self.count_closed(gone);
        self.spawn_dials(dials);
    }

    /// After a stream freed: drop draining connections once their last
    /// stream is done, and idle ones beyond `max_idle_per_host` (every one
    /// with 0, pooling off), and while another origin waits for total
    /// capacity (as HTTP/1 returns do, see `Lease::release`) every idle
    /// one, unless a request here waits. Returns the dials to start for
    /// waiters, and why connections closed (to count outside the lock).
    /// An HTTP/1 connection come to rest (returned, newly made, or handed
    /// to a request that had just gone): to the oldest waiter, else idle;
    /// or, while another origin waits for total capacity and nobody here
    /// wants it, back to be closed so the slot moves there. Returns what
    /// to close, and why (`OriginState::offer_idle_or_yield`).
    pub(super) fn offer_to_rest(
        &self,
        g: &mut Guarded,
        idle: Idle<H1Conn>,
    ) -> Option<(Idle<H1Conn>, CloseReason)> {
        let others_starve = self.budget.any_starving();
        g.state
            .offer_idle_or_yield(idle, self.limits, others_starve)
    }

    fn settle_streams(&self, g: &mut Guarded) -> (Vec<u64>, Vec<CloseReason>) {
        // A connection that carried a stream across a freeze, kept taking
        // streams for want of a slot to replace it (`drain_shared_where`),
        // goes once its last stream ends: resting, it would serve every
        // later request (a freeze is the one reason no later look judges
        // again), however dead the freeze left it.
        let freeze_at = self.budget.freeze_at.load(Ordering::Acquire);
        if freeze_at != 0 {
            g.state
                .drain_idle_shared_made_before(Stamp::from_nanos(freeze_at));
        }
        let keep = self.idle_shared_to_keep(g);
        let gone = g.state.drop_idle_shared(keep);
        (g.state.service(self.limits, &*self.budget), gone)
    }

    /// How many HTTP/2 connections with no stream may rest here now: all
    /// while a request waits, none while another origin waits for total
    /// capacity, else `max_idle_per_host`.
    pub(super) fn idle_shared_to_keep(&self, g: &Guarded) -> usize {
        let others_starve = self.budget.any_starving() && !g.state.starving;
        if g.state.live_waiters > 0 {
            usize::MAX
        } else if others_starve {
            0
        } else {
            self.limits.max_idle
        }
    }

    /// A reused connection died silently: close its idle siblings that
    /// have been resting at least as long (a NAT or peer that dropped one
    /// dropped them all), so the retry does not meet another dead one.
    pub(crate) fn evict_idle_since(&self, since: Stamp) {
        let stale: Vec<_> = {
            let mut g = self.lock();
            g.state.idle.take_where(|i| i.idle_since <= since)
        };
        for _ in &stale {
            self.counters.closed(CloseReason::StaleDetected);
        }
    }

    /// What we learned about this server and `Expect: 100-continue`:
    /// `Some(true)` it answers 100, `Some(false)` it ignored it (within
    /// the last `EXPECT_NO_FOR`).
    pub(crate) fn expect_continue_supported(&self) -> Option<bool> {
        match self.expect_100.load(Ordering::Relaxed) {
            0 => None,
            1 => Some(true),
            // A "no" holds for `EXPECT_NO_FOR`, then the gate tries again:
            // a handler that answered late without reading the body (a
            // slow 401) looks the same as a server that ignores Expect,
            // and a "no" kept for good took the gate from that origin's
            // bodies for the life of the process.
            no => {
                let now_ms = self.budget.coarse_now().nanos() / 1_000_000;
                expect_no_holds(no - 2, now_ms).then_some(false)
            }
        }
    }

    /// Records whether the server answered 100 to our last Expect, so a
    /// server that ignores it costs the short wait once per
    /// `EXPECT_NO_FOR`, not every time.
    pub(crate) fn learn_expect_continue(&self, answered: bool) {
        let value = if answered {
            1
        } else {
            2 + self.budget.coarse_now().nanos() / 1_000_000
        };
        self.expect_100.store(value, Ordering::Relaxed);
    }

    /// The `Host` header value for a request to `uri` (its authority
    /// without userinfo and the scheme's default port): a clone of the
    /// cached one when `uri` spells scheme and authority as the first
    /// request did, which all but a few requests do; computed otherwise.
    /// (Keyed by the spelling, not the computed host: comparing bytes is
    /// cheaper than deriving the host on every request.)
    pub(crate) fn host_header(&self, uri: &http::Uri) -> Option<http::HeaderValue> {
        let https = uri.scheme_str() == Some("https");
        let authority = uri.authority()?.as_str();
        let cached = match self.host_header.get() {
            Some(cached) => cached,
            None => {
                let host = key::host_of(uri)?;
                let value = http::HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(
                    host.as_bytes(),
                ))
                .ok()?;
                self.host_header.get_or_init(|| HostHeader {
                    https,
                    authority: authority.into(),
                    value,
                })
            }
        };
        if cached.https == https && *cached.authority == *authority {
            return Some(cached.value.clone());
        }
        http::HeaderValue::from_str(key::host_of(uri)?).ok()
    }
}

/// How long an HTTP/2 stream must have waited, its connection reading
/// nothing, before its abandonment makes the connection suspect (see
/// `Origin::abandon_stream`). Chrome's check of a read-idle connection
/// waits 10 s; a caller that gave up on the request is a stronger hint.
const SILENT_SUSPECT: Duration = Duration::from_secs(1);
